"""Running benchmarks: resume, failures, kill -9, two processes on one store, executors."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mlmm._pool_worker import ORPHAN_EXIT_CODE
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
    assert execute.available_cores() == 2
    assert plan_threads(1) == 1  # not the cores: the thread count changes the rows
    assert plan_threads(1, 4, cores=8) == 4  # an explicit --threads is kept


GIB = 1 << 30


@pytest.mark.parametrize(
    "runs, threads, cores, memory, expected",
    [
        (30, 1, 2, 64 * GIB, 2),  # the quick suite on 2 cores: 2 jobs × 1 thread
        (30, 2, 8, 64 * GIB, 4),  # OMP_NUM_THREADS=2 on 8 cores
        (3, 1, 64, 64 * GIB, 3),  # never more workers than runs
        (30, 1, 64, 5 * GIB, 3),  # nor than the free memory holds (1.5 GiB each)
        (30, 1, 64, GIB // 2, 1),  # at least one
        (30, 3, 2, 64 * GIB, 1),  # more threads than cores: one job (plan_threads refuses)
    ],
)
def test_default_jobs_fill_the_usable_cores_within_runs_and_memory(
    runs, threads, cores, memory, expected
):
    assert execute.plan_jobs(runs, threads, cores, memory) == expected


def test_the_default_plan_follows_affinity_and_omp_num_threads(monkeypatch):
    spec = parse_spec(
        {
            "datasets": {"synthetic": {}},
            "methods": {"zero-impute": {}, "late-fusion": {}, "hemis": {}},
            "missing": ["none", "mcar:0.5"],
            "seeds": [0],
        }
    )  # 6 runs
    monkeypatch.setattr("torch.get_num_threads", lambda: 64)
    monkeypatch.setattr(execute, "available_memory", lambda: 64 * GIB)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert execute.benchmark_plan(spec, None, None, "local", None) == (4, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert execute.benchmark_plan(spec, None, None, "local", None) == (2, 2)
    assert execute.benchmark_plan(spec, 1, None, "local", None) == (1, 2)  # --jobs 1
    assert execute.benchmark_plan(spec, None, 1, "local", None) == (4, 1)  # --threads 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert execute.benchmark_plan(spec, None, 1, "local", None) == (6, 1)  # 6 runs
    # on a Ray cluster this machine's cores say nothing about the cluster's
    assert execute.benchmark_plan(spec, None, None, "ray", "head:6379") == (1, 1)


def _cgroup(folder, limit, used, stat="", v1=False):
    folder.mkdir(parents=True, exist_ok=True)
    names = ("memory.limit_in_bytes", "memory.usage_in_bytes") if v1 else None
    names = names or ("memory.max", "memory.current")
    (folder / names[0]).write_text(f"{limit}\n")
    (folder / names[1]).write_text(f"{used}\n")
    (folder / "memory.stat").write_text(stat)


def test_available_memory_reads_meminfo_and_the_cgroup_limits(tmp_path, monkeypatch):
    meminfo, proc, root = tmp_path / "meminfo", tmp_path / "cgroup", tmp_path / "sys"
    meminfo.write_text(f"MemTotal: {16 * GIB // 1024} kB\nMemAvailable: {8 * GIB // 1024} kB\n")
    monkeypatch.setattr(execute, "MEMINFO", str(meminfo))
    monkeypatch.setattr(execute, "PROC_CGROUP", str(proc))
    monkeypatch.setattr(execute, "CGROUP_ROOT", str(root))
    # cgroup v2, a container with its own namespace: the limit at the mount point
    proc.write_text("0::/\n")
    _cgroup(root, 4 * GIB, GIB)
    assert execute.available_memory() == 3 * GIB  # what the container has left
    _cgroup(root, "max", GIB)  # no limit
    assert execute.available_memory() == 8 * GIB
    # a Slurm job or systemd unit without a namespace: its own folder, limited on an ancestor;
    # the inactive page cache (files read) is reclaimed before the limit is reached
    proc.write_text("0::/job_7/step_0\n")
    _cgroup(root / "job_7", 4 * GIB, 3 * GIB, f"anon 1\ninactive_file {GIB}\n")
    _cgroup(root / "job_7" / "step_0", "max", 3 * GIB)
    assert execute.available_memory() == 2 * GIB  # was 8: the job's limit went unseen
    # cgroup v1 (hybrid: "0::/" names the unified tree, without memory.max), a container whose
    # memory folder is bind-mounted at the root, while /proc names the host's path
    (root / "memory.max").unlink()
    proc.write_text("4:memory:/docker/abc\n0::/\n1:cpu,cpuacct:/docker/abc\nodd\n")
    v1 = root / "memory"
    _cgroup(v1, 6 * GIB, 5 * GIB, f"inactive_file 1\ntotal_inactive_file {GIB}\n", v1=True)
    assert execute.available_memory() == 2 * GIB
    _cgroup(v1, 9223372036854771712, 5 * GIB, v1=True)  # v1's "no limit"
    assert execute.available_memory() == 8 * GIB
    # not Linux: neither /proc nor /sys/fs/cgroup; the jobs are not bounded by memory
    monkeypatch.setattr(execute, "MEMINFO", str(tmp_path / "absent"))
    monkeypatch.setattr(execute, "PROC_CGROUP", str(tmp_path / "absent"))
    assert execute.available_memory() is None and execute.cgroup_memory_left() is None


@pytest.mark.parametrize("value", ["", "abc", "0", "-2", "4,2", "²", "1.5"])
def test_omp_num_threads_that_is_not_a_positive_integer_gives_one_thread(value, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr("torch.get_num_threads", lambda: 8)
    assert execute.thread_limit() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", " 4 ")
    assert execute.thread_limit() == 4


def test_default_threads_on_ray_stay_within_the_spec_resources_num_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setattr("torch.get_num_threads", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    data = {
        "datasets": {"synthetic": {}},
        "methods": {"zero-impute": {}},
        "missing": ["none"],
        "seeds": [0],
    }
    spec = parse_spec({**data, "resources": {"num_cpus": 1}})
    assert execute.benchmark_threads(spec, 1, None, "local", None) == 4  # local: not read
    threads = execute.benchmark_threads(spec, 1, None, "ray", None)
    assert threads == 1  # was 4, and then refused: "--threads 4 exceeds resources.num_cpus 1"
    execute.check_resources(spec, "ray", threads)
    with pytest.raises(MlmmError, match="exceeds resources.num_cpus 1"):  # an explicit one
        execute.check_resources(spec, "ray", execute.benchmark_threads(spec, 1, 2, "ray", None))


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
    # nor left pending: a corrected spec has other keys and never ran them, so the report
    # counted them as unfinished forever
    assert not (tmp_path / "r.db").exists()
    with ResultsStore(tmp_path / "r.db") as db:  # a store of another spec's runs
        db.add_runs("tiny", load_spec(tiny_spec_file).runs())
    with pytest.raises(MlmmError, match="'hemis'"):
        run_benchmark(parse_spec(data), tmp_path / "r.db", threads=1)
    with ResultsStore(tmp_path / "r.db") as db:
        assert set(db.runs().method) == {"late-fusion", "zero-impute"}


def test_the_runs_left_to_do_are_read_without_writing_even_from_an_empty_file(
    tmp_path, tiny_spec_file
):
    runs = load_spec(tiny_spec_file).runs()
    empty = tmp_path / "empty.db"
    empty.touch()  # a store path made by mktemp: the benchmark takes it as a new store
    assert execute._left_to_do(empty, runs, True, ()) == runs
    assert empty.stat().st_size == 0
    with ResultsStore(tmp_path / "r.db") as db:
        db.add_runs("tiny", runs)
        assert db.claim(runs[0].key)
        db.fail(runs[0].key, {"error": "boom"})
    assert execute._left_to_do(tmp_path / "r.db", runs, True, ()) == runs
    assert execute._left_to_do(tmp_path / "r.db", runs, False, ()) == runs[1:]
    assert execute._left_to_do(tmp_path / "r.db", runs, False, ("late-fusion",)) == runs


def test_a_blank_sqlite_file_is_still_taken_as_a_new_store(tmp_path, tiny_spec_file):
    # the read before the build check refused it ("not an mlmm results store"), though the
    # store opened to write takes a SQLite file without tables as a new store
    import sqlite3
    from contextlib import closing

    runs = load_spec(tiny_spec_file).runs()
    blank = tmp_path / "blank.db"
    with closing(sqlite3.connect(blank)) as raw:
        raw.execute("PRAGMA journal_mode=WAL")  # writes the header: a non-empty file
    assert blank.stat().st_size > 0
    assert execute._left_to_do(blank, runs, True, ()) == runs
    with ResultsStore(blank) as db:
        assert db.runs().empty


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


def test_a_training_condition_that_removes_a_modality_everywhere_stops_before_any_run(
    tmp_path, monkeypatch
):
    # 'fixed:-m0' as a training condition: every run used to fail after loading, with the
    # trainer's "modality 'm0' is absent from every training sample"
    spec = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 200}},
            "methods": {"late-fusion": {}},
            "missing": ["fixed:-m0", {"train": "none", "test": ["fixed:-m0"]}],
            "seeds": [0],
        }
    )
    calls = []
    monkeypatch.setattr(execute, "execute_run", lambda c, t: calls.append(c))
    with pytest.raises(
        MlmmError, match=r"training condition 'fixed:-m0' .* 'm0' absent from every"
    ):
        run_benchmark(spec, tmp_path / "r.db", threads=1)
    assert calls == [] and not (tmp_path / "r.db").exists()
    ok = parse_spec({**spec.model_dump(), "missing": [{"train": "none", "test": ["fixed:-m0"]}]})
    execute.check_conditions(ok.runs())  # the same pattern as a test condition is fine


def test_a_dataset_that_cannot_load_is_named_as_such_not_as_a_split_error(tmp_path):
    # was "split 'random' cannot be made for 'handwritten': unknown handwritten view 'zz'"
    spec = parse_spec(
        {
            "datasets": {"handwritten": {"views": ["pix", "zz"]}},
            "methods": {"late-fusion": {}},
            "missing": ["none"],
            "seeds": [0],
        }
    )
    with pytest.raises(MlmmError, match=r"^dataset 'handwritten' cannot be loaded: .* view 'zz'"):
        run_benchmark(spec, tmp_path / "r.db", threads=1)
    assert not (tmp_path / "r.db").exists()


def test_a_process_pool_gives_the_same_results_as_one_process(
    tmp_path, tiny_spec_file, monkeypatch
):
    spec = load_spec(tiny_spec_file)
    run_benchmark(spec, tmp_path / "inline.db", jobs=1, threads=1)
    # the default plan on 2 usable cores: 2 jobs × 1 thread, the rows of 1 job × 1 thread
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(execute, "available_memory", lambda: None)
    plans = []

    def on_event(kind, run, progress):
        if kind == "plan":
            plans.append((progress.jobs, progress.threads))

    outcome = run_benchmark(spec, tmp_path / "pool.db", jobs=None, on_event=on_event)
    assert (outcome.jobs, outcome.threads) == (2, 1) and plans == [(2, 1)]
    assert outcome.ran == 4 and outcome.failed == 0
    pd.testing.assert_frame_equal(rows(tmp_path / "pool.db"), rows(tmp_path / "inline.db"))
    with ResultsStore(tmp_path / "pool.db") as db:
        assert set(db.runs().threads) == {1}
        db.reset([spec.runs()[0].key])
    # one run left to do: no second worker for it
    outcome = run_benchmark(spec, tmp_path / "pool.db", jobs=None, on_event=on_event)
    assert (outcome.jobs, outcome.ran, outcome.skipped) == (1, 1, 3) and plans[-1] == (1, 1)
    pd.testing.assert_frame_equal(rows(tmp_path / "pool.db"), rows(tmp_path / "inline.db"))


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
    assert not (tmp_path / "r.db").exists()  # refused before the store is created


def test_a_spec_plugin_is_imported_by_every_worker(tmp_path, plugin_module):
    spec = parse_spec(
        {
            "plugins": [plugin_module],
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"plugin-fusion": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0, 1],
            "budget": {"max_epochs": 2},
        },
        allow_plugins=[plugin_module],
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


@pytest.fixture
def killer_plugin(tmp_path, monkeypatch):
    """A plugin registering ``killer-fusion``: late-fusion whose pool worker SIGKILLs itself
    when training starts (only in a worker process, never in the test's own)."""
    from mlmm.methods import METHODS

    name = f"mlmm_test_killer_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import multiprocessing
            import os
            import signal

            from mlmm.methods.combination.late_fusion import LateFusion
            from mlmm.methods.registry import register_method


            @register_method("killer-fusion", family="combination", subtype="ensemble", paper="test")
            class KillerFusion(LateFusion):
                \"\"\"late-fusion whose worker process is killed when it trains.\"\"\"

                def forward(self, batch):
                    if self.training and multiprocessing.parent_process() is not None:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return super().forward(batch)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield name
    sys.modules.pop(name, None)


def test_a_killed_worker_fails_only_its_run_and_the_pool_goes_on(tmp_path, killer_plugin, capfd):
    spec = parse_spec(
        {
            "plugins": [killer_plugin],
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"killer-fusion": {}, "late-fusion": {}, "zero-impute": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
            "budget": {"max_epochs": 2},
        },
        allow_plugins=[killer_plugin],
    )
    outcome = run_benchmark(spec, tmp_path / "r.db", jobs=2, threads=1)
    assert (outcome.ran, outcome.failed) == (3, 1)
    with ResultsStore(tmp_path / "r.db") as db:
        runs = db.runs().set_index("method")
        assert db.claims().empty
    assert runs.loc["killer-fusion", "status"] == "failed"
    assert (
        "worker process running this run died (killed by SIGKILL"
        in (runs.loc["killer-fusion", "error"])
    )
    # the run in flight on the healthy worker, and the one after the replacement, finished
    assert runs.loc[["late-fusion", "zero-impute"], "status"].tolist() == ["done", "done"]
    assert (runs.attempts == 1).all()
    assert "Traceback" not in capfd.readouterr().err


def _alive(pid: int) -> bool:
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its reaping is left


def _spawned_children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return children


def _working(workers: list[int]) -> bool:
    """Two workers that have loaded torch (so they were set up and took their runs)."""

    def loaded(pid: int) -> bool:
        try:
            return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return False

    return len(workers) == 2 and all(loaded(pid) for pid in workers)


def _bench_with_two_workers(spec_file: Path, store: Path, **popen):
    """``mlmm bench`` started in a subprocess, once its two pool workers have loaded torch:
    the process and the workers' pids (the process is killed if they never get there)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlmm.cli", "bench", str(spec_file), "--store", str(store)]
        + ["--jobs", "2", "--threads", "1", "--no-report", "--epochs", "500"],
        stdout=subprocess.DEVNULL,
        **popen,
    )
    deadline = time.time() + 300
    workers: list[int] = []
    while not _working(workers) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = _spawned_children(proc.pid)
    if not _working(workers):
        proc.kill()
        proc.wait()
        pytest.fail("the pool did not start two workers")
    return proc, workers


def _assert_gone(workers: list[int]) -> None:
    """The workers end within 10 s."""
    deadline = time.time() + 10
    while any(_alive(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "workers kept running"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_their_coordinator_is_killed(tmp_path, tiny_spec_file):
    store = tmp_path / "orphans.db"
    proc, workers = _bench_with_two_workers(tiny_spec_file, store, stderr=subprocess.DEVNULL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _assert_gone(workers)


def test_a_worker_whose_parent_is_gone_exits_at_once():
    code = (
        "from mlmm._pool_worker import watch_parent; watch_parent(-1); import time; time.sleep(60)"
    )
    result = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert result.returncode == ORPHAN_EXIT_CODE


def _server(reply: bytes | None):
    """A local TCP server that answers every connection with ``reply`` (None: silence)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)
            if reply is not None:
                connection.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return server, f"127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("ray") is None, reason="checks need Ray installed"
)
@pytest.mark.parametrize(
    "reply, accepted",
    [
        (None, False),  # listens, never answers: Ray itself would retry for ever
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", False),
        (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", True),  # an HTTP/2 SETTINGS frame, as gRPC
    ],
)
def test_a_ray_address_that_is_not_a_ray_cluster_is_refused_in_bounded_time(reply, accepted):
    server, address = _server(reply)
    started = time.monotonic()
    try:
        if accepted:
            execute.check_executor("ray", address, connect_timeout=2)
        else:
            with pytest.raises(MlmmError, match="answers but is not a Ray cluster"):
                execute.check_executor("ray", address, connect_timeout=0.5)
    finally:
        server.close()
    assert time.monotonic() - started < 5


@pytest.mark.skipif(os.name != "posix", reason="kills by signal")
def test_the_watchdog_alone_ends_a_worker_whose_parent_was_killed():
    # the portable path (no PR_SET_PDEATHSIG, as on macOS): the thread polling the parent pid
    worker = (
        "import os, sys, time; sys.platform = 'darwin'; "
        "from mlmm._pool_worker import watch_parent; watch_parent(os.getppid(), 0.1); "
        "print('armed', flush=True); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"child = subprocess.Popen([sys.executable, '-c', {worker!r}]); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        child = int(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "armed"  # past the check at arming
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def test_an_unknown_rerun_method_is_refused_before_the_store_is_written(tmp_path, tiny_spec_file):
    with pytest.raises(MlmmError, match=r"cannot rerun \['nope'\]"):
        run_benchmark(load_spec(tiny_spec_file), tmp_path / "r.db", threads=1, rerun=["nope"])
    assert not (tmp_path / "r.db").exists()  # no runs registered, no spec saved


def test_claims_left_by_an_earlier_call_of_this_process_are_run_not_waited_for(
    tmp_path, tiny_spec_file, monkeypatch
):
    spec = load_spec(tiny_spec_file)
    with ResultsStore(tmp_path / "r.db") as db:  # a call stopped before it could release
        db.add_runs(spec.name, spec.runs())
        assert db.claim(spec.runs()[0].key)
    monkeypatch.setattr(execute, "execute_run", lambda c, t: {"status": "failed", "error": "x"})

    def never_wait(kind, run, progress):
        if kind == "waiting":  # its own claim never expires for it: it would wait for ever
            raise AssertionError("waited for a claim of this very process")

    outcome = run_benchmark(spec, tmp_path / "r.db", threads=1, on_event=never_wait)
    assert outcome.ran == len(spec.runs())


def test_active_parameters_per_sample_of_sparse_dense_and_per_subset_models():
    from mlmm.bench.execute import active_parameters
    from mlmm.methods import create_method
    from mlmm.testing import contract_dataset

    data = contract_dataset(n_samples=20)
    moe = create_method("flex-moe", data.specs, data.task)
    total = sum(p.numel() for p in moe.parameters())
    assert active_parameters(moe, total) == moe.active_parameters() < total
    # per sample, not per token: a complete sample's 3 tokens x top-k may reach 3 k experts
    expert, k = moe.blocks[0].moe.expert_size(), moe.top_k
    assert active_parameters(moe, total) == moe.token_active_parameters() + (3 * k - k) * expert
    assert active_parameters(moe, total) <= total / 3
    dense = create_method("late-fusion", data.specs, data.task)
    assert active_parameters(dense, 1234) == 1234  # no own count: every parameter
    subsets = create_method("per-subset", data.specs, data.task)
    sizes = subsets.cost_table().parameters
    assert active_parameters(subsets, int(sizes.sum())) == round(sizes.mean())  # one answers


def test_a_flex_moe_run_stores_one_samples_active_parameters(tmp_path):
    import mlmm

    spec = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 120}},
            "methods": {"flex-moe": {"embed_dim": 16, "hidden": 32}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
            "budget": {"max_epochs": 1},
        }
    )
    run_benchmark(spec, tmp_path / "r.db", threads=1)
    with ResultsStore(tmp_path / "r.db") as db:
        stored = db.runs().active_parameters.tolist()
    data = mlmm.load_dataset("synthetic", n_samples=120)
    model = mlmm.create_method("flex-moe", data.specs, data.task, embed_dim=16, hidden=32)
    # the worst case over presence patterns (a complete sample), not one token's count
    assert stored == [model.active_parameters()]
    assert model.active_parameters() > model.token_active_parameters()


def test_mlmm_bench_prints_the_plan_it_chose(tmp_path, monkeypatch, capsys):
    from mlmm import cli

    spec = tmp_path / "one.yaml"
    spec.write_text(
        "name: one\ndatasets: {synthetic: {n_samples: 240}}\nmethods: {zero-impute: {}}\n"
        "missing: [mcar:0.5]\nseeds: [0]\nbudget: {max_epochs: 2}\n"
    )
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr("torch.get_num_threads", lambda: 8)
    store = tmp_path / "one.db"
    argv = ["mlmm", "bench", str(spec), "--store", str(store), "--no-report"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    out = " ".join(capsys.readouterr().out.split())
    assert exit_code.value.code in (0, None), out
    # 8 usable cores, but one thread per run and one run: one job, in this process
    assert "1 runs, 1 job(s) × 1 thread(s)" in out
    with ResultsStore(store) as db:
        assert db.runs().threads.tolist() == [1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", signal.SIGTERM)]
)
def test_a_stop_signal_to_the_process_group_gives_the_runs_back_and_says_so(
    tmp_path, tiny_spec_file, stop
):
    """SIGTERM (coreutils timeout, a batch scheduler: sent to the whole process group) killed
    the coordinator where it stood, leaving its claims; its workers, killed by it too, would
    have had their runs recorded failed. Ctrl-C ended without a word. SIGHUP (the terminal
    closed: the shell sends it to the job's process group) killed them all, as SIGTERM did."""
    store = tmp_path / "stopped.db"
    proc, workers = _bench_with_two_workers(
        tiny_spec_file,
        store,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal or `timeout` gives it
    )
    try:
        deadline = time.time() + 300
        with ResultsStore(store) as db:
            while (db.runs().status == "running").sum() < 2 and time.time() < deadline:
                time.sleep(0.1)
        os.killpg(proc.pid, stop)
        err = proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + stop, err
    assert err.strip().splitlines()[-1] == (
        f"interrupted by {stop.name}; every finished run is kept in {store}; run the same "
        f"command again to resume"
    )
    assert "Traceback" not in err
    with ResultsStore(store) as db:
        runs = db.runs()
    assert set(runs.status) == {"pending"}, runs[["method", "status", "error"]]
    _assert_gone(workers)


def test_runs_finished_elsewhere_while_waiting_end_the_wait_at_once(
    tmp_path, tiny_spec_file, monkeypatch
):
    """When the runs it waited for ended in another process, `mlmm bench` printed "waiting for
    0 run(s) claimed by another process" and slept a poll interval before ending."""
    from mlmm.bench import store as store_module

    spec = load_spec(tiny_spec_file)
    path, here = tmp_path / "r.db", store_module.this_process

    def as_other(action):
        monkeypatch.setattr(store_module, "this_process", lambda: "elsewhere:1")
        try:
            with ResultsStore(path) as db:
                action(db)
        finally:
            monkeypatch.setattr(store_module, "this_process", here)

    def hold_all(db):
        db.add_runs(spec.name, spec.runs())
        db.heartbeat()  # a live holder on another host
        assert all(db.claim(r.key) for r in spec.runs())

    as_other(hold_all)
    monkeypatch.setattr(execute, "execute_run", lambda c, t: pytest.fail("ran a held run"))
    waits = []

    def on_event(kind, run, progress):
        if kind == "waiting":
            waits.append(progress.held_elsewhere)
            if len(waits) == 1:  # the holder ends every run while this process waits
                as_other(lambda db: [db.fail(r.key, {"error": "x"}) for r in spec.runs()])

    start = time.monotonic()
    outcome = run_benchmark(spec, path, threads=1, retry_failed=False, on_event=on_event)
    assert waits == [len(spec.runs())], "waited for runs no longer held"
    assert outcome.skipped == len(spec.runs()) and outcome.ran == 0
    assert time.monotonic() - start < 2 * execute.POLL_SECONDS


def test_with_one_job_a_run_whose_process_died_is_retried_in_a_worker(
    tmp_path, killer_plugin, monkeypatch
):
    """With one job a run trains in the benchmark's own process: a run that kills it (out of
    memory) killed it again on every rerun, before the runs after it could start."""
    import socket

    from mlmm.bench import store as store_module

    spec = parse_spec(
        {
            "plugins": [killer_plugin],
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"killer-fusion": {}, "late-fusion": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
            "budget": {"max_epochs": 2},
        },
        allow_plugins=[killer_plugin],
    )
    path, here = tmp_path / "r.db", store_module.this_process
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process of this host that has ended: the one the run killed
    monkeypatch.setattr(store_module, "this_process", lambda: f"{socket.gethostname()}:{gone.pid}")
    with ResultsStore(path) as db:
        db.add_runs(spec.name, spec.runs())
        assert db.claim(spec.runs()[0].key)  # killer-fusion, held by the dead process
    monkeypatch.setattr(store_module, "this_process", here)
    outcome = run_benchmark(spec, path, jobs=1, threads=1)
    assert (outcome.ran, outcome.failed) == (2, 1)
    with ResultsStore(path) as db:
        runs = db.runs().set_index("method")
    assert runs.loc["killer-fusion", "status"] == "failed"  # died in a worker, not in here
    assert runs.loc["killer-fusion", "error"].startswith("WorkerDied")
    assert runs.loc["killer-fusion", "attempts"] == 2
    assert runs.loc["late-fusion", "status"] == "done"


@pytest.fixture
def sleeper_plugin(tmp_path, monkeypatch):
    """A plugin registering ``sleeper-fusion``: late-fusion whose pool worker hangs (sleeps
    for an hour) when training starts (only in a worker process, never in the test's own)."""
    from mlmm.methods import METHODS

    name = f"mlmm_test_sleeper_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import multiprocessing
            import time

            from mlmm.methods.combination.late_fusion import LateFusion
            from mlmm.methods.registry import register_method


            @register_method("sleeper-fusion", family="combination", subtype="ensemble", paper="test")
            class SleeperFusion(LateFusion):
                \"\"\"late-fusion whose worker process hangs when it trains.\"\"\"

                def forward(self, batch):
                    if self.training and multiprocessing.parent_process() is not None:
                        time.sleep(3600)
                    return super().forward(batch)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield name
    sys.modules.pop(name, None)


def test_a_hung_worker_is_killed_at_its_cap_and_the_run_failed_then_retried(
    tmp_path, sleeper_plugin, monkeypatch, capfd
):
    spec = parse_spec(
        {
            "plugins": [sleeper_plugin],
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"sleeper-fusion": {}, "late-fusion": {}, "zero-impute": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
            "budget": {"max_epochs": 2},
        },
        allow_plugins=[sleeper_plugin],
    )
    # the 2 s cap for the hung run only: the healthy runs' timing on a loaded machine (a worker
    # still importing torch) must not decide the test
    cap = execute.run_time_cap
    monkeypatch.setattr(
        execute,
        "run_time_cap",
        lambda config, run_timeout=None: (
            cap(config, run_timeout) if config["method"] == "sleeper-fusion" else None
        ),
    )
    path = tmp_path / "r.db"

    def hung(signum, frame):
        raise TimeoutError("the benchmark waited for its hung worker")

    # without the cap the benchmark waits for the hung worker for ever: fail instead
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(150)
    try:
        outcome = run_benchmark(spec, path, jobs=2, threads=1, run_timeout=2.0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert (outcome.ran, outcome.failed) == (3, 1)
    with ResultsStore(path) as db:
        runs = db.runs().set_index("method")
        assert db.claims().empty
    error = runs.loc["sleeper-fusion", "error"]
    assert runs.loc["sleeper-fusion", "status"] == "failed"
    assert error.startswith("RunTimeout: the run was still running after 2 s")
    assert "--run-timeout SECONDS" in error and "\n" not in error
    # the run beside it and the one after the replacement worker finished
    assert runs.loc[["late-fusion", "zero-impute"], "status"].tolist() == ["done", "done"]
    # a rerun tries the failed run again, as it does every failed run
    outcome = run_benchmark(spec, path, jobs=2, threads=1, run_timeout=2.0)
    assert (outcome.ran, outcome.failed, outcome.skipped) == (1, 1, 2)
    with ResultsStore(path) as db:
        runs = db.runs().set_index("method")
    assert runs.loc["sleeper-fusion", "attempts"] == 2
    assert runs.loc["sleeper-fusion", "error"].startswith("RunTimeout")
    assert "Traceback" not in capfd.readouterr().err


def test_the_run_time_cap_rule():
    assert execute.run_time_cap({"budget": {"time_limit": 30}}) == 2 * 30 + 120
    assert execute.run_time_cap({"budget": {"time_limit": 30}}, 5.0) == 5.0
    assert execute.run_time_cap({"budget": {"time_limit": None}}, 5.0) == 5.0
    assert execute.run_time_cap({"budget": {"time_limit": None}}) is None
    assert execute.run_time_cap({"budget": {}}) is None


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), "10", True])
def test_a_run_timeout_that_is_not_positive_seconds_is_refused_before_the_store(
    tmp_path, tiny_spec_file, value
):
    with pytest.raises(MlmmError, match="--run-timeout must be"):
        run_benchmark(load_spec(tiny_spec_file), tmp_path / "r.db", run_timeout=value)
    assert not (tmp_path / "r.db").exists()


def test_an_explicit_run_timeout_with_one_job_runs_in_a_worker_process(monkeypatch):
    made = []
    monkeypatch.setattr(execute, "PoolExecutor", lambda *args: made.append(args) or "pool")
    assert isinstance(execute.make_executor("local", 1, 1), execute.InlineExecutor)
    # a run in the coordinator's own process cannot be killed safely: the capped one goes out
    assert execute.make_executor("local", 1, 1, run_timeout=5.0) == "pool"
    assert made == [(1, 1, 5.0)]


@dataclass(eq=False)
class _FakeRef:
    """A task's reference (hashable by identity); ``hangs``: it never finishes."""

    hangs: bool


class _FakeRay:
    """Stands in for Ray: a task finishes unless it hangs; ``cancel`` is recorded."""

    def __init__(self) -> None:
        self.cancelled, self.timeouts = [], []

    def wait(self, handles, num_returns, timeout):
        self.timeouts.append(timeout)
        ready = [h for h in handles if not h.hangs][:num_returns]
        if not ready:
            time.sleep(timeout)
        return ready, []

    def get(self, ref):
        return {"status": "done", "results": None}

    def cancel(self, ref, force):
        self.cancelled.append((ref, force))


def test_a_ray_task_past_its_cap_is_cancelled_by_force_and_its_run_failed():
    fake = _FakeRay()
    ray_executor = object.__new__(execute.RayExecutor)  # no Ray started: the fake stands in
    ray_executor._ray, ray_executor.threads, ray_executor.slots = fake, 1, 2
    ray_executor._task = type(
        "Task",
        (),
        {"remote": staticmethod(lambda config, threads: _FakeRef(config["method"] == "hung"))},
    )()
    ray_executor._running, ray_executor.run_timeout = {}, 0.3
    hung = ray_executor.submit({"method": "hung", "budget": {}})
    fine = ray_executor.submit({"method": "fine", "budget": {}})
    outcomes, started = {}, time.monotonic()
    while len(outcomes) < 2 and time.monotonic() - started < 10:
        for ref, outcome in ray_executor.wait([r for r in (hung, fine) if r not in outcomes], 2.0):
            outcomes[ref] = outcome
    assert outcomes[fine]["status"] == "done"
    assert outcomes[hung]["status"] == "failed"
    assert outcomes[hung]["error"].startswith("RunTimeout: the run was still running after 0.3 s")
    assert "cancelled (force=True)" in outcomes[hung]["error"]
    assert fake.cancelled == [(hung, True)] and ray_executor._running == {}
    assert max(fake.timeouts) <= 0.3  # woke up for the cap, not after the 2 s poll


def test_mlmm_bench_passes_run_timeout_and_refuses_a_bad_one_in_one_line(
    tmp_path, tiny_spec_file, monkeypatch, capsys
):
    from mlmm import cli

    seen = {}

    def fake_run_benchmark(*args, run_timeout=None, **kwargs):
        seen["run_timeout"] = execute.check_run_timeout(run_timeout)
        raise MlmmError("stopped here")

    monkeypatch.setattr(execute, "run_benchmark", fake_run_benchmark)
    for value in ("7.5", "0"):
        argv = ["mlmm", "bench", str(tiny_spec_file), "--store", str(tmp_path / "r.db")]
        monkeypatch.setattr(sys, "argv", [*argv, "--no-report", "--run-timeout", value])
        with pytest.raises(SystemExit) as exit_code:
            cli.main()
        assert exit_code.value.code != 0
    err = " ".join(capsys.readouterr().err.split())
    assert seen == {"run_timeout": 7.5}
    assert "--run-timeout must be a positive finite number of seconds, got 0.0" in err
    assert "Traceback" not in err
