"""Seeded, stratified train/validation/test splits, and grouped ones (no group on two sides)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from sklearn.model_selection import train_test_split

from mlmm.data.dataset import MultimodalDataset, _as_groups
from mlmm.errors import MlmmError
from mlmm.utils import rng_for


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
    groups: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Row indices of a stratified (or grouped) split.

    ``test_size`` is a fraction of the whole dataset; ``val_size`` a fraction of what remains
    for training (so ``test_size=0.2, val_size=0.1`` gives 72/8/20). Stratified by class for
    classification; each part is sorted. ``val_size=0`` gives an empty validation part.

    Multilabel targets cannot stratify as classes (a label set is not one class): they are
    split by iterative stratification (:func:`iterative_stratification`), which keeps every
    label's frequency about the same in each part, rare labels included; part sizes are then
    within a row or two of the fractions.
    With ``groups`` (one id per sample; default ``dataset.groups``), every group lands in one
    part only: whole groups are drawn in a seeded random order until the part holds the
    fraction of samples closest to the one asked (at least one group, and at least one left
    for the rest). Grouped parts are not stratified by class (nor by label).
    """
    for label, frac in (("test_size", test_size), ("val_size", val_size)):
        if not 0.0 <= frac < 1.0:
            raise MlmmError(f"{label} must be in [0, 1), got {frac}")
    if seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed}")
    n = dataset.n_samples
    group_ids = dataset.groups if groups is None else _as_groups(groups, n)
    all_idx = np.arange(n)
    strat = dataset.targets if (stratify and dataset.task.is_classification) else None
    multilabel = stratify and dataset.task.is_multilabel
    parts: dict[str, np.ndarray] = {}
    rest = all_idx
    for label, frac in (("test", test_size), ("val", val_size)):
        if frac == 0.0:
            parts[label] = np.array([], dtype=np.int64)
            continue
        if group_ids is not None:
            keep, held = group_holdout(group_ids[rest], frac, seed, label)
            rest, part = rest[keep], rest[held]
            parts[label] = np.sort(part)
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


def group_holdout(
    groups: np.ndarray, fraction: float, seed: int, label: str = "held-out"
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept rows, held-out rows)`` of a split by whole groups, seeded.

    Groups are taken in a random order drawn from ``(seed, label)`` until the held-out rows
    are the share of all rows closest to ``fraction``; at least one group is held out and at
    least one kept. Fewer than two groups is an error.
    """
    unique, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(unique) < 2:
        raise MlmmError(
            f"cannot split {len(groups)} samples into a {label} part by groups: they hold "
            f"{len(unique)} group(s), at least 2 are needed; pass more groups or no groups"
        )
    order = rng_for(seed, "group-split", label).permutation(len(unique))
    cumulative = np.cumsum(counts[order])[:-1]  # held-out sizes with 1..G-1 groups
    taken = int(np.argmin(np.abs(cumulative - fraction * len(groups)))) + 1
    held_groups = np.zeros(len(unique), dtype=bool)
    held_groups[order[:taken]] = True
    held = held_groups[inverse]
    return np.flatnonzero(~held), np.flatnonzero(held)


def group_folds(
    groups: np.ndarray, n_folds: int, random_state: int, targets: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, validation rows)`` of ``n_folds`` folds by whole groups.

    scikit-learn's ``StratifiedGroupKFold`` (shuffled, ``random_state``): stratified by class
    when ``targets`` are given, otherwise only balanced in size. No group is in two folds'
    validation rows, so no group is on both sides of any fold.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise MlmmError(
            f"{n_folds} folds by groups need at least {n_folds} groups, got {n_groups}; use "
            "fewer folds or more groups"
        )
    y = np.zeros(len(groups), dtype=np.int64) if targets is None else np.asarray(targets)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():  # a class rarer than n_folds: folds stay grouped
        warnings.simplefilter("ignore", UserWarning)
        return [
            (np.sort(fit), np.sort(val))
            for fit, val in splitter.split(np.zeros(len(groups)), y, groups)
        ]


def train_val_test_split(
    dataset: MultimodalDataset,
    test_size: float = 0.2,
    val_size: float = 0.1,
    seed: int = 0,
    stratify: bool = True,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> Split:
    """Split a dataset into train, validation and test parts (see :func:`split_indices`).

    A part of size 0 is ``None``. ``groups`` (patient or subject ids, one per sample;
    default ``dataset.groups``) keeps each group in one part; the parts carry their groups.

    Examples
    --------
    >>> import numpy as np, mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> patients = np.arange(200) // 4  # 50 patients with 4 samples each
    >>> split = mlmm.train_val_test_split(ds, groups=patients)
    >>> set(patients[split.indices["train"]]) & set(patients[split.indices["test"]])
    set()
    """
    if groups is not None:
        dataset = replace(dataset, groups=_as_groups(groups, dataset.n_samples))
    idx = split_indices(dataset, test_size, val_size, seed, stratify)
    parts = {k: dataset.subset(v) if len(v) else None for k, v in idx.items()}
    return Split(parts["train"], parts["val"], parts["test"], idx)
