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


# ---------------------------------------------------------------------- grouped splits
def _patients(n: int = 200, seed: int = 0) -> np.ndarray:
    # patients with 1 to 10 samples each, rows in shuffled order
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 11, size=60)
    ids = np.repeat(np.arange(60), sizes)[:n]
    return rng.permutation(ids)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_grouped_split_keeps_every_group_on_one_side(task):
    ds = dataset(task=task)
    patients = _patients()
    split = train_val_test_split(ds, test_size=0.2, val_size=0.1, seed=3, groups=patients)
    sides = {k: set(patients[v].tolist()) for k, v in split.indices.items()}
    assert not sides["train"] & sides["test"]
    assert not sides["train"] & sides["val"]
    assert not sides["val"] & sides["test"]
    combined = np.concatenate(list(split.indices.values()))
    assert sorted(combined.tolist()) == list(range(200))
    # close to the asked sizes in samples (one group at most away from the target)
    assert abs(len(split.indices["test"]) - 40) <= 10
    # the parts carry their groups
    np.testing.assert_array_equal(split.test.groups, patients[split.indices["test"]])


def test_an_ungrouped_split_mixes_groups_so_the_grouped_test_can_fail():
    patients = _patients()
    idx = split_indices(dataset(), seed=3)
    assert set(patients[idx["train"]]) & set(patients[idx["test"]])


def test_dataset_groups_are_used_by_default_and_the_split_is_seeded():
    patients = _patients()
    ds = MultimodalDataset(
        dataset().specs, dataset().task, dataset().inputs, dataset().targets, groups=patients
    )
    a, b = split_indices(ds, seed=5), split_indices(ds, seed=5)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not set(patients[a["train"]]) & set(patients[a["test"]])
    assert not np.array_equal(a["test"], split_indices(ds, seed=6)["test"])
    # subset keeps each row's group
    np.testing.assert_array_equal(ds.subset([5, 2]).groups, patients[[5, 2]])


def test_grouped_split_errors_name_the_problem():
    with pytest.raises(MlmmError, match=r"one id per sample \(shape \(200,\)\)"):
        train_val_test_split(dataset(), groups=np.arange(10))
    with pytest.raises(MlmmError, match="at least 2 are needed"):
        train_val_test_split(dataset(), groups=np.zeros(200))
    with pytest.raises(MlmmError, match="groups contain NaN"):
        train_val_test_split(dataset(), groups=np.full(200, np.nan))


def test_group_folds_never_put_a_group_on_both_sides():
    from mlmm.data.split import group_folds

    patients = _patients()
    targets = dataset().targets
    folds = group_folds(patients, 4, random_state=0, targets=targets)
    assert len(folds) == 4
    validated = np.concatenate([val for _, val in folds])
    assert sorted(validated.tolist()) == list(range(200))  # each row validated once
    for fit, val in folds:
        assert not set(patients[fit]) & set(patients[val])
    with pytest.raises(MlmmError, match="need at least 5 groups, got 3"):
        group_folds(np.arange(200) % 3, 5, random_state=0)
