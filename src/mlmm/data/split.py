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

    Multilabel targets cannot stratify as classes (a label set is not one class): they are
    split by iterative stratification (:func:`iterative_stratification`), which keeps every
    label's frequency about the same in each part, rare labels included; part sizes are then
    within a row or two of the fractions.
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
            chosen = iterative_stratification(dataset.targets[rest], frac, seed)
            parts[label] = np.sort(rest[chosen])
            rest = np.setdiff1d(rest, parts[label])
            continue
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


def iterative_stratification(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows of a multi-hot ``[N, L]`` matrix for a part of about ``fraction`` of them, keeping
    every label's frequency in both parts (iterative stratification, Sechidis, Tsoumakas and
    Vlahavas, "On the Stratification of Multi-Label Data", ECML PKDD 2011).

    Labels are taken rarest first (by positives still unassigned); each unassigned row with
    that label goes to the part that most wants the label (then the part most short of rows,
    then a seeded coin). Rows with no label fill the parts to their sizes. Returns the part's
    sorted row indices.
    """
    rng = np.random.default_rng(seed)
    n = len(targets)
    positive = np.asarray(targets) > 0  # [N, L]
    share = np.array([fraction, 1.0 - fraction])  # [2]: the part, the rest
    want_rows = share * n  # [2]
    want_label = share[:, None] * positive.sum(axis=0)[None, :]  # [2, L]
    side = np.full(n, -1)
    left = positive.copy()  # positives not yet assigned
    while left.any():
        counts = left.sum(axis=0)  # [L]
        counts = np.where(counts > 0, counts, np.iinfo(np.int64).max)
        label = int(rng.choice(np.flatnonzero(counts == counts.min())))
        for row in rng.permutation(np.flatnonzero(left[:, label])):
            key = np.lexsort((rng.random(2), want_rows, want_label[:, label]))
            chosen = int(key[-1])  # the largest want for the label, then for rows
            side[row] = chosen
            want_rows[chosen] -= 1
            want_label[chosen] -= positive[row]
            left[row] = False
    for row in rng.permutation(np.flatnonzero(side < 0)):  # rows with no label
        chosen = int(np.argmax(want_rows))
        side[row] = chosen
        want_rows[chosen] -= 1
    return np.flatnonzero(side == 0)


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
