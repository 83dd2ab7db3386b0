"""ModalitySpec and TaskSpec: validation, derived sizes, dict round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError


@pytest.mark.parametrize(
    "kind, shape, n_features",
    [("vector", (5,), 5), ("sequence", (100, 3), 3), ("image", (1, 8, 6), 1)],
)
def test_n_features_is_the_feature_or_channel_axis(kind, shape, n_features):
    assert ModalitySpec("m", kind, shape).n_features == n_features


def test_shape_is_normalised_to_a_tuple_of_python_ints():
    spec = ModalitySpec("m", "sequence", [np.int64(4), np.int32(2)])
    assert spec.shape == (4, 2)
    assert all(type(s) is int for s in spec.shape)


@pytest.mark.parametrize("name", ["", "has space", "1abc", "a-b", 3, None])
def test_bad_name_is_rejected(name):
    with pytest.raises(MlmmError, match="non-empty identifier"):
        ModalitySpec(name, "vector", (2,))


def test_bad_kind_is_rejected_and_names_the_choices():
    with pytest.raises(MlmmError, match=r"kind must be one of \['image', 'sequence', 'vector'\]"):
        ModalitySpec("m", "tabular", (2,))


@pytest.mark.parametrize(
    "kind, shape",
    [
        ("vector", (2, 3)),  # wrong rank
        ("sequence", (10,)),
        ("image", (3, 8)),
        ("vector", (0,)),  # non-positive size
        ("sequence", (10, -1)),
        ("vector", ()),
    ],
)
def test_bad_shape_is_rejected(kind, shape):
    with pytest.raises(MlmmError, match=f"a {kind} modality needs a shape of"):
        ModalitySpec("m", kind, shape)


@pytest.mark.parametrize("shape", [(2.5,), ("x",), 3, None])
def test_non_integer_or_non_sequence_shape_is_an_mlmm_error(shape):
    with pytest.raises(MlmmError, match="shape"):
        ModalitySpec("m", "vector", shape)


def test_modality_spec_dict_round_trip_through_json():
    spec = ModalitySpec("acc", "sequence", (100, 3))
    d = json.loads(json.dumps(spec.to_dict()))
    assert d == {"name": "acc", "kind": "sequence", "shape": [100, 3]}
    assert ModalitySpec.from_dict(d) == spec


def test_task_spec_classification_and_regression():
    clf = TaskSpec("classification", 3, ("a", "b", "c"))
    assert clf.is_classification and clf.output_dim == 3
    reg = TaskSpec("regression")
    assert not reg.is_classification and reg.output_dim == 1


def test_task_spec_validation():
    with pytest.raises(MlmmError, match="'classification', 'regression', 'multilabel'"):
        TaskSpec("ranking", 2)
    with pytest.raises(MlmmError, match="n_classes >= 2, got 1"):
        TaskSpec("classification", 1)
    with pytest.raises(MlmmError, match="class_names has 2 names for 3 classes"):
        TaskSpec("classification", 3, ("a", "b"))


def test_task_spec_class_names_become_strings_and_round_trip():
    task = TaskSpec("classification", 2, (0, 1))
    assert task.class_names == ("0", "1")
    d = json.loads(json.dumps(task.to_dict()))
    assert TaskSpec.from_dict(d) == task
    assert TaskSpec.from_dict({"kind": "regression"}) == TaskSpec("regression")


def test_unstandardised_modality_round_trips_and_old_dicts_read_as_standardised():
    spec = ModalitySpec("text", "vector", (8,), standardize=False)
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["standardize"] is False and ModalitySpec.from_dict(d) == spec
    assert ModalitySpec.from_dict({"name": "a", "kind": "vector", "shape": [2]}).standardize
    assert spec != ModalitySpec("text", "vector", (8,))


def test_standardize_must_be_a_bool():
    with pytest.raises(MlmmError, match="standardize must be True or False, got 'no'"):
        ModalitySpec("text", "vector", (8,), standardize="no")
