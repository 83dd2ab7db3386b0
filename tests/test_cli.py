"""The command line, as a user runs it: exit codes, one-line errors, artifacts on disk."""

import sqlite3
import sys
import time

import pytest

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
        (["bench", "--seeds", "-1"], "non-negative"),
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


def test_bench_runs_a_spec_and_resumes(monkeypatch, capsys, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\ndatasets: {synthetic: {n_samples: 240}}\n"
        "methods: {late-fusion: {}, zero-impute: {}, hemis: {}}\n"
        "missing: [mcar:0.5]\nseeds: [0]\nbudget: {max_epochs: 2}\n"
    )
    store = tmp_path / "b.db"
    args = ["bench", str(spec), "--store", str(store), "--method", "late-fusion"]
    args += ["--method", "zero-impute", "--threads", "1", "--no-report"]
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
    assert code == 0 and (tmp_path / "t.csv").exists()


def test_evaluate_shows_imputation_scores_for_imputing_methods(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "mean"
    code, _, err = run(
        monkeypatch,
        capsys,
        "train",
        "--dataset",
        "synthetic",
        "--dataset-param",
        "n_samples=300",
        "--method",
        "mean-impute",
        "--epochs",
        "1",
        "--out",
        str(out_dir),
        "--quiet",
    )
    assert code == 0, err
    csv = tmp_path / "t.csv"
    code, out, err = run(monkeypatch, capsys, "evaluate", str(out_dir), "--out", str(csv))
    assert code == 0, err
    assert "imputation" in out and "NRMSE" in out
    import pandas as pd

    table = pd.read_csv(csv)
    nrmse = table[(table.scope == "imputation") & (table.metric == "nrmse")]
    assert set(nrmse.subset) == {"m0", "m1", "m2"} and nrmse.value.between(0.5, 1.5).all()


def test_a_plugin_option_registers_methods_for_every_command(monkeypatch, capsys, plugin_module):
    code, out, err = run(monkeypatch, capsys, "--plugin", plugin_module, "methods")
    assert code == 0, err
    assert "plugin-fusion" in out
    code, _, err = run(monkeypatch, capsys, "--plugin", "no_such_plugin_module", "methods")
    assert code == 2 and "plugin 'no_such_plugin_module' could not be imported" in err


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
    assert code == 2 and "afile is a file, not a folder" in err
    (tmp_path / "empty.db").touch()
    for command in (["report", "empty.db"], ["export", "empty.db", "t.csv"]):
        code, _, err = run(monkeypatch, capsys, *command)
        assert code == 2 and "empty (0 bytes)" in err and "Traceback" not in err
    assert (tmp_path / "empty.db").stat().st_size == 0  # not turned into a store


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
