"""Running a benchmark: runs claimed in the store, executed in a process pool or on Ray.

Only the coordinating process writes to the store; workers (processes of a local pool, or Ray
tasks) train and score one run each and send back its tidy table. Every worker pins its
intra-op threads (torch, OpenMP, BLAS) so that jobs × threads never exceeds the cores: with
more, the maths on a small machine gets up to 100× slower. By default a run gets one thread
(or ``OMP_NUM_THREADS``) whatever the machine, since the thread count changes the rows, and
the cores go to parallel runs (:func:`plan_jobs`). The threads used are stored with every run.

Nothing is lost and nothing hangs: a pool worker that dies fails only its run and is replaced;
a Ray task whose worker or node died is tried again, up to ``max_attempts`` times, each
attempt recorded in the store (:meth:`~mlmm.bench.ResultsStore.attempts`); workers end with
their coordinator; a pool worker still running one run past its wall-clock cap
(:func:`run_time_cap`) is killed and replaced, and the run recorded failed; the coordinator beats a heartbeat for its claims (:class:`ClaimHeartbeat`)
and reports runs it waits for; an executor that cannot run is refused before the store is
touched (:func:`check_executor`). A local run killed mid-training resumes from its training
checkpoint (:func:`run_payload`); a Ray run trains again from epoch 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait as connection_wait
from pathlib import Path
from typing import Any, Protocol

from mlmm._pool_worker import decode_outcome, worker_main
from mlmm.bench import store as store_module
from mlmm.bench.spec import BenchSpec, RunConfig
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

#: Seconds between looks at the store while other processes hold the remaining runs.
POLL_SECONDS = 2.0
#: Seconds to wait for a Ray cluster's address to answer before refusing it.
RAY_CONNECT_SECONDS = 10.0
#: Attempts per run before a run whose Ray worker or node keeps dying is recorded failed.
MAX_ATTEMPTS = 3
#: A run with a budget ``time_limit`` and no ``--run-timeout`` is killed in its pool worker
#: after ``RUN_CAP_FACTOR * time_limit + RUN_CAP_GRACE_SECONDS`` seconds of wall-clock time:
#: the time_limit caps training only, and loading, tuning trials, evaluation under every test
#: condition and the model's summary come on top of it (:func:`run_time_cap`).
RUN_CAP_FACTOR = 2.0
RUN_CAP_GRACE_SECONDS = 120.0
#: Ray's errors for a task that did not fail by itself: its worker process, its node or the
#: object holding its result was lost. Such a run is tried again (``max_attempts``).
RAY_LOST_ERRORS = (
    "WorkerCrashedError",
    "NodeDiedError",
    "LocalRayletDiedError",
    "ActorDiedError",
    "OwnerDiedError",
    "ObjectLostError",
    "OutOfMemoryError",
)
#: Memory set aside per local worker when the number of jobs is chosen (:func:`plan_jobs`): the
#: largest process of `mlmm bench` on the quick suite (torch, pandas, scikit-learn imported,
#: one run) peaked at 0.55 GiB (benchmarks/bench_suite.py); the rest is room for larger data.
WORKER_MEMORY_BYTES = 3 << 29  # 1.5 GiB
#: Linux's memory figures (``MemAvailable``).
MEMINFO = "/proc/meminfo"
#: This process's cgroups (Linux), and where the cgroup file systems are mounted.
PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
#: Per cgroup version: its folder under :data:`CGROUP_ROOT`, the files of the memory limit and
#: usage, and the ``memory.stat`` field of the page cache the kernel reclaims first.
CGROUP_MEMORY = {
    "v2": ("", "memory.max", "memory.current", "inactive_file"),
    "v1": ("memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}
#: The HTTP/2 client connection preface followed by an empty SETTINGS frame.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def available_cores() -> int:
    """CPU cores this process may use (its affinity set where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """Bytes of memory new processes may take now: Linux's ``MemAvailable``, lowered to what
    the memory limits of this process's cgroup leave (:func:`cgroup_memory_left`); None where
    unknown."""
    free = []
    try:
        with open(MEMINFO) as fh:
            free += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    left = cgroup_memory_left()
    if left is not None:
        free.append(left)
    return min(free) if free else None


def cgroup_memory_left() -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its ancestors
    (a container's, a Slurm job's, a systemd unit's: v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), inactive page cache counted as free, as the kernel reclaims it
    before it runs out; None where no limit is set or none can be read (not Linux)."""
    try:
        lines = Path(PROC_CGROUP).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    left = []
    for line in lines:
        parts = line.split(":", 2)  # hierarchy-ID:controllers:path
        if len(parts) != 3:
            continue
        if parts[1] == "":
            version = "v2"
        elif "memory" in parts[1].split(","):
            version = "v1"
        else:
            continue
        folder, limit_file, usage_file, cache_field = CGROUP_MEMORY[version]
        base = Path(CGROUP_ROOT, folder)
        level = base.joinpath(*Path(parts[2]).parts[1:])
        while True:  # the cgroup, then its ancestors up to the mount point (a container's own)
            limit, used = _read_bytes(level / limit_file), _read_bytes(level / usage_file)
            if limit is not None and used is not None and limit < 1 << 60:  # v1's "none" is huge
                cache = _read_stat(level / "memory.stat", cache_field)
                left.append(max(0, limit - max(0, used - cache)))
            if level == base or base not in level.parents:
                break
            level = level.parent
    return min(left) if left else None


def _read_bytes(path: Path) -> int | None:
    """The integer a cgroup file holds; None if absent, unreadable or not one ("max")."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdecimal() else None


def _read_stat(path: Path, name: str) -> int:
    """Field ``name`` of a cgroup's ``memory.stat``; 0 if absent or unreadable."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return 0
    for line in lines:
        field = line.split()
        if len(field) == 2 and field[0] == name and field[1].isdecimal():
            return int(field[1])
    return 0


def thread_limit() -> int:
    """Intra-op threads per run when ``--threads`` is not given: ``OMP_NUM_THREADS`` when it
    is set to a positive integer, else 1; never more than ``torch.get_num_threads()``.

    Not the cores: the thread count changes how torch splits its sums, hence the last bits of
    every loss and, through early stopping, the rows (measured: benchmarks/bench_suite.py). A
    default that followed the cores would give other rows on another machine or with another
    ``--jobs``; the cores go to parallel runs instead (:func:`plan_jobs`).
    """
    import torch

    limit = 1
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdecimal() and int(value) > 0:  # not isdigit: int("²") fails
        limit = int(value)
    return max(1, min(limit, torch.get_num_threads()))


def plan_jobs(runs: int, threads: int, cores: int | None = None, memory: int | None = None) -> int:
    """Runs at a time when ``--jobs`` is not given; at least 1.

    As many as the usable ``cores`` hold at ``threads`` each (default
    :func:`available_cores`: the CPU affinity, not the machine's count), no more than the
    ``runs`` to do, and no more than the free ``memory`` (bytes, default
    :func:`available_memory`; no bound where unknown) holds at :data:`WORKER_MEMORY_BYTES`
    each. The rows do not depend on it: each run pins its own threads.
    """
    cores = cores or available_cores()
    memory = available_memory() if memory is None else memory
    jobs = min(cores // max(1, threads), runs)
    if memory is not None:
        jobs = min(jobs, memory // WORKER_MEMORY_BYTES)
    return max(1, jobs)


def plan_threads(
    jobs: int,
    threads: int | None = None,
    cores: int | None = None,
    cluster: bool = False,
    limit: int | None = None,
) -> int:
    """Threads per worker so that ``jobs × threads ≤ cores``; errors name the fix.

    The default is ``min(cores // jobs, limit)``: ``cores`` are those this process may use
    (:func:`available_cores`, its CPU affinity, not the machine's count) and ``limit`` what
    the environment asks for (:func:`thread_limit`: ``OMP_NUM_THREADS``, else 1), so the
    threads of a run do not grow with the machine. On a cluster (``cluster=True``: Ray at a
    given address) the local cores do not bound the jobs — Ray places each task on a node with
    ``threads`` free CPUs — and threads default to 1.
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
        return max(1, min(cores // jobs, limit or thread_limit()))
    if jobs * threads > cores:
        raise MlmmError(
            f"--jobs {jobs} × --threads {threads} exceeds the {cores} cores of this machine; "
            f"use --threads {max(1, cores // jobs)} or fewer"
        )
    return threads


def benchmark_threads(
    spec: BenchSpec, jobs: int, threads: int | None, executor: str, ray_address: str | None
) -> int:
    """:func:`plan_threads` for a benchmark of ``spec``: on Ray, the default never exceeds
    the spec's ``resources.num_cpus`` (the CPUs reserved per run), so a spec that reserves
    fewer CPUs than this machine's default runs without ``--threads``."""
    cap = spec.resources.num_cpus if executor == "ray" else None
    limit = None if cap is None or threads is not None else min(cap, thread_limit())
    return plan_threads(jobs, threads, cluster=executor == "ray" and bool(ray_address), limit=limit)


def benchmark_plan(
    spec: BenchSpec,
    jobs: int | None,
    threads: int | None,
    executor: str,
    ray_address: str | None,
) -> tuple[int, int]:
    """Jobs and threads per run for a benchmark of ``spec``: the threads of
    :func:`benchmark_threads`, and ``jobs`` as given or, when None, :func:`plan_jobs` over the
    spec's runs (1 on a Ray cluster, whose size this machine does not know: give ``--jobs``)."""
    if jobs is None:
        each = benchmark_threads(spec, 1, threads, executor, ray_address)
        cluster = executor == "ray" and bool(ray_address)
        jobs = 1 if cluster else plan_jobs(len(spec.runs()), each)
    return jobs, benchmark_threads(spec, jobs, threads, executor, ray_address)


def pin_threads(threads: int) -> None:
    """Limit this process's intra-op threads (torch, OpenMP, BLAS) to ``threads``."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)


def _dataset_key(run: RunConfig) -> str:
    return json.dumps([run.dataset, run.dataset_params], sort_keys=True, default=str)


def _load_once(run: RunConfig, datasets: dict[str, Any]) -> Any:
    """``run``'s dataset, loaded once per (name, parameters) into ``datasets``."""
    from mlmm.data.datasets import load_dataset

    key = _dataset_key(run)
    if key not in datasets:
        try:
            datasets[key] = load_dataset(run.dataset, **run.dataset_params)
        except MlmmError as err:  # not the split's fault, as the callers' errors would say
            raise MlmmError(f"dataset {run.dataset!r} cannot be loaded: {err}") from None
    return datasets[key]


def _left_to_do(
    store: str | Path, runs: Sequence[RunConfig], retry_failed: bool, rerun: Collection[str]
) -> list[RunConfig]:
    """The runs a benchmark will run, read from the store without writing to it (all of
    them when it does not exist yet): those not done, failed ones only with ``retry_failed``,
    and every run of a method in ``rerun``. A file the reader refuses (a blank SQLite file,
    which the benchmark takes as a new store, or one it refuses too) counts as holding none:
    opening it to write says what is wrong with it."""
    if not Path(store).is_file() or Path(store).stat().st_size == 0:  # (mktemp's empty file)
        return list(runs)
    try:
        with ResultsStore(store, readonly=True) as db:
            status = db.status([r.key for r in runs])
    except MlmmError:
        return list(runs)
    finished = {"done"} if retry_failed else {"done", "failed"}
    return [r for r in runs if r.method in rerun or status.get(r.key) not in finished]


def check_models(runs: Sequence[RunConfig], datasets: dict[str, Any] | None = None) -> None:
    """Build every model of ``runs`` once, on its dataset's modalities, before any run starts.

    An out-of-range hyperparameter (``hidden: 0``), or a method that cannot take a dataset
    (too many features, too many subsets), then stops the benchmark with one line naming the
    method, the dataset and the fix, instead of failing each of its runs one by one.
    ``datasets`` caches the loaded datasets (shared with :func:`check_conditions`).
    """
    from mlmm.methods import create_method

    datasets = {} if datasets is None else datasets
    built: set[str] = set()
    for run in runs:
        model_key = json.dumps([_dataset_key(run), run.method, run.method_params], default=str)
        if model_key in built:
            continue
        built.add(model_key)
        if run.method == "auto":  # fit_auto checks its portfolio against the data itself
            from mlmm.tune.auto import check_auto_precision

            check_auto_precision(run.budget.get("precision", "32"))  # once, not once per run
            continue
        data = _load_once(run, datasets)
        try:
            create_method(run.method, data.specs, data.task, **run.method_params)
        except MlmmError as err:
            raise MlmmError(
                f"method {run.method!r} cannot be built for dataset {run.dataset!r}: {err}"
            ) from None


def check_conditions(runs: Sequence[RunConfig], datasets: dict[str, Any] | None = None) -> None:
    """Simulate every missingness condition of ``runs`` on the data it will meet, before any
    run starts: the training condition on the training and validation parts, each test
    condition on the test part, of every seed's split.

    A condition a dataset cannot take — a rate above what its modalities allow with one kept
    per sample (``mcar:0.75`` on three modalities, ``mar:0.5`` on two), a modality it lacks —
    then stops the benchmark with one line naming the dataset and the condition, before the
    store gets any run, instead of failing after training. ``datasets`` caches the loaded
    datasets (shared with :func:`check_models`).
    """
    from mlmm.data.missingness import simulate
    from mlmm.experiment import make_split
    from mlmm.utils import rng_for

    datasets = {} if datasets is None else datasets
    checked: set[str] = set()
    # every infeasible condition, so a spec is fixed in one pass: the first in full, the
    # others named (per dataset and condition, not per seed)
    first: str | None = None
    others: dict[str, None] = {}
    for run in runs:
        split_key = json.dumps(
            [_dataset_key(run), run.seed, run.test_size, run.val_size, run.split]
        )
        work = [("training", run.train_missing, part) for part in ("train", "val")]
        work += [("test", spec, "test") for spec in run.test_missing]
        work = [w for w in work if json.dumps([split_key, *w]) not in checked]
        if not work:
            continue
        data = _load_once(run, datasets)
        try:
            split, _ = make_split(data, run.split, run.seed, run.test_size, run.val_size)
        except MlmmError as err:
            hint = "; in a spec, 'split: random' splits it" if run.split == "official" else ""
            raise MlmmError(
                f"split {run.split!r} cannot be made for {run.dataset!r}: {err}{hint}"
            ) from None
        for role, spec, part in work:
            checked.add(json.dumps([split_key, role, spec, part]))
            data = getattr(split, part)
            if data is None:
                continue
            stream = ("test-mask", spec) if part == "test" else (f"{part}-mask",)
            try:
                masked, _ = simulate(data, spec, rng_for(run.seed, *stream))
                seen = masked.observed.any(axis=0)  # [M]
                never = [name for name, s in zip(masked.modality_names, seen, strict=True) if not s]
                if part == "train" and never:  # the trainer cannot standardise or learn them
                    raise MlmmError(
                        f"it leaves modality {never[0]!r} absent from every training sample; "
                        f"train under another condition and test with this one (train: none, "
                        f"test: [{spec!r}])"
                    )
            except MlmmError as err:
                if first is None:
                    first = (
                        f"{role} condition {spec!r} cannot run on dataset {run.dataset!r} "
                        f"(seed {run.seed}, {part} part): {err}; or limit its missing entry "
                        f"to other datasets (datasets: [...])"
                    )
                    first_name = f"{role} {spec} on {run.dataset}"
                name = f"{role} {spec} on {run.dataset}"
                if name != first_name:
                    others[name] = None
    if first is not None:
        also = ""
        if others:
            names = list(others)
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            also = f" (infeasible too: {', '.join(names[:5])}{more})"
        raise MlmmError(first + also)


def execute_run(config: dict[str, Any], threads: int) -> dict[str, Any]:
    """Train and score one run in this process; never raises for a failing run.

    Returns ``{"status": "done", "results": DataFrame, **costs}`` or
    ``{"status": "failed", "error": str, "traceback": str}``; both carry ``threads``,
    ``machine`` and ``version``. A finished run also says whether the trainer's time limit
    ended any of its stages (``time_limited``, 0 or 1) and which test conditions could not be
    simulated (``condition_errors``, JSON ``{condition: error}``, None when all ran).
    A run with a ``tune`` block first tunes on its training
    split; a done run then also carries ``tuning`` (its study, for
    :meth:`~mlmm.bench.ResultsStore.save_study`).
    """
    import pandas as pd

    import mlmm
    from mlmm.experiment import run_experiment
    from mlmm.registry import load_plugins

    pin_threads(threads)
    config = dict(config)
    checkpoint = config.pop("checkpoint_dir", None)  # the coordinator's, not the run's key
    run = RunConfig.from_dict(config)
    base = {"threads": threads, "machine": platform.node(), "version": mlmm.__version__}
    start = time.perf_counter()
    tuning = None
    try:
        load_plugins(run.plugins)  # a worker process registers the spec's plugins itself
        method_params, trainer = run.method_params, dict(run.budget)
        if run.tune is not None and run.method != "auto":  # auto chooses by its own inner CV
            # tuned on this run's own training split, then trained
            from mlmm.tune.study import tune_run

            tuning = tune_run(run)
            method_params, trainer = tuning.params, {**trainer, **tuning.trainer}
        if checkpoint is not None:
            trainer["checkpoint_dir"] = checkpoint
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
            split=run.split,
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
        "time_limited": int(any(h.stopped_by == "time_limit" for h in trained.histories)),
        "condition_errors": json.dumps(res.failed_conditions) if res.failed_conditions else None,
        "device": _trained_device(trained),
        "precision": trained.precision,
        "active_parameters": active_parameters(trained.model, trained.n_parameters()),
    }


def run_checkpoint_dir(store: str | Path, run_key: str) -> Path:
    """The training checkpoint folder of run ``run_key`` of ``store``:
    ``.NAME.checkpoints/RUN_KEY`` beside the store file (absolute, the same in every worker)."""
    from mlmm.train.resume import beside

    return beside(Path(store).absolute(), "checkpoints") / run_key


def run_payload(run: RunConfig, store: str | Path, executor: str) -> dict[str, Any]:
    """What a worker receives for ``run``: its configuration and, on the local executors, the
    training checkpoint folder it trains with (:func:`run_checkpoint_dir`), so that a run
    killed mid-training resumes from its last written epoch. Not on Ray (its workers may be
    on other machines: a lost Ray attempt trains again from epoch 1) nor for ``auto`` (its
    members train with trainers of their own)."""
    config = run.to_dict()
    if executor == "local" and run.method != "auto":
        config["checkpoint_dir"] = str(run_checkpoint_dir(store, run.key))
    return config


def end_checkpoint(store: str | Path, run_key: str, outcome: dict[str, Any]) -> None:
    """Remove the training checkpoint of a run recorded done or failed, unless its worker
    died (``WorkerDied``: killed, out of memory), whose retry resumes from it; a run failed
    by an error or its ``RunTimeout`` is retried from epoch 1."""
    if outcome["status"] == "failed" and str(outcome.get("error", "")).startswith("WorkerDied"):
        return
    remove_run_checkpoint(store, run_key)


def remove_run_checkpoint(store: str | Path, run_key: str) -> None:
    """Remove run ``run_key``'s training checkpoint (:func:`run_checkpoint_dir`), and the
    checkpoints' folder once it is empty; nothing happens when there is none. A folder a
    training of a live process holds (its lock, :class:`~mlmm.train.resume.TrainingCheckpoint`:
    the run taken over from a claim that expired while its process trained on) is left to it;
    the folder is locked while its files are removed, so no training starts in it meanwhile."""
    from mlmm.train.resume import fcntl, remove_checkpoint

    folder = run_checkpoint_dir(store, run_key)
    try:
        fd: int | None = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        fd = None  # no checkpoint: nothing to remove
    try:
        if fd is not None and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # a live training writes into it: its checkpoint is not ours to remove
            except OSError:  # a file system without locks
                pass
        remove_checkpoint(folder)
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
    with contextlib.suppress(OSError):  # other runs' checkpoints are still there
        folder.parent.rmdir()


def killed_before(db: ResultsStore, keys: Sequence[str]) -> bool:
    """Whether an attempt of one of the runs ``keys`` ended with its process dead: a stale
    claim (its process died holding it), an attempt ``lost`` (such a claim, taken over) or
    one failed with ``WorkerDied``."""
    claims = db.claims(keys)
    attempts = db.attempts(keys)
    died = attempts.error.fillna("").str.startswith("WorkerDied")
    return bool((~claims.live).any() or (attempts.outcome == "lost").any() or died.any())


def _trained_device(trained: Any) -> str:
    """Where the model trained (it stays there after fit): ``cpu``, ``cuda:0``..."""
    for tensor in (*trained.model.parameters(), *trained.model.buffers()):
        return str(tensor.device)
    return str(trained.trainer_config.get("device", "cpu"))


def active_parameters(model: Any, n_parameters: int) -> int:
    """Parameters one sample passes through: the model's own ``active_parameters()`` where it
    has one (``flex-moe``: at most, over every presence pattern, i.e. a complete sample whose
    tokens each reach other experts; ``per-subset``: the one model that answers, averaged over
    presence patterns), else every parameter."""
    count = getattr(model, "active_parameters", None)
    return int(count()) if callable(count) else int(n_parameters)


# ---------------------------------------------------------------------- the local pool
def run_time_cap(config: dict[str, Any], run_timeout: float | None = None) -> float | None:
    """Seconds of wall-clock time a run may take in a pool worker before it is killed.

    ``run_timeout`` (``--run-timeout``) when given; else, for a run whose budget has a
    ``time_limit``, ``RUN_CAP_FACTOR * time_limit + RUN_CAP_GRACE_SECONDS``; else None (no cap).

    >>> run_time_cap({"budget": {"time_limit": 60.0}})
    240.0
    >>> run_time_cap({"budget": {"time_limit": 60.0}}, run_timeout=30.0)
    30.0
    >>> run_time_cap({"budget": {"time_limit": None}}) is None
    True
    """
    if run_timeout is not None:
        return float(run_timeout)
    limit = config.get("budget", {}).get("time_limit")
    if limit is None:
        return None
    return RUN_CAP_FACTOR * float(limit) + RUN_CAP_GRACE_SECONDS


def check_run_timeout(run_timeout: float | None) -> float | None:
    """``run_timeout`` as seconds (None: the time_limit rule), or one line saying why not."""
    if run_timeout is None:
        return None
    if isinstance(run_timeout, bool) or not isinstance(run_timeout, int | float):
        raise MlmmError(f"--run-timeout must be a number of seconds, got {run_timeout!r}")
    if not 0 < run_timeout < float("inf"):
        raise MlmmError(
            f"--run-timeout must be a positive finite number of seconds, got {run_timeout!r}; "
            f"leave it out for no cap (or the budget time_limit rule)"
        )
    return float(run_timeout)


def _timeout_message(
    cap: float, explicit: bool, stopped: str = "its worker process was killed and replaced"
) -> str:
    rule = (
        "--run-timeout"
        if explicit
        else f"{RUN_CAP_FACTOR:g} x budget.time_limit + {RUN_CAP_GRACE_SECONDS:g} s"
    )
    return (
        f"RunTimeout: the run was still running after {cap:g} s, its wall-clock cap ({rule}); "
        f"{stopped} and the other runs went on; raise the cap with --run-timeout SECONDS"
    )


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        cause = f"killed by {name}: out of memory, or killed by hand"
    else:
        cause = f"exit code {exitcode}"
    return (
        f"WorkerDied: the worker process running this run died ({cause}); it was replaced "
        f"and the other runs went on"
    )


@dataclass(eq=False)
class _Task:
    """A run sent to a pool worker (hashable by identity)."""

    config: dict[str, Any]
    #: ``time.monotonic()`` past which the worker running it is killed; None: no cap.
    deadline: float | None = None
    cap: float | None = None


class _Worker:
    """One spawned worker process and the pipe to it."""

    def __init__(self, context: Any, threads: int) -> None:
        self.connection, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker_main, args=(child, threads, os.getpid()), name="mlmm-bench-worker"
        )
        self.process.start()
        child.close()
        self.task: _Task | None = None

    def send(self, task: _Task) -> None:
        self.task = task
        self.connection.send_bytes(json.dumps(task.config).encode())

    def receive(self) -> dict[str, Any]:
        """The outcome of this worker's run, or a failure if the worker died without one."""
        try:
            if self.connection.poll():
                return decode_outcome(self.connection.recv_bytes())
        except (EOFError, OSError):  # the pipe closed: the process died mid-run
            pass
        self.process.join(timeout=10)
        return {"status": "failed", "error": _death_message(self.process.exitcode)}

    def stop(self, now: bool) -> None:
        if not now:
            try:
                self.connection.send_bytes(b"null")
            except OSError:
                now = True
        if now and self.process.is_alive():
            self.process.kill()  # a worker ignores SIGTERM (the coordinator's to handle)

    def reap(self) -> None:
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class PoolExecutor:
    """A local pool of ``jobs`` worker processes (spawned: no state inherited from here).

    Configurations and outcomes travel as JSON over one pipe per worker. A worker that dies
    (killed, out of memory) fails only the run it held: it is replaced by a fresh worker and
    the other runs go on. A worker still running one run past its cap (:func:`run_time_cap`
    with ``run_timeout``: hung, deadlocked, stuck in I/O) is killed, its run failed with a
    ``RunTimeout`` reason, and replaced the same way. Workers end with their coordinator
    (:func:`mlmm._pool_worker.watch_parent`).
    """

    def __init__(self, jobs: int, threads: int, run_timeout: float | None = None) -> None:
        import multiprocessing

        self.slots, self.threads, self.run_timeout = jobs, threads, run_timeout
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        try:
            for _ in range(jobs):
                self._workers.append(_Worker(self._context, threads))
        except BaseException:
            self.close()
            raise

    def submit(self, config: dict[str, Any]) -> _Task:
        idle = [w for w in self._workers if w.task is None]
        if not idle:
            raise RuntimeError("every worker is busy; wait for a run before submitting one")
        cap = run_time_cap(config, self.run_timeout)
        task = _Task(config, None if cap is None else time.monotonic() + cap, cap)
        try:
            idle[0].send(task)
        except OSError:  # the idle worker died meanwhile: its replacement takes the run
            self._replace(idle[0]).send(task)
        return task

    def wait(self, handles: list[_Task], timeout: float) -> list[tuple[_Task, dict[str, Any]]]:
        wanted = set(handles)
        busy = [w for w in self._workers if w.task is not None and w.task in wanted]
        signals = [w.connection for w in busy] + [w.process.sentinel for w in busy]
        deadlines = [w.task.deadline for w in busy if w.task.deadline is not None]
        if deadlines:  # wake up for the first cap that runs out
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        ready = set(connection_wait(signals, timeout))
        now = time.monotonic()
        out = []
        for worker in busy:
            task, killed = worker.task, False
            if worker.connection in ready or worker.process.sentinel in ready:
                outcome = worker.receive()
            elif task.deadline is not None and now >= task.deadline:
                worker.process.kill()  # hung: nothing else ends it (a heartbeat keeps its claim)
                killed = True
                outcome = {
                    "status": "failed",
                    "error": _timeout_message(task.cap, self.run_timeout is not None),
                }
            else:
                continue
            worker.task = None
            out.append((task, outcome))
            if killed or not worker.process.is_alive():
                self._replace(worker)
        return out

    def _replace(self, worker: _Worker) -> _Worker:
        worker.reap()
        fresh = _Worker(self._context, self.threads)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        """Stop idle workers, terminate busy ones (an interrupted benchmark), reap all."""
        for worker in self._workers:
            worker.stop(now=worker.task is not None)
        for worker in self._workers:
            worker.reap()
        self._workers = []


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


class RayExecutor:
    """Runs as Ray tasks (``ray.init(address=...)``; default: a local Ray); the results come
    back here and are written to the same store.

    Each task reserves ``resources`` (``num_cpus``, default ``threads``; ``num_gpus``,
    default 0: see :class:`~mlmm.bench.spec.Resources`; :func:`ray_task_options`). The
    spec's ``plugins`` travel in the job's runtime environment (``py_modules``:
    :func:`plugin_sources`), so a node that never saw the plugin files imports them; Ray
    takes local files only when the job starts, so a Ray this process did not start (a
    ``ray.init`` of your own) must have been given them.

    A task whose worker or node died comes back with status ``lost``
    (:data:`RAY_LOST_ERRORS`) for the coordinator to try again; Ray itself never retries
    (``max_retries=0``), so every attempt is the coordinator's and is recorded. A task still
    running past its cap (:func:`run_time_cap` with ``run_timeout``) is cancelled
    (``ray.cancel(force=True)``: its Ray worker is killed) and its run failed with a
    ``RunTimeout`` reason.
    """

    def __init__(
        self,
        jobs: int,
        threads: int,
        address: str | None = None,
        resources: dict[str, Any] | None = None,
        plugins: Sequence[str] = (),
        run_timeout: float | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise MlmmError(
                "--executor ray needs Ray: pip install 'mlmm[ray]' (or use --executor local)"
            ) from None
        self._ray = ray
        self.options = ray_task_options(threads, resources)
        if not ray.is_initialized():
            sources = plugin_sources(plugins)
            kwargs = (
                {"address": address}
                if address
                else {"num_cpus": jobs * max(threads, self.options["num_cpus"])}
            )
            try:
                ray.init(
                    **kwargs,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    runtime_env={"py_modules": sources} if sources else None,
                )
            except Exception as err:  # Ray's own errors span lines: keep the first
                first = (str(err).strip().splitlines() or [""])[0]
                raise MlmmError(
                    f"cannot start Ray{f' at {address}' if address else ''} "
                    f"({type(err).__name__}: {first}); check --ray-address or use "
                    f"--executor local"
                ) from None
        check_ray_gpus(ray.nodes(), self.options["num_gpus"], address)
        self.slots, self.threads = jobs, threads
        self._task = ray.remote(execute_run).options(max_retries=0, **self.options)
        self.run_timeout = run_timeout
        #: submitted, not yet waited for: ref -> (monotonic deadline, cap), None without a cap
        self._running: dict[Any, tuple[float, float] | None] = {}

    def submit(self, config: dict[str, Any]):
        ref = self._task.remote(config, self.threads)
        cap = run_time_cap(config, self.run_timeout)
        self._running[ref] = None if cap is None else (time.monotonic() + cap, cap)
        return ref

    def wait(self, handles, timeout):
        capped = [self._running.get(r) for r in handles]
        deadlines = [c[0] for c in capped if c is not None]
        if deadlines:  # wake up for the first cap that runs out
            timeout = max(0.0, min(timeout, min(deadlines) - time.monotonic()))
        ready, _ = self._ray.wait(handles, num_returns=1, timeout=timeout)
        out = []
        for ref in ready:
            self._running.pop(ref, None)
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as err:  # the task, its worker or its node died
                out.append((ref, ray_error_outcome(err)))
        now = time.monotonic()
        for ref in handles:
            deadline, cap = self._running.get(ref) or (None, None)
            if deadline is None or now < deadline:  # a ready ref has left _running above
                continue
            try:  # hung: force kills its Ray worker
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - it finished meanwhile, or Ray is gone
                pass
            del self._running[ref]
            stopped = "its Ray task was cancelled (force=True)"
            error = _timeout_message(cap, self.run_timeout is not None, stopped)
            out.append((ref, {"status": "failed", "error": error}))
        return out

    def close(self) -> None:
        """Cancel the tasks still running (an interrupted benchmark): on a cluster they would
        go on training runs whose claims were given back, beside their reruns. A Ray the user
        started stays up; a local one ends with this process."""
        for ref in self._running:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished, or Ray is gone: nothing to stop
                pass
        self._running = {}


def ray_error_outcome(err: BaseException) -> dict[str, Any]:
    """The outcome of a Ray task that raised ``err``: ``lost`` when its worker, node or
    result was lost (:data:`RAY_LOST_ERRORS`: try it again), else ``failed``."""
    first = (str(err).strip().splitlines() or [""])[0]
    names = {cls.__name__ for cls in type(err).__mro__}
    lost = bool(names & set(RAY_LOST_ERRORS)) and "RayTaskError" not in names
    return {"status": "lost" if lost else "failed", "error": f"{type(err).__name__}: {first}"}


def plugin_sources(plugins: Sequence[str]) -> list[str]:
    """The files and folders of the plugins' top-level modules, for Ray's ``py_modules``.

    Plugins are imported here already (the spec loaded them). Those installed in this
    Python (site-packages, the standard library) are left out: a cluster's nodes install
    them as they install mlmm.
    """
    installed = {
        Path(sysconfig.get_paths()[name]).resolve()
        for name in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    sources: list[str] = []
    for name in plugins:
        module = sys.modules.get(name.partition(".")[0])
        if module is None:
            raise MlmmError(
                f"plugin {name!r} is not imported in this process; load the spec with its "
                f"plugins allowed (mlmm bench SPEC --allow-spec-plugins) before running it"
            )
        file = getattr(module, "__file__", None)
        if file and Path(file).name == "__init__.py":
            paths = [Path(file).parent]  # a package: its folder
        elif file:
            paths = [Path(file)]  # a single-file module
        else:
            paths = [Path(p) for p in getattr(module, "__path__", [])]  # a namespace package
        for path in paths:
            path = path.resolve()
            if any(path.is_relative_to(folder) for folder in installed):
                continue
            if str(path) not in sources:
                sources.append(str(path))
    return sources


def ray_task_options(threads: int, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ray's options for one run's task: ``num_cpus`` (the spec's ``resources.num_cpus``,
    default ``threads``), ``num_gpus`` (default 0) and a runtime environment that pins the
    threads. A task without GPUs sees none (``CUDA_VISIBLE_DEVICES`` empty: Ray leaves it
    as it is), so no run uses a GPU that Ray did not reserve for it.

    Examples
    --------
    >>> ray_task_options(2, {"num_gpus": 0.5})["num_gpus"]
    0.5
    """
    resources = resources or {}
    num_cpus = resources.get("num_cpus") or threads
    if num_cpus < threads:
        raise MlmmError(
            f"--threads {threads} exceeds resources.num_cpus {num_cpus}, the CPUs Ray reserves "
            f"per run; use --threads {num_cpus} or fewer, or raise num_cpus"
        )
    num_gpus = resources.get("num_gpus") or 0
    env_vars = {"OMP_NUM_THREADS": str(threads)}
    if not num_gpus:
        env_vars["CUDA_VISIBLE_DEVICES"] = ""
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": env_vars}}


def check_ray_gpus(nodes: Sequence[dict[str, Any]], num_gpus: float, address: str | None) -> None:
    """Refuse a GPU request no live node of the Ray cluster can meet: its tasks would wait
    for ever (``nodes``: :func:`ray.nodes`)."""
    if not num_gpus:
        return
    most = max((n.get("Resources", {}).get("GPU", 0) for n in nodes if n.get("Alive")), default=0)
    if most < num_gpus:
        where = f"the Ray cluster at {address}" if address else "the local Ray"
        raise MlmmError(
            f"resources.num_gpus {num_gpus:g} per run, but no node of {where} has that many "
            f"GPUs (most: {most:g}); add a GPU node to the cluster, or set num_gpus: 0 and "
            f"budget.device: cpu"
        )


def check_resources(spec: BenchSpec, executor: str, threads: int = 1) -> None:
    """Refuse what the Ray executor cannot place, before the store is touched: more
    ``threads`` than the spec's ``resources.num_cpus``, and runs that would ask for a GPU
    Ray did not reserve for them (a CUDA ``budget.device`` needs ``resources.num_gpus``: a
    task without one sees no GPU, :func:`ray_task_options`)."""
    if executor != "ray":
        return
    ray_task_options(threads, spec.resources.model_dump())
    device = spec.budget.device
    if device.startswith("cuda") and not spec.resources.num_gpus:
        raise MlmmError(
            f"budget.device {device!r} with --executor ray needs resources.num_gpus > 0 "
            f"(Ray reserves a GPU only for runs that ask); add resources: {{num_gpus: 1}} "
            f"to the spec"
        )


def check_executor(
    kind: str, ray_address: str | None = None, connect_timeout: float = RAY_CONNECT_SECONDS
) -> None:
    """Refuse an executor that cannot run, before a store is created or a run registered.

    An unknown kind, a Ray address without Ray (or, for ``ray://``, without Ray's client
    extra), a malformed address, and a cluster that does not answer within
    ``connect_timeout`` seconds each fail with one line.
    """
    if kind not in ("local", "ray"):
        raise MlmmError(f"--executor must be 'local' or 'ray', got {kind!r}")
    if kind == "local":
        if ray_address:
            raise MlmmError(
                f"--ray-address {ray_address} needs --executor ray (the local executor runs here)"
            )
        return
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise MlmmError(
            "--executor ray needs Ray: pip install 'mlmm[ray]' (or use --executor local)"
        )
    if ray_address in (None, "auto", "local"):
        return
    scheme, sep, rest = ray_address.partition("://")
    if sep and scheme != "ray":
        raise MlmmError(
            f"--ray-address must be host:port, ray://host:port, auto or local, got {ray_address!r}"
        )
    if sep and importlib.util.find_spec("grpc") is None:
        raise MlmmError(
            f"--ray-address {ray_address} (Ray Client) needs Ray's client extra: pip install "
            f"'ray[client]' (or, on the cluster's head node, give its GCS address host:6379)"
        )
    host, colon, port = (rest if sep else ray_address).rpartition(":")
    if not colon or not host or not port.isdigit():
        raise MlmmError(
            f"--ray-address must be host:port, ray://host:port, auto or local, got {ray_address!r}"
        )
    try:
        connection = socket.create_connection((host.strip("[]"), int(port)), connect_timeout)
    except (OSError, OverflowError) as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise MlmmError(
            f"cannot reach the Ray cluster at {ray_address} ({reason} within "
            f"{connect_timeout:g} s); start it (ray start --head) or fix --ray-address"
        ) from None
    with connection:
        if not _answers_grpc(connection, connect_timeout):
            # Ray would retry such an address for ever: refuse it here, in bounded time.
            raise MlmmError(
                f"{ray_address} answers but is not a Ray cluster (no gRPC reply within "
                f"{connect_timeout:g} s); give the head node's address (host:6379, or "
                f"ray://host:10001)"
            )


def _answers_grpc(connection: socket.socket, timeout: float) -> bool:
    """Whether the server speaks HTTP/2, as Ray's GCS and client servers (gRPC) do: it answers
    the HTTP/2 connection preface with a SETTINGS frame (frame type 4)."""
    connection.settimeout(timeout)
    try:
        connection.sendall(_HTTP2_PREFACE)
        header = b""
        while len(header) < 9:  # a frame header: length (3 bytes), type, flags, stream id
            chunk = connection.recv(9 - len(header))
            if not chunk:
                return False
            header += chunk
    except OSError:
        return False
    return header[3] == 4


def make_executor(
    kind: str,
    jobs: int,
    threads: int,
    ray_address: str | None = None,
    resources: dict[str, Any] | None = None,
    plugins: Sequence[str] = (),
    run_timeout: float | None = None,
) -> Executor:
    """``local`` (in-process for one job, else a process pool) or ``ray`` (``resources`` and
    ``plugins``: see :class:`RayExecutor`; the local executors run on this machine as it is).

    ``run_timeout`` caps each run's wall-clock seconds in a pool worker (:func:`run_time_cap`);
    given with one job, that job runs in a worker process too, since a run in this process
    cannot be killed safely. Ray tasks are cancelled at their cap (:class:`RayExecutor`)."""
    check_executor(kind, ray_address)
    if kind == "local":
        if jobs == 1 and run_timeout is None:
            return InlineExecutor(threads)
        return PoolExecutor(jobs, threads, run_timeout)
    return RayExecutor(jobs, threads, ray_address, resources, plugins, run_timeout)


class ClaimHeartbeat:
    """Beats this process's heartbeat in a store every ``interval`` seconds while it holds
    claims, from a thread with its own connection (a run trained in the main thread does not
    stop it)."""

    def __init__(self, store: str | Path, interval: float) -> None:
        self.store, self.interval = Path(store), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlmm-heartbeat", daemon=True)
        self._claimer: int | None = None  # the native id of the thread that started it

    def start(self) -> None:
        """Start the beats; the calling thread claims from now until :meth:`stop`."""
        self._claimer = threading.get_native_id()
        store_module.claiming(self._claimer, True)
        self._thread.start()

    def stop(self) -> None:
        """End the beats (at once; nothing happens if they never started). The claims the
        claiming thread still holds are stale from now on, though it lives on (a claim the
        store could not give back), for this process's other threads too."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._claimer is not None:
            store_module.claiming(self._claimer, False)
            self._claimer = None

    def __enter__(self) -> ClaimHeartbeat:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _beat(self) -> None:
        db = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    db = db or ResultsStore(self.store, busy_timeout=self.interval)
                    db.heartbeat()
                except MlmmError:
                    # A store busy or full right now: the next beat tries again. A missed beat
                    # only brings the claims' expiry closer; the coordinator reports the error.
                    continue
        finally:
            if db is not None:
                db.close()


def spec_yaml(spec: BenchSpec) -> str:
    """The spec as YAML, resolved (defaults filled in): ``mlmm bench`` on it reruns the same runs."""
    import yaml

    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


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
    held_by: tuple[str, ...] = ()
    durations: list[float] = field(default_factory=list)
    jobs: int = 1
    threads: int = 1
    retried: int = 0
    last_error: str | None = None
    #: whether the time limit cut short the training of the run of the last "done" event
    last_time_limited: bool = False

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
    jobs: int | None = 1,
    threads: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    retry_failed: bool = True,
    rerun: Sequence[str] = (),
    max_attempts: int = MAX_ATTEMPTS,
    on_event: Callable[[str, RunConfig | None, Progress], None] | None = None,
    command: str | None = None,
    run_timeout: float | None = None,
) -> BenchOutcome:
    """Run every run of ``spec`` that ``store`` does not hold finished.

    ``jobs`` runs at a time with ``threads`` each; ``jobs=None`` (what ``mlmm bench`` passes
    by default) chooses them from the usable cores and free memory (:func:`benchmark_plan`),
    at most one per run not yet in the store.
    Finished runs are skipped, failed ones rerun (``retry_failed``), and runs another live
    process holds are waited for. The stored runs of the methods in ``rerun`` are reset first
    (:meth:`~mlmm.bench.ResultsStore.reset`) and run again: a method changed in a way its key
    cannot see, or timings to retake beside another method's. ``on_event(kind, run,
    progress)`` is called with kind ``"plan"`` (once, before the first run: ``progress.jobs``
    and ``progress.threads``), ``"start"``, ``"done"``, ``"failed"``, ``"skipped"``,
    ``"retry"`` (its Ray worker or node was lost: ``progress.last_error`` says how) or
    ``"waiting"`` (runs held by other processes, named in ``progress.held_by``).

    A run whose worker or node is lost is tried again under the same claim, at most
    ``max_attempts`` times in all; each attempt is recorded in the store
    (:meth:`~mlmm.bench.ResultsStore.attempts`). A result that arrives for a run no longer
    held here is dropped (:meth:`~mlmm.bench.ResultsStore.finish`): a run ends done once.

    The executor is checked (:func:`check_executor`) before the store is opened. While this
    process holds claims it beats a heartbeat in the store (:class:`ClaimHeartbeat`); a claim
    whose result cannot be written (a full disk) is given back before the error propagates;
    one that could not be given back is taken back by the next call in this process.

    A run in a local pool worker that is still running after its wall-clock cap (``run_timeout``
    seconds, ``--run-timeout``; without it ``2 x time_limit + 120`` s for a budget with a
    ``time_limit``, else none: :func:`run_time_cap`) has its worker killed and replaced and is
    recorded failed (``RunTimeout: ...``), like a run whose worker died; a rerun tries it again
    as it does failed runs. One job without ``run_timeout`` runs in this process, where a run
    cannot be killed safely: no cap there. A Ray task past its cap is cancelled
    (``ray.cancel(force=True)``) and its run recorded failed the same way.
    """
    run_timeout = check_run_timeout(run_timeout)
    chosen = jobs is None
    jobs, threads = benchmark_plan(spec, jobs, threads, executor, ray_address)
    runs = spec.runs()
    by_key = {r.key: r for r in runs}
    if len(by_key) != len(runs):
        raise MlmmError("the spec lists the same run twice; remove the duplicate entry")
    event = on_event or (lambda kind, run, progress: None)
    start = time.perf_counter()
    unknown = sorted(set(rerun) - {r.method for r in runs})
    if unknown:  # before the store exists or a run is registered
        raise MlmmError(
            f"cannot rerun {unknown}: the benchmark has no such method; it runs "
            f"{sorted({r.method for r in runs})}"
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise MlmmError(f"--max-attempts must be a positive integer, got {max_attempts!r}")
    check_executor(executor, ray_address)  # before the store exists or a run is registered
    check_resources(spec, executor, threads)
    datasets: dict[str, Any] = {}  # loaded once for both checks
    # an infeasible condition stops here, before the store has runs
    check_conditions(runs, datasets)
    # and so does a model that cannot be built: its runs were left pending in the store, and
    # a corrected spec (other keys) never ran them, so reports counted them as unfinished
    check_models(_left_to_do(store, runs, retry_failed, rerun), datasets)
    db = ResultsStore(store)
    try:
        db.add_runs(spec.name, runs)
        db.save_spec(spec.name, spec_yaml(spec), command)
        if rerun:
            again = [r.key for r in runs if r.method in rerun]
            claims = db.claims(again)
            held = set(claims.run_key[claims.live])  # reset leaves them to their live process
            db.reset(again)
            for key in again:  # trained anew: not resumed from a checkpoint of a killed run
                if key not in held:
                    remove_run_checkpoint(store, key)
        # claims this process left behind (an earlier call stopped by a store error): nothing
        # of this process runs them now, yet a claim of its own never expires for it
        claims = db.claims(by_key)
        for key in claims.run_key[claims.owner == store_module.this_process()]:
            db.release(key)
        status = db.status(by_key)
        progress = Progress(total=len(runs), jobs=jobs, threads=threads)
        todo = []
        for run in runs:
            if status[run.key] == "done" or (status[run.key] == "failed" and not retry_failed):
                progress.skipped += 1
                event("skipped", run, progress)
            else:
                todo.append(run)
        if chosen:  # no workers for runs already in the store
            progress.jobs = jobs = min(jobs, max(1, len(todo)))
        event("plan", None, progress)
    except BaseException:
        db.close()
        raise
    datasets.clear()  # not kept in memory while the runs train
    ran = 0
    pool = None
    in_flight: dict[Any, tuple[RunConfig, float]] = {}
    heartbeat = ClaimHeartbeat(store, store_module.HEARTBEAT_SECONDS)
    beating = bool(todo)
    try:
        if beating:
            db.heartbeat()  # before the first claim: a live owner from its first moment
            heartbeat.start()
            if executor == "local" and jobs == 1 and killed_before(db, [r.key for r in todo]):
                # one job runs in this process: a run that killed it before (out of memory)
                # would kill it again on every rerun, before the runs after it could start
                pool = PoolExecutor(1, threads, run_timeout)
            else:
                pool = make_executor(
                    executor,
                    jobs,
                    threads,
                    ray_address,
                    spec.resources.model_dump(),
                    spec.plugins,
                    run_timeout,
                )
        attempts: dict[str, int] = {}  # attempts of this call, per run
        while todo or in_flight:
            waiting = []
            for run in todo:
                if len(in_flight) >= pool.slots:
                    waiting.append(run)
                elif db.claim(run.key, retry_failed):
                    payload = run_payload(run, store, executor)
                    in_flight[pool.submit(payload)] = (run, time.perf_counter())
                    progress.running = len(in_flight)
                    event("start", run, progress)
                elif db.status([run.key])[run.key] in ("done", "failed"):
                    progress.skipped += 1  # another process finished it meanwhile
                    event("skipped", run, progress)
                else:
                    waiting.append(run)  # held by another live process
            todo = waiting
            progress.held_elsewhere = len(todo) if not in_flight else 0
            if not todo and not in_flight:  # the runs waited for ended in other processes
                break
            if not in_flight:
                claims = db.claims(r.key for r in todo)
                progress.held_by = tuple(sorted(set(claims.owner.dropna())))
                event("waiting", None, progress)
                time.sleep(POLL_SECONDS)
                continue
            for handle, outcome in pool.wait(list(in_flight), POLL_SECONDS):
                run, t0 = in_flight[handle]
                tries = attempts[run.key] = attempts.get(run.key, 1)
                if outcome["status"] == "lost" and tries < max_attempts:
                    if db.retry(run.key, outcome["error"]):  # the same claim, a new attempt
                        attempts[run.key] = tries + 1
                        payload = run_payload(run, store, executor)
                        in_flight[pool.submit(payload)] = (run, time.perf_counter())
                        del in_flight[handle]
                        progress.retried += 1
                        progress.last_error = outcome["error"]
                        event("retry", run, progress)
                        continue
                progress.durations.append(time.perf_counter() - t0)
                ran += 1
                if outcome["status"] == "done":
                    if "tuning" in outcome:  # before finish: a done run always has its study
                        db.save_study(**outcome.pop("tuning"), run_key=run.key)
                    kept = db.finish(run.key, outcome.pop("results"), outcome)
                else:
                    lost = outcome["status"] == "lost"
                    if lost:
                        outcome["error"] = (
                            f"{outcome['error']} (the worker or node running it was lost on "
                            f"each of its {tries} attempt(s); --max-attempts {max_attempts})"
                        )
                    kept = db.fail(run.key, outcome, lost=lost)
                if kept:  # a run taken over by another process is its to finish
                    end_checkpoint(store, run.key, outcome)
                del in_flight[handle]  # only once recorded: a failed write releases the run
                progress.running = len(in_flight)
                kind = "done" if outcome["status"] == "done" else "failed"
                if not kept:  # no longer held here: another process took the run over
                    kind = "skipped"
                setattr(progress, kind, getattr(progress, kind) + 1)
                progress.last_time_limited = kind == "done" and bool(outcome.get("time_limited"))
                event(kind, run, progress)
    except BaseException:
        for run, _ in in_flight.values():
            try:
                db.release(run.key)
            except MlmmError:  # the store fails too (disk full): the claim expires instead
                break
        raise
    finally:
        if pool is not None:
            pool.close()
        heartbeat.stop()
        if beating:
            try:
                db.end_heartbeat()
            except MlmmError:  # left behind, it only expires
                pass
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
