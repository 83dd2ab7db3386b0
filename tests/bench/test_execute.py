"""Running benchmarks: resume, failures, kill -9, two processes on one store, executors."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from mlmm.bench import execute
from mlmm.bench.execute import plan_threads, run_benchmark
from mlmm.bench.spec import load_spec, parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

KEY = ["run_key", "method", "condition", "scope", "subset", "metric"]


def rows(path) -> pd.DataFrame:
    with ResultsStore(path) as db:
        table = db.results()
    return table.sort_values(KEY).reset_index(drop=True)


def bench_process(spec, store) -> subprocess.Popen:
    """``mlmm bench`` in its own process (one job, one thread: same results as in-process)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mlmm.cli", "bench", str(spec), "--store", str(store)]
        + ["--jobs", "1", "--threads", "1", "--no-report"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "jobs, threads, cores, expected",
    [(1, None, 2, 2), (2, None, 2, 1), (1, 1, 2, 1), (3, None, 8, 2)],
)
def test_threads_per_worker_never_oversubscribe(jobs, threads, cores, expected):
    assert plan_threads(jobs, threads, cores, limit=64) == expected


def test_default_threads_follow_omp_num_threads_and_the_usable_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert plan_threads(1, None, cores=2) == 1  # not "1 job × 2 threads"
    assert execute.thread_limit() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setattr("torch.get_num_threads", lambda: 3)
    assert execute.thread_limit() == 3 and plan_threads(1, None, cores=16) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("torch.get_num_threads", lambda: 64)
    # the cores this process may use (its affinity set), not the machine's count
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert execute.available_cores() == 2 and plan_threads(1) == 2
    assert plan_threads(1, 4, cores=8) == 4  # an explicit --threads is kept


@pytest.mark.parametrize(
    "jobs, threads, phrase",
    [(3, None, "--jobs 3 exceeds the 2 cores"), (2, 2, "use --threads 1"), (0, None, "positive")],
)
def test_oversubscription_is_refused_with_the_fix(jobs, threads, phrase):
    with pytest.raises(MlmmError, match=phrase):
        plan_threads(jobs, threads, cores=2)


def test_on_a_cluster_the_local_cores_do_not_bound_the_jobs():
    assert plan_threads(64, None, cores=2, cluster=True) == 1
    assert plan_threads(8, 4, cores=2, cluster=True) == 4
    with pytest.raises(MlmmError, match="positive"):
        plan_threads(8, 0, cores=2, cluster=True)


def test_rerun_skips_finished_runs_and_a_failure_does_not_stop_the_rest(
    tmp_path, tiny_spec_file, monkeypatch
):
    data = load_spec(tiny_spec_file).model_dump()
    data["methods"]["hemis"] = {}
    spec = parse_spec(data)
    real = execute.execute_run

    def hemis_breaks(config, threads):  # a failure inside training, where runs do fail
        if config["method"] == "hemis":
            config = {**config, "method_params": {**config["method_params"], "depth": -1}}
        return real(config, threads)

    monkeypatch.setattr(execute, "execute_run", hemis_breaks)
    first = run_benchmark(spec, tmp_path / "r.db", threads=1)
    assert (first.ran, first.failed) == (6, 2)
    with ResultsStore(tmp_path / "r.db") as db:
        runs = db.runs()
    failed = runs[runs.status == "failed"]
    assert set(failed.method) == {"hemis"} and failed.error.str.contains("depth").all()
    assert set(rows(tmp_path / "r.db").method) == {"late-fusion", "zero-impute", "bayes-optimal"}

    calls = []
    monkeypatch.setattr(execute, "execute_run", lambda c, t: calls.append(c) or real(c, t))
    second = run_benchmark(spec, tmp_path / "r.db", threads=1)
    assert second.skipped == 4 and {c["method"] for c in calls} == {"hemis"}  # failed: rerun
    calls.clear()
    third = run_benchmark(spec, tmp_path / "r.db", threads=1, retry_failed=False)
    assert third.skipped == 6 and calls == []


def test_a_hyperparameter_out_of_range_stops_the_benchmark_before_any_run(
    tmp_path, tiny_spec_file, monkeypatch
):
    data = load_spec(tiny_spec_file).model_dump()
    data["methods"]["hemis"] = {"hidden": 0}
    calls = []
    monkeypatch.setattr(execute, "execute_run", lambda c, t: calls.append(c))
    with pytest.raises(MlmmError) as err:
        run_benchmark(parse_spec(data), tmp_path / "r.db", threads=1)
    message = str(err.value)
    assert "'hemis'" in message and "hidden" in message and "\n" not in message
    assert calls == []  # nothing trained, nothing recorded as failed
    with ResultsStore(tmp_path / "r.db") as db:
        assert set(db.status().values()) == {"pending"}


def test_kill_9_mid_benchmark_then_rerun_gives_the_same_rows(tmp_path, tiny_spec_file):
    reference = tmp_path / "reference.db"
    assert bench_process(tiny_spec_file, reference).wait(timeout=600) == 0

    store = tmp_path / "killed.db"
    proc = bench_process(tiny_spec_file, store)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill it once a run is done and the next one has started
        if store.exists():
            with ResultsStore(store) as db:
                status = db.runs().status.tolist()
            if "done" in status and "running" in status:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with ResultsStore(store) as db:
        assert "done" in db.runs().status.tolist()
    assert bench_process(tiny_spec_file, store).wait(timeout=600) == 0

    killed, uninterrupted = rows(store), rows(reference)
    assert len(killed) == len(uninterrupted)
    pd.testing.assert_frame_equal(killed, uninterrupted)
    with ResultsStore(store) as db:
        assert set(db.runs().status) == {"done"}


def test_two_processes_on_one_store_stay_consistent(tmp_path, tiny_spec_file):
    store = tmp_path / "shared.db"
    first, second = bench_process(tiny_spec_file, store), bench_process(tiny_spec_file, store)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.wait(timeout=600) == 0, second.stderr.read()
    with ResultsStore(store) as db:
        runs = db.runs()
    assert set(runs.status) == {"done"} and len(runs) == 4
    assert (runs.attempts == 1).all(), "a run was trained twice"
    table = rows(store)
    assert not table.duplicated(KEY).any()
    assert set(table.run_key) == set(runs.run_key)


def test_a_process_pool_gives_the_same_results_as_one_process(tmp_path, tiny_spec_file):
    spec = load_spec(tiny_spec_file)
    run_benchmark(spec, tmp_path / "inline.db", jobs=1, threads=1)
    outcome = run_benchmark(spec, tmp_path / "pool.db", jobs=2, threads=1)
    assert outcome.ran == 4 and outcome.failed == 0
    pd.testing.assert_frame_equal(rows(tmp_path / "pool.db"), rows(tmp_path / "inline.db"))
    with ResultsStore(tmp_path / "pool.db") as db:
        assert set(db.runs().threads) == {1}


def test_ray_executor_writes_the_same_results(tmp_path, tiny_spec_file):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'mlmm[ray]'")
    spec = load_spec(tiny_spec_file)
    run_benchmark(spec, tmp_path / "inline.db", jobs=1, threads=1)
    try:
        outcome = run_benchmark(spec, tmp_path / "ray.db", jobs=2, threads=1, executor="ray")
    finally:
        ray.shutdown()
    assert outcome.ran == 4 and outcome.failed == 0
    pd.testing.assert_frame_equal(rows(tmp_path / "ray.db"), rows(tmp_path / "inline.db"))


def test_unknown_executor_is_refused(tmp_path, tiny_spec_file):
    with pytest.raises(MlmmError, match="'local' or 'ray'"):
        run_benchmark(load_spec(tiny_spec_file), tmp_path / "r.db", executor="slurm")


def test_a_spec_plugin_is_imported_by_every_worker(tmp_path, plugin_module):
    spec = parse_spec(
        {
            "plugins": [plugin_module],
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"plugin-fusion": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0, 1],
            "budget": {"max_epochs": 2},
        }
    )
    assert {r.plugins for r in spec.runs()} == {(plugin_module,)}
    # spawned workers start without the plugin: they import it from the run's configuration
    outcome = run_benchmark(spec, tmp_path / "r.db", jobs=2, threads=1)
    assert (outcome.ran, outcome.failed) == (2, 0)
    assert set(rows(tmp_path / "r.db").method) == {"plugin-fusion", "bayes-optimal"}


def test_runs_without_plugins_keep_their_keys(tiny_spec_file):
    # keys of stores written before plugins existed stay valid
    run = load_spec(tiny_spec_file).runs()[0]
    assert "plugins" not in run.to_dict()
