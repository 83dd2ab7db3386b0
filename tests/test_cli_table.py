"""The command line on a user's own table: `mlmm train/evaluate/tune --data FILE`."""

import io
import json
import re
import shlex
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from mlmm import cli
from mlmm.data.table import infer_task, read_table, table_dataset
from mlmm.errors import MlmmError

MODALITIES = ["--modality", "a=a1,a2", "--modality", "b=b1,b2,b3"]


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def make_table(n: int, seed: int, regression: bool = False) -> pd.DataFrame:
    """Two modalities that both carry the class; ``b`` is missing (all its cells empty) in
    about a third of the rows; an ``id`` column that no modality uses."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = rng.normal(size=(n, 2)) + 2 * y[:, None]
    b = rng.normal(size=(n, 3)) + 2 * y[:, None]
    frame = pd.DataFrame(
        {"id": np.arange(n), "a1": a[:, 0], "a2": a[:, 1], "b1": b[:, 0], "b2": b[:, 1]}
    )
    frame["b3"] = b[:, 2]
    frame["label"] = a.sum(1) + 0.5 if regression else np.where(y == 1, "sick", "well")
    frame.loc[rng.random(n) < 0.3, ["b1", "b2", "b3"]] = np.nan
    return frame


@pytest.fixture
def tables(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    make_table(120, 0).to_csv(train, index=False)
    make_table(60, 1).to_csv(test, index=False)
    return train, test


def train_args(data, out, *extra):
    return ["train", "--data", data, "--target", "label", *MODALITIES, "--out", out, *extra]


def test_train_evaluate_predict_on_tables(monkeypatch, capsys, tmp_path, tables):
    train, test = tables
    out = tmp_path / "model"
    args = train_args(train, out, "--method", "late-fusion", "--epochs", "3", "--quiet")
    code, printed, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "120 rows, classification on 'label' (2 classes)" in " ".join(printed.split())
    config = json.loads((out / "config.json").read_text())
    # the model knows its columns and target: evaluate and predict need no --modality
    assert config["columns"] == {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]}
    assert config["target_column"] == "label"
    assert config["info"]["data"]["source"] == "train.csv"

    scores = tmp_path / "scores.csv"
    code, printed, err = run(
        monkeypatch, capsys, "evaluate", out, "--data", test, "--missing", "none", "--out", scores
    )
    assert code == 0, err
    assert "scored on" in printed and "60 rows" in printed
    table = pd.read_csv(scores)
    overall = table[(table.scope == "overall") & (table.metric == "accuracy")]
    assert len(overall) == 1 and overall.value.iloc[0] > 0.8  # the classes are 2 std apart
    # the b-subset is scored on the rows where b is present in the test table only
    test_frame = pd.read_csv(test)
    b_rows = table[(table.scope == "subset") & (table.subset == "b")].n.iloc[0]
    assert b_rows == int(test_frame[["b1", "b2", "b3"]].notna().all(axis=1).sum())
    # a test table in another column order, separated by ';', with a to_csv index and b empty
    # in every row scores as the columns say: the rows without b score as before
    other = test_frame[test_frame.columns[::-1]].assign(b1=np.nan, b2=np.nan, b3=np.nan)
    other.to_csv(tmp_path / "other.csv", sep=";")
    args = [
        "evaluate",
        out,
        "--data",
        tmp_path / "other.csv",
        "--out",
        tmp_path / "other-scores.csv",
    ]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    subsets = pd.read_csv(tmp_path / "other-scores.csv").query("scope == 'subset'")
    assert sorted(subsets.subset.unique()) == ["a", "a+b"]  # no row has b: no "b" subset
    only_a = subsets[subsets.subset == "a"].reset_index(drop=True)
    before = table[(table.scope == "subset") & (table.subset == "a")].reset_index(drop=True)
    pd.testing.assert_frame_equal(only_a, before)
    np.testing.assert_allclose(subsets[subsets.subset == "a+b"].value, only_a.value)

    code, printed, err = run(monkeypatch, capsys, "predict", out, "--input", test)
    assert code == 0, err
    predictions = pd.read_csv(io.StringIO(printed))
    assert len(predictions) == 60 and set(predictions.prediction) <= {"sick", "well"}
    # each row's trust: the validation score of its modalities, recorded by the estimator's fit
    scores = json.loads((out / "config.json").read_text())["validation"]
    expected = [scores[f"{pattern}/accuracy"] for pattern in predictions.modalities]
    np.testing.assert_allclose(predictions.validation_accuracy, expected)
    absent_b = test_frame[["b1", "b2", "b3"]].isna().all(axis=1).to_numpy()
    assert (predictions.modalities[absent_b] == "a").all()

    # the same seed trains the same model
    again = tmp_path / "again"
    args = train_args(train, again, "--method", "late-fusion", "--epochs", "3", "--quiet")
    assert run(monkeypatch, capsys, *args)[0] == 0
    code, printed_again, _ = run(monkeypatch, capsys, "predict", again, "--input", test)
    assert code == 0 and printed_again == printed


def test_a_modality_is_absent_where_all_its_cells_are_empty(tables):
    frame = pd.read_csv(tables[0])
    frame.loc[0, ["a1", "a2"]] = np.nan  # both of a: absent
    data = table_dataset(frame, {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]}, "label")
    expected = ~frame[["b1", "b2", "b3"]].isna().all(axis=1).to_numpy()
    assert data.observed[:, 1].tolist() == expected.tolist()
    assert not data.observed[0, 0] and data.observed[1:, 0].all()
    assert data.task.class_names == ("sick", "well")


def test_regression_is_inferred_from_fractional_targets(monkeypatch, capsys, tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    make_table(80, 0, regression=True).to_csv(train, index=False)
    make_table(40, 1, regression=True).to_csv(test, index=False)
    out = tmp_path / "model"
    args = train_args(train, out, "--method", "lda-em", "--quiet")
    code, printed, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "regression on 'label'" in " ".join(printed.split())
    code, printed, err = run(monkeypatch, capsys, "evaluate", out, "--data", test)
    assert code == 0, err
    assert "rmse" in printed


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--dataset", "synthetic"], r"--dataset .* and --data .* exclude each other"),
        (["--target", "lable"], r"unknown --target column 'lable'. Did you mean 'label'"),
        (["--modality", "c=a3"], r"unknown column 'a3' in --modality c. Did you mean .*'a1'"),
        (["--modality", "c=a1"], r"'a1' is listed in --modality a and in --modality c"),
        (["--modality", "c=label"], r"'label' is the --target and also a feature"),
        (["--modality", "c"], r"--modality is written NAME=COL1,COL2"),
        (["--devices", "2"], r"--devices applies to --dataset, not to a table"),
        # was: accepted and ignored (it times the processes of --devices or torchrun)
        (["--rendezvous-timeout", "60"], r"--rendezvous-timeout applies to --dataset, not to"),
        (["--modality", "c=x_*"], r"--modality c=x_\* matches no column of the table"),
        (["--modality", "c=a*"], r"'a1' is matched by --modality a=a1 and by --modality c=a\*"),
        (["--modality", "c=l*"], r"--modality c=l\* matches the --target column 'label'"),
        (["--task", "regression"], r"--task regression needs a numeric target"),
        (["--partial", "impute"], r"--partial must be error or missing"),
        (["--missing", "none=>mcar:0.5"], r"sets test conditions, but --data trains on the whole"),
    ],
)
def test_bad_table_options_are_one_line(monkeypatch, capsys, tmp_path, tables, change, expected):
    args = train_args(tables[0], tmp_path / "m", "--method", "lda-em", *change)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(expected, err), err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("words", r"column 'a2' of --modality a is not numeric \(e.g. 'high' in row 0\)"),
        ("one_class", r"target column 'label' holds 1 class \('well'\); classification needs"),
        # was: "... or set on_empty='prior'", an option of the estimators, not of --data
        ("empty_row", r"2 row\(s\) have no modality present \(every column .* rows: \[4, 9\]\)"),
        # was: "cannot split 40 samples into a test part of 10%: ... too few members are: [2]"
        ("single_row_class", r"class\(es\) \['rare'\] of target column 'label' have a single row"),
        ("partial", r"modality 'b' has 1 row\(s\) where only some of its columns are empty"),
        # was: "y has 2 missing label(s)", the estimator's name for it
        (
            "no_label",
            r"target column 'label' has 2 empty or infinite value\(s\) \(first rows: \[3, 7\]",
        ),
    ],
)
def test_bad_tables_are_one_line(monkeypatch, capsys, tmp_path, edit, expected):
    frame = make_table(40, 0)
    if edit == "words":
        frame["a2"] = "high"
    elif edit == "one_class":
        frame["label"] = "well"
    elif edit == "empty_row":
        frame.loc[[4, 9], ["a1", "a2", "b1", "b2", "b3"]] = np.nan
    elif edit == "single_row_class":
        frame.loc[5, "label"] = "rare"
    elif edit == "no_label":
        frame.loc[[3, 7], "label"] = np.nan
    else:
        frame.loc[frame.b2.notna().idxmax(), "b1"] = np.nan
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    args = train_args(path, tmp_path / "m", "--method", "lda-em")
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(expected, err), err
    if edit == "partial":  # the fix the message names works
        code, _, err = run(monkeypatch, capsys, *args, "--partial", "missing", "--quiet")
        assert code == 0, err
        # and predict reads the table by the same rule (was: refused, naming partial='missing')
        code, printed, err = run(monkeypatch, capsys, "predict", tmp_path / "m", "--input", path)
        assert code == 0, err
        row = frame.b2.notna().idxmax()
        assert pd.read_csv(io.StringIO(printed)).modalities[row] == "a"


def test_modality_patterns_are_matched_once_and_recorded(monkeypatch, capsys, tmp_path, tables):
    train, test = tables
    out = tmp_path / "model"
    args = ["train", "--data", train, "--target", "label", "--modality", "a=a*", "--modality"]
    args += ["b=b[0-9]", "--out", out, "--method", "lda-em", "--quiet"]
    code, printed, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "modalities (columns): a 2, b 3" in " ".join(printed.split())
    config = json.loads((out / "config.json").read_text())
    assert config["columns"] == {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]}
    # a new table is read by the recorded names: a column the pattern would match is not used
    frame = pd.read_csv(test)
    frame["a3"] = 1.0
    frame.to_csv(tmp_path / "more.csv", index=False)
    code, printed, err = run(monkeypatch, capsys, "evaluate", out, "--data", tmp_path / "more.csv")
    assert code == 2 and "extra 1 column(s) ('a3')" in err  # refused, not read as a's


def test_torchrun_does_not_train_a_table_in_each_process(monkeypatch, capsys, tmp_path, tables):
    # was: each process trained the whole table alone and wrote the same --out
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    code, _, err = run(
        monkeypatch, capsys, *train_args(tables[0], tmp_path / "m", "--method", "lda-em")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--data trains in one process, but torchrun started 2" in err
    assert not (tmp_path / "m").exists()


def test_data_and_dataset_are_needed_once(monkeypatch, capsys, tmp_path, tables):
    code, _, err = run(monkeypatch, capsys, "train", "--method", "lda-em", "--out", tmp_path / "m")
    assert code == 2 and "give --dataset NAME" in err and "--data FILE" in err
    code, _, err = run(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--target", "y", "--method",
        "lda-em", "--out", tmp_path / "m",
    )  # fmt: skip
    assert code == 2 and "--target describes a table; give it with --data FILE" in err
    args = ["train", "--data", tmp_path / "nope.csv", "--target", "label", *MODALITIES]
    code, _, err = run(monkeypatch, capsys, *args, "--method", "lda-em", "--out", tmp_path / "m")
    assert code == 2 and "--data" in err and "is not a file" in err
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\n1\n")
    args = ["train", "--data", tsv, "--target", "label", *MODALITIES]
    code, _, err = run(monkeypatch, capsys, *args, "--method", "lda-em", "--out", tmp_path / "m")
    assert code == 2 and "give a .csv or .parquet table" in err


def test_evaluate_data_checks_the_table_against_the_model(monkeypatch, capsys, tmp_path, tables):
    train, test = tables
    out = tmp_path / "model"
    code, _, err = run(monkeypatch, capsys, *train_args(train, out, "--method", "lda-em"))
    assert code == 0, err
    unseen = pd.read_csv(test).replace({"label": {"sick": "unsure"}})
    unseen.to_csv(tmp_path / "unseen.csv", index=False)
    code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", tmp_path / "unseen.csv")
    assert code == 2 and "holds label(s) ['unsure'] the model never saw" in err
    pd.read_csv(test).drop(columns="label").to_csv(tmp_path / "unlabelled.csv", index=False)
    code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", tmp_path / "unlabelled.csv")
    assert code == 2 and "the table has no target column 'label'" in err
    code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", test, "--out", test)
    assert code == 2 and "--out" in err  # the user's table is never the output
    # was: a traceback (ValueError: could not convert string to float), and booleans scored
    # as 1.0/0.0 where mlmm predict refuses them
    for column, value, message in [
        ("a1", "abc", "column 'a1' holds text, e.g. 'abc' in row 2"),
        ("b1", True, "column 'b1' holds booleans"),
    ]:
        frame = pd.read_csv(test)
        frame[column] = frame[column].astype(object)
        frame.loc[2, column] = value
        frame[column] = frame[column].notna() if value is True else frame[column]
        frame.to_csv(tmp_path / "bad.csv", index=False)
        code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", tmp_path / "bad.csv")
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    frame = pd.read_csv(test)
    frame.loc[frame.b2.notna().idxmax(), "b1"] = np.nan  # b partly empty in one row
    frame.to_csv(tmp_path / "partial.csv", index=False)
    code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", tmp_path / "partial.csv")
    assert code == 2 and "only some of its columns are empty" in err
    assert "or train with --partial missing" in err  # the way out, not only "fill them"
    assert len(pd.read_csv(test)) == 60

    builtin = tmp_path / "builtin"
    args = ["train", "--dataset", "synthetic", "--dataset-param", "n_samples=200"]
    code, _, err = run(monkeypatch, capsys, *args, "--method", "lda-em", "--out", builtin)
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "evaluate", builtin, "--data", test)
    assert code == 2 and "was not trained on a table" in err


def test_parquet_tables_and_the_missing_extra(monkeypatch, capsys, tmp_path, tables):
    pytest.importorskip("pyarrow")
    parquet = tmp_path / "train.parquet"
    pd.read_csv(tables[0]).to_parquet(parquet)
    code, _, err = run(
        monkeypatch, capsys, *train_args(parquet, tmp_path / "m", "--method", "lda-em")
    )
    assert code == 0, err
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    code, _, err = run(
        monkeypatch, capsys, *train_args(parquet, tmp_path / "n", "--method", "lda-em")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs pyarrow" in err and "pip install 'mlmm[parquet]'" in err


def test_task_regression_on_booleans_says_booleans():
    # was: "column 'y' holds text (e.g. 'True')"
    with pytest.raises(MlmmError, match=r"column 'y' holds booleans \(e.g. 'True'\)"):
        infer_task(pd.Series([True, False, True], name="y"), "regression")


def test_a_parquet_column_of_nulls_is_empty_not_text(tmp_path, tables):
    # was: "column 'b3' of --modality c is not numeric" (with no example: there is no value),
    # though a column empty in every row is a modality absent in every row, as in a CSV
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    frame = pd.read_csv(tables[0])
    nulls = pa.Table.from_pandas(frame.drop(columns="b3")).append_column("b3", pa.nulls(120))
    pq.write_table(nulls, tmp_path / "t.parquet")
    read = read_table(tmp_path / "t.parquet")
    assert read.b3.dtype == object  # pyarrow's null type reads as None, not as NaN
    data = table_dataset(read, {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["b3"]}, "label")
    assert not data.observed[:, 2].any()
    assert data.observed[:, 1].tolist() == frame.b1.notna().tolist()


def test_tune_on_a_table_then_train_with_its_params(monkeypatch, capsys, tmp_path, tables):
    pytest.importorskip("optuna")
    train, _ = tables
    best = tmp_path / "best.yaml"
    code, printed, err = run(
        monkeypatch, capsys, "tune", "--data", train, "--target", "label", *MODALITIES,
        "--method", "late-fusion", "--trials", "1", "--epochs", "2", "--folds", "2",
        "--store", tmp_path / "tune.db", "--params-out", best,
    )  # fmt: skip
    assert code == 0, err
    assert "(120 training samples, 2 fold(s)): 1 trials" in " ".join(printed.split())
    # the train command it suggests carries the table's options: pasted, it trains
    line = " ".join(printed.split("wrote ", 1)[1].split("\n"))  # a long line may be wrapped
    suggested = shlex.split(line.split(": ", 1)[1].strip().removesuffix(" ..."))
    assert suggested[:4] == ["mlmm", "train", "--data", str(train)]
    args = [*suggested[1:], "--out", tmp_path / "m", "--epochs", "2", "--quiet"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    # the tuned point is the one trained (code 0 alone held with the file ignored)
    tuned = yaml.safe_load(best.read_text())
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert tuned["params"].items() <= config["hyperparameters"].items()
    assert config["trainer"]["lr"] == tuned["trainer"]["lr"]
    assert config["trainer"]["max_epochs"] == 2  # given on the command line: it wins


def test_auto_on_a_table(monkeypatch, capsys, tmp_path, tables):
    train, test = tables
    out = tmp_path / "auto"
    args = train_args(train, out, "--method", "auto", "--param", "budget=fast", "--quiet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, printed, err = run(monkeypatch, capsys, *args, "--epochs", "5")
    assert code == 0, err
    # --epochs is ignored by auto, as its help says (was: the estimator's Python warning)
    assert not [w for w in caught if "ignores max_epochs" in str(w.message)]
    assert "inner cross-validation leaderboard" in printed
    assert not (tmp_path / ".auto.auto-cache").exists()  # its own cache is removed once saved
    code, printed, err = run(monkeypatch, capsys, "evaluate", out, "--data", test)
    assert code == 0, err
    assert "auto" in printed and "accuracy" in printed


def test_auto_on_a_table_says_in_the_cli_line_that_it_ignores_epochs(
    monkeypatch, capsys, tmp_path, tables
):
    """`mlmm train --data ... --method auto --epochs 3` skipped train's one-line warning (the
    --data branch returned before it) and passed --epochs on to the estimator, whose Python
    warning (a file and line, advice in Python's words: method_params=) was all it said."""
    import functools
    import warnings

    import mlmm.tune.auto
    from mlmm.errors import MlmmError

    @functools.wraps(mlmm.tune.auto.fit_auto)  # its options are checked by its signature
    def stop_before_training(*args, **kwargs):
        raise MlmmError("stopped before training")

    monkeypatch.setattr(mlmm.tune.auto, "fit_auto", stop_before_training)
    args = train_args(tables[0], tmp_path / "auto", "--method", "auto", "--epochs", "3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert err.splitlines() == [
        "warning: --epochs 3 is ignored with --method auto: its budget sets the deep members' "
        "epochs; cap them with --param max_epochs=3",
        "error: stopped before training",
    ]
    assert not [w for w in caught if "max_epochs" in str(w.message)]


@pytest.mark.parametrize("labels", ["whole numbers", "booleans"])
def test_number_and_boolean_labels_map_back_to_the_model_classes(
    monkeypatch, capsys, tmp_path, tables, labels
):
    """The estimator encodes labels 1/2 (or False/True) as classes 0/1: evaluate --data maps
    the test table's labels through the model's classes, not as class indices."""
    for path in tables:
        frame = pd.read_csv(path)
        sick = frame.label == "sick"
        frame["label"] = sick.astype(int) + 1 if labels == "whole numbers" else sick
        frame.to_csv(tmp_path / path.name, index=False)
    train, test = (tmp_path / path.name for path in tables)
    out = tmp_path / "model"
    code, _, err = run(monkeypatch, capsys, *train_args(train, out, "--method", "lda-em"))
    assert code == 0, err
    scores = tmp_path / "scores.csv"
    code, _, err = run(monkeypatch, capsys, "evaluate", out, "--data", test, "--out", scores)
    assert code == 0, err
    table = pd.read_csv(scores)
    accuracy = table[(table.scope == "overall") & (table.metric == "accuracy")].value.iloc[0]
    assert accuracy > 0.8  # labels read as indices would put class 2 out of range or flip
    code, printed, err = run(monkeypatch, capsys, "predict", out, "--input", test)
    assert code == 0, err
    predicted = pd.read_csv(io.StringIO(printed)).prediction
    assert set(predicted.astype(str)) <= (
        {"1", "2"} if labels == "whole numbers" else {"True", "False"}
    )


def test_killed_train_on_a_table_resumes_and_ends_as_an_uninterrupted_one(
    tmp_path, tables, slow_hemis_plugin, killed_mid_training
):
    """kill -9 mid-training, then the same command: it resumes from the checkpoint kept beside
    --out, removes it once saved, and saves the model an uninterrupted training gives."""
    import os
    import subprocess
    from pathlib import Path

    import torch

    import mlmm
    from mlmm.data.table import fit_table
    from mlmm.train import resume
    from mlmm.train.checkpoint import load_artifact

    slow_hemis_plugin(0.05)
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "mlmm", "--plugin", "slow_hemis_plugin",
        *map(str, train_args(tables[0], out)), "--method", "slow-hemis", "--epochs", "30",
        "--seed", "0", "--quiet",
    ]  # fmt: skip
    source = str(Path(mlmm.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), source])}
    folder = resume.beside(out, "checkpoint")
    # the first checkpoint follows epoch 1, the next ones wait 20 times as long as a write took;
    # the estimator writes into its fit folder
    pattern = f"fit-*/{resume.STATE_FILE}"
    written = killed_mid_training(
        command, tmp_path, env, folder, pattern, epochs=2, timeout=300, poll=0.02
    )
    assert not out.exists() and len(list(folder.glob(f"fit-*/{resume.STATE_FILE}"))) == 1

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"resuming from epoch {written} of 30 " in done.stderr
    assert not folder.exists()  # removed once the model is saved

    modalities = {"a": ["a1", "a2"], "b": ["b1", "b2", "b3"]}
    reference = fit_table(  # slow-hemis without the sleep: the same weights from the same seed
        read_table(tables[0]), modalities, "label", "hemis", seed=0,
        trainer={"max_epochs": 30, "progress": False},
    )  # fmt: skip
    config, weights = load_artifact(out)
    expected = reference.model.state_dict()
    assert weights.keys() == expected.keys()
    for key in weights:
        assert torch.equal(weights[key], expected[key].cpu()), key
    assert [
        {k: v for k, v in row.items() if k != "seconds"} for row in config["histories"][0]["epochs"]
    ] == [{k: v for k, v in row.items() if k != "seconds"} for row in reference.histories[0].epochs]


def test_interrupted_train_on_a_table_keeps_its_checkpoint(monkeypatch, capsys, tmp_path, tables):
    """SIGTERM (Ctrl-C stops the same way) after epoch 3: one line saying the same command
    resumes, the checkpoint kept beside --out; the same command resumes, then removes it."""
    import functools
    import signal

    from mlmm import estimator
    from mlmm.train import resume
    from mlmm.train.trainer import Trainer

    def on_epoch(stage, row):
        if row["epoch"] == 3:
            cli._stop(signal.SIGTERM, None)  # what the CLI's SIGTERM handler does

    made = functools.partial(Trainer, checkpoint_every=0, on_epoch=on_epoch)
    monkeypatch.setattr(estimator, "Trainer", made)
    out = tmp_path / "model"
    args = [*train_args(tables[0], out), "--method", "hemis", "--epochs", "6", "--quiet"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 128 + signal.SIGTERM
    assert err.startswith("interrupted by SIGTERM; no model was saved")
    assert "resumes from its last training checkpoint" in err
    folder = resume.beside(out, "checkpoint")
    assert len(list(folder.glob(f"fit-*/{resume.STATE_FILE}"))) == 1 and not out.exists()

    monkeypatch.setattr(estimator, "Trainer", Trainer)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "resuming from epoch 2 of 6" in err  # epoch 3 stopped before its checkpoint
    assert out.is_dir() and not folder.exists()
