"""Seeded stratified train/validation/test splits."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import split_indices, train_val_test_split
from mlmm.errors import MlmmError


def dataset(n: int = 200, task: str = "classification") -> MultimodalDataset:
    # classes 0, 1, 2 in proportions 50%, 30%, 20%
    targets = np.repeat([0, 1, 2], [n // 2, 3 * n // 10, n - n // 2 - 3 * n // 10])
    spec = TaskSpec("classification", 3) if task == "classification" else TaskSpec("regression")
    if task == "regression":
        targets = targets.astype(float) + 0.5
    return MultimodalDataset(
        [ModalitySpec("a", "vector", (1,))],
        spec,
        {"a": np.arange(n, dtype=float)[:, None]},  # row i holds i
        targets,
    )


def test_parts_are_disjoint_sorted_cover_all_rows_and_have_the_documented_sizes():
    idx = split_indices(dataset(), test_size=0.2, val_size=0.1, seed=0)
    train, val, test = idx["train"], idx["val"], idx["test"]
    assert (len(train), len(val), len(test)) == (144, 16, 40)  # 72/8/20 of 200
    combined = np.concatenate([train, val, test])
    assert sorted(combined.tolist()) == list(range(200))
    for part in (train, val, test):
        assert (np.diff(part) > 0).all()


def test_stratified_parts_keep_class_proportions():
    ds = dataset()
    idx = split_indices(ds, test_size=0.2, val_size=0.1, seed=1)
    assert np.bincount(ds.targets[idx["test"]], minlength=3).tolist() == [20, 12, 8]
    assert np.bincount(ds.targets[idx["train"]], minlength=3).tolist() == [72, 43, 29]


def test_same_seed_same_split_other_seed_differs():
    ds = dataset()
    a, b = split_indices(ds, seed=7), split_indices(ds, seed=7)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["test"], split_indices(ds, seed=8)["test"])


def test_datasets_match_their_indices():
    ds = dataset()
    split = train_val_test_split(ds, test_size=0.25, val_size=0.2, seed=3)
    for name, part in (("train", split.train), ("val", split.val), ("test", split.test)):
        rows = split.indices[name]
        np.testing.assert_array_equal(part.inputs["a"][:, 0], rows)  # row i holds i
        np.testing.assert_array_equal(part.targets, ds.targets[rows])


def test_zero_sizes_give_empty_parts():
    split = train_val_test_split(dataset(), test_size=0.3, val_size=0.0, seed=0)
    assert split.val is None and len(split.indices["val"]) == 0
    assert split.test.n_samples == 60 and split.train.n_samples == 140
    split = train_val_test_split(dataset(), test_size=0.0, val_size=0.0)
    assert split.test is None and split.train.n_samples == 200


def test_regression_is_split_without_stratification():
    idx = split_indices(dataset(task="regression"), test_size=0.2, val_size=0.1, seed=0)
    assert (len(idx["train"]), len(idx["val"]), len(idx["test"])) == (144, 16, 40)


@pytest.mark.parametrize(
    "kw, phrase",
    [
        ({"test_size": 1.0}, r"test_size must be in \[0, 1\), got 1.0"),
        ({"test_size": -0.1}, "test_size must be in"),
        ({"val_size": 1.5}, r"val_size must be in \[0, 1\), got 1.5"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ],
)
def test_bad_arguments(kw, phrase):
    with pytest.raises(MlmmError, match=phrase):
        split_indices(dataset(), **kw)


def test_a_part_too_small_for_stratification_is_an_mlmm_error():
    # 10 samples, 3 classes: a 10% test part (1 sample) cannot hold every class
    with pytest.raises(MlmmError, match="cannot split 10 samples into a test part of 10%"):
        split_indices(dataset(10), test_size=0.1, val_size=0.1)
