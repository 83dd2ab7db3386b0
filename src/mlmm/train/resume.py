"""Training checkpoints: a stopped training resumes where it stopped, bit for bit.

A :class:`~mlmm.train.Trainer` given a ``checkpoint_dir`` writes, after finished epochs,
everything needed to continue exactly as an uninterrupted run would: the weights of the
model and of the stage being trained, AdamW's moments and step counts, the early-stopping
state (best weights, best loss, epochs since the best, each selection part's own), the
history so far, the histories of finished stages, and every random state training draws
from (torch's CPU and CUDA generators, NumPy's and Python's global ones, the shuffling
generator). The trainer uses no learning-rate scheduler, so there is none to save.

Layout. A checkpoint directory holds ``checkpoint.json`` (the state that is not a tensor,
the run's key, the SHA-256 of the tensor file and its own) and one ``state-TOKEN.safetensors``
(every tensor). Both are written with :func:`~mlmm.utils.atomic_write`, the tensor file
first under a new name, then ``checkpoint.json``, whose rename is the commit point; the
previous tensor file is removed after it (and the temporary files of writes killed midway,
by the next write). A process killed at any moment leaves the last complete checkpoint.
Nothing is pickled. A training holds a lock on its folder while it runs (POSIX ``flock``,
released by the system when the process dies): a second training on the same folder at the
same time (the same ``mlmm train --out`` started twice) is refused in one line.

Use. A checkpoint is used only when its key matches the run: the method, its
hyperparameters and revisions, the trainer's configuration (seed, epochs, batch size...),
mlmm's version and a hash of the training and validation data. A checkpoint of another run,
or one that is corrupt, is ignored with a one-line warning and training starts from epoch 1
(the next checkpoint replaces it). A checkpoint is written between epochs, never inside
one: by default so that writing costs at most about 5% of the training time
(``checkpoint_every=None``: the next write waits 20 times as long as the last write took),
or at most every ``checkpoint_every`` seconds (0: after every epoch).

Stages. A method trained in stages (``trainer.fit_module`` called once per stage) resumes
too: finished stages are not trained again (their histories come back from the
checkpoint and the model's weights are restored), and the stage that was running
continues from its last written epoch.

Not resumed: data-parallel training (``--devices N``, torchrun) ignores ``checkpoint_dir``
with a warning and restarts from epoch 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mlmm.errors import MlmmError
from mlmm.utils import atomic_write, remove_stale_temporaries

try:  # POSIX; elsewhere two trainings writing one folder at once are not kept apart
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "mlmm-training-checkpoint"
FORMAT_VERSION = 1
STATE_FILE = "checkpoint.json"
_TENSOR_FILE = re.compile(r"^state-[0-9a-f]{16}\.safetensors$")
#: atomic_write's temporary file of a tensor file (``.state-TOKEN.safetensors.p<pid>-...tmp``)
_TENSOR_TEMPORARY = re.compile(r"^\.(state-[0-9a-f]{16}\.safetensors)\.p")
#: Largest ``checkpoint.json`` a load reads (the histories of long runs included).
MAX_STATE_BYTES = 256 << 20
#: With ``checkpoint_every=None``: wait this many times the last write's duration before the
#: next one, so writing costs at most about 1/(1 + 20) of the training time.
ADAPTIVE_SPACING = 20.0


def beside(out: str | Path, kind: str) -> Path:
    """The hidden folder of kind ``kind`` that a command keeps beside its output ``out``:
    ``.NAME.KIND`` in the same folder (``.model.checkpoint``, ``.model.auto-cache``)."""
    out = Path(out)
    return out.parent / f".{out.name}.{kind}"


def dataset_fingerprint(data: Any) -> str:
    """A SHA-256 of everything training reads from ``data`` (specs, task, inputs, presence,
    targets, groups, lengths); ``"none"`` for no data. An out-of-core dataset is read once,
    in chunks."""
    if data is None:
        return "none"
    digest = hashlib.sha256()
    digest.update(json.dumps([s.to_dict() for s in data.specs], sort_keys=True).encode())
    digest.update(json.dumps(data.task.to_dict(), sort_keys=True).encode())
    hash_arrays(digest, data)
    return digest.hexdigest()


def hash_arrays(digest: Any, data: Any) -> None:
    """Feed ``data``'s inputs, presence, targets, groups and lengths to ``digest`` (a hashlib
    object), in the order every data hash of mlmm uses (an out-of-core dataset in chunks)."""
    if getattr(data, "out_of_core", False):
        for _, inputs in data.chunks():
            for spec in data.specs:
                digest.update(np.ascontiguousarray(inputs[spec.name]).tobytes())
    else:
        for spec in data.specs:
            digest.update(np.ascontiguousarray(data.inputs[spec.name]).tobytes())
    digest.update(np.ascontiguousarray(data.observed).tobytes())
    digest.update(np.ascontiguousarray(data.targets).tobytes())
    # the folds follow the groups, and encoders the lengths: both change what is trained (data
    # without them hash as before, so stored studies and caches still resume)
    if data.groups is not None:
        digest.update(b"groups" + np.asarray(data.groups).astype(str).tobytes())
    for name, steps in sorted((data.lengths or {}).items()):
        digest.update(f"lengths:{name}".encode() + np.ascontiguousarray(steps).tobytes())


def run_key(model: Any, train: Any, val: Any, trainer_config: dict[str, Any]) -> dict[str, str]:
    """What a checkpoint must have been written by to be resumed: field -> value or hash."""
    import mlmm
    from mlmm.train.artifact_schema import method_revisions

    def digest(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    # one entry per trainer option, so that the warning names the one that changed
    # ("different max_epochs" for a rerun with another --epochs)
    trainer = {
        k: json.dumps(v, sort_keys=True, default=repr)
        for k, v in sorted(trainer_config.items())
        if k != "progress"
    }
    return {
        "library_version": mlmm.__version__,
        "method": f"{model.method_name or ''}:{type(model).__qualname__}",
        "hyperparameters": digest(model.get_hyperparameters()),
        "revisions": digest(method_revisions(model)),
        **trainer,
        "training data": dataset_fingerprint(train),
        "validation data": dataset_fingerprint(val),
    }


def remove_checkpoint(directory: str | Path) -> None:
    """Remove a checkpoint directory's own files (and the directory once it is empty); other
    files are left. Nothing happens when there is none."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        name = entry.name
        ours = name == STATE_FILE or _TENSOR_FILE.match(name)
        # atomic_write's temporaries of a killed write: ".checkpoint.json.p123-h...tmp"
        stray = name.startswith((f".{STATE_FILE}.", ".state-")) and name.endswith(".tmp")
        if (ours or stray) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


# ---------------------------------------------------------------------- random states
def random_states() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The global random states: NumPy's and Python's as JSON, torch's as tensors."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    states = {
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    return states, tensors


def set_random_states(states: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`random_states` returned."""
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [
        tensors[f"rng/cuda/{i}"] for i in range(sum(k.startswith("rng/cuda/") for k in tensors))
    ]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` before every key, copied to the CPU."""
    # a copy on the CPU: safetensors refuses tensors that share memory (tied weights)
    return {f"{prefix}{k}": v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix``, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


class CheckpointUnusable(Exception):
    """Why a checkpoint is ignored (a one-line reason for the warning)."""


class TrainingCheckpoint:
    """One training run's checkpoint directory: what was loaded from it, and its writes.

    Made by :meth:`Trainer.fit`; :meth:`Trainer.fit_module` asks it whether a stage is
    already done (:meth:`finished_stage`), restores the running stage (:attr:`running`)
    and writes after epochs (:meth:`due`, :meth:`write`).

    Attributes
    ----------
    directory : Path
    key : dict of str to str
    completed : list of dict
        The histories (``TrainHistory.to_dict()``) of the stages finished so far, in order.
    running : dict or None
        The loaded state of the stage that was running when the checkpoint was written.
    stage_index : int
        How many stages ``fit_module`` has started in this run (finished ones included).
    model : torch.nn.Module
        The whole model being trained (a stage may train a part or a wrapper of it).
    announced : bool
        Whether the resume was restored and said (once per run).
    """

    def __init__(
        self,
        directory: str | Path,
        key: dict[str, str],
        every: float | None,
        model: torch.nn.Module,
    ) -> None:
        self.directory = Path(directory)
        self.key, self.every, self.model = key, every, model
        self.announced = False
        self._started = time.perf_counter()
        self.completed: list[dict[str, Any]] = []
        self.running: dict[str, Any] | None = None
        self.random: dict[str, Any] | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.elapsed = 0.0  # training seconds before this process (time_limit counts them)
        self.stage_index = 0
        self.loaded = False
        self.writes, self.write_seconds = 0, 0.0
        self._last_write_end = time.perf_counter()
        self._last_write_seconds = 0.0
        self._failed = False
        self._lock: int | None = None  # the folder's descriptor, locked while training
        self._made_folder = False

    # ------------------------------------------------------------------ loading
    @classmethod
    def open(
        cls,
        directory: str | Path,
        key: dict[str, str],
        every: float | None,
        model: torch.nn.Module,
    ) -> TrainingCheckpoint:
        """The checkpoint of ``directory`` when it matches ``key``; otherwise an empty one
        (after a one-line warning when a checkpoint was there but cannot be used)."""
        checkpoint = cls(directory, key, every, model)
        checkpoint._hold()
        if not (checkpoint.directory / STATE_FILE).exists():
            return checkpoint
        try:
            try:
                checkpoint._load()
            except CheckpointUnusable as reason:
                checkpoint.completed, checkpoint.running, checkpoint.random = [], None, None
                checkpoint.tensors, checkpoint.elapsed = {}, 0.0
                warnings.warn(
                    f"ignoring the training checkpoint in {checkpoint.directory}: {reason}; "
                    f"training starts from epoch 1 (the next checkpoint replaces it)",
                    UserWarning,
                    stacklevel=3,
                )
        except BaseException:  # a warning made an error, an interrupt: the folder is free
            checkpoint.close()
            raise
        return checkpoint

    def _hold(self) -> None:
        """Lock the folder for this training until :meth:`close` (or the process's end), or
        raise: two trainings writing one folder at once (the same ``mlmm train --out`` run
        twice) would each delete the other's tensor files and resume from either's."""
        if fcntl is None:  # pragma: no cover
            return
        self._made_folder = not self.directory.exists()
        for attempt in range(3):
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                break
            except FileNotFoundError:  # an empty parent removed meanwhile (a finished bench run)
                if attempt == 2:
                    return
            except OSError:
                return  # not a folder we can open: the first write says why, in one warning
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MlmmError(
                f"the training checkpoint folder {self.directory} is in use by another training "
                f"running now (the same mlmm train --out started twice?); wait for it to end, or "
                f"train to another --out (checkpoint_dir)"
            ) from None
        except OSError:  # a file system without locks: unlocked, as before
            os.close(fd)
            return
        self._lock = fd

    def close(self) -> None:
        """Unlock the folder (the checkpoint stays), and remove the folder when this training
        made it and wrote nothing to it."""
        if self._lock is not None:
            os.close(self._lock)  # releases the lock
            self._lock = None
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.directory.rmdir()  # only when empty

    def _load(self) -> None:
        state_path = self.directory / STATE_FILE
        try:
            with open(state_path, "rb") as fh:
                data = fh.read(MAX_STATE_BYTES + 1)
        except OSError as err:
            raise CheckpointUnusable(f"{STATE_FILE} cannot be read ({err.strerror})") from None
        if len(data) > MAX_STATE_BYTES:
            raise CheckpointUnusable(f"{STATE_FILE} is larger than {MAX_STATE_BYTES:,} bytes")
        try:
            state = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise CheckpointUnusable(f"{STATE_FILE} is not valid JSON (corrupt)") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointUnusable(f"{STATE_FILE} is not an mlmm training checkpoint")
        if state.pop("sha256", None) != _state_hash(state):
            raise CheckpointUnusable(f"{STATE_FILE} does not match its SHA-256 (corrupt or edited)")
        if state.get("format_version") != FORMAT_VERSION:
            raise CheckpointUnusable(
                f"it has format version {state.get('format_version')!r}, this mlmm reads "
                f"{FORMAT_VERSION}"
            )
        key = state.get("key")
        if key != self.key:
            differ = sorted(
                k for k in set(self.key) | set(key or {}) if (key or {}).get(k) != self.key.get(k)
            )
            raise CheckpointUnusable(
                f"it was written by another run (different {', '.join(differ)})"
            )
        try:
            name, expected = state["tensors"]["file"], state["tensors"]["sha256"]
            completed, running = list(state["completed"]), state["running"]
            random_state, elapsed = dict(state["random"]), float(state["elapsed"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointUnusable(f"{STATE_FILE} lacks a field (corrupt)") from None
        if not isinstance(name, str) or not _TENSOR_FILE.match(name):
            raise CheckpointUnusable(f"{STATE_FILE} names no valid tensor file")
        try:
            with open(self.directory / name, "rb") as fh:
                blob = fh.read()
        except OSError as err:
            raise CheckpointUnusable(f"{name} cannot be read ({err.strerror})") from None
        if hashlib.sha256(blob).hexdigest() != expected:
            raise CheckpointUnusable(f"{name} does not match its SHA-256 (corrupt or truncated)")
        try:
            tensors = load_safetensors(blob)
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointUnusable(f"{name} is not a readable safetensors file ({err})") from None
        if "rng/torch" not in tensors:
            raise CheckpointUnusable(f"{name} lacks the random state (corrupt)")
        self.completed, self.running, self.random = completed, running, random_state
        self.tensors, self.elapsed, self.loaded = tensors, elapsed, True

    # ------------------------------------------------------------------ resuming
    def finished_stage(self, stage: str) -> dict[str, Any] | None:
        """The history of stage number :attr:`stage_index` when the checkpoint holds it as
        finished (then its weights are restored: the model's as last written), else None."""
        if self.stage_index >= len(self.completed):
            return None
        history = self.completed[self.stage_index]
        if history.get("stage") != stage:
            raise MlmmError(
                f"the training checkpoint in {self.directory} recorded stage "
                f"{history.get('stage')!r} where this run trains stage {stage!r}; remove "
                f"that folder and train again"
            )
        return history

    def model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's weights as last written."""
        return unprefixed("model/", self.tensors)

    def restore_random(self) -> None:
        """Set every global random generator as it was when the checkpoint was written."""
        if self.random is not None:
            set_random_states(self.random, self.tensors)

    # ------------------------------------------------------------------ writing
    def total_seconds(self) -> float:
        """Training seconds of the run so far, those before the resume included."""
        return self.elapsed + time.perf_counter() - self._started

    def due(self) -> bool:
        """Whether a checkpoint should be written now (after a finished epoch)."""
        if self._failed:
            return False
        since = time.perf_counter() - self._last_write_end
        if self.every is not None:
            return since >= self.every
        return since >= ADAPTIVE_SPACING * self._last_write_seconds

    def write(
        self,
        running: dict[str, Any] | None,
        tensors: dict[str, torch.Tensor],
        started: float | None = None,
    ) -> None:
        """Write a checkpoint: :attr:`model`'s weights, the running stage (``running`` plus
        its ``tensors``, or None between stages), the finished stages and the random states.
        ``started``: when the caller began gathering ``running`` and ``tensors``
        (``time.perf_counter()``), so that the adaptive spacing counts that work too.

        A write that fails (a full disk) warns once and training goes on without checkpoints.
        """
        start = time.perf_counter() if started is None else started
        states, random_tensors = random_states()
        everything = {**prefixed("model/", self.model.state_dict()), **tensors, **random_tensors}
        blob = save_safetensors(everything)
        name = f"state-{uuid.uuid4().hex[:16]}.safetensors"
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "key": self.key,
            "tensors": {"file": name, "sha256": hashlib.sha256(blob).hexdigest()},
            "completed": self.completed,
            "running": running,
            "random": states,
            "elapsed": self.total_seconds(),
        }
        # NaN and inf (a history's val_accuracy) round-trip; the hash makes an edited or
        # damaged file that is still JSON as unusable as a truncated one
        state["sha256"] = _state_hash(state)
        text = json.dumps(state)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.directory / name, "wb") as fh:
                fh.write(blob)
            with atomic_write(self.directory / STATE_FILE) as fh:  # the commit point
                fh.write(text)
        except OSError as err:
            self._failed = True
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
            warnings.warn(
                f"could not write the training checkpoint in {self.directory} ({err}); "
                f"training goes on without checkpoints",
                UserWarning,
                stacklevel=3,
            )
            return
        for entry in self.directory.iterdir():
            if _TENSOR_FILE.match(entry.name) and entry.name != name:
                with contextlib.suppress(OSError):
                    entry.unlink()
            stray = _TENSOR_TEMPORARY.match(entry.name)
            if stray:  # a tensor file's half-written temporary, of a writer killed mid-write
                remove_stale_temporaries(self.directory / stray[1])
        self._last_write_end = time.perf_counter()
        self._last_write_seconds = self._last_write_end - start
        self.writes += 1
        self.write_seconds += self._last_write_seconds


def _state_hash(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def optimizer_state(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An optimiser's state: param-group scalars and non-tensor values as JSON, its
    per-parameter tensors (moments, step counts) as ``optimizer/<index>/<name>`` tensors."""
    state = optimizer.state_dict()
    groups = [dict(group) for group in state["param_groups"]]
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value.detach().to("cpu", copy=True)
            else:
                scalars.setdefault(str(index), {})[name] = value
    return {"param_groups": groups, "scalars": scalars}, tensors


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    """Restore what :func:`optimizer_state` returned into ``optimizer``."""
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            per_param.setdefault(int(index), {})[name] = value
    for index, values in saved["scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
    groups = []
    for group in saved["param_groups"]:  # JSON made tuples (AdamW's betas) lists
        groups.append(
            {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        )
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})


def say_resuming(directory: Path, stage: str, epoch: int, epochs: int) -> None:
    """The one line a resumed training prints (on standard error)."""
    where = "" if stage == "main" else f" of stage {stage!r}"
    start = f"at the start{where}" if epoch == 0 else f"from epoch {epoch} of {epochs}{where}"
    print(
        f"resuming {start} (training checkpoint in {directory})",
        file=sys.stderr,
        flush=True,
    )


def say_finished(directory: Path) -> None:
    """The one line of a rerun whose checkpoint holds every stage as finished."""
    print(
        f"resuming: training had finished, its weights come from the training checkpoint "
        f"in {directory}",
        file=sys.stderr,
        flush=True,
    )
