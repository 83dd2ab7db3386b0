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

    Multilabel targets cannot stratify directly (a label set is not one class): each sample
    is stratified by its *rarest* label (the first step of iterative stratification,
    Sechidis et al., ECML PKDD 2011), samples with no label forming their own stratum, and
    strata too small to reach both sides merged (:func:`multilabel_strata`). So every label
    keeps about the same frequency in each part, rare labels above all.
    """
    for label, frac in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= frac < 1.0:
            raise MlmmError(f"{label} must be in [0, 1), got {frac}")
    if seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed}")
    n = dataset.n_samples
    all_idx = np.arange(n)
    strat = dataset.targets if (stratify and dataset.task.is_classification) else None
    multilabel = stratify and dataset.task.is_multilabel
    parts: dict[str, np.ndarray] = {}
    rest = all_idx
    for label, frac in (("test", test_size), ("val", val_size)):
        if frac == 0.0:
            parts[label] = np.array([], dtype=np.int64)
            continue
        s = None if strat is None else strat[rest]
        if multilabel:
            s = multilabel_strata(dataset.targets[rest], frac)
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


def multilabel_strata(targets: np.ndarray, fraction: float) -> np.ndarray | None:
    """One stratum per sample of a multi-hot ``[N, L]`` matrix, for a split of ``fraction``.

    A sample's stratum is its rarest label (ties: the first column), or ``L`` when it has no
    label. The smallest strata are merged into one until every stratum has at least two
    samples and there are no more strata than either side of the split has samples, as
    ``train_test_split`` needs; None when even one merged stratum cannot (too few samples).
    """
    n = len(targets)
    n_part = int(np.ceil(fraction * n))
    allowed = min(n_part, n - n_part)
    if allowed < 1:
        return None
    frequency = targets.sum(axis=0)  # [L]
    rarity = np.where(targets > 0, frequency[None, :], np.inf)  # [N, L]
    strata = np.where(targets.any(axis=1), rarity.argmin(axis=1), targets.shape[1])  # [N]
    merged = strata.copy()
    kept, sizes = np.unique(merged, return_counts=True)
    while len(kept) > 1 and (len(kept) > allowed or sizes.min() < 2):
        # fold the smallest stratum into the next smallest, so rare labels stay together
        smallest = kept[np.argsort(sizes, kind="stable")][:2]
        merged[merged == smallest[0]] = smallest[1]
        kept, sizes = np.unique(merged, return_counts=True)
    if len(kept) == 1 or len(kept) > allowed or sizes.min() < 2:
        return None  # one stratum is no stratification
    return merged


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
