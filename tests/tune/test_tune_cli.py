"""``mlmm tune`` and ``mlmm train --params``, as a user runs them."""

import json
import sys

import pytest
import yaml

from mlmm import cli


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_tune_writes_the_best_point_and_train_uses_it(monkeypatch, capsys, tmp_path):
    best = tmp_path / "best.yaml"
    common = ["--dataset", "synthetic", "--dataset-param", "n_samples=160", "--missing", "mcar:0.5"]
    args = ["tune", *common, "--method", "zero-impute", "--trials", "2", "--epochs", "2"]
    args += ["--store", str(tmp_path / "tune.db"), "--params-out", str(best)]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code in (0, None), err
    assert "trial 0: complete" in out and "trial 1: complete" in out and "best trial" in out
    saved = yaml.safe_load(best.read_text())
    assert saved["method"] == "zero-impute" and saved["study"]["budget"]["trials"] == 2
    # rerun: the stored study has its two trials, nothing runs again
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code in (0, None) and "trial 0:" not in out and "2 complete" in out
    model = tmp_path / "model"
    code, out, err = run(
        monkeypatch, capsys, "train", *common, "--method", "zero-impute", "--epochs", "2",
        "--quiet", "--params", str(best), "--batch-size", "16", "--out", str(model),
    )  # fmt: skip
    assert code in (0, None), err
    config = json.loads((model / "config.json").read_text())
    for key, value in saved["params"].items():
        assert config["hyperparameters"][key] == value
    assert config["trainer"]["lr"] == saved["trainer"]["lr"]
    assert config["trainer"]["weight_decay"] == saved["trainer"]["weight_decay"]
    assert config["trainer"]["batch_size"] == 16  # given on the command line: it wins


def test_tune_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(
        monkeypatch, capsys, "tune", "--dataset", "synthetic", "--method", "hemis",
        "--trials", "0", "--store", str(tmp_path / "t.db"),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "at least one trial" in err
    best = tmp_path / "best.yaml"
    best.write_text("method: late-fusion\nparams: {}\ntrainer: {}\n")
    code, _, err = run(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis",
        "--params", str(best), "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert code == 2 and "tuned for method 'late-fusion', not 'hemis'" in err
    # a file tuned on seed 0's split, trained on seed 1: refused before any training
    best.write_text(
        "method: hemis\nparams: {}\ntrainer: {}\nstudy:\n  data:\n    dataset: synthetic\n"
        "    dataset_params: {}\n    split: {seed: 0, test_size: 0.2, val_size: 0.1}\n"
    )
    code, _, err = run(
        monkeypatch, capsys, "train", "--dataset", "synthetic", "--method", "hemis", "--seed", "1",
        "--params", str(best), "--out", str(tmp_path / "m"),
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "this test split" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("victim", ["store", "csv"])
def test_params_out_never_replaces_the_store_or_a_users_file(victim, monkeypatch, capsys, tmp_path):
    # was: --params-out tune.db wrote YAML over the study's own store, and over any file
    store = tmp_path / "tune.db"
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=160"]
    args += ["--method", "zero-impute", "--trials", "1", "--epochs", "1", "--store", str(store)]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code in (0, None), err
    target = store if victim == "store" else tmp_path / "rows.csv"
    if victim == "csv":
        target.write_text("a,b\n1,2\n")
    before = target.read_bytes()
    code, out, err = run(monkeypatch, capsys, *args, "--params-out", str(target))
    assert code == 2 and err.count("\n") == 1 and "--params-out" in err
    assert "trial" not in out  # refused before the study
    assert target.read_bytes() == before


def test_space_replaces_the_method_and_trainer_spaces(monkeypatch, capsys, tmp_path):
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args += ["--method", "hemis", "--trials", "2", "--epochs", "2"]
    args += ["--store", str(tmp_path / "t.db")]
    args += ["--space", "dropout={low: 0.1, high: 0.2}", "--space", "depth=[1, 2]"]
    args += ["--space", "trainer.lr={low: 1e-3, high: 2e-3, log: true}"]
    best = tmp_path / "best.yaml"
    code, out, err = run(monkeypatch, capsys, *args, "--params-out", str(best))
    assert code in (0, None), err
    saved = yaml.safe_load(best.read_text())
    assert set(saved["params"]) == {"dropout", "depth"} and set(saved["trainer"]) == {"lr"}
    assert 0.1 <= saved["params"]["dropout"] <= 0.2 and saved["params"]["depth"] in (1, 2)
    assert 1e-3 <= saved["trainer"]["lr"] <= 2e-3


@pytest.mark.parametrize(
    "space, message",
    [
        ("dropout=0.3", "search space 'dropout' must be a list of choices"),
        ("dropout={low: 0.1, high: 0.5, log: maybe}", "log must be true or false"),
        ("embed_dim={low: 8, high: 16.5}", "cannot build 'hemis': embed_dim must be an integer"),
        ("hiden=[1, 2]", "names 'hiden', which is not one of its parameters"),
        # integer bounds for a real would search only its integers (0 and 1 here)
        ("dropout={low: 0, high: 1}", "integers only, but dropout is a real"),
        ("trainer.lr={low: 1, high: 2}", "integers only, but lr is a real"),
        ("depth=[1, 2, 1]", "choices must differ"),
    ],
)
def test_a_bad_space_is_one_line_before_any_trial(space, message, monkeypatch, capsys, tmp_path):
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args += ["--method", "hemis", "--trials", "2", "--store", str(tmp_path / "t.db")]
    code, out, err = run(monkeypatch, capsys, *args, "--space", space)
    assert code == 2 and err.count("\n") == 1 and message in err and "trial" not in out


def test_space_names_are_the_whole_space_and_another_space_is_another_study(
    monkeypatch, capsys, tmp_path
):
    # was: naming only method hyperparameters left the trainer's lr, weight_decay and
    # batch_size searched too, though the names given are the whole space
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args += ["--method", "hemis", "--trials", "2", "--epochs", "2"]
    args += ["--store", str(tmp_path / "t.db")]
    best = tmp_path / "best.yaml"
    keys, outs = [], []
    for low in (0.1, 0.1, 0.2):  # the same space twice (resumed), then another one
        space = f"dropout={{low: {low}, high: 0.3}}"
        code, out, err = run(
            monkeypatch, capsys, *args, "--space", space, "--params-out", str(best)
        )
        assert code in (0, None), err
        keys.append(out.split("study ")[-1].split()[0])
        outs.append(out)
        saved = yaml.safe_load(best.read_text())
        assert set(saved["params"]) == {"dropout"} and not saved.get("trainer")
        assert low <= saved["params"]["dropout"] <= 0.3
        best.unlink()
    assert keys[0] == keys[1] != keys[2]
    assert "trial 0:" in outs[0] and "trial 0:" not in outs[1] and "trial 0:" in outs[2]


def test_tune_stopped_by_sigterm_after_a_trial_says_the_study_resumes(
    monkeypatch, capsys, tmp_path
):
    """A stopped `mlmm tune` printed only 'interrupted by SIGTERM': nothing said that the
    finished trials are kept and that the same command resumes the study."""
    import os
    import signal
    import time

    import mlmm.tune.study

    def stopped(*args, on_trial, **kwargs):
        on_trial({"number": 0, "state": "complete", "value": 0.5, "seconds": 1.0, "error": None})
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` during the second trial
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the study")

    monkeypatch.setattr(mlmm.tune.study, "tune", stopped)
    store = tmp_path / "tune.db"
    args = ["tune", "--dataset", "synthetic", "--method", "zero-impute", "--missing", "mcar:0.5"]
    code, out, err = run(monkeypatch, capsys, *args, "--store", str(store))
    assert code == 143, err
    assert "trial 0: complete" in out
    assert err.strip() == (
        f"interrupted by SIGTERM; every finished trial is kept in {store}; "
        "run the same command again to resume"
    )


def test_the_train_command_it_suggests_can_be_pasted_with_any_path(monkeypatch, capsys, tmp_path):
    """`--params-out "my runs/[best].yaml"` was suggested as `--params my runs/.yaml ...`:
    unquoted (a space split it) and with Rich markup eating the brackets."""
    import shlex

    best = tmp_path / "my runs" / "[best] é.yaml"
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args += ["--method", "zero-impute", "--trials", "1", "--epochs", "1"]
    args += ["--store", str(tmp_path / "t.db"), "--params-out", str(best)]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code in (0, None), err
    line = " ".join(out.split("wrote ", 1)[1].split("\n"))  # a long line may be wrapped
    suggested = shlex.split(line.split(": ", 1)[1].strip().removesuffix(" ..."))
    assert suggested[suggested.index("--params") + 1] == str(best) and best.is_file()
    # with the tuned --dataset-param: without it, train refused the file (tuned on another
    # split); pasted, it trains
    assert suggested[2:6] == ["--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args = [*suggested[1:], "--out", str(tmp_path / "m"), "--epochs", "1", "--quiet"]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code in (0, None), err


def test_a_conditional_space_from_the_command_line(monkeypatch, capsys, tmp_path):
    args = ["tune", "--dataset", "synthetic", "--dataset-param", "n_samples=100"]
    args += ["--method", "logistic-mean-impute", "--trials", "4", "--store", str(tmp_path / "t.db")]
    args += ["--space", "max_iter=[50, 200]"]
    args += ["--space", "C={low: 0.01, high: 10.0, log: true, when: {max_iter: 200}}"]
    code, out, err = run(monkeypatch, capsys, *args, "--params-out", str(tmp_path / "best.yaml"))
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert ("C" in saved["params"]) == (saved["params"]["max_iter"] == 200)
    # a condition on a parameter the space lists later (or not at all) is one line
    later = [*args[:-4], *args[-2:], *args[-4:-2]]  # C first, then max_iter
    code, out, err = run(monkeypatch, capsys, *later)
    assert code == 2 and err.count("\n") == 1 and "depend on 'max_iter'" in err
