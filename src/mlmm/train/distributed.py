"""Data-parallel training across processes: torchrun's launch and rendezvous, DistributedDataParallel.

``mlmm train --devices N`` starts ``N`` processes on this machine through torchrun's elastic
launcher (:func:`launch`); each process (and each process ``torchrun`` starts on several
machines) joins the process group itself (:func:`join`: NCCL on GPUs, Gloo on CPUs, with a
timeout) and runs the usual :class:`~mlmm.Trainer` on the whole data set. Inside the shared loop
(:meth:`Trainer.fit_module`) :func:`current` then returns a :class:`DataParallel` helper:

- *Batches.* Every epoch's seeded permutation is the same on every process; it is cut into
  global batches of ``batch_size`` rows, and process ``r`` of ``N`` takes rows ``r::N`` of each
  (``DistributedSampler``'s slicing, applied per global batch). So the *global* batch is
  ``batch_size`` and each process steps on about ``batch_size / N`` rows. Each process's loss is
  weighted by its share of the global batch, so the gradients DDP averages are the gradient of
  the global batch's mean loss, as one process would compute it. A trailing global batch of
  fewer than ``2 N`` rows is skipped (one process skips a lone trailing row).
- *Gradients* are averaged by :class:`torch.nn.parallel.DistributedDataParallel`, so the
  weights stay identical on every process.
- *Validation* runs on the whole validation split in every process (the weights are the same);
  rank 0's numbers are broadcast, so early stopping, per-part selection and the time limit
  decide the same on every process.
- *Seeds.* The initial weights come from the trainer's seed on every process; after them each
  process reseeds torch with ``torch_seed_for(seed, "rank", rank)`` for its own dropout.

Methods that cannot train this way declare it (``supports_data_parallel = False`` and a
``data_parallel_reason`` on :class:`~mlmm.methods.MissingModalityModel`); :func:`check_method`
refuses them in one line before any process starts.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.utils import torch_seed_for

#: Seconds a process waits for the others to join (and for any collective step) by default.
DEFAULT_TIMEOUT = 300.0

#: The environment torchrun gives every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands in the process group.

    Attributes
    ----------
    rank : int
        Global rank, 0 to ``world_size - 1``; rank 0 prints and writes the artifact.
    world_size : int
        Processes in the group (on all machines).
    local_rank : int
        Rank on this machine (the GPU index with NCCL).
    backend : str
        ``"nccl"`` or ``"gloo"``.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that prints and writes."""
        return self.rank == 0

    def device(self) -> str:
        """The device this process trains on: ``cuda:LOCAL_RANK`` with NCCL, else ``cpu``."""
        return f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun (or :func:`launch`): ``RANK``,
    ``WORLD_SIZE`` and ``LOCAL_RANK`` are set."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def backend_for(device: str) -> str:
    """``"nccl"`` for a CUDA device (``"auto"`` with a GPU), ``"gloo"`` for the CPU."""
    wants_cuda = str(device).startswith("cuda") or (
        str(device) == "auto" and torch.cuda.is_available()
    )
    return "nccl" if wants_cuda else "gloo"


def available_devices(device: str) -> int:
    """How many processes ``--devices`` may start here: the CUDA GPUs for a CUDA device,
    the CPU cores this process may use for the CPU."""
    if backend_for(device) == "nccl":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_devices(devices: int, device: str) -> None:
    """Refuse ``devices`` below 1 or above what this machine has, in one line."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise MlmmError(f"--devices must be a whole number of at least 1, got {devices!r}")
    have = available_devices(device)
    if have == 0:
        raise MlmmError(
            f"--devices {devices} with device {device!r} needs CUDA GPUs and this machine has "
            "none; use --device cpu (processes with the Gloo backend)"
        )
    if devices > have:
        what = "CUDA GPUs" if backend_for(device) == "nccl" else "CPU cores"
        raise MlmmError(
            f"--devices {devices} asks for more processes than this machine's {have} {what} "
            f"(device {device!r}); use --devices {max(have, 1)} or fewer, or torchrun across "
            "machines (docs/distributed.md)"
        )


def check_method(method: str) -> None:
    """Refuse, in one line, a method that cannot train data-parallel (before any process
    starts)."""
    if method == "auto":
        raise MlmmError(
            "method 'auto' cannot train data-parallel: it cross-validates a portfolio of "
            "members, some fitted outside the shared loop; drop --devices (or use --devices 1)"
        )
    from mlmm.methods.registry import METHODS

    cls = METHODS.get(method).obj
    if not cls.supports_data_parallel:
        raise MlmmError(
            f"method {method!r} cannot train data-parallel: {cls.data_parallel_reason}; "
            "drop --devices (or use --devices 1)"
        )


#: Set in the processes :func:`launch` starts (to the launcher's pid): the launcher, not each
#: of them, says that Ctrl-C or SIGTERM stopped the training.
LAUNCHED_VARIABLE = "MLMM_LAUNCHER_PID"


class LaunchStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the processes :func:`launch` started (``signum``: which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def launch(argv: list[str], devices: int, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run ``python -m mlmm *argv`` in ``devices`` processes on this machine through torchrun's
    elastic launcher (a local rendezvous on a free port); each process joins the group itself.

    Each process gets ``OMP_NUM_THREADS`` = cores / ``devices`` unless it is set already.
    A process that fails ends all of them; that is one :class:`MlmmError` line here (the
    process's own error is printed above it). Ctrl-C or SIGTERM, which the launcher passes on
    to its processes, is :class:`LaunchStopped` (it was the launcher's traceback).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # torchrun's agent logs every worker start, stop and failure; the failing process prints
    # its own error and the MlmmError below says which one it was
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    cores = available_devices("cpu")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // devices)))
    # DDP warns once per process when a step happens to use every parameter (it must allow
    # unused ones: staged methods leave parts unused); PyTorch's C++ warnings, not errors, off
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=f"mlmm-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        rdzv_configs={"join_timeout": max(1, int(timeout))},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    os.environ[LAUNCHED_VARIABLE] = str(os.getpid())  # inherited by the processes
    try:
        elastic_launch(config, sys.executable)("-m", "mlmm", *argv)
    except SignalException as err:
        raise LaunchStopped(int(err.sigval)) from None
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise MlmmError(
            f"data-parallel training failed: process rank {rank} of {devices} exited with code "
            f"{failure.exitcode} (its own error is printed above); rerun with --devices 1 to "
            "see it alone"
        ) from None
    finally:
        os.environ.pop(LAUNCHED_VARIABLE, None)


def start(
    method: str,
    devices: int,
    device: str,
    timeout: float,
    batch_size: int,
    argv: list[str],
) -> ProcessInfo | None:
    """What ``mlmm train`` (its command line ``argv``) does about processes.

    Under torchrun: join its process group and return this process's :class:`ProcessInfo`.
    With ``devices > 1``: start that many processes running ``argv`` (:func:`launch`), wait
    for them, and return None (they have trained and saved). Else None: one process. Every
    refusal (a method that cannot, too many devices, a global batch too small, a bad timeout)
    comes in one line before any process starts.
    """
    if isinstance(timeout, bool) or not (
        isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0
    ):
        raise MlmmError(f"--rendezvous-timeout must be a positive number of seconds, got {timeout}")
    if launched_by_torchrun():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", devices))
        if devices not in (1, local):
            raise MlmmError(
                f"under torchrun the processes per machine come from its --nproc-per-node "
                f"({local}), not --devices {devices}; drop --devices"
            )
        if int(os.environ["WORLD_SIZE"]) > 1:
            check_method(method)
        return join(device, timeout)
    if devices == 1 and not isinstance(devices, bool):
        return None  # one process: the trainer checks its device itself
    if isinstance(devices, int) and devices > 1:
        check_method(method)
    check_devices(devices, device)  # also refuses --devices 0
    check_batch_size(batch_size, devices)
    launch(argv, devices, timeout)
    return None


def join(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> ProcessInfo:
    """Join the process group torchrun described in the environment (``env://``: ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), within ``timeout`` seconds.

    NCCL for a CUDA ``device`` (each process on ``cuda:LOCAL_RANK``), Gloo for the CPU. A
    rendezvous that does not complete in time (rank 0 unreachable, a process missing) is one
    :class:`MlmmError` line naming the address. Calling it again in a joined process returns
    the same information.
    """
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise MlmmError(
            f"joining a process group needs torchrun's environment, but {missing} is not set; "
            "start the command with torchrun (or mlmm train --devices N)"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = backend_for(device)
    if not dist.is_initialized():
        if backend == "nccl":
            check_devices(local_rank + 1, device)
            torch.cuda.set_device(local_rank)
        address = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
        try:
            dist.init_process_group(
                # the loop's own collectives (losses summed, decisions broadcast) are on CPU
                # tensors, which an NCCL-only group refuses: Gloo carries those beside NCCL
                "cpu:gloo,cuda:nccl" if backend == "nccl" else backend,
                init_method="env://",
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=timeout),
            )
        except (RuntimeError, TimeoutError, ValueError, OSError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MlmmError(
                f"process rank {rank} of {world} could not join the process group at {address} "
                f"within {timeout:g}s ({reason[:160]}); check that rank 0's machine is running "
                "and reachable at MASTER_ADDR:MASTER_PORT (torchrun --rdzv-endpoint), or raise "
                "--rendezvous-timeout"
            ) from None
    return ProcessInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend)


def leave() -> None:
    """Leave the process group (after training); nothing when none was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True outside a process group and on rank 0: the process that prints and writes."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def current() -> DataParallel | None:
    """The trainer's helper when this process is in a process group of two or more, else
    None (then training is exactly the one-process loop)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return DataParallel(dist.get_rank(), dist.get_world_size())


def seed_rank(seed: int) -> None:
    """In a process group, reseed torch per rank (dropout, modality dropout differ across
    processes, as they would across the batches of one process); nothing outside one."""
    helper = current()
    if helper is not None:
        torch.manual_seed(torch_seed_for(seed, "rank", helper.rank))


def check_batch_size(batch_size: int, world_size: int) -> None:
    """The global batch must give every process at least two rows."""
    if world_size > 1 and batch_size < 2 * world_size:
        raise MlmmError(
            f"--batch-size {batch_size} is the global batch over {world_size} processes and "
            f"must be at least {2 * world_size} (two rows each); raise --batch-size or use "
            "fewer processes"
        )


def check_train_rows(n_rows: int, world_size: int, stage: str = "main") -> None:
    """The training rows of a stage must give every process at least two rows: with fewer
    than ``2 * world_size`` every global batch would be skipped and the stage never trained.
    ``stage`` is named, since a staged method trains some stages on a subset of the split
    (the samples with a modality subset, the complete samples)."""
    if world_size > 1 and n_rows < 2 * world_size:
        raise MlmmError(
            f"data-parallel training over {world_size} processes needs at least "
            f"{2 * world_size} training rows (two per process), got {n_rows} in stage "
            f"{stage!r}; use fewer processes (--devices) or train in one process"
        )


def shard_rows(
    order: torch.Tensor, batch_size: int, rank: int, world_size: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """Rank ``rank``'s rows of every global batch of ``order``: ``(rows, global batch size)``.

    The global batches are ``order``'s consecutive slices of ``batch_size``; this rank takes
    positions ``rank::world_size`` of each. A trailing global batch with fewer than
    ``2 * world_size`` rows is skipped, so every process steps on at least two rows and all
    processes take the same number of steps.
    """
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]  # [b]
        if len(rows) < 2 * world_size:
            continue
        yield rows[rank::world_size], len(rows)


class DataParallel:
    """What the shared loop does differently in a process group (see the module docstring).

    Parameters
    ----------
    rank, world_size : int
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size
        self._weight = 1.0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (shows the progress bar)."""
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients
        averaged over processes). Parameters a stage leaves unused are allowed."""
        from torch.nn.parallel import DistributedDataParallel

        # staged methods leave parts unused in a stage (prompts while pretraining)
        return DistributedDataParallel(module, find_unused_parameters=True)

    def batches(
        self, batch: MultimodalBatch, batch_size: int, generator: torch.Generator
    ) -> Iterator[MultimodalBatch]:
        """This process's share of every global batch of one epoch (see :func:`shard_rows`);
        the permutation draws from ``generator`` exactly as the one-process loop does."""
        check_batch_size(batch_size, self.world_size)
        order = torch.randperm(len(batch), generator=generator)  # [N], the same on every rank
        for rows, global_size in shard_rows(order, batch_size, self.rank, self.world_size):
            self._weight = len(rows) * self.world_size / global_size
            yield batch.rows(rows)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss weighted by this process's share of the global batch, so the averaged
        gradient is the global batch's (exact for losses that are means over rows)."""
        return loss * self._weight

    def sum(self, *values: float) -> list[float]:
        """Each value summed over all processes."""
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every process (decisions from clocks may differ per process)."""
        tensor = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    def same_row(self, row: dict[str, float]) -> dict[str, float]:
        """Rank 0's validation numbers on every process, so every decision made from them
        (best epoch, per-part selection, early stopping) is the same everywhere."""
        keys = sorted(row)
        tensor = torch.tensor([float(row[key]) for key in keys], dtype=torch.float64)
        dist.broadcast(tensor, src=0)
        return {**row, **dict(zip(keys, tensor.tolist(), strict=True))}
