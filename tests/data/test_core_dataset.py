"""MultimodalDataset: the data contract (validation, zero-filling, views)."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

SPECS = (ModalitySpec("a", "vector", (2,)), ModalitySpec("s", "sequence", (3, 2)))
CLF = TaskSpec("classification", 3)


def inputs(n: int = 4) -> dict[str, np.ndarray]:
    a = np.arange(n * 2, dtype=float).reshape(n, 2) + 1.0
    s = np.arange(n * 6, dtype=float).reshape(n, 3, 2) + 100.0
    return {"a": a, "s": s}


def make(**kw) -> MultimodalDataset:
    args = {"specs": SPECS, "task": CLF, "inputs": inputs(), "targets": np.array([0, 1, 2, 0])}
    args.update(kw)
    return MultimodalDataset(**args)


def test_valid_dataset_basic_views():
    ds = make()
    assert ds.n_samples == len(ds) == 4
    assert ds.modality_names == ("a", "s")
    assert ds.n_modalities == 2
    assert ds.observed.dtype == bool and ds.observed.all()
    assert ds.inputs["a"].dtype == np.float32 and ds.targets.dtype == np.int64
    assert ds.spec("s") is SPECS[1]
    assert ds.modality_index("s") == 1
    np.testing.assert_array_equal(ds.inputs["a"], inputs()["a"])


def test_absent_rows_are_zero_filled_and_nan_is_fine_there():
    raw = inputs()
    raw["a"][1] = np.nan
    raw["s"][2] = np.inf
    observed = np.array([[1, 1], [0, 1], [1, 0], [1, 1]], dtype=bool)
    ds = make(inputs=raw, observed=observed)
    assert (ds.inputs["a"][1] == 0).all() and (ds.inputs["s"][2] == 0).all()
    np.testing.assert_array_equal(ds.inputs["a"][[0, 2, 3]], inputs()["a"][[0, 2, 3]])
    np.testing.assert_array_equal(ds.inputs["s"][[0, 1, 3]], inputs()["s"][[0, 1, 3]])


def test_the_callers_arrays_are_not_modified():
    raw = inputs()
    before = raw["a"].copy()
    make(inputs=raw, observed=np.array([[0, 1], [1, 1], [1, 1], [1, 1]], dtype=bool))
    np.testing.assert_array_equal(raw["a"], before)


def test_integer_observed_mask_is_accepted_other_values_rejected():
    ds = make(observed=np.array([[1, 0], [1, 1], [0, 1], [1, 1]]))
    assert ds.observed.dtype == bool and ds.observed.sum() == 6
    with pytest.raises(MlmmError, match="observed must be boolean"):
        make(observed=np.full((4, 2), 2))


def test_observed_shape_mismatch():
    with pytest.raises(MlmmError, match=r"observed must have shape .* = \(4, 2\) .*got \(4, 3\)"):
        make(observed=np.ones((4, 3), bool))


def test_shape_mismatch_vs_spec_names_modality_and_shapes():
    raw = inputs()
    raw["s"] = raw["s"].reshape(4, 2, 3)
    with pytest.raises(
        MlmmError, match=r"modality 's' has shape \(4, 2, 3\), expected \(4, 3, 2\)"
    ):
        make(inputs=raw)
    raw = inputs()
    raw["a"] = raw["a"][:3]  # wrong number of samples
    with pytest.raises(MlmmError, match=r"modality 'a' has shape \(3, 2\), expected \(4, 2\)"):
        make(inputs=raw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_in_a_present_row_is_rejected(bad):
    raw = inputs()
    raw["s"][2, 1, 0] = bad
    with pytest.raises(
        MlmmError, match=r"'s' has NaN or inf in 1 sample\(s\) marked present \(first: \[2\]\)"
    ):
        make(inputs=raw)


def test_the_block_wise_finiteness_check_sees_every_row_of_every_block():
    # rows are checked 1,024 at a time: the rows at the block edges and in the last, short
    # block are caught, and NaN in rows marked absent is still allowed (zero-filled)
    n = 2100
    raw, targets = inputs(n), np.zeros(n, dtype=int)
    observed = np.ones((n, 2), dtype=bool)
    observed[[5, 1500], 1] = False
    raw["s"][[5, 1500]] = np.nan
    ds = make(inputs=raw, targets=targets, observed=observed)
    assert not ds.inputs["s"][[5, 1500]].any()
    for row in (1023, 1024, 2047, 2048, 2099):
        bad = inputs(n)
        bad["s"][row, 2, 1] = np.inf
        with pytest.raises(MlmmError, match=rf"'s' has NaN or inf in 1 sample.*\[{row}\]"):
            make(inputs=bad, targets=targets)
        bad["s"][row, 2, 1] = 1e39  # finite in float64 only
        with pytest.raises(MlmmError, match=rf"'s' has values too large .*first: \[{row}\]"):
            make(inputs=bad, targets=targets)


def test_an_inf_row_given_to_predict_is_told_how_to_mark_it_absent():
    import mlmm
    from mlmm.testing import contract_dataset
    from mlmm.train import Trainer

    data = contract_dataset(n_samples=40)
    model = mlmm.create_method("zero-impute", data.specs, data.task)
    trained = Trainer(max_epochs=1, progress=False).fit(model, data)
    X = {"a": np.full((2, *data.inputs["a"].shape[1:]), np.inf)}
    # was "mark them absent in observed": a dict given to predict has no observed
    with pytest.raises(MlmmError, match="a row that is NaN throughout for from_arrays and pre"):
        trained.predict(X)


def test_non_numeric_modality_is_rejected():
    raw = inputs()
    raw["a"] = raw["a"].astype(str)
    with pytest.raises(MlmmError, match="must be numeric"):
        make(inputs=raw)


def test_empty_sample_needs_allow_empty():
    observed = np.array([[1, 1], [0, 0], [1, 0], [0, 0]], dtype=bool)
    with pytest.raises(
        MlmmError, match=r"2 sample\(s\) have no modality present \(first: \[1, 3\]\)"
    ):
        make(observed=observed)
    ds = make(observed=observed, allow_empty=True)
    assert (ds.inputs["a"][[1, 3]] == 0).all() and (ds.inputs["s"][[1, 3]] == 0).all()


@pytest.mark.parametrize("labels", [[0, 1, 3, 0], [0, -1, 2, 0]])
def test_labels_out_of_range(labels):
    with pytest.raises(MlmmError, match=r"labels must be in 0\.\.2"):
        make(targets=np.array(labels))


def test_out_of_range_message_lists_the_bad_labels():
    with pytest.raises(MlmmError, match=r"got \[5, 7\]"):
        make(targets=np.array([7, 1, 5, 0]))


@pytest.mark.parametrize(
    "labels",
    [np.array([0.0, 1.5, 2.0, 0.0]), np.array(["x", "y", "x", "y"]), np.array([0, 1, np.nan, 0])],
)
def test_non_integer_classification_labels(labels):
    with pytest.raises(MlmmError, match="classification targets must be integers"):
        make(targets=labels)


def test_integral_float_labels_are_accepted_as_int64():
    ds = make(targets=np.array([0.0, 1.0, 2.0, 0.0]))
    assert ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.targets, [0, 1, 2, 0])


def test_finite_values_beyond_float32_are_named_as_too_large_not_nan():
    raw = inputs()
    raw["a"][1, 0] = 1e39  # finite in float64, inf in float32
    with pytest.raises(MlmmError, match=r"'a' has values too large for float32 .*first: \[1\]"):
        make(inputs=raw)
    with pytest.raises(MlmmError, match="regression targets are too large for float32"):
        make(task=TaskSpec("regression"), targets=np.array([0.5, 1e39, 2.0, 3.0]))


def test_regression_targets_must_be_finite():
    ds = make(task=TaskSpec("regression"), targets=np.array([0.5, -1.0, 2.0, 3.0]))
    assert ds.targets.dtype == np.float32
    with pytest.raises(MlmmError, match="regression targets contain NaN or inf"):
        make(task=TaskSpec("regression"), targets=np.array([0.5, np.nan, 2.0, 3.0]))


def test_regression_targets_must_be_numeric():
    with pytest.raises(MlmmError, match="regression targets must be numeric"):
        make(task=TaskSpec("regression"), targets=np.array(["a", "b", "c", "d"]))


def test_targets_must_be_one_dimensional():
    with pytest.raises(MlmmError, match=r"targets must be 1-D .* got shape \(4, 1\)"):
        make(targets=np.zeros((4, 1), int))


def test_empty_dataset():
    empty = {"a": np.zeros((0, 2)), "s": np.zeros((0, 3, 2))}
    with pytest.raises(MlmmError, match="the dataset is empty"):
        make(inputs=empty, targets=np.array([], dtype=int))


def test_unknown_modality_key_suggests_the_closest():
    raw = inputs()
    raw["aa"] = raw["a"]
    with pytest.raises(MlmmError, match="unknown modality 'aa'. Did you mean 'a'"):
        make(inputs=raw)


def test_missing_modality_key_names_the_fix():
    raw = inputs()
    del raw["s"]
    with pytest.raises(MlmmError, match=r"inputs has no array for modality 's'; add inputs\['s'\]"):
        make(inputs=raw)


def test_inputs_must_be_a_dict():
    with pytest.raises(MlmmError, match="inputs must be a dict"):
        make(inputs=[inputs()["a"], inputs()["s"]])


def test_duplicate_and_missing_specs():
    with pytest.raises(MlmmError, match="modality names must be unique"):
        make(specs=(SPECS[0], ModalitySpec("a", "vector", (3,))))
    with pytest.raises(MlmmError, match="at least one modality spec"):
        make(specs=(), inputs={})


def test_spec_lookup_of_unknown_name():
    with pytest.raises(MlmmError, match="unknown modality 'S'"):
        make().spec("S")


def test_subset_takes_rows_in_the_given_order():
    observed = np.array([[1, 1], [0, 1], [1, 0], [1, 1]], dtype=bool)
    ds = make(observed=observed)
    sub = ds.subset([2, 0])
    assert sub.n_samples == 2
    np.testing.assert_array_equal(sub.targets, [2, 0])
    np.testing.assert_array_equal(sub.observed, observed[[2, 0]])
    np.testing.assert_array_equal(sub.inputs["a"], ds.inputs["a"][[2, 0]])
    np.testing.assert_array_equal(sub.inputs["s"], ds.inputs["s"][[2, 0]])
    by_mask = ds.subset(np.array([False, True, False, True]))
    np.testing.assert_array_equal(by_mask.targets, [1, 0])
    assert sub.specs == ds.specs and sub.task == ds.task and sub.name == ds.name


def test_with_presence_narrows_and_zero_fills():
    ds = make()
    present = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], dtype=bool)
    narrowed = ds.with_presence(present)
    np.testing.assert_array_equal(narrowed.observed, present)
    assert (narrowed.inputs["s"][0] == 0).all() and (narrowed.inputs["a"][2] == 0).all()
    np.testing.assert_array_equal(narrowed.inputs["a"][0], ds.inputs["a"][0])
    assert ds.observed.all(), "the original dataset must not change"


def test_with_presence_cannot_add_modalities():
    ds = make(observed=np.array([[1, 0], [1, 1], [1, 1], [1, 1]], dtype=bool))
    with pytest.raises(MlmmError, match="cannot mark present a modality that was never observed"):
        ds.with_presence(np.ones((4, 2), bool))


def test_with_presence_shape_and_empty_rows():
    ds = make()
    with pytest.raises(MlmmError, match=r"presence mask shape \(4, 1\)"):
        ds.with_presence(np.ones((4, 1), bool))
    present = np.array([[0, 0], [1, 1], [1, 1], [1, 1]], dtype=bool)
    with pytest.raises(MlmmError, match="no modality present"):
        ds.with_presence(present)
    assert ds.with_presence(present, allow_empty=True).allow_empty


def test_describe_reports_observed_rates():
    ds = make(observed=np.array([[1, 0], [1, 1], [1, 0], [1, 0]], dtype=bool))
    d = ds.describe()
    assert d["n_samples"] == 4 and d["n_classes"] == 3 and d["task"] == "classification"
    assert d["observed_rate"] == {"a": 1.0, "s": 0.25}
    assert d["modalities"] == {"a": "vector[2]", "s": "sequence[3, 2]"}
