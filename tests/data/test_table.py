"""``--modality`` patterns on a user's table (:func:`mlmm.data.table.resolve_modalities`)."""

import re

import numpy as np
import pandas as pd
import pytest

from mlmm.data.table import check_columns, parse_modalities, resolve_modalities
from mlmm.errors import MlmmError


@pytest.fixture
def wide():
    """A wide table: 12 audio columns, 3 video columns, an id, a target."""
    columns = ["id", *[f"a_{i}" for i in range(12)], "v1", "v2", "v10", "y"]
    return pd.DataFrame(np.zeros((3, len(columns))), columns=columns)


def resolve(frame, *items, target="y"):
    return resolve_modalities(frame, parse_modalities(list(items)), target)


def test_patterns_and_names_mix_and_keep_the_table_order(wide):
    got = resolve(wide, "audio=a_*", "video=v?,id", "rest=v1[0-9]")
    assert got["audio"] == [f"a_{i}" for i in range(12)]  # the table's order, not sorted
    assert got["video"] == ["v1", "v2", "id"]  # the items in the order given
    assert got["rest"] == ["v10"]
    check_columns(wide, got, "y")  # what the model records passes the plain-name checks
    # plain names stay as given, in the order given (the existing behaviour)
    assert resolve(wide, "m=v2,v1") == {"m": ["v2", "v1"]}


def test_a_column_named_like_a_pattern_is_that_column():
    frame = pd.DataFrame({"x[1]": [1.0], "x1": [2.0], "y": [0]})
    assert resolve(frame, "m=x[1]") == {"m": ["x[1]"]}
    assert resolve(frame.drop(columns="x[1]"), "m=x[1]") == {"m": ["x1"]}


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        # case-sensitive: the close columns are those it would match ignoring case
        (["m=A_*"], r"--modality m=A_\* matches no column of the table \(close: 'a_0', .*"
         r"'a_4', \.\.\. 7 more\); patterns are case-sensitive"),
        (["m=video*"], r"--modality m=video\* matches no column .*\(close: 'v1', 'v2', 'v10'\)"),
        # none close: a few columns, not the whole list of a wide table
        (["m=zzz*"], r"\(the table's columns: 'id', 'a_0', 'a_1', 'a_2', 'a_3', \.\.\. 12 more\)"),
        (["m=*"], r"--modality m=\* matches the --target column 'y'; narrow the pattern"),
        (["a=a_*", "b=a_1*"], r"column 'a_1' is matched by --modality a=a_\* and by --modality "
         r"b=a_1\*; give each column to one modality"),
        (["a=a_*,a_3"], r"column 'a_3' is matched by --modality a=a_\* and by --modality a=a_3"),
        (["a=a_0", "b=a_?"], r"column 'a_0' is matched by --modality a=a_0 and by --modality b"),
        # was: the two plain items named, not the pattern the message says to narrow
        (["a=a_0", "b=a_0", "c=a_?"], r"'a_0' is matched by --modality a=a_0 and by --modality "
         r"c=a_\?; give"),
    ],
)  # fmt: skip
def test_bad_patterns_are_one_line(wide, items, expected):
    with pytest.raises(MlmmError) as err:
        resolve(wide, *items)
    assert "\n" not in str(err.value) and re.search(expected, str(err.value)), err.value


def test_no_modality_says_how_to_name_them():
    with pytest.raises(MlmmError, match=r"--data needs the modalities: .*--modality audio='a_\*'"):
        parse_modalities(None)


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [
        ({"c": ["a3"]}, r"unknown column 'a3' in --modality c\. Did you mean 'a1'"),
        ({"a": ["a1"], "c": ["a1"]}, r"'a1' is listed in --modality a and in --modality c;"),
        ({"a": ["a1", "a1"]}, r"'a1' is listed twice in --modality a;"),
        ({"c": ["y"]}, r"'y' is the --target and also a feature of --modality c; leave it out"),
    ],
)
def test_the_shared_column_checks_speak_of_the_options(modalities, expected):
    frame = pd.DataFrame({"a1": [1.0], "y": [0]})
    with pytest.raises(MlmmError, match=expected):
        check_columns(frame, modalities, "y")
    with pytest.raises(MlmmError, match=r"unknown --target column 'yy'\. Did you mean 'y'"):
        check_columns(frame, {"a": ["a1"]}, "yy")


def test_an_unknown_column_of_a_wide_table_is_still_one_short_line():
    # was: every column of the table after "Choose from:" (thousands on a wide table)
    frame = pd.DataFrame(np.zeros((2, 500)), columns=[f"c{i:03d}" for i in range(500)])
    with pytest.raises(MlmmError) as err:
        check_columns(frame, {"m": ["zzz"]}, None)
    assert str(err.value).endswith("c019, ... (500 in all).")
    assert len(str(err.value)) < 250


def test_evaluate_on_a_wide_table_without_the_target_is_one_short_line():
    # was: every column of the table after "Choose from:" (the --target check's limit missed it)
    from types import SimpleNamespace

    from mlmm.data.table import table_test_dataset

    trained = SimpleNamespace(info={"data": {}}, target_column="label")
    frame = pd.DataFrame(np.zeros((2, 500)), columns=[f"c{i:03d}" for i in range(500)])
    with pytest.raises(MlmmError, match=r"no target column 'label'") as err:
        table_test_dataset(trained, frame)
    assert str(err.value).endswith("c019, ... (500 in all).") and len(str(err.value)) < 300


def test_a_duplicated_column_name_is_named_as_such_not_as_matched_twice():
    # was: "column 'a_1' is matched by --modality a=a_* and by --modality a=a_*"
    frame = pd.DataFrame(np.zeros((2, 3)), columns=["a_1", "a_1", "y"])
    got = resolve(frame, "a=a_*")
    assert got == {"a": ["a_1"]}
    with pytest.raises(
        MlmmError, match=r"column name 'a_1' \(--modality a\) appears more than once"
    ):
        check_columns(frame, got, "y")
