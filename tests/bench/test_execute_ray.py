"""The Ray executor at size: lost tasks tried again and recorded, per-run resources, plugins
through the runtime environment, and a real two-node Ray cluster that loses a node."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from mlmm.bench import execute
from mlmm.bench.execute import (
    check_ray_gpus,
    check_resources,
    plugin_sources,
    ray_error_outcome,
    ray_task_options,
    run_benchmark,
)
from mlmm.bench.spec import Resources, parse_spec
from mlmm.bench.store import RESULT_FIELDS, ResultsStore
from mlmm.errors import MlmmError

SPEC = {
    "datasets": {"synthetic": {"n_samples": 200}},
    "methods": {"late-fusion": {}, "zero-impute": {}},
    "missing": ["mcar:0.5"],
    "seeds": [0],
    "budget": {"max_epochs": 1},
}


def fake_results(run: dict) -> pd.DataFrame:
    row = {"method": run["method"], "condition": "mcar:0.5", "rate_unit": "slots"}
    row |= {"slot_rate": 0.5, "sample_rate": 0.9, "scope": "overall", "subset": "all"}
    row |= {"n": 40, "metric": "accuracy", "value": 0.5}
    return pd.DataFrame([row])[list(RESULT_FIELDS)]


@dataclass(eq=False)
class Handle:
    config: dict


class LosingExecutor:
    """Stands in for Ray: the runs of ``lose`` lose their worker on their first ``times``
    attempts, every other attempt finishes."""

    slots = 2

    def __init__(self, lose: str, times: int) -> None:
        self.lose, self.times, self.tries = lose, times, {}

    def submit(self, config):
        self.tries[config["method"]] = self.tries.get(config["method"], 0) + 1
        return Handle(config)

    def wait(self, handles, timeout):
        handle = handles[0]
        method = handle.config["method"]
        if method == self.lose and self.tries[method] <= self.times:
            return [(handle, {"status": "lost", "error": "NodeDiedError: the node died"})]
        return [(handle, {"status": "done", "results": fake_results(handle.config)})]

    def close(self):
        pass


@pytest.fixture
def losing(monkeypatch):
    def install(lose: str, times: int) -> LosingExecutor:
        fake = LosingExecutor(lose, times)
        monkeypatch.setattr(execute, "make_executor", lambda *args, **kwargs: fake)
        return fake

    return install


def test_a_lost_run_is_tried_again_and_each_attempt_recorded(tmp_path, losing):
    fake = losing("late-fusion", times=1)
    events = []
    outcome = run_benchmark(
        parse_spec(SPEC), tmp_path / "r.db", on_event=lambda k, r, p: events.append(k)
    )
    assert outcome.failed == 0 and outcome.ran == 2 and events.count("retry") == 1
    assert fake.tries == {"late-fusion": 2, "zero-impute": 1}
    with ResultsStore(tmp_path / "r.db") as db:
        runs = db.runs().set_index("method")
        history = db.attempts()
    assert set(runs.status) == {"done"}
    assert runs.attempts.to_dict() == {"late-fusion": 2, "zero-impute": 1}
    lost = history[history.run_key == runs.loc["late-fusion", "run_key"]]
    assert lost.outcome.tolist() == ["lost", "done"] and lost.attempt.tolist() == [1, 2]
    assert (history.outcome == "done").sum() == 2  # every run done exactly once


def test_a_run_lost_on_every_attempt_fails_saying_so(tmp_path, losing):
    fake = losing("late-fusion", times=5)
    outcome = run_benchmark(parse_spec(SPEC), tmp_path / "r.db", max_attempts=2)
    assert outcome.failed == 1 and fake.tries["late-fusion"] == 2
    with ResultsStore(tmp_path / "r.db") as db:
        run = db.runs().set_index("method").loc["late-fusion"]
        history = db.attempts([run.run_key])
    assert run.status == "failed" and "lost on each of its 2 attempt(s)" in run.error
    assert "--max-attempts 2" in run.error and "\n" not in run.error
    assert history.outcome.tolist() == ["lost", "lost"]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_max_attempts_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(MlmmError, match="--max-attempts must be a positive integer"):
        run_benchmark(parse_spec(SPEC), tmp_path / "r.db", max_attempts=bad)
    assert not (tmp_path / "r.db").exists()


def test_rays_lost_worker_errors_are_retried_and_other_errors_fail():
    exceptions = pytest.importorskip("ray.exceptions")
    assert ray_error_outcome(exceptions.WorkerCrashedError())["status"] == "lost"
    assert ray_error_outcome(exceptions.LocalRayletDiedError())["status"] == "lost"
    assert ray_error_outcome(exceptions.TaskCancelledError())["status"] == "failed"
    failed = ray_error_outcome(ValueError("bad\nsecond line"))
    assert failed == {"status": "failed", "error": "ValueError: bad"}


def test_resources_become_the_tasks_options_and_do_not_change_run_keys():
    assert ray_task_options(2) == {
        "num_cpus": 2,
        "num_gpus": 0,
        "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "2", "CUDA_VISIBLE_DEVICES": ""}},
    }  # a run without a GPU reserved sees none
    options = ray_task_options(1, {"num_gpus": 0.5, "num_cpus": 4})
    assert options["num_cpus"] == 4 and options["num_gpus"] == 0.5
    assert "CUDA_VISIBLE_DEVICES" not in options["runtime_env"]["env_vars"]  # Ray sets it
    with pytest.raises(MlmmError, match="--threads 4 exceeds resources.num_cpus 2"):
        ray_task_options(4, {"num_cpus": 2})
    gpu_spec = {**SPEC, "budget": {**SPEC["budget"], "device": "auto"}}  # a GPU run's device
    with_gpus = parse_spec({**gpu_spec, "resources": {"num_gpus": 0.5, "num_cpus": 2}})
    assert [r.key for r in with_gpus.runs()] == [r.key for r in parse_spec(gpu_spec).runs()]
    with pytest.raises(MlmmError, match="resources.num_gpus"):
        parse_spec({**SPEC, "resources": {"num_gpus": -1}})
    with pytest.raises(MlmmError, match="resources.gpus: unknown field"):
        parse_spec({**SPEC, "resources": {"gpus": 1}})


def test_a_gpu_request_no_node_can_meet_is_refused_in_one_line():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0}},
        {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 4.0}},  # a dead node does not count
    ]
    with pytest.raises(MlmmError, match="no node of the Ray cluster at h:6379 has") as err:
        check_ray_gpus(nodes, 1, "h:6379")
    assert "\n" not in str(err.value)
    check_ray_gpus(nodes, 0, "h:6379")
    check_ray_gpus([{"Alive": True, "Resources": {"GPU": 2.0}}], 1.5, None)


def test_a_cuda_run_on_ray_without_num_gpus_is_refused():
    spec = SimpleNamespace(budget=SimpleNamespace(device="cuda:0"), resources=Resources())
    with pytest.raises(MlmmError, match="needs resources.num_gpus > 0"):
        check_resources(spec, "ray")
    check_resources(spec, "local")  # the local executor runs on this machine as it is
    check_resources(SimpleNamespace(budget=spec.budget, resources=Resources(num_gpus=1)), "ray")


def test_more_threads_than_the_reserved_cpus_are_refused_before_the_store_is_written(tmp_path):
    pytest.importorskip("ray")  # without it, the executor is refused first
    spec = parse_spec({**SPEC, "resources": {"num_cpus": 1}})
    with pytest.raises(MlmmError, match="--threads 2 exceeds resources.num_cpus 1"):
        run_benchmark(spec, tmp_path / "r.db", threads=2, executor="ray", ray_address="auto")
    assert not (tmp_path / "r.db").exists()


def test_a_gpu_reserved_for_a_cpu_run_is_refused():
    with pytest.raises(MlmmError, match="budget.device is 'cpu'; set budget.device: cuda"):
        parse_spec({**SPEC, "budget": {"device": "cpu"}, "resources": {"num_gpus": 1}})


def test_plugin_files_are_shipped_and_installed_modules_are_not(tmp_path, plugin_module):
    __import__(plugin_module)
    assert plugin_sources([plugin_module]) == [str((tmp_path / f"{plugin_module}.py").resolve())]
    package = tmp_path / "mlmm_test_pkg_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "methods.py").write_text("")
    __import__("mlmm_test_pkg_plugin.methods")
    try:
        assert plugin_sources(["mlmm_test_pkg_plugin.methods"]) == [str(package.resolve())]
    finally:
        sys.modules.pop("mlmm_test_pkg_plugin.methods", None)
        sys.modules.pop("mlmm_test_pkg_plugin", None)
    assert plugin_sources(["json", "pandas"]) == []  # the standard library, site-packages


# ---------------------------------------------------------------------- a real cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> dict[int, bytes]:
    """The processes of session ``sid`` (one Ray node: ``ray start`` run with its own
    session, its raylet, agents and workers, which Ray puts in process groups of their own),
    each with its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            title = (entry / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if int(fields[3]) == sid:
            found[int(entry.name)] = title
    return found


def _kill_node(node: subprocess.Popen) -> None:
    """``kill -9`` every process of a Ray node (of its session: nothing else is touched)."""
    for pid in _session(node.pid):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    node.wait()


@pytest.fixture
def ray_cluster():
    """A two-node Ray cluster on this machine, one CPU per node: a head and a worker node,
    each ``ray start --block`` in its own session (so a node is killed whole, and only
    this test's Ray processes are ever stopped). Yields the head's address and the worker
    node's process. Nodes find mlmm as this process does, not the test's plugin folder."""
    pytest.importorskip("ray")
    if not sys.platform.startswith("linux"):
        pytest.skip("the node's processes are found through /proc")
    temp = Path(tempfile.mkdtemp(prefix="mlmmray", dir="/tmp"))  # short: Ray's socket paths
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_health_check_initial_delay_ms": "0",  # a dead node is noticed in seconds
        "RAY_health_check_period_ms": "500",
        "RAY_health_check_failure_threshold": "3",
    }
    env.pop("MLMM_PLUGIN_FOLDERS", None)
    port = _free_port()
    start = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; main()"]
    common = ["--num-cpus=1", "--num-gpus=0", "--object-store-memory=80000000", "--block"]
    common += [f"--temp-dir={temp}", "--disable-usage-stats"]
    nodes: list[subprocess.Popen] = []

    def node(*args: str, log: str) -> subprocess.Popen:
        with open(temp / log, "w") as out:
            proc = subprocess.Popen(
                [*start, "start", *args, *common, f"--dashboard-agent-listen-port={_free_port()}"],
                env=env,
                cwd=temp,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        nodes.append(proc)
        return proc

    try:
        node(
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--dashboard-port={_free_port()}",
            log="head.log",
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if time.monotonic() > deadline or nodes[0].poll() is not None:
                    pytest.fail(f"the Ray head did not start: {(temp / 'head.log').read_text()}")
                time.sleep(0.3)
        worker = node(f"--address=127.0.0.1:{port}", log="worker.log")
        yield SimpleNamespace(address=f"127.0.0.1:{port}", worker=worker, env=env, temp=temp)
    finally:
        for proc in nodes:  # their sessions only: no other Ray on this machine is touched
            _kill_node(proc)
        shutil.rmtree(temp, ignore_errors=True)


CLUSTER_SPEC = """\
name: cluster
plugins: [{plugin}]
datasets:
  synthetic: {{n_samples: 300}}
methods:
  plugin-fusion: {{}}
missing: [mcar:0.3]
seeds: [0, 1, 2, 3, 4, 5]
budget: {{max_epochs: 3, patience: 3}}
"""


def test_a_killed_worker_node_costs_no_finished_run_and_every_run_ends_done_once(
    tmp_path, ray_cluster
):
    plugin = "mlmm_cluster_plugin"  # in the spec's folder only: the nodes get it through Ray
    (tmp_path / f"{plugin}.py").write_text(
        textwrap.dedent(
            """
            import time

            from mlmm.methods.combination.late_fusion import LateFusion
            from mlmm.methods.registry import register_method


            @register_method("plugin-fusion", family="combination", subtype="ensemble", paper="a test")
            class PluginFusion(LateFusion):
                \"\"\"late-fusion, training 2 s longer: a node is killed mid-run, not between.\"\"\"

                def fit(self, trainer, train, val):
                    time.sleep(2.0)
                    return super().fit(trainer, train, val)
            """
        )
    )
    spec = tmp_path / "cluster.yaml"
    spec.write_text(CLUSTER_SPEC.format(plugin=plugin))
    store = tmp_path / "cluster.db"
    bench = subprocess.Popen(
        [sys.executable, "-m", "mlmm.cli", "bench", str(spec), "--store", str(store)]
        + ["--executor", "ray", "--ray-address", ray_cluster.address, "--jobs", "2"]
        + ["--allow-spec-plugins", "--no-report"],
        env=ray_cluster.env,
        cwd=ray_cluster.temp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # mid-benchmark: a run finished, and the worker node is running another
        deadline, done_before = time.monotonic() + 90, None
        while time.monotonic() < deadline and bench.poll() is None:
            try:
                with ResultsStore(store, readonly=True) as db:
                    runs = db.runs()
            except MlmmError:  # not created yet
                runs = pd.DataFrame({"status": []})
            done = runs[runs.status == "done"]
            running = _session(ray_cluster.worker.pid).values()
            if len(done) and any(b"ray::execute_run" in title for title in running):
                done_before = done.set_index("run_key").finished_at
                break
            time.sleep(0.2)
        if done_before is None:
            bench.kill()
            pytest.fail(f"the worker node never ran a task mid-benchmark: {bench.communicate()[0]}")
        _kill_node(ray_cluster.worker)  # the node whole: raylet, workers, agents
        output, _ = bench.communicate(timeout=120)
    finally:
        bench.kill()
    assert bench.returncode == 0, output[-3000:]
    assert "lost" in output
    with ResultsStore(store, readonly=True) as db:
        runs = db.runs().set_index("run_key")
        history = db.attempts()
        results = db.results()
    assert len(runs) == 6 and set(runs.status) == {"done"}, runs.status
    # every run done exactly once: one done attempt, one set of results
    assert history[history.outcome == "done"].run_key.value_counts().eq(1).all()
    assert set(history[history.outcome == "done"].run_key) == set(runs.index)
    key = ["run_key", "method", "condition", "scope", "subset", "metric"]
    assert not results.duplicated(key).any() and set(results.run_key) == set(runs.index)
    # the run the dead node held was tried again, and that attempt recorded
    lost = history[history.outcome == "lost"]
    assert len(lost) >= 1 and lost.error.str.contains("Died|Crashed|Lost").all(), lost.error
    for run_key in lost.run_key:
        assert history[history.run_key == run_key].outcome.iloc[-1] == "done"
        assert runs.loc[run_key, "attempts"] >= 2
    # the runs finished before the kill were kept as they were
    assert (runs.loc[done_before.index, "finished_at"] == done_before).all()
    assert (runs.loc[done_before.index, "attempts"] == 1).all()
    assert (runs.method == "plugin-fusion").all()  # the plugin reached every node


def test_closing_the_ray_executor_cancels_the_tasks_still_running():
    """Ray tasks went on after an interrupted benchmark (close did nothing): on a cluster they
    kept training runs whose claims were given back, beside their reruns."""
    cancelled = []

    class FakeRay:
        @staticmethod
        def wait(handles, num_returns, timeout):
            return [handles[0]], handles[1:]

        @staticmethod
        def get(ref):
            return {"status": "done"}

        @staticmethod
        def cancel(ref, force):
            cancelled.append((ref, force))
            if ref == "gone":
                raise ValueError("already finished")

    class FakeTask:
        def __init__(self):
            self.refs = iter(["first", "second", "gone"])

        def remote(self, config, threads):
            return next(self.refs)

    executor = execute.RayExecutor.__new__(execute.RayExecutor)
    executor._ray, executor._task, executor._running, executor.threads = FakeRay, FakeTask(), {}, 1
    executor.run_timeout = None
    refs = [executor.submit({}) for _ in range(3)]
    assert executor.wait(refs, 1.0) == [("first", {"status": "done"})]
    executor.close()
    assert cancelled == [("second", True), ("gone", True)]  # not the finished one
