"""Running a benchmark: runs claimed in the store, executed in a process pool or on Ray.

Only the coordinating process writes to the store; workers (processes of a local pool, or Ray
tasks) train and score one run each and send back its tidy table. Every worker pins its
intra-op threads (torch, OpenMP, BLAS) so that jobs × threads never exceeds the cores: with
more, the maths on a small machine gets up to 100× slower. The threads used are stored with
every run.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mlmm.bench.spec import BenchSpec, RunConfig
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

#: Seconds between looks at the store while other processes hold the remaining runs.
POLL_SECONDS = 2.0


def available_cores() -> int:
    """CPU cores this process may use (its affinity set where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_threads(
    jobs: int, threads: int | None = None, cores: int | None = None, cluster: bool = False
) -> int:
    """Threads per worker so that ``jobs × threads ≤ cores``; errors name the fix.

    On a cluster (``cluster=True``: Ray at a given address) the local cores do not bound the
    jobs — Ray places each task on a node with ``threads`` free CPUs — and threads default to 1.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise MlmmError(f"--jobs must be a positive integer, got {jobs!r}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise MlmmError(f"--threads must be a positive integer, got {threads!r}")
    if cluster:
        return threads or 1
    cores = cores or available_cores()
    if jobs > cores:
        raise MlmmError(
            f"--jobs {jobs} exceeds the {cores} cores of this machine; use --jobs {cores} or "
            f"fewer (more workers than cores slow every run down)"
        )
    if threads is None:
        return max(1, cores // jobs)
    if jobs * threads > cores:
        raise MlmmError(
            f"--jobs {jobs} × --threads {threads} exceeds the {cores} cores of this machine; "
            f"use --threads {max(1, cores // jobs)} or fewer"
        )
    return threads


def pin_threads(threads: int) -> None:
    """Limit this process's intra-op threads (torch, OpenMP, BLAS) to ``threads``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def check_models(runs: Sequence[RunConfig]) -> None:
    """Build every model of ``runs`` once, on its dataset's modalities, before any run starts.

    An out-of-range hyperparameter (``hidden: 0``), or a method that cannot take a dataset
    (too many features, too many subsets), then stops the benchmark with one line naming the
    method, the dataset and the fix, instead of failing each of its runs one by one.
    """
    from mlmm.data.datasets import load_dataset
    from mlmm.methods import create_method

    datasets: dict[str, Any] = {}
    built: set[str] = set()
    for run in runs:
        data_key = json.dumps([run.dataset, run.dataset_params], sort_keys=True, default=str)
        model_key = json.dumps([data_key, run.method, run.method_params], default=str)
        if model_key in built:
            continue
        built.add(model_key)
        if data_key not in datasets:
            datasets[data_key] = load_dataset(run.dataset, **run.dataset_params)
        data = datasets[data_key]
        try:
            create_method(run.method, data.specs, data.task, **run.method_params)
        except MlmmError as err:
            raise MlmmError(
                f"method {run.method!r} cannot be built for dataset {run.dataset!r}: {err}"
            ) from None


def execute_run(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train and score one run in this process; never raises for a failing run.

    Returns ``{"status": "done", "results": DataFrame, **costs}`` or
    ``{"status": "failed", "error": str, "traceback": str}``; both carry ``threads``,
    ``machine`` and ``version``. A run with a ``tune`` block first tunes on its training
    split; a done run then also carries ``tuning`` (its study, for
    :meth:`~mlmm.bench.ResultsStore.save_study`).
    """
    import pandas as pd

    import mlmm
    from mlmm.experiment import run_experiment
    from mlmm.registry import load_plugins

    pin_threads(threads)
    run = RunConfig.from_dict(config)
    base = {"threads": threads, "machine": platform.node(), "version": mlmm.__version__}
    start = time.perf_counter()
    tuning = None
    try:
        load_plugins(run.plugins)  # a worker process registers the spec's plugins itself
        method_params, trainer = run.method_params, dict(run.budget)
        if run.tune is not None:  # tuned on this run's own training split, then trained
            from mlmm.tune.study import tune_run

            tuning = tune_run(run)
            method_params, trainer = tuning.params, {**trainer, **tuning.trainer}
        res = run_experiment(
            run.dataset,
            run.method,
            method_params=method_params,
            dataset_params=run.dataset_params,
            missing=run.train_missing,
            test_missing=list(run.test_missing),
            seed=run.seed,
            test_size=run.test_size,
            val_size=run.val_size,
            trainer={**trainer, "progress": False},
        )
    except Exception as err:  # a failing run is recorded, the others go on
        return {
            **base,
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
        }
    table = res.table
    if res.reference is not None:
        table = pd.concat([table, res.reference], ignore_index=True)
    trained = res.trained
    if tuning is not None:
        base["tuning"] = tuning.stored()
    return {
        **base,
        "status": "done",
        "results": table,
        "n_parameters": trained.n_parameters(),
        "n_models": int(getattr(trained.model, "n_models", 1)),
        "epochs": sum(len(h.epochs) for h in trained.histories),
        "train_seconds": trained.train_seconds,
        "run_seconds": time.perf_counter() - start,
        "latency_ms_per_sample": res.latency_ms_per_sample,
    }


# ---------------------------------------------------------------------- executors
class Executor(Protocol):
    """Runs :func:`execute_run` somewhere; the coordinator polls for finished runs."""

    slots: int

    def submit(self, config: dict[str, Any]) -> Any: ...

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, dict[str, Any]]]: ...

    def close(self) -> None: ...


@dataclass(eq=False)
class _Deferred:
    """A run the inline executor will execute when waited for (hashable by identity)."""

    config: dict[str, Any]


class InlineExecutor:
    """One run at a time in this process (``--jobs 1``: no pool, no overhead)."""

    def __init__(self, threads: int) -> None:
        self.slots, self.threads = 1, threads

    def submit(self, config: dict[str, Any]) -> _Deferred:
        return _Deferred(config)

    def wait(self, handles, timeout):
        handle = handles[0]
        return [(handle, execute_run(handle.config, self.threads))]

    def close(self) -> None:
        pass


class PoolExecutor:
    """A local pool of ``jobs`` worker processes (spawned: no state inherited from here)."""

    def __init__(self, jobs: int, threads: int) -> None:
        import multiprocessing

        self.slots, self.threads = jobs, threads
        self._pool = ProcessPoolExecutor(
            jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=pin_threads,
            initargs=(threads,),
        )

    def submit(self, config: dict[str, Any]) -> Future:
        return self._pool.submit(execute_run, config, self.threads)

    def wait(self, handles, timeout):
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [(f, _outcome(f)) for f in done]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Runs as Ray tasks (``ray.init(address=...)``; default: a local Ray), ``threads`` CPUs
    each; the results come back here and are written to the same store."""

    def __init__(self, jobs: int, threads: int, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise MlmmError(
                "--executor ray needs Ray: pip install 'mlmm[ray]' (or use --executor local)"
            ) from None
        self._ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": jobs * threads}
            ray.init(
                **kwargs,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}},
            )
        self.slots, self.threads = jobs, threads
        self._task = ray.remote(num_cpus=threads, max_retries=0)(execute_run)

    def submit(self, config: dict[str, Any]):
        return self._task.remote(config, self.threads)

    def wait(self, handles, timeout):
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as err:  # the task or its worker died
                out.append((ref, {"status": "failed", "error": f"{type(err).__name__}: {err}"}))
        return out

    def close(self) -> None:
        pass  # a Ray the user started stays up; a local one ends with this process


def _outcome(future: Future) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as err:  # the worker process died (killed, out of memory)
        return {"status": "failed", "error": f"worker died: {type(err).__name__}: {err}"}


def make_executor(kind: str, jobs: int, threads: int, ray_address: str | None = None) -> Executor:
    """``local`` (in-process for one job, else a process pool) or ``ray``."""
    if kind == "local":
        return InlineExecutor(threads) if jobs == 1 else PoolExecutor(jobs, threads)
    if kind == "ray":
        return RayExecutor(jobs, threads, ray_address)
    raise MlmmError(f"--executor must be 'local' or 'ray', got {kind!r}")


# ---------------------------------------------------------------------- the loop
@dataclass
class Progress:
    """What the coordinator knows; passed to the ``on_event`` callback."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    held_elsewhere: int = 0
    durations: list[float] = field(default_factory=list)
    jobs: int = 1

    def eta_seconds(self) -> float | None:
        """Time left: mean duration of this session's runs × runs left / parallel slots."""
        if not self.durations:
            return None
        left = self.total - self.done - self.failed - self.skipped
        return sum(self.durations) / len(self.durations) * left / max(self.jobs, 1)


@dataclass
class BenchOutcome:
    """Where the results are and how the runs ended."""

    store: Path
    spec: str
    total: int
    ran: int
    skipped: int
    failed: int
    threads: int
    jobs: int
    seconds: float


def run_benchmark(
    spec: BenchSpec,
    store: str | Path,
    *,
    jobs: int = 1,
    threads: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    retry_failed: bool = True,
    rerun: Sequence[str] = (),
    on_event: Callable[[str, RunConfig | None, Progress], None] | None = None,
) -> BenchOutcome:
    """Run every run of ``spec`` that ``store`` does not hold finished.

    Finished runs are skipped, failed ones rerun (``retry_failed``), and runs another live
    process holds are waited for. The stored runs of the methods in ``rerun`` are reset first
    (:meth:`~mlmm.bench.ResultsStore.reset`) and run again: a method changed in a way its key
    cannot see, or timings to retake beside another method's. ``on_event(kind, run,
    progress)`` is called with kind ``"start"``, ``"done"``, ``"failed"``, ``"skipped"`` or
    ``"waiting"``.
    """
    threads = plan_threads(jobs, threads, cluster=executor == "ray" and bool(ray_address))
    runs = spec.runs()
    by_key = {r.key: r for r in runs}
    if len(by_key) != len(runs):
        raise MlmmError("the spec lists the same run twice; remove the duplicate entry")
    event = on_event or (lambda kind, run, progress: None)
    start = time.perf_counter()
    db = ResultsStore(store)
    db.add_runs(spec.name, runs)
    if rerun:
        unknown = sorted(set(rerun) - {r.method for r in runs})
        if unknown:
            raise MlmmError(
                f"cannot rerun {unknown}: the benchmark has no such method; it runs "
                f"{sorted({r.method for r in runs})}"
            )
        db.reset(r.key for r in runs if r.method in rerun)
    status = db.status(by_key)
    progress = Progress(total=len(runs), jobs=jobs)
    todo = []
    for run in runs:
        if status[run.key] == "done" or (status[run.key] == "failed" and not retry_failed):
            progress.skipped += 1
            event("skipped", run, progress)
        else:
            todo.append(run)
    check_models(todo)  # a hyperparameter out of range stops everything here, in one line
    ran = 0
    pool = make_executor(executor, jobs, threads, ray_address) if todo else None
    in_flight: dict[Any, tuple[RunConfig, float]] = {}
    try:
        while todo or in_flight:
            waiting = []
            for run in todo:
                if len(in_flight) >= pool.slots:
                    waiting.append(run)
                elif db.claim(run.key, retry_failed):
                    in_flight[pool.submit(run.to_dict())] = (run, time.perf_counter())
                    progress.running = len(in_flight)
                    event("start", run, progress)
                elif db.status([run.key])[run.key] in ("done", "failed"):
                    progress.skipped += 1  # another process finished it meanwhile
                    event("skipped", run, progress)
                else:
                    waiting.append(run)  # held by another live process
            todo = waiting
            progress.held_elsewhere = len(todo) if not in_flight else 0
            if not in_flight:
                event("waiting", None, progress)
                time.sleep(POLL_SECONDS)
                continue
            for handle, outcome in pool.wait(list(in_flight), POLL_SECONDS):
                run, t0 = in_flight.pop(handle)
                progress.durations.append(time.perf_counter() - t0)
                progress.running = len(in_flight)
                ran += 1
                if outcome["status"] == "done":
                    if "tuning" in outcome:  # before finish: a done run always has its study
                        db.save_study(**outcome.pop("tuning"), run_key=run.key)
                    db.finish(run.key, outcome.pop("results"), outcome)
                    progress.done += 1
                    event("done", run, progress)
                else:
                    db.fail(run.key, outcome)
                    progress.failed += 1
                    event("failed", run, progress)
    except BaseException:
        for run, _ in in_flight.values():
            db.release(run.key)
        raise
    finally:
        if pool is not None:
            pool.close()
        db.close()
    return BenchOutcome(
        store=Path(store),
        spec=spec.name,
        total=len(runs),
        ran=ran,
        skipped=progress.skipped,
        failed=progress.failed,
        threads=threads,
        jobs=jobs,
        seconds=time.perf_counter() - start,
    )
