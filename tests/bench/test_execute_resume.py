"""A benchmark run killed mid-training resumes from its last written epoch."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import mlmm
from mlmm.bench import execute
from mlmm.bench.execute import run_benchmark
from mlmm.bench.spec import load_spec, parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.train import resume

_SPEC = """\
name: slow
plugins: [slow_hemis_bench_plugin]
datasets:
  synthetic: {{n_samples: 120}}
methods:
  {method}: {{}}
missing:
  - train: none
    test: [none, mcar:0.5]
seeds: [0]
budget: {{max_epochs: 20}}
"""

VALUES = ["condition", "scope", "subset", "metric", "value"]


def _values(store: Path) -> list:
    with ResultsStore(store) as db:
        table = db.results()
    return table[VALUES].sort_values(VALUES[:4]).to_dict(orient="records")


def test_a_killed_benchmark_run_resumes_from_its_checkpoint_and_stores_the_same_rows(
    tmp_path, slow_hemis_plugin, killed_mid_training
):
    slow_hemis_plugin(0.02, "slow_hemis_bench_plugin")
    spec_file = tmp_path / "slow.yaml"
    spec_file.write_text(_SPEC.format(method="slow-hemis"))
    store = tmp_path / "results.db"
    command = [
        sys.executable, "-m", "mlmm", "--plugin", "slow_hemis_bench_plugin", "bench",
        str(spec_file), "--store", str(store), "--jobs", "1", "--threads", "1", "--no-report",
    ]  # fmt: skip
    source = str(Path(mlmm.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), source])}
    (run,) = load_spec(spec_file, allow_plugins=True).runs()
    folder = execute.run_checkpoint_dir(store, run.key)
    assert folder == tmp_path / ".results.db.checkpoints" / run.key

    killed_mid_training(command, tmp_path, env, folder, resume.STATE_FILE, epochs=3)
    assert (folder / resume.STATE_FILE).is_file()

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # the retry (its lost attempt taken over) resumed, not trained again from epoch 1
    assert "resuming from epoch" in done.stderr and " of 20 " in done.stderr, done.stderr
    assert not folder.exists() and not folder.parent.exists()
    with ResultsStore(store) as db:
        runs = db.runs()
        attempts = db.attempts()
    assert runs.status.tolist() == ["done"] and runs.epochs.tolist() == [20]
    assert "lost" in attempts.outcome.tolist()

    # slow-hemis without the sleep: the same weights, hence the same rows, from the same seed
    reference = parse_spec(
        {
            "name": "reference",
            "datasets": {"synthetic": {"n_samples": 120}},
            "methods": {"hemis": {}},
            "missing": [{"train": "none", "test": ["none", "mcar:0.5"]}],
            "seeds": [0],
            "budget": {"max_epochs": 20},
        }
    )
    run_benchmark(reference, tmp_path / "reference.db", jobs=1, threads=1)
    assert _values(store) == _values(tmp_path / "reference.db")


def _auto_and_hemis_runs():
    spec = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 120}},
            "methods": {"hemis": {}, "auto": {}},
            "missing": ["none"],
            "seeds": [0],
        }
    )
    return {run.method: run for run in spec.runs()}


def test_only_local_runs_of_trained_methods_get_a_checkpoint_folder(tmp_path):
    runs = _auto_and_hemis_runs()
    store = tmp_path / "r.db"
    payload = execute.run_payload(runs["hemis"], store, "local")
    assert payload.pop("checkpoint_dir") == str(
        execute.run_checkpoint_dir(store, runs["hemis"].key)
    )
    assert payload == runs["hemis"].to_dict()  # the run's key is that of its configuration
    assert "checkpoint_dir" not in execute.run_payload(runs["hemis"], store, "ray")
    assert "checkpoint_dir" not in execute.run_payload(runs["auto"], store, "local")


def test_a_relative_store_gives_workers_an_absolute_checkpoint_folder(tmp_path, monkeypatch):
    # a pool worker (or a later run from another folder) must find the same checkpoint
    monkeypatch.chdir(tmp_path)
    run = _auto_and_hemis_runs()["hemis"]
    folder = execute.run_payload(run, "r.db", "local")["checkpoint_dir"]
    assert folder == str(tmp_path / ".r.db.checkpoints" / run.key)
    other = execute.run_checkpoint_dir(tmp_path / "sub" / "r.db", run.key)
    assert other != Path(folder)  # a store of the same name elsewhere keeps its own


def _write_checkpoint(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / resume.STATE_FILE).write_text("{}")


def test_a_recorded_run_removes_its_checkpoint_unless_its_worker_died(tmp_path):
    store, key = tmp_path / "r.db", "0123456789abcdef"
    folder = execute.run_checkpoint_dir(store, key)
    _write_checkpoint(folder)
    died = {"status": "failed", "error": "WorkerDied: the worker process running this run died"}
    execute.end_checkpoint(store, key, died)
    assert (folder / resume.STATE_FILE).is_file()  # its retry resumes from it
    other = execute.run_checkpoint_dir(store, "fedcba9876543210")
    _write_checkpoint(other)
    execute.end_checkpoint(store, key, {"status": "failed", "error": "ValueError: bad"})
    assert not folder.exists() and other.is_dir()  # the folder of checkpoints stays for other
    execute.end_checkpoint(store, "fedcba9876543210", {"status": "done"})
    assert not other.exists() and not other.parent.exists()


def test_rerun_trains_anew_instead_of_resuming_a_checkpoint_left_behind(
    tmp_path, monkeypatch, capfd
):
    spec = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 120}},
            "methods": {"zero-impute": {}},
            "missing": ["none"],
            "seeds": [0],
            "budget": {"max_epochs": 2},
        }
    )
    store = tmp_path / "r.db"
    # a checkpoint left behind, as by a run killed before it was recorded
    monkeypatch.setattr(execute, "end_checkpoint", lambda *args: None)
    run_benchmark(spec, store, jobs=1, threads=1)
    (run,) = spec.runs()
    assert (execute.run_checkpoint_dir(store, run.key) / resume.STATE_FILE).is_file()
    capfd.readouterr()
    # --rerun (to retake timings, or after a change the key cannot see) trains from epoch 1
    run_benchmark(spec, store, jobs=1, threads=1, rerun=["zero-impute"])
    assert "resuming" not in capfd.readouterr().err


def test_removal_leaves_a_checkpoint_a_live_training_holds(tmp_path):
    # a run taken over while the process whose claim expired still trains into its folder:
    # the new owner's end (or --rerun) must not delete the files that training writes
    store, key = tmp_path / "r.db", "0123456789abcdef"
    folder = execute.run_checkpoint_dir(store, key)
    _write_checkpoint(folder)
    training = resume.TrainingCheckpoint.open(folder, {}, None, torch.nn.Linear(1, 1))
    try:
        execute.end_checkpoint(store, key, {"status": "failed", "error": "MlmmError: in use"})
        assert (folder / resume.STATE_FILE).is_file()
    finally:
        training.close()
    execute.remove_run_checkpoint(store, key)  # released: removed, with the folder above it
    assert not folder.exists() and not folder.parent.exists()


def test_a_tuned_run_gives_the_checkpoint_to_its_final_training_only(tmp_path, monkeypatch):
    # the trials (each another configuration) must not share the run's folder
    import mlmm.experiment
    import mlmm.tune.study

    seen = {}

    def tune(run):
        seen["tuned"] = dict(run.budget)
        return SimpleNamespace(params={}, trainer={"lr": 0.01})

    def experiment(*args, trainer, **kwargs):
        seen["trained"] = trainer
        raise RuntimeError("stop here")

    monkeypatch.setattr(mlmm.tune.study, "tune_run", tune)
    monkeypatch.setattr(mlmm.experiment, "run_experiment", experiment)
    spec = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 120}},
            "methods": {"hemis": {}},
            "missing": ["none"],
            "seeds": [0],
            "budget": {"max_epochs": 2},
            "tune": {"trials": 1, "seed": 100},
        }
    )
    (run,) = spec.runs()
    store = tmp_path / "r.db"
    outcome = execute.execute_run(execute.run_payload(run, store, "local"), threads=1)
    assert outcome["error"] == "RuntimeError: stop here"
    assert "checkpoint_dir" not in seen["tuned"]
    assert seen["trained"]["lr"] == 0.01  # the study's choice, with the folder
    assert seen["trained"]["checkpoint_dir"] == str(execute.run_checkpoint_dir(store, run.key))
