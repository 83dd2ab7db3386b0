"""The command line, as a user runs it: exit codes, one-line errors, artifacts on disk."""

import sys

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
