"""Seeded, stratified train/validation/test splits."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split

from mlmm.data.dataset import MultimodalDataset
from mlmm.errors import MlmmError


class Split(NamedTuple):
    """Three datasets and the row indices (into the original dataset) they came from."""

    train: MultimodalDataset
    val: MultimodalDataset | None
    test: MultimodalDataset | None
    indices: dict[str, np.ndarray]


def split_indices(
    dataset: MultimodalDataset,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
) -> dict[str, np.ndarray]:
    """Row indices of a stratified split.

    ``test_size`` is a fraction of the whole dataset; ``val_size`` a fraction of what remains
    for training (so ``test_size=0.2, val_size=0.1`` gives 72/8/20). Stratified by class for
    classification; each part is sorted. ``val_size=0`` gives an empty validation part.
    """
    for label, frac in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= frac < 1.0:
            raise MlmmError(f"{label} must be in [0, 1), got {frac}")
    if seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed}")
    n = dataset.n_samples
    all_idx = np.arange(n)
    strat = dataset.targets if (stratify and dataset.task.is_classification) else None
    parts: dict[str, np.ndarray] = {}
    rest = all_idx
    for label, frac in (("test", test_size), ("val", val_size)):
        if frac == 0.0:
            parts[label] = np.array([], dtype=np.int64)
            continue
        s = None if strat is None else strat[rest]
        try:
            rest, part = train_test_split(rest, test_size=frac, random_state=seed, stratify=s)
        except ValueError as err:
            raise MlmmError(
                f"cannot split {n} samples into a {label} part of {frac:.0%}: {err}; "
                f"use more data or a different size"
            ) from None
        parts[label] = np.sort(part)
    parts["train"] = np.sort(rest)
    return parts


def train_val_test_split(
    dataset: MultimodalDataset,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
) -> Split:
    """Split a dataset into train, validation and test parts (see :func:`split_indices`).

    A part of size 0 is ``None``.
    """
    idx = split_indices(dataset, test_size, val_size, seed, stratify)
    parts = {k: dataset.subset(v) if len(v) else None for k, v in idx.items()}
    return Split(parts["train"], parts["val"], parts["test"], idx)
