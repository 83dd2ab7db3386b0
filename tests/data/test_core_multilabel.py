"""Multilabel tasks: TaskSpec, multi-hot target validation, stratified splits, the generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets import load_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import iterative_stratification, split_indices
from mlmm.errors import MlmmError


def _dataset(targets, n_labels=3):
    n = len(targets)
    return MultimodalDataset(
        [ModalitySpec("a", "vector", (2,))],
        TaskSpec("multilabel", n_labels=n_labels),
        {"a": np.zeros((n, 2))},
        targets,
    )


def test_multilabel_task_spec_sizes_names_and_json_round_trip():
    task = TaskSpec("multilabel", n_labels=3, label_names=("x", "y", "z"))
    assert task.is_multilabel and not task.is_classification and not task.is_regression
    assert task.output_dim == 3 and task.labels == ("x", "y", "z")
    assert TaskSpec.from_dict(json.loads(json.dumps(task.to_dict()))) == task
    assert TaskSpec("multilabel", n_labels=2).labels == ("0", "1")
    # older single-label dicts have no label fields and read the same
    assert "n_labels" not in TaskSpec("classification", 2).to_dict()


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"n_labels": 1}, "n_labels >= 2"),
        ({"n_classes": 4}, "counts labels in n_labels"),
        ({"n_labels": 2, "label_names": ("a",)}, "1 names for 2 labels"),
    ],
)
def test_bad_multilabel_task_specs(kwargs, phrase):
    with pytest.raises(MlmmError, match=phrase):
        TaskSpec("multilabel", **kwargs)


def test_labels_on_a_single_label_task_are_refused():
    with pytest.raises(MlmmError, match="n_labels and label_names are for multilabel"):
        TaskSpec("classification", 2, n_labels=3)
    with pytest.raises(MlmmError, match="one of"):
        TaskSpec("multi-label")


def test_multi_hot_targets_become_float32_and_bools_are_accepted():
    ds = _dataset(np.array([[1, 0, 1], [0, 0, 0]], dtype=np.uint8))
    assert ds.targets.dtype == np.float32 and ds.targets.tolist() == [[1, 0, 1], [0, 0, 0]]
    assert _dataset(np.array([[True, False, True]])).targets.tolist() == [[1, 0, 1]]
    assert "n_labels" in ds.describe() and "task=multilabel/3" in repr(ds)


@pytest.mark.parametrize(
    "targets, phrase",
    [
        (np.array([0, 1, 2]), r"multi-hot matrix \[n_samples, 3\].*got shape \(3,\)"),
        (np.zeros((2, 4)), r"got shape \(2, 4\)"),
        (np.array([[1, 2, 0], [0, 0.5, 1]]), r"must be 0 or 1, got \[0.5, 2.0\] in 2 row"),
        (np.array([[1, np.nan, 0]]), "must be 0 or 1"),
        (np.array([["a", "b", "c"]]), "must be numbers 0/1"),
    ],
)
def test_bad_multilabel_targets_get_one_line_errors(targets, phrase):
    with pytest.raises(MlmmError, match=phrase) as err:
        _dataset(targets)
    assert "\n" not in str(err.value)


def test_iterative_stratification_keeps_a_rare_label_on_both_sides_by_hand():
    targets = np.zeros((20, 3), dtype=np.float32)
    targets[:10, 0] = 1  # half the rows
    targets[[0, 5, 12, 17], 2] = 1  # a rare label: one of its four rows must go to a 25% part
    targets[10:, 1] = 1
    part = iterative_stratification(targets, 0.25, seed=0)
    assert len(part) == 5
    assert targets[part, 2].sum() == 1 and targets[part, 0].sum() in (2, 3)
    assert iterative_stratification(targets, 0.25, seed=0).tolist() == part.tolist()


def test_multilabel_splits_keep_every_label_frequency():
    ds = load_dataset("synthetic-multilabel", n_samples=1000, n_labels=6)
    idx = split_indices(ds, test_size=0.2, val_size=0.1, seed=0)
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(1000))
    whole = ds.targets.mean(0)
    assert abs(len(idx["test"]) - 200) <= 2 and abs(len(idx["val"]) - 80) <= 2
    for part in idx.values():
        assert np.abs(ds.targets[part].mean(0) - whole).max() < 0.01
    assert split_indices(ds, seed=0)["test"].tolist() == idx["test"].tolist()


def test_synthetic_multilabel_generator_shapes_rates_and_seed():
    ds = load_dataset("synthetic-multilabel", n_samples=4000, n_modalities=3, dim=5, n_labels=4)
    assert ds.task == TaskSpec(
        "multilabel", n_labels=4, label_names=("label0", "label1", "label2", "label3")
    )
    assert ds.modality_names == ("m0", "m1", "m2") and ds.targets.shape == (4000, 4)
    np.testing.assert_allclose(ds.targets.mean(0), ds.meta["rates"], atol=0.03)
    again = load_dataset("synthetic-multilabel", n_samples=4000, n_modalities=3, dim=5, n_labels=4)
    np.testing.assert_array_equal(ds.inputs["m1"], again.inputs["m1"])
    with pytest.raises(MlmmError, match="n_labels must be an integer >= 2"):
        load_dataset("synthetic-multilabel", n_labels=1)


def test_from_arrays_takes_a_label_matrix_for_a_multilabel_task():
    from mlmm.data.datasets import from_arrays

    y = np.array([[1, 0, 1], [0, 1, 0]])
    ds = from_arrays({"a": np.zeros((2, 2))}, y, task="multilabel")
    assert ds.task == TaskSpec("multilabel", n_labels=3) and ds.targets.dtype == np.float32
    with pytest.raises(MlmmError, match=r"\[n_samples, n_labels >= 2\], got shape \(2,\)"):
        from_arrays({"a": np.zeros((2, 2))}, [0, 1], task="multilabel")
