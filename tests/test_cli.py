"""The command line, as a user runs it: exit codes, one-line errors, artifacts on disk."""

import re
import sqlite3
import sys
import time

import pytest
import torch

from mlmm import cli


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_lists_datasets_and_methods_with_their_family(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "datasets")
    assert code == 0
    for name in ("handwritten", "synthetic", "basicmotions"):
        assert name in out
    code, out, _ = run(monkeypatch, capsys, "methods")
    assert code == 0
    for name, family in (
        ("hemis", "representation"),
        ("late-fusion", "combination"),
        ("zero-impute", "imputation"),
    ):
        assert name in out and family in out


def test_train_then_evaluate_writes_and_reads_an_artifact(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run(
        monkeypatch,
        capsys,
        "train",
        "--dataset",
        "synthetic",
        "--dataset-param",
        "n_samples=400",
        "--method",
        "hemis",
        "--missing",
        "mcar:0.5",
        "--epochs",
        "2",
        "--out",
        str(out_dir),
        "--quiet",
    )
    assert code == 0, err
    assert (out_dir / "config.json").exists() and (out_dir / "model.safetensors").exists()
    flat = " ".join(out.split())  # the console wraps long lines
    assert "saved model" in flat and "fraction of observed (sample, modality) slots" in flat
    csv = tmp_path / "table.csv"
    code, out, err = run(
        monkeypatch,
        capsys,
        "evaluate",
        str(out_dir),
        "--missing",
        "mcar:0,mcar:0.5",
        "--out",
        str(csv),
    )
    assert code == 0, err
    import pandas as pd

    table = pd.read_csv(csv)
    assert set(table[table.scope == "overall"].condition) == {"mcar:0", "mcar:0.5"}
    assert (table.scope == "subset").sum() > 0


@pytest.mark.parametrize(
    "args, phrase",
    [
        (
            ["train", "--dataset", "handwriten", "--method", "hemis", "--out", "x"],
            "Did you mean 'handwritten'",
        ),
        (
            ["train", "--dataset", "synthetic", "--method", "hemsi", "--out", "x"],
            "Did you mean 'hemis'",
        ),
        (
            [
                "train",
                "--dataset",
                "synthetic",
                "--method",
                "hemis",
                "--missing",
                "mcar:1.5",
                "--out",
                "x",
            ],
            "[0, 1)",
        ),
        (
            [
                "train",
                "--dataset",
                "synthetic",
                "--method",
                "hemis",
                "--missing",
                "burst:0.3",
                "--out",
                "x",
            ],
            "len=",
        ),
        (
            [
                "train",
                "--dataset",
                "synthetic",
                "--method",
                "hemis",
                "--param",
                "hidden=-3",
                "--out",
                "x",
            ],
            "hidden",
        ),
        (
            [
                "train",
                "--dataset",
                "synthetic",
                "--method",
                "hemis",
                "--param",
                "colour=3",
                "--out",
                "x",
            ],
            "no hyperparameter 'colour'",
        ),
        (["evaluate", "no/such/dir"], "no model artifact"),
        (["evaluate", "x", "--no-subsets", "--all-subsets"], "--all-subsets prints the subset"),
        (["bench", "--seeds", "-1"], "non-negative"),
        (["bench", "--missing", " "], "--missing is empty"),  # was ignored: the suite ran
        (["bench", "--seeds", ""], "--seeds is empty"),
        (["bench", "--method", "hemsi"], "Did you mean 'hemis'"),
        (["bench", "no-such-suite"], "unknown benchmark suite"),
        (["bench", "--jobs", "64"], "exceeds the"),
        (["report", "nothing.db"], "no results store"),
    ],
)
def test_bad_input_is_one_clear_line_without_traceback(monkeypatch, capsys, tmp_path, args, phrase):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_artifact_is_refused_clearly(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "run"
    run(
        monkeypatch,
        capsys,
        "train",
        "--dataset",
        "synthetic",
        "--dataset-param",
        "n_samples=300",
        "--method",
        "late-fusion",
        "--epochs",
        "1",
        "--out",
        str(out_dir),
        "--quiet",
    )
    weights = out_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    code, _, err = run(monkeypatch, capsys, "evaluate", str(out_dir))
    assert code == 2 and "corrupt or truncated" in err


def test_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(
        sys,
        "argv",
        ["mlmm", "--debug", "train", "--dataset", "nope", "--method", "hemis", "--out", "x"],
    )
    from mlmm.errors import MlmmError

    with pytest.raises(MlmmError):
        cli.main()


TRAIN = ["train", "--dataset", "synthetic", "--method", "hemis", "--out", "x"]


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--param", "x=[1,"], "--param 'x=[1,', line 1: not valid YAML"),
        (["--param", "a=&x 1"], "anchors (&name) and aliases (*name) are not allowed"),
        (["--param", "hidden=1", "--param", "hidden=2"], "--param hidden is given twice"),
        (["--param", "hiden=12"], "no hyperparameter 'hiden'. Did you mean 'hidden'?"),
        (["--param", "dropout=.nan"], "dropout must be a finite number, got nan"),
        (["--param", "dropout=-.inf"], "dropout must be a finite number, got -inf"),
        (["--lr", "nan"], "lr must be a finite number, got nan"),
        (["--dataset-param", "n_samples=1e11"], "n_samples must be a positive integer"),
        (["--dataset-param", "n_samples=100000000000"], "n_samples asks for 1e+11 values"),
        (["--dataset-param", "n_samples=[1,"], "--dataset-param 'n_samples=[1,', line 1"),
        (["--dataset-param", "n_sample=300"], "no parameter 'n_sample'. Did you mean 'n_samples'"),
    ],
)
def test_bad_parameters_are_one_line_before_training(monkeypatch, capsys, tmp_path, args, phrase):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, *TRAIN, "--dataset-param", "seed=0", *args)
    assert code == 2, err
    assert phrase in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_param_values_are_plain_yaml_with_exponent_numbers():
    assert cli._parse_params(["lr=1e-3", "dims=[3, 4]", "rule=mean_prob"]) == {
        "lr": 0.001,
        "dims": [3, 4],
        "rule": "mean_prob",
    }


def test_version(monkeypatch, capsys):
    import mlmm

    code, out, _ = run(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"mlmm {mlmm.__version__}"


@pytest.fixture
def store_file(tmp_path):
    from mlmm.bench.store import ResultsStore

    with ResultsStore(tmp_path / "same.db"):
        pass
    return tmp_path / "same.db"


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["report", "same.db", "--out", "same.db"], "is the file it is made from"),
        (["report", "same.db", "--out", "./same.db"], "is the file it is made from"),
        (["report", "same.db", "--out", "other.db"], "is an SQLite database"),
        (["report", "same.db", "--out", "thesis.tex"], "is not a HTML file"),
        (["report", "same.db", "--out", "."], "is a directory"),
        (["export", "same.db", "same.db"], "is the file it is made from"),
        (["export", "same.db", "thesis.tex.csv"], "is not a CSV file"),
        (["bench", "--store", "same.html"], "is the file it is made from"),
    ],
)
def test_report_and_export_never_overwrite_an_input_or_another_file(
    monkeypatch, capsys, tmp_path, store_file, args, phrase
):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(store_file, tmp_path / "other.db")
    (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
    (tmp_path / "thesis.tex.csv").write_bytes(b"\x00binary")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and phrase in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize(
    "args, earlier",
    [
        (["report", "same.db", "--out", "r.html"], b"<!doctype html><p>earlier</p>"),
        (["export", "same.db", "t.csv"], b"a,b\n1,2\n"),
        (["export", "same.db", "t.parquet"], b"PAR1earlier"),
    ],
)
def test_report_and_export_on_a_full_disk_are_one_line_and_keep_the_earlier_file(
    monkeypatch, capsys, tmp_path, store_file, args, earlier
):
    """A full disk while writing the report or the export gave a traceback (OSError)."""
    import errno
    import os

    monkeypatch.chdir(tmp_path)
    (tmp_path / args[-1]).write_bytes(earlier)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {args[-1]} (No space left on device)" in err
    assert "the earlier file is unchanged" in err
    assert (tmp_path / args[-1]).read_bytes() == earlier
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary


def test_bench_runs_a_spec_and_resumes(monkeypatch, capsys, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\ndatasets: {synthetic: {n_samples: 240}}\n"
        "methods: {late-fusion: {}, zero-impute: {}, hemis: {}}\n"
        "missing: [mcar:0.5]\nseeds: [0]\nbudget: {max_epochs: 2}\n"
    )
    store = tmp_path / "b.db"
    args = ["bench", str(spec), "--store", str(store), "--method", "late-fusion"]
    # --jobs 1: in this process (the default plan would start a pool of 2 for the 2 runs)
    args += ["--method", "zero-impute", "--jobs", "1", "--threads", "1", "--no-report"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    assert "late-fusion" in out and "zero-impute" in out and "bayes-optimal" in out
    assert "hemis" not in out  # narrowed by --method
    assert "2 run(s) ran" in out and f"results: {store}" in out
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0 and "0 run(s) ran, 2 already in the store" in out
    code, out, _ = run(monkeypatch, capsys, *args, "--rerun", "zero-impute")
    assert code == 0 and "1 run(s) ran, 1 already in the store" in out
    code, _, err = run(monkeypatch, capsys, *args, "--rerun", "hemis")
    assert code == 2 and "cannot rerun ['hemis']" in err
    code, out, _ = run(monkeypatch, capsys, "export", str(store), str(tmp_path / "t.csv"))
    assert code == 0 and (tmp_path / "t.csv").exists() and "header only" not in out


def test_export_of_a_store_without_benchmark_runs_says_the_file_is_empty(
    monkeypatch, capsys, tmp_path
):
    from mlmm.bench.store import ResultsStore

    with ResultsStore(tmp_path / "s.db"):  # a store (as tune or stream make) with no bench run
        pass
    code, out, _ = run(
        monkeypatch, capsys, "export", str(tmp_path / "s.db"), str(tmp_path / "t.csv")
    )
    # was a bare "wrote t.csv" for a file holding the header only
    assert code == 0 and "header only: the store holds no finished benchmark run" in out


def _train_mean_impute(monkeypatch, capsys, out_dir, *dataset_params):
    """``mlmm train`` of a one-epoch mean-impute on 300 synthetic samples into ``out_dir``."""
    params = [a for p in ("n_samples=300", *dataset_params) for a in ("--dataset-param", p)]
    code, _, err = run(
        monkeypatch,
        capsys,
        *("train", "--dataset", "synthetic", *params, "--method", "mean-impute"),
        *("--epochs", "1", "--out", str(out_dir), "--quiet"),
    )
    assert code == 0, err


def test_evaluate_shows_imputation_scores_for_imputing_methods(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "mean"
    _train_mean_impute(monkeypatch, capsys, out_dir)
    csv = tmp_path / "t.csv"
    code, out, err = run(monkeypatch, capsys, "evaluate", str(out_dir), "--out", str(csv))
    assert code == 0, err
    assert "imputation" in out and "NRMSE" in out
    import pandas as pd

    table = pd.read_csv(csv)
    nrmse = table[(table.scope == "imputation") & (table.metric == "nrmse")]
    assert set(nrmse.subset) == {"m0", "m1", "m2"} and nrmse.value.between(0.5, 1.5).all()


def test_evaluate_keeps_the_test_conditions_in_the_order_given(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "mean"
    _train_mean_impute(monkeypatch, capsys, out_dir)
    csv = tmp_path / "t.csv"
    given = ["mcar:0.5", "none", "mcar:0.2", "fixed:-m1"]
    code, out, err = run(
        monkeypatch,
        capsys,
        "evaluate",
        str(out_dir),
        "--missing",
        ",".join(given),
        "--out",
        str(csv),
    )
    assert code == 0, err
    printed = out.split("test conditions", 1)[1]
    at = [printed.index(f"{name} ") for name in given]  # was sorted: fixed, mcar:0.2, ...
    assert at == sorted(at)
    import pandas as pd

    table = pd.read_csv(csv)
    assert table[table.scope == "overall"].condition.unique().tolist() == given


def test_evaluate_scores_imputation_of_two_modalities_at_a_reachable_rate(
    monkeypatch, capsys, tmp_path
):
    # two modalities cannot lose 50% of their slots with one kept per sample: evaluate hides
    # what run_experiment hides (imputation_hide), not a fixed mcar:0.5 that fails
    out_dir = tmp_path / "mean2"
    _train_mean_impute(monkeypatch, capsys, out_dir, "n_modalities=2")
    code, out, err = run(monkeypatch, capsys, "evaluate", str(out_dir))
    assert code == 0, err
    assert "25% of present slots hidden" in out and "NRMSE" in out


def test_a_plugin_option_registers_methods_for_every_command(monkeypatch, capsys, plugin_module):
    code, out, err = run(monkeypatch, capsys, "--plugin", plugin_module, "methods")
    assert code == 0, err
    assert "plugin-fusion" in out
    code, _, err = run(monkeypatch, capsys, "--plugin", "no_such_plugin_module", "methods")
    assert code == 2 and "plugin 'no_such_plugin_module' could not be imported" in err


# ------------------------------------------------------------- --out and --overwrite
TRAIN_QUICK = [
    "train",
    "--dataset",
    "synthetic",
    "--dataset-param",
    "n_samples=200",
    "--method",
    "late-fusion",
    "--epochs",
    "1",
    "--quiet",
]


def no_training(monkeypatch):
    """Make any training fail loudly: the --out checks must come before it."""
    import mlmm.experiment

    def trained(*args, **kwargs):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(mlmm.experiment, "run_experiment", trained)


def test_train_refuses_a_project_directory_before_training(monkeypatch, capsys, tmp_path):
    """Issue 11 items 1 and 12: --out myproject kept only config.json and model.safetensors."""
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text('{"lr": 0.1}')
    (project / "thesis.tex").write_text("\\documentclass{article}")
    (project / "src" / "main.py").write_text("print(1)")
    before = {p: p.read_bytes() for p in project.rglob("*") if p.is_file()}
    no_training(monkeypatch)
    for extra in ([], ["--overwrite"]):
        code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(project), *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "is not an mlmm model directory" in err and "thesis.tex" in err
    assert {p: p.read_bytes() for p in project.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myproject"]


@pytest.mark.parametrize("make", ["file", "under-a-file", "dangling-link"])
def test_train_refuses_a_bad_out_before_training(monkeypatch, capsys, tmp_path, make):
    """Issue 11 items 12 and 13: --out that is a file, or cannot be created."""
    target = tmp_path / "out"
    if make == "file":
        target.write_text("keep me")
    elif make == "under-a-file":
        (tmp_path / "afile").write_text("keep me")
        target = tmp_path / "afile" / "model"
    else:
        target.symlink_to(tmp_path / "nowhere")
    no_training(monkeypatch)
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(target))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "choose another --out" in err or "create the target" in err


def test_retraining_needs_overwrite_and_keeps_the_users_files(monkeypatch, capsys, tmp_path):
    """Issue 11 item 1: retraining into an artifact deleted the user's evaluation CSV."""
    out_dir = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out_dir))
    assert code == 0, err
    first = (out_dir / "model.safetensors").read_bytes()
    (out_dir / "eval.csv").write_text("metric,value\naccuracy,0.9\n")
    (out_dir / "notes.md").write_text("trained for the thesis")
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out_dir), "--seed", "1")
    assert code == 2 and "already holds an mlmm model" in err and "--overwrite" in err
    assert (out_dir / "model.safetensors").read_bytes() == first
    code, out, err = run(
        monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out_dir), "--seed", "1", "--overwrite"
    )
    assert code == 0, err
    assert (out_dir / "model.safetensors").read_bytes() != first
    assert (out_dir / "eval.csv").read_text() == "metric,value\naccuracy,0.9\n"
    assert (out_dir / "notes.md").read_text() == "trained for the thesis"
    code, _, err = run(monkeypatch, capsys, "evaluate", str(out_dir))
    assert code == 0, err
    import errno
    import os

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    csv = out_dir / "eval2.csv"
    code, _, err = run(monkeypatch, capsys, "evaluate", str(out_dir), "--out", str(csv))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {csv} (No space left on device)" in err and "free some disk" in err
    assert not csv.exists() and not [p for p in out_dir.iterdir() if p.name.startswith(".")]


def test_train_with_a_full_disk_is_one_line_and_leaves_nothing(monkeypatch, capsys, tmp_path):
    """Issue 11 item 13: ENOSPC while saving gave a traceback."""
    import errno

    from mlmm.train import checkpoint

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_file", full)
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err
    # no partial model; the training checkpoint stays, so a rerun after freeing space
    # saves at once instead of training again (it is removed once a model is saved)
    assert [p.name for p in tmp_path.iterdir()] == [".run.checkpoint"]
    assert (tmp_path / ".run.checkpoint" / "checkpoint.json").is_file()


def test_train_while_another_trains_to_the_same_out_is_one_line(monkeypatch, capsys, tmp_path):
    # was: both wrote .run.checkpoint, each deleting the other's tensor files
    import mlmm
    from mlmm.train import resume

    out = tmp_path / "run"
    data = mlmm.load_dataset("synthetic", n_samples=20)
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    other = resume.TrainingCheckpoint.open(resume.beside(out, "checkpoint"), {}, None, model)
    try:
        code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out))
    finally:
        other.close()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is in use by another training" in err and "another --out" in err
    assert not out.exists()


def test_evaluate_refuses_a_directory_as_out_before_evaluating(monkeypatch, capsys, tmp_path):
    """Issue 11 item 13: evaluate --out DIR gave a traceback after the whole evaluation."""
    import mlmm.train

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(mlmm.train.TrainedModel, "load", loaded)
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path, tmp_path / "afile" / "t.csv"):
        code, _, err = run(monkeypatch, capsys, "evaluate", str(tmp_path), "--out", str(out))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "choose another --out" in err or "is a directory" in err


def test_evaluate_refuses_an_out_that_is_one_of_the_models_files(monkeypatch, capsys, tmp_path):
    import mlmm.train

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(mlmm.train.TrainedModel, "load", loaded)
    config = tmp_path / "config.json"
    config.write_text('{"format": "mlmm-artifact"}')  # JSON text: it would pass for a CSV
    code, _, err = run(monkeypatch, capsys, "evaluate", str(tmp_path), "--out", str(config))
    assert code == 2 and "is the file it is made from" in err
    assert config.read_text() == '{"format": "mlmm-artifact"}'


REGRESSION_PLUGIN = """
import numpy as np

import mlmm
from mlmm.data.datasets.registry import register_dataset


@register_dataset("toy-regression", description="a test plugin", source="generated")
def load_toy_regression(n_samples: int = 160):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n_samples, 3)), rng.normal(size=(n_samples, 2))
    y = a[:, 0] + b[:, 1] + 0.1 * rng.normal(size=n_samples)
    return mlmm.from_arrays({"a": a, "b": b}, y, task="regression", name="toy-regression")
"""


@pytest.fixture
def regression_plugin(tmp_path, monkeypatch):
    """A module registering the regression dataset ``toy-regression`` (undone afterwards)."""
    from mlmm.data.datasets import DATASETS

    name = "mlmm_test_regression_plugin"
    (tmp_path / f"{name}.py").write_text(REGRESSION_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize("metrics", [None, ["mae", "rmse"]], ids=["default", "spec-metrics"])
def test_a_regression_benchmark_ends_with_its_table_and_report(
    monkeypatch, capsys, tmp_path, regression_plugin, metrics
):
    """It used to finish its runs, then stop on "no 'subset' rows for metric 'accuracy'"."""
    from html.parser import HTMLParser

    spec = tmp_path / "reg.yaml"
    text = (
        "name: reg\ndatasets: {toy-regression: {}}\nmethods: {zero-impute: {}}\n"
        "missing: [mcar:0.3]\nseeds: [0]\nbudget: {max_epochs: 2}\n"
    )
    spec.write_text(text + (f"metrics: {metrics}\n" if metrics else ""))
    store = tmp_path / "reg.db"
    args = ["--plugin", regression_plugin, "bench", str(spec), "--store", str(store)]
    code, out, err = run(monkeypatch, capsys, *args, "--threads", "1")
    assert code == 0, err
    flat = " ".join(out.split())
    shown = metrics or ["rmse", "mae", "r2"]
    header = flat[flat.index("dataset") :]
    positions = [header.index(f" {m} ") for m in shown]
    assert positions == sorted(positions), "the table shows the metrics in the spec's order"
    assert "accuracy" not in header.split("results:")[0]
    html = store.with_suffix(".html").read_text(encoding="utf-8")

    class Headings(HTMLParser):
        def __init__(self):
            super().__init__()
            self.h3, self.inside = [], False
            self.feed(html)

        def handle_starttag(self, tag, attrs):
            self.inside = tag == "h3"

        def handle_data(self, data):
            if self.inside:
                self.h3.append(data)
                self.inside = False

    primary = {"rmse": "RMSE", "mae": "MAE"}[shown[0]]
    headings = Headings().h3
    assert f"toy-regression — {primary}, lower is better; 1 seed(s)" in headings
    assert f"toy-regression — {primary}, lower is better" in headings  # the subset heatmap
    assert "accuracy" not in " ".join(headings).lower()
    # the reproduce section holds the spec and the command
    assert "zero-impute" in html[html.index('id="reproduce"') :]
    assert f"mlmm --plugin {regression_plugin} bench" in html


def test_train_says_how_training_went_and_summarises_many_subsets(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "five"
    args = ["train", "--dataset", "synthetic", "--method", "zero-impute", "--epochs", "2"]
    args += ["--dataset-param", "n_samples=300", "--dataset-param", "n_modalities=5"]
    code, out, err = run(monkeypatch, capsys, *args, "--out", str(out_dir), "--quiet")
    assert code == 0, err
    flat = " ".join(out.split())
    assert re.search(
        r"training: 2 epoch\(s\), best epoch [12] \(validation loss \d+\.\d{4}\)", flat
    )
    assert "reached the maximum epochs (2)" in flat
    # 31 subsets: by size, the 3 worst and 3 best, not 31 rows
    assert "31 subsets summarised; --all-subsets prints every one" in flat
    assert "modality subsets by size" in flat and "the 3 worst and 3 best" in flat
    assert sum(" m0+m1+m2 " in line for line in out.splitlines()) <= 1
    code, out, err = run(monkeypatch, capsys, "evaluate", str(out_dir), "--all-subsets")
    assert code == 0, err
    rows = [line for line in out.splitlines() if re.search(r"\bm\d(\+m\d)*\b", line)]
    assert len(rows) >= 31 and "summarised" not in out


def test_training_lines_name_why_training_stopped():
    from types import SimpleNamespace

    from mlmm.train.trainer import TrainHistory

    def trained(**history):
        return SimpleNamespace(
            histories=[TrainHistory(**history)], trainer_config={"patience": 5, "time_limit": 9}
        )

    epochs = [{"epoch": e} for e in range(1, 8)]
    early = cli._training_lines(
        trained(epochs=epochs, best_epoch=2, best_val_loss=0.5, stopped_early=True)
    )
    assert early == [
        "training: 7 epoch(s), best epoch 2 (validation loss 0.5000), stopped early (no better "
        "validation loss for 5 epochs) (0.0s)"
    ]
    timed = cli._training_lines(trained(epochs=epochs, best_epoch=7, time_limited=True))
    assert "no validation data: kept epoch 7, stopped by the time limit (9s)" in timed[0]
    assert cli._training_lines(trained()) == ["training: fitted without epochs (0.0s)"]


def test_training_stages_named_like_markup_are_printed_as_text():
    # auto's members train in stages named "<member>: main"; Rich read "[lda-em: main]" as a
    # style tag and printed "training : fitted without epochs"
    from types import SimpleNamespace

    from rich.console import Console

    from mlmm.train.trainer import TrainHistory

    trained = SimpleNamespace(
        histories=[TrainHistory(stage="lda-em: main"), TrainHistory(stage="hemis: main")],
        trainer_config={},
    )
    console = Console(record=True, width=200)
    cli._print_training(console, trained)
    text = console.export_text()
    assert "training [lda-em: main]: fitted without epochs" in text
    assert "training [hemis: main]: fitted without epochs" in text


def test_a_spec_plugin_beside_you_never_runs_without_permission(monkeypatch, capsys, tmp_path):
    from mlmm.registry import PLUGIN_FOLDERS_ENV

    monkeypatch.delenv(PLUGIN_FOLDERS_ENV, raising=False)
    work, specs = tmp_path / "work", tmp_path / "specs"
    work.mkdir(), specs.mkdir()
    marker = tmp_path / "evil-ran"
    for name in ("evil_plugin_cli", "harmless_plugin_cli"):
        (work / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    body = (
        "plugins: [evil_plugin_cli]\ndatasets: {synthetic: {}}\nmethods: {hemis: {}}\n"
        "missing: [none]\nseeds: [0]\n"
    )
    (work / "spec.yaml").write_text(body)
    (specs / "spec.yaml").write_text(body)
    monkeypatch.chdir(work)
    try:
        code, _, err = run(monkeypatch, capsys, "bench", "spec.yaml", "--no-report")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "the spec lists plugins ['evil_plugin_cli']" in err
        assert "--allow-spec-plugins" in err and "--plugin evil_plugin_cli" in err
        # --plugin searches the current folder for the modules it names, not for the spec's
        args = ["--plugin", "harmless_plugin_cli", "bench", "spec.yaml", "--no-report"]
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and "--allow-spec-plugins" in err
        assert marker.read_text() == "harmless_plugin_cli"
        # allowed, a spec's plugins resolve from the spec's folder and sys.path, not from here
        args = ["bench", str(specs / "spec.yaml"), "--allow-spec-plugins", "--no-report"]
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and "plugin 'evil_plugin_cli' could not be imported" in err
        assert marker.read_text() == "harmless_plugin_cli"
        assert not (work / "mlmm-results").exists()
        # named on the command line, the same plugin is allowed (and found beside you)
        args = ["--plugin", "evil_plugin_cli", "bench", "spec.yaml", "--method", "hemsi"]
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 2 and "Did you mean 'hemis'" in err
        assert marker.read_text() == "harmless_plugin_clievil_plugin_cli"
    finally:
        sys.modules.pop("harmless_plugin_cli", None)
        sys.modules.pop("evil_plugin_cli", None)


@pytest.mark.parametrize(
    "tail, phrase",
    [
        (b"seeds: &a [0]\ndescription: *a\n", "anchors (&name) and aliases (*name)"),
        (b"seeds: [0]\nname: caf\xe9\n", "not UTF-8 text"),
        (b"seeds: [0]\nseeds: [1]\n", "key 'seeds' is given twice (lines 4 and 5)"),
        (b"seeds: [true]\n", "seeds are non-negative integers, got True"),
        (b"seeds: [100000000000000000000000000000]\n", "below 2**63"),
        (b"seeds: [0]\nmetrics: [mae]\n", "'mae' scores regression tasks"),
        (b"seeds: [0]\nbudget: {lr: .nan}\n", "budget.lr: Input should be a finite number"),
    ],
)
def test_a_bad_spec_is_one_line_before_the_store_exists(
    monkeypatch, capsys, tmp_path, tail, phrase
):
    base = b"datasets: {synthetic: {}}\nmethods: {hemis: {}}\nmissing: [none]\n"
    (tmp_path / "spec.yaml").write_bytes(base + tail)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(monkeypatch, capsys, "bench", "spec.yaml", "--store", "s.db")
    assert code == 2 and phrase in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.db").exists()


TINY_BENCH = (
    "name: tiny\ndatasets: {synthetic: {n_samples: 240}}\nmethods: {late-fusion: {}}\n"
    "missing: [mcar:0.5]\nseeds: [0]\nbudget: {max_epochs: 2}\n"
)


def _ray_phrase(case: str) -> str:
    """What refuses a Ray address here: Ray missing, its client extra missing, or the address."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return "needs Ray"
    if case == "client" and importlib.util.find_spec("grpc") is None:
        return "needs Ray's client extra"
    return {"client": "cannot reach", "closed": "cannot reach", "scheme": "must be host:port"}[case]


@pytest.mark.parametrize(
    "options, phrase",
    [
        (["--executor", "slurm"], "'local' or 'ray'"),
        (["--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], _ray_phrase("client")),
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], _ray_phrase("closed")),
        (["--executor", "ray", "--ray-address", "http://head:80"], _ray_phrase("scheme")),
        (["--ray-address", "127.0.0.1:1"], "needs --executor ray"),
    ],
)
def test_a_bad_executor_is_refused_before_the_store_is_created(
    monkeypatch, capsys, tmp_path, options, phrase
):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_BENCH)
    store = tmp_path / "b.db"
    started = time.monotonic()
    code, _, err = run(monkeypatch, capsys, "bench", str(spec), "--store", str(store), *options)
    assert code == 2 and phrase in err and len(err.strip().splitlines()) == 1, err
    assert not store.exists()
    assert time.monotonic() - started < 60


def test_store_errors_are_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    code, _, err = run(monkeypatch, capsys, "bench", "--store", "afile/x.db")
    assert (
        code == 2 and "afile is a file" in err
    )  # the report path beside the store is checked first
    (tmp_path / "empty.db").touch()
    for command in (["report", "empty.db"], ["export", "empty.db", "t.csv"]):
        code, _, err = run(monkeypatch, capsys, *command)
        assert code == 2 and "empty (0 bytes)" in err and "Traceback" not in err
    assert (tmp_path / "empty.db").stat().st_size == 0  # not turned into a store
    for option in ("--release-claims", "--release-failed"):
        code, _, err = run(monkeypatch, capsys, "store", "absent.db", option)
        assert code == 2 and "no results store at 'absent.db'" in err, err
    assert not (tmp_path / "absent.db").exists()


def test_the_store_command_shows_and_releases_claims(monkeypatch, capsys, tmp_path):
    from mlmm.bench.spec import parse_spec
    from mlmm.bench.store import ResultsStore

    spec = parse_spec(
        {
            "datasets": {"synthetic": {}},
            "methods": {"late-fusion": {}, "hemis": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
        }
    )
    path = tmp_path / "s.db"
    with ResultsStore(path) as db:
        db.add_runs("demo", spec.runs())
    raw = sqlite3.connect(path, isolation_level=None)
    stale, live = (r.key for r in spec.runs())
    raw.execute(
        "UPDATE runs SET status='running', owner='gone:1', started_at=0 WHERE run_key=?", (stale,)
    )
    raw.execute(
        "UPDATE runs SET status='running', owner='busy:2', started_at=? WHERE run_key=?",
        (time.time(), live),
    )
    code, out, err = run(monkeypatch, capsys, "store", str(path))
    assert code == 0, err
    assert "gone:1" in out and "stale" in out and "busy:2" in out and "live" in out
    code, out, _ = run(monkeypatch, capsys, "store", str(path), "--release-claims")
    assert code == 0 and "released 1 claim(s)" in out
    code, out, _ = run(monkeypatch, capsys, "store", str(path), "--release-claims", "--force")
    assert code == 0 and "released 1 claim(s)" in out and "no claims" in out
    with ResultsStore(path, readonly=True) as db:
        assert set(db.status().values()) == {"pending"}


def test_bench_says_when_it_waits_for_runs_claimed_elsewhere(monkeypatch, capsys, tmp_path):
    from mlmm.bench import execute
    from mlmm.bench import store as store_module
    from mlmm.bench.spec import parse_spec
    from mlmm.bench.store import ResultsStore

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_BENCH)
    path = tmp_path / "b.db"
    runs = parse_spec(__import__("yaml").safe_load(TINY_BENCH)).runs()
    with ResultsStore(path) as db:
        db.add_runs("tiny", runs)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(  # another host's process, beating a moment ago
        "UPDATE runs SET status='running', owner='elsewhere:7', started_at=? WHERE run_key=?",
        (time.time(), runs[0].key),
    )
    monkeypatch.setattr(store_module, "CLAIM_EXPIRY_SECONDS", 2.0)
    monkeypatch.setattr(execute, "POLL_SECONDS", 0.2)
    code, out, err = run(
        monkeypatch, capsys, "bench", str(spec), "--store", str(path), "--no-report"
    )
    assert code == 0, err
    assert "waiting for 1 run(s) claimed by elsewhere:7" in out  # a plain line: not a terminal
    assert "1 run(s) ran" in out  # taken over once the claim expired


def test_bench_says_when_a_run_lost_its_ray_worker_and_is_tried_again(
    monkeypatch, capsys, tmp_path
):
    from mlmm.bench import execute

    real = execute.make_executor

    class LosesFirst:  # the inline executor, whose first attempt loses its worker
        def __init__(self, *args, **kwargs):
            self.inner, self.lost = real("local", 1, 1), False
            self.slots = 1

        def submit(self, config):
            return self.inner.submit(config)

        def wait(self, handles, timeout):
            if not self.lost:
                self.lost = True
                return [(handles[0], {"status": "lost", "error": "NodeDiedError: gone"})]
            return self.inner.wait(handles, timeout)

        def close(self):
            self.inner.close()

    monkeypatch.setattr(execute, "make_executor", LosesFirst)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_BENCH)
    args = ["bench", str(spec), "--store", str(tmp_path / "b.db"), "--no-report"]
    code, _, err = run(monkeypatch, capsys, *args, "--max-attempts", "0")
    assert code == 2 and "--max-attempts must be a positive integer, got 0" in err
    code, out, err = run(monkeypatch, capsys, *args, "--max-attempts", "2")
    assert code == 0, err
    assert "lost (NodeDiedError: gone); tried again" in out and "1 run(s) ran" in out


def test_a_full_disk_while_benchmarking_is_one_line(monkeypatch, capsys, tmp_path):
    from mlmm.bench.store import ResultsStore

    real = ResultsStore._initialise

    def nearly_full(self, db):  # SQLite's own "database or disk is full" after a few pages
        real(self, db)
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count={pages + 2}")

    monkeypatch.setattr(ResultsStore, "_initialise", nearly_full)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY_BENCH)
    path = tmp_path / "b.db"
    code, _, err = run(monkeypatch, capsys, "bench", str(spec), "--store", str(path), "--no-report")
    assert code == 2 and "is full" in err and "run the same command again" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(ResultsStore, "_initialise", real)
    with ResultsStore(path, readonly=True) as db:
        assert set(db.status().values()) == {"pending"}  # the claim was given back


def test_train_takes_a_precision_and_refuses_bad_ones_in_one_line(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "bf16"
    code, out, err = run(
        monkeypatch, capsys, *TRAIN_QUICK, "--precision", "bf16-mixed", "--out", str(out_dir)
    )
    assert code == 0, err
    assert "device cpu, precision bf16-mixed" in out
    config = (out_dir / "config.json").read_text()
    assert '"precision": "bf16-mixed"' in config
    for option, fix in [
        (["--precision", "fp16"], "precision must be one of ['32', 'bf16-mixed', '16-mixed']"),
        (["--precision", "16-mixed"], "use precision 'bf16-mixed' on the CPU, or device 'cuda'"),
    ]:
        code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, *option, "--out", str(tmp_path / "x"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and fix in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_on_cuda_without_a_gpu_is_one_line_before_training(monkeypatch, capsys, tmp_path):
    import mlmm.experiment

    def no_data(*args, **kwargs):
        raise AssertionError("the data were loaded before the device was checked")

    monkeypatch.setattr(mlmm.experiment, "resolve_dataset", no_data)
    code, _, err = run(
        monkeypatch, capsys, *TRAIN_QUICK, "--device", "cuda", "--out", str(tmp_path / "m")
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "no CUDA GPU is available; use --device cpu" in err


def test_methods_filtered_by_task(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "methods", "--task", "multilabel")
    assert code == 0 and "hemis" in out and "lda-em" not in out
    code, _, err = run(monkeypatch, capsys, "methods", "--task", "ranking")
    assert code != 0 and "unknown task 'ranking'" in err


def test_train_and_evaluate_a_multilabel_model(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "ml"
    args = ["--dataset", "synthetic-multilabel", "--dataset-param", "n_samples=300"]
    code, _, err = run(
        monkeypatch, capsys, "train", *args, "--method", "zero-impute", "--epochs", "2",
        "--out", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, "evaluate", str(out_dir), "--missing", "none")
    assert code == 0, err
    flat = " ".join(out.split())
    assert "micro_f1" in flat and "samples_f1" in flat and "AUROC per label" in flat
    assert "label4" in flat  # the label names, not swallowed as console markup


def test_a_table_shows_names_with_brackets_whole():
    # auto's member names look like Rich markup ("lda-em[shrinkage=0.7,...]"): shown as text
    import pandas as pd
    from rich.console import Console

    from mlmm.cli import _table

    name = "lda-em[shrinkage=0.7,shrinkage_target=diagonal]"
    console = Console(width=100, record=True)
    console.print(_table(pd.DataFrame({"model": [name, "hemis"], "weight": [0.0, 1.0]})))
    text = console.export_text()
    assert name in text and "1.0000" in text


def test_train_auto_says_in_one_line_that_it_ignores_epochs(monkeypatch, capsys, tmp_path):
    """`mlmm train --method auto --epochs 7` trained for auto's budget's epochs without a
    word; the estimator warns about its own max_epochs with method="auto"."""
    import mlmm.experiment
    from mlmm.errors import MlmmError

    seen = {}

    def stop_before_training(*args, **kwargs):
        seen.update(kwargs)
        raise MlmmError("stopped before training")

    monkeypatch.setattr(mlmm.experiment, "run_experiment", stop_before_training)
    argv = ["train", "--dataset", "synthetic", "--method", "auto", "--out", str(tmp_path / "m")]
    code, _, err = run(monkeypatch, capsys, *argv, "--epochs", "7")
    assert code == 2
    assert err.splitlines() == [
        "warning: --epochs 7 is ignored with --method auto: its budget sets the deep members' "
        "epochs; cap them with --param max_epochs=7",
        "error: stopped before training",
    ]
    assert "max_epochs" not in seen["method_params"]  # said, not silently applied
    code, _, err = run(monkeypatch, capsys, *argv, "--param", "max_epochs=7")
    assert err.splitlines() == ["error: stopped before training"]
    assert seen["method_params"]["max_epochs"] == 7
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(tmp_path / "n"))
    assert "--epochs" in TRAIN_QUICK and "warning" not in err  # another method uses it


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM and SIGHUP are not signals there")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_train_stopped_by_sigterm_is_one_line_and_leaves_nothing(
    monkeypatch, capsys, tmp_path, name
):
    """SIGTERM killed `mlmm train` without a word (exit -15); Ctrl-C ended it silently.
    SIGHUP (its terminal closed) killed it without the cleanup the others get (exit -1)."""
    import os
    import signal

    import mlmm.experiment

    signum = getattr(signal, name)

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signum)  # as `kill PID` mid-training, or closing the terminal
        time.sleep(5)  # the handler interrupts this
        raise AssertionError(f"{name} did not stop training")

    monkeypatch.setattr(mlmm.experiment, "run_experiment", stopped)
    before = signal.getsignal(signum)
    out = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out))
    assert code == 128 + signum, err
    assert err.strip() == (
        f"interrupted by {name}; no model was saved to {out} (the same command resumes "
        f"from its last training checkpoint)"
    )
    assert list(tmp_path.iterdir()) == []  # stopped before any epoch: no checkpoint yet
    assert signal.getsignal(signum) is before  # main() puts the handlers back


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is not a signal there")
def test_sighup_does_what_sigterm_would_do_now(monkeypatch):
    """`mlmm serve` leaves SIGTERM to uvicorn, which answers the requests in flight before it
    stops: SIGHUP goes the same way there, and stops the command where SIGTERM is ignored."""
    import signal

    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        cli._hang_up(signal.SIGHUP, None)
        assert seen == [signal.SIGHUP]
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with pytest.raises(KeyboardInterrupt):
            cli._hang_up(signal.SIGHUP, None)
        assert cli._state["signal"] == signal.SIGHUP
    finally:
        signal.signal(signal.SIGTERM, before)
        cli._state["signal"] = None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is not a signal there")
def test_a_command_whose_terminal_is_gone_still_exits_129(monkeypatch, capsys, tmp_path):
    """After SIGHUP the terminal may be gone: the one line cannot be written (EIO), and that
    OSError replaced the exit code that says what happened."""
    import errno
    import os
    import signal

    import mlmm.experiment

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)
        raise AssertionError("SIGHUP did not stop training")

    def gone(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(mlmm.experiment, "run_experiment", stopped)
    monkeypatch.setattr(cli.typer, "echo", gone)
    code, _, _ = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(tmp_path / "run"))
    assert code == 129


def test_train_on_devices_stopped_by_sigterm_is_one_line_not_the_launchers_traceback(
    monkeypatch, capsys, tmp_path
):
    """`mlmm train --devices 2` stopped by SIGTERM or Ctrl-C ended with the traceback of
    torch's launcher (SignalException), and each of its processes printed a line of its own."""
    import os
    import signal

    import torch.distributed.launcher.api as launcher_api
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from mlmm.train import distributed

    seen = {}

    def stopped_launch(config, entrypoint):
        def run(*args):
            seen["launched"] = os.environ.get("MLMM_LAUNCHER_PID")
            raise SignalException("got signal: 15", sigval=signal.SIGTERM)

        return run

    monkeypatch.setattr(launcher_api, "elastic_launch", stopped_launch)
    out = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out), "--devices", "2")
    assert code == 143, err
    assert err.strip() == (
        f"interrupted by SIGTERM; no model was saved to {out} (train again to get one)"
    )
    assert seen["launched"] == str(os.getpid())  # the processes know who speaks for them
    assert distributed.LAUNCHED_VARIABLE not in os.environ


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is not a signal there")
@pytest.mark.parametrize("lost", ["EIO", "EPIPE"])
def test_an_error_writing_to_the_closed_terminal_does_not_hide_the_signal(
    monkeypatch, capsys, tmp_path, lost
):
    """After SIGHUP, what the command draws on its way out (a progress bar) fails with EIO on
    the closed terminal, or EPIPE on a pipe to a program the signal ended (`mlmm bench | tee`):
    that error's traceback (EIO) or click's silent exit 1 (EPIPE) replaced the signal's."""
    import errno
    import os
    import signal

    import mlmm.experiment

    def stopped(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
        finally:  # as a progress bar's last redraw on the way out
            raise OSError(getattr(errno, lost), os.strerror(getattr(errno, lost)))

    monkeypatch.setattr(mlmm.experiment, "run_experiment", stopped)
    out = tmp_path / "run"
    code, _, err = run(monkeypatch, capsys, *TRAIN_QUICK, "--out", str(out))
    assert code == 129, err
    assert err.strip() == (
        f"interrupted by SIGHUP; no model was saved to {out} (the same command resumes "
        f"from its last training checkpoint)"
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal closed")
def test_train_in_a_terminal_that_is_closed_ends_129_with_its_line(tmp_path):
    """Closing the terminal of `mlmm train` (its progress bar drawn there) killed it: SIGHUP
    went unhandled."""
    import os
    import pty
    import select

    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    argv = [*TRAIN_QUICK[:-1], "--out", str(out)]  # late-fusion, with its progress bar
    argv[argv.index("n_samples=200")] = "n_samples=2000"
    argv[argv.index("--epochs") + 1] = "200"
    pid, terminal = pty.fork()
    if pid == 0:  # the child: mlmm with its stdout on the terminal, its stderr kept
        os.dup2(os.open(log, os.O_WRONLY | os.O_CREAT), 2)
        os.execv(sys.executable, [sys.executable, "-m", "mlmm.cli", *argv])
    try:
        seen = b""
        deadline = time.time() + 120
        while b"late-fusion" not in seen and time.time() < deadline:
            if select.select([terminal], [], [], 1)[0]:
                seen += os.read(terminal, 4096)  # the progress bar is drawn: training
        assert b"late-fusion" in seen, seen
    finally:
        os.close(terminal)  # the terminal goes away: SIGHUP
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 129, log.read_text()
    assert log.read_text().strip().splitlines()[-1] == (
        f"interrupted by SIGHUP; no model was saved to {out} (the same command resumes "
        f"from its last training checkpoint)"
    )


def test_main_runs_in_a_thread_other_than_the_main_one(monkeypatch, capsys):
    """signal.signal works only in the main thread: main() called from a worker thread (a
    notebook's executor, a test runner) raised ValueError before running the command."""
    import threading

    result = {}

    def target():
        try:
            result["code"] = run(monkeypatch, capsys, "datasets")[0]
        except BaseException as err:  # noqa: BLE001 - reported below
            result["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert "error" not in result, result.get("error")
    assert result["code"] in (0, None)


def test_a_stop_signal_ignored_by_the_parent_stays_ignored(monkeypatch, capsys):
    """`mlmm ... &` in a script, or nohup, start it with a signal ignored: main() must not
    make it stop the command again."""
    import signal

    seen = {}
    console = cli._console

    def record():
        seen["sigint"] = signal.getsignal(signal.SIGINT)
        seen["sigterm"] = signal.getsignal(signal.SIGTERM)
        seen["sighup"] = signal.getsignal(getattr(signal, "SIGHUP", signal.SIGINT))
        return console()

    monkeypatch.setattr(cli, "_console", record)
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code, _, err = run(monkeypatch, capsys, "datasets")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert code in (0, None), err
    assert seen["sigint"] is signal.SIG_IGN and seen["sigterm"] is cli._stop
    if hasattr(signal, "SIGHUP"):
        assert seen["sighup"] is cli._hang_up
        before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it
        try:
            run(monkeypatch, capsys, "datasets")
            assert seen["sighup"] is signal.SIG_IGN
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        finally:
            signal.signal(signal.SIGHUP, before)


def test_a_warning_is_one_line_on_the_command_line(tmp_path):
    """A hemis artifact saved before its variance fix warned in Python's two-line form (file,
    line, category, then the source line of the call)."""
    import json
    import os
    import subprocess
    from pathlib import Path

    import numpy as np

    import mlmm
    from mlmm.train.checkpoint import load_artifact, save_artifact

    ds = mlmm.load_dataset("synthetic", n_samples=40)
    model = mlmm.create_method("hemis", ds.specs, ds.task, embed_dim=4, hidden=8)
    mlmm.Trainer(max_epochs=1, progress=False).fit(model, ds).save(tmp_path / "new")
    config, state = load_artifact(tmp_path / "new")
    for key in ("format", "format_version", "weights_sha256", "revisions"):
        config.pop(key)  # revisions: as an mlmm before them wrote it
    save_artifact(tmp_path / "old", state, json.loads(json.dumps(config)))
    np.savez(tmp_path / "in.npz", **{m: ds.inputs[m][:3] for m in ds.modality_names})
    src = str(Path(mlmm.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}
    out = tmp_path / "out.csv"
    command = [sys.executable, "-m", "mlmm.cli", "predict", str(tmp_path / "old")]
    done = subprocess.run(
        [*command, "--input", str(tmp_path / "in.npz"), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"warning: {tmp_path / 'old'} was saved before a change to hemis")
    assert done.stderr.count("\n") == 1 and "answers differently" in done.stderr
