"""The shared trainer: mini-batches, AdamW, early stopping on validation data, seeded."""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlmm.data.batch import MultimodalBatch, iterate_batches
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.lazy import batches_for, is_out_of_core
from mlmm.data.preprocessing import Standardizer
from mlmm.errors import MlmmError, unknown_name_error
from mlmm.methods.base import MissingModalityModel, check_range
from mlmm.train import distributed, resume
from mlmm.utils import resolve_device, torch_seed_for

#: Training precisions: ``"32"`` (float32 throughout), ``"bf16-mixed"`` (autocast to bfloat16,
#: float32 weights), ``"16-mixed"`` (autocast to float16 with a gradient scaler; CUDA only).
PRECISIONS = ("32", "bf16-mixed", "16-mixed")
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def check_precision(precision: str | int) -> str:
    """``precision`` as one of :data:`PRECISIONS` (the integer 32 is ``"32"``).

    Raises
    ------
    MlmmError
        One line listing the valid values.
    """
    if isinstance(precision, int) and not isinstance(precision, bool) and precision == 32:
        return "32"
    if isinstance(precision, str) and precision in PRECISIONS:
        return precision
    raise MlmmError(
        f"precision must be one of {list(PRECISIONS)}, got {precision!r}; "
        f"use '32' (float32) or 'bf16-mixed' (CPU or GPU)"
    )


def check_trainer_params(params: dict[str, Any] | None) -> None:
    """Refuse a keyword :class:`Trainer` does not take, in one line with the closest name (a
    dict of trainer options from a user, where ``Trainer(**params)`` would raise TypeError).
    """
    accepted = [k for k in inspect.signature(Trainer).parameters if k != "self"]
    for key in params or {}:
        if key not in accepted:
            raise unknown_name_error("trainer parameter", str(key), accepted)


def check_precision_device(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a precision ``device`` lacks: ``16-mixed`` off CUDA (float16
    autocast and its gradient scaler are for GPUs; on a CPU, ``bf16-mixed`` is the mixed
    precision that works), and ``bf16-mixed`` on a GPU without bfloat16 (where autocast
    would fail inside the first training step)."""
    if precision == "16-mixed" and device.type != "cuda":
        raise MlmmError(
            f"precision '16-mixed' needs a CUDA GPU, got device {str(device)!r}; "
            f"use precision 'bf16-mixed' on the CPU, or device 'cuda'"
        )
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise MlmmError(
            f"precision 'bf16-mixed' needs bfloat16, which the GPU of device {str(device)!r} "
            f"does not support; use precision '16-mixed' on this GPU, or '32'"
        )


def prediction_precision(precision: str, device: torch.device) -> str:
    """The precision a trained model predicts in on ``device``: its own, or ``"32"`` where
    the device lacks it (a ``16-mixed`` model moved off CUDA, a ``bf16-mixed`` model on a GPU
    without bfloat16), since its weights are float32 either way."""
    if precision == "16-mixed" and device.type != "cuda":
        return "32"
    if precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (nothing for ``"32"``)."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 when autocast left it in bfloat16 or float16 (else unchanged)."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


@dataclass
class TrainHistory:
    """What one call of :meth:`Trainer.fit_module` did.

    Attributes
    ----------
    epochs : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss`` (task loss on validation data, the
        early-stopping criterion), ``val_accuracy`` (classification; NaN when a validation
        score is not finite, as :func:`mlmm.eval.metrics.accuracy`), ``seconds``.
    best_epoch : int
        The epoch whose weights were kept (the lowest validation loss; the last epoch when
        there is no validation data).
    part_best_epochs : dict of str to int
        For a model with :meth:`~mlmm.methods.MissingModalityModel.selection_parts`: the epoch
        whose weights each part kept (its own lowest validation loss, ``val_loss[part]`` in
        ``epochs``); ``best_val_loss`` is then the loss of the assembled model.
    stopped_early : bool
    time_limited : bool
        True when the trainer's ``time_limit`` ended this stage before ``max_epochs`` and
        before early stopping (the best weights so far are kept). Its results then depend on
        the machine's speed and load: benchmarks store such runs as time-limited and leave
        them out of comparisons unless asked.
    seconds : float
    """

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = float("nan")
    part_best_epochs: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    time_limited: bool = False
    seconds: float = 0.0
    stage: str = "main"

    @property
    def stopped_by(self) -> str:
        """What ended the stage: ``"time_limit"``, ``"early_stopping"`` (patience ran out) or
        ``"max_epochs"`` (every epoch ran, or a method that does not train by epochs)."""
        if self.time_limited:
            return "time_limit"
        return "early_stopping" if self.stopped_early else "max_epochs"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Trainer:
    """Trains any registered method on a :class:`MultimodalDataset`.

    Fits a :class:`~mlmm.data.preprocessing.Standardizer` on the training split (present
    entries only), runs the method's :meth:`~mlmm.methods.MissingModalityModel.fit` (the
    shared loop below unless the method trains in stages), and returns a
    :class:`~mlmm.train.TrainedModel`.

    Parameters
    ----------
    max_epochs : int, default 200
    batch_size : int, default 64
        At least 2: the loop skips a one-row batch (a lone trailing row of an epoch).
    lr : float, default 1e-3
        AdamW learning rate.
    weight_decay : float, default 1e-4
        AdamW weight decay.
    patience : int, default 20
        Stop after this many epochs without a lower validation loss; the best weights are
        restored. Without validation data all ``max_epochs`` run and the last weights stay.
    device : str, default "cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``. ``"cuda"`` on a machine without a
        CUDA GPU is a one-line error when :meth:`fit` starts.
    precision : {"32", "bf16-mixed", "16-mixed"}, default "32"
        ``"32"``: float32. ``"bf16-mixed"``: the forward pass and loss of the shared loop (and
        validation) run under ``torch.autocast`` to bfloat16, on a CPU or a GPU; weights,
        gradients and the optimiser stay float32. ``"16-mixed"``: autocast to float16 with a
        gradient scaler, CUDA only (refused on a CPU in one line). The integer 32 is
        ``"32"``. A method that trains outside the shared loop (the scikit-learn reference
        baselines) runs in float32 with a warning, and its :class:`~mlmm.train.TrainedModel`
        records ``precision="32"``.
    seed : int, default 0
        Seeds weights, shuffling and dropout: same seed, same model (on CPU).
    progress : bool, default True
        Show a Rich progress bar.
    grad_clip : float or None, default 5.0
        Clip the gradient norm.
    num_threads : int or None
        ``torch.set_num_threads`` for this process (None leaves it).
    time_limit : float or None
        Seconds of training allowed for one :meth:`fit` (all stages together). Checked after
        every batch: once it is spent the epoch ends there (after at least one batch; its
        validation still runs), the stage stops and keeps its best weights, and any later
        stage runs a single whole epoch, so the model is always complete. In data-parallel
        training the ranks agree once per epoch, so there an epoch is finished. None: no
        limit.
    reinitialize : bool, default True
        Re-draw the model's initial weights from ``seed`` before training (every submodule's
        ``reset_parameters``), so the result does not depend on the global random state at
        model creation. Pass False to continue training weights you already have.
    on_epoch : callable or None
        Called as ``on_epoch(stage, row)`` after every epoch of the shared loop, with the
        epoch's row of :attr:`TrainHistory.epochs`. An exception it raises stops training and
        propagates (a tuning study prunes a trial this way). Not part of :meth:`config`.
    checkpoint_dir : str, Path or None
        Write training checkpoints to this folder (:mod:`mlmm.train.resume`), so that a
        :meth:`fit` stopped by anything (``kill -9``, Ctrl-C, an exception) and called again
        with the same model, data and trainer configuration continues from its last written
        epoch and ends with the very weights, history and predictions of an uninterrupted
        run. A checkpoint of another run, or a corrupt one, is ignored with a one-line
        warning. The checkpoint is kept after :meth:`fit` (a rerun then trains nothing);
        remove it with :func:`mlmm.train.resume.remove_checkpoint` once the model is saved.
        Two trainings cannot use one folder at the same time: the second's :meth:`fit`
        raises. Ignored, with a warning, in data-parallel training (which restarts from
        epoch 1).
        Not part of :meth:`config`.
    checkpoint_every : float or None
        Seconds between checkpoints (written after a finished epoch; 0: after every epoch).
        None: adaptive, each write waits 20 times as long as the previous one took, so
        writing costs at most about 5% of the training time.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("hemis", ds.specs, ds.task)
    >>> trained = mlmm.Trainer(max_epochs=3, progress=False).fit(model, split.train, split.val)
    >>> trained.predict(split.test).shape
    (60,)
    """

    def __init__(
        self,
        max_epochs: int = 200,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 20,
        device: str = "cpu",
        precision: str | int = "32",
        seed: int = 0,
        progress: bool = True,
        grad_clip: float | None = 5.0,
        num_threads: int | None = None,
        reinitialize: bool = True,
        time_limit: float | None = None,
        on_epoch: Callable[[str, dict[str, float]], None] | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: float | None = None,
    ) -> None:
        check_range("max_epochs", max_epochs, 1, integer=True)
        check_range("batch_size", batch_size, 1, integer=True)
        if batch_size == 1:  # every one-row batch would be skipped as a lone trailing row
            raise MlmmError(
                "batch_size must be at least 2, got 1: the training loop skips one-row batches "
                "(batch normalisation and a noisy step), so nothing would train; use 2 or more"
            )
        check_range("lr", lr, 0, low_inclusive=False)
        check_range("weight_decay", weight_decay, 0)
        check_range("patience", patience, 1, integer=True)
        check_range("seed", seed, 0, integer=True)
        if grad_clip is not None:
            check_range("grad_clip", grad_clip, 0, low_inclusive=False)
        if num_threads is not None:
            check_range("num_threads", num_threads, 1, integer=True)
        if time_limit is not None:
            check_range("time_limit", time_limit, 0, low_inclusive=False)
        if checkpoint_every is not None:
            check_range("checkpoint_every", checkpoint_every, 0)
        precision = check_precision(precision)
        if str(device) == "cpu":  # "auto" and "cuda" are checked once resolved, in fit
            check_precision_device(precision, torch.device("cpu"))
        self.precision = precision
        self.max_epochs, self.batch_size, self.lr = max_epochs, batch_size, lr
        self.weight_decay, self.patience, self.device = weight_decay, patience, device
        self.seed, self.progress, self.grad_clip, self.num_threads = (
            seed,
            progress,
            grad_clip,
            num_threads,
        )
        self.reinitialize, self.time_limit = reinitialize, time_limit
        self.on_epoch = on_epoch
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self._deadline: float | None = None
        self._loop_ran = False
        self._checkpoint: resume.TrainingCheckpoint | None = None

    def config(self) -> dict[str, Any]:
        """The constructor arguments (stored in artifacts and results)."""
        return {
            "max_epochs": self.max_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "device": str(self.device),
            "precision": self.precision,
            "seed": self.seed,
            "grad_clip": self.grad_clip,
            "num_threads": self.num_threads,
            "reinitialize": self.reinitialize,
            "time_limit": self.time_limit,
        }

    # ------------------------------------------------------------------ public
    def fit(
        self,
        model: MissingModalityModel,
        train: MultimodalDataset,
        val: MultimodalDataset | None = None,
        info: dict[str, Any] | None = None,
    ):
        """Standardise, train ``model`` and return a :class:`~mlmm.train.TrainedModel`.

        ``train`` and ``val`` may be out-of-core datasets (:func:`mlmm.data.lazy.open_dataset`):
        they are then standardised in a streaming pass and read in mini-batches, never whole.

        ``info`` (dataset name, missingness, split seed...) is stored with the model.
        """
        from mlmm.train.trained import TrainedModel  # import here: trained imports trainer

        if not isinstance(model, MissingModalityModel):
            raise MlmmError(
                f"Trainer.fit needs a model from mlmm.create_method, got {type(model).__name__}"
            )
        _check_matches(model, train, "training")
        if is_out_of_core(train) and not model.streams_data:
            raise MlmmError(
                f"method {model.method_name or type(model).__name__!r} needs its whole training "
                f"set in memory and cannot train on an out-of-core dataset; load it with "
                f"dataset.to_memory() or pick a method that streams (e.g. hemis, late-fusion)"
            )
        if val is not None:
            _check_matches(model, val, "validation")
        if train.observed.any(axis=1).sum() == 0:
            raise MlmmError("every training sample is empty; no modality is present anywhere")
        self.precision = check_precision(self.precision)  # an attribute set after __init__
        device = resolve_device(self.device)
        check_precision_device(self.precision, device)
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        torch.manual_seed(torch_seed_for(self.seed, "weights"))
        if self.reinitialize:
            reset_parameters(model)
        standardizer = Standardizer().fit(_nonempty(train))
        train_s = standardizer.transform(_nonempty(train))
        val_s = None if val is None else standardizer.transform(_nonempty(val))
        model.to(device)
        distributed.seed_rank(self.seed)  # in a process group: dropout seeded per rank
        checkpoint = self._open_checkpoint(model, train, val)
        start = time.perf_counter() - (0.0 if checkpoint is None else checkpoint.elapsed)
        self._deadline = None if self.time_limit is None else start + self.time_limit
        self._loop_ran = False
        self._checkpoint = checkpoint
        try:
            result = model.fit(self, train_s, val_s)
            if checkpoint is not None and checkpoint.loaded and not checkpoint.announced:
                resume.say_finished(checkpoint.directory)  # killed after training, before saving
        finally:
            self._deadline, self._checkpoint = None, None
            if checkpoint is not None:
                checkpoint.close()
        histories = result if isinstance(result, list) else [result]
        model.eval()  # stays on the training device; TrainedModel.to moves it
        prior = _prior(train)
        # a method that never ran the shared loop (scikit-learn references) trained in float32
        precision = self.precision if self._loop_ran else "32"
        if precision != self.precision:
            warnings.warn(
                f"{model.method_name or type(model).__name__} trains outside the shared loop "
                f"(in float32 or float64); precision {self.precision!r} does not apply to it, "
                f"and the model records precision '32'",
                UserWarning,
                stacklevel=2,
            )
        return TrainedModel(
            model=model,
            standardizer=standardizer,
            histories=histories,
            trainer_config=self.config(),
            info=_with_lengths(info, train),
            prior=prior,
            train_seconds=time.perf_counter() - start,
            precision=precision,
            **_table_layout(train),
        )

    def _open_checkpoint(
        self,
        model: MissingModalityModel,
        train: MultimodalDataset,
        val: MultimodalDataset | None,
    ) -> resume.TrainingCheckpoint | None:
        """The run's checkpoint (loaded when one matches), or None without ``checkpoint_dir``
        and in data-parallel training."""
        if self.checkpoint_dir is None:
            return None
        if distributed.current() is not None:
            warnings.warn(
                f"data-parallel training does not resume from checkpoints; checkpoint_dir "
                f"{str(self.checkpoint_dir)!r} is ignored and training starts from epoch 1",
                UserWarning,
                stacklevel=3,
            )
            return None
        # the device trained on, not the one asked for: "auto" is a GPU on one machine and
        # the CPU on another, where resuming would not give the uninterrupted run's weights
        config = {**self.config(), "device": str(resolve_device(self.device))}
        key = resume.run_key(model, train, val, config)
        return resume.TrainingCheckpoint.open(
            self.checkpoint_dir, key, self.checkpoint_every, model
        )

    def _resumed_stage(
        self, checkpoint: resume.TrainingCheckpoint, module: MissingModalityModel, stage: str
    ) -> TrainHistory | None:
        """A stage the checkpoint holds as finished: the whole model's weights and the random
        states as written, and the stage's history (None when the stage must be trained)."""
        done = checkpoint.finished_stage(stage)
        if done is None:
            return None
        checkpoint.stage_index += 1
        checkpoint.model.load_state_dict(checkpoint.model_state())
        checkpoint.restore_random()
        module.eval()
        self._loop_ran = True
        return TrainHistory(**done)

    def fit_module(
        self,
        module: MissingModalityModel,
        train: MultimodalDataset,
        val: MultimodalDataset | None,
        stage: str = "main",
        max_epochs: int | None = None,
    ) -> TrainHistory:
        """The shared training loop on already standardised data (used by ``model.fit``).

        Optimises every parameter with ``requires_grad`` (freeze parameters to train a part).
        In a process group of two or more (``mlmm train --devices N``, torchrun) it trains
        data-parallel: see :mod:`mlmm.train.distributed`.
        """
        ddp = distributed.current()  # None: the one-process loop
        device = resolve_device(self.device)
        check_precision_device(self.precision, device)
        checkpoint = self._checkpoint
        if checkpoint is not None:
            done = self._resumed_stage(checkpoint, module, stage)
            if done is not None:
                return done
        self._loop_ran = True
        module.to(device)
        # one whole batch in memory, or mini-batches streamed from disk (mlmm.data.lazy)
        train_batch = batches_for(train, device)
        val_batch = None if val is None else batches_for(val, device)
        if ddp is not None and not isinstance(train_batch, MultimodalBatch):
            raise MlmmError(
                "data-parallel training shards data held in memory, got an out-of-core dataset; "
                "train it in one process, or load it with dataset.to_memory()"
            )
        if ddp is not None:  # else every global batch is skipped and nothing trains
            distributed.check_train_rows(len(train_batch), ddp.world_size, stage)
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise MlmmError(
                f"{type(module).__name__} has no trainable parameters in stage {stage!r}"
            )
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "16-mixed")
        generator = torch.Generator().manual_seed(torch_seed_for(self.seed, "shuffle", stage))
        spent = self._deadline is not None and time.perf_counter() >= self._deadline
        spent = spent if ddp is None else ddp.agree(spent)
        # once the time limit is spent a stage runs one epoch, so it is never left untrained
        epochs = 1 if spent else (max_epochs or self.max_epochs)
        history = TrainHistory(stage=stage, time_limited=spent)
        best_state, best_loss, since_best = None, float("inf"), 0
        parts = module.selection_parts()
        part_best = {name: _PartSelection(prefixes) for name, prefixes in parts.items()}
        runner = module if ddp is None else ddp.wrap(module)  # averages gradients over ranks
        start = time.perf_counter()
        first = 1
        if checkpoint is not None and checkpoint.loaded:
            state = self._restore_stage(checkpoint, module, stage, epochs)
            if state is not None:  # the stage was running: continue after its last epoch
                epochs, history, best_loss, since_best = state["epochs"], *state["restored"]
                best_state = state["best_state"]
                resume.load_optimizer_state(optimizer, state["optimizer"], checkpoint.tensors)
                scaler.load_state_dict(state["scaler"])
                generator.set_state(checkpoint.tensors["shuffle"])
                for i, selection in enumerate(part_best.values()):
                    selection.restore(state["parts"][i], checkpoint.tensors, f"part/{i}/")
                first = history.epochs[-1]["epoch"] + 1 if history.epochs else 1
                start -= history.seconds
        with _progress(
            self.progress and (ddp is None or ddp.is_main),
            epochs,
            f"{module.method_name or type(module).__name__} [{stage}]",
        ) as bar:
            for epoch in range(first, epochs + 1):
                t0 = time.perf_counter()
                module.train()
                total, count = 0.0, 0
                batches = (
                    iterate_batches(train_batch, self.batch_size, shuffle=True, generator=generator)
                    if ddp is None
                    else ddp.batches(train_batch, self.batch_size, generator)  # this rank's share
                )
                cut = False  # the time limit ended this epoch before its last batch
                for mb in batches:
                    if (
                        self._deadline is not None
                        and ddp is None  # ranks would disagree on the batch to stop at
                        and count
                        and not history.time_limited  # a spent stage's one epoch runs whole
                        and time.perf_counter() >= self._deadline
                    ):
                        # an epoch of a large dataset may take far longer than the limit
                        cut = True
                        break
                    if len(mb) < 2 and len(train_batch) >= 2:
                        continue  # a lone trailing row gives a noisy step; its samples come back next epoch
                    with autocast(device, self.precision):  # forward and loss only
                        out = runner(mb)
                    if out.loss is None or not torch.isfinite(out.loss):
                        raise MlmmError(
                            f"training loss became {None if out.loss is None else out.loss.item()} "
                            f"at epoch {epoch}; lower the learning rate (--lr) or check the inputs"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(out.loss if ddp is None else ddp.scale(out.loss)).backward()
                    if self.grad_clip is not None:
                        scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
                        torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                    scaler.step(optimizer)  # skips the step when a float16 gradient overflowed
                    scaler.update()
                    total += out.loss.item() * len(mb)
                    count += len(mb)
                if ddp is not None:
                    total, count = ddp.sum(total, count)
                row = {"epoch": epoch, "train_loss": total / max(count, 1)}
                if val_batch is not None:
                    scores = self._validate(module, val_batch, parts)
                    row.update(scores if ddp is None else ddp.same_row(scores))
                    if row["val_loss"] < best_loss - 1e-5:
                        best_loss, since_best = row["val_loss"], 0
                        best_state = copy.deepcopy(module.state_dict())
                        history.best_epoch = epoch
                    else:
                        since_best += 1
                    for name, selection in part_best.items():
                        selection.update(row[f"val_loss[{name}]"], epoch, module)
                row["seconds"] = time.perf_counter() - t0
                history.epochs.append(row)
                bar(epoch, row)
                if self.on_epoch is not None:
                    self.on_epoch(stage, row)
                stalled = since_best >= self.patience and all(
                    selection.since_best >= self.patience for selection in part_best.values()
                )
                if val_batch is not None and stalled:
                    history.stopped_early = True
                    break
                out_of_time = cut or (
                    self._deadline is not None
                    and epoch < epochs
                    and time.perf_counter() >= self._deadline
                )
                if ddp is not None and self._deadline is not None:
                    out_of_time = ddp.agree(out_of_time)  # clocks differ: rank 0 decides
                if out_of_time:
                    history.time_limited = True
                    break
                if checkpoint is not None and epoch < epochs and checkpoint.due():
                    history.seconds = time.perf_counter() - start
                    self._write_running(
                        checkpoint, module, stage, epochs, history, best_loss, since_best,
                        best_state, optimizer, scaler, generator, part_best,
                    )  # fmt: skip
        if best_state is not None:
            module.load_state_dict(best_state)
            for name, selection in part_best.items():
                if selection.state is not None:  # a part never validated follows the whole
                    module.load_state_dict(selection.state, strict=False)
                    history.part_best_epochs[name] = selection.best_epoch
            if history.part_best_epochs:  # the assembled model's loss, not any epoch's
                best_loss = self._validate(module, val_batch, {})["val_loss"]
            history.best_val_loss = best_loss
        else:
            history.best_epoch = len(history.epochs)
        history.seconds = time.perf_counter() - start
        module.eval()
        if checkpoint is not None:  # the stage is finished: later stages will skip it
            checkpoint.stage_index += 1
            checkpoint.completed.append(history.to_dict())
            if checkpoint.due():
                checkpoint.write(None, {})
        return history

    def _restore_stage(
        self,
        checkpoint: resume.TrainingCheckpoint,
        module: MissingModalityModel,
        stage: str,
        epochs: int,
    ) -> dict[str, Any] | None:
        """At the start of the first stage the checkpoint does not hold as finished: when
        this stage was running, restore the model's weights and the random states as
        written, and return the stage's state (``epochs``, ``restored``: history, best loss,
        epochs since the best; ``best_state``, ``optimizer``, ``scaler``, ``parts``)."""
        if checkpoint.announced or checkpoint.stage_index != len(checkpoint.completed):
            return None
        checkpoint.announced = True
        running = checkpoint.running
        if running is None:  # written between stages: this one starts from its first epoch
            # the skipped stage before it restored the weights and random states as written;
            # what the method did since, between the stages (a new layer drawn), stands
            resume.say_resuming(checkpoint.directory, stage, 0, epochs)
            return None
        checkpoint.model.load_state_dict(checkpoint.model_state())
        if running["stage"] != stage:
            raise MlmmError(
                f"the training checkpoint in {checkpoint.directory} recorded stage "
                f"{running['stage']!r} where this run trains stage {stage!r}; remove that "
                f"folder and train again"
            )
        if module is not checkpoint.model:
            module.load_state_dict(resume.unprefixed("stage/", checkpoint.tensors))
        checkpoint.restore_random()
        history = TrainHistory(**running["history"])
        best = resume.unprefixed("best/", checkpoint.tensors) if running["has_best"] else None
        epoch = history.epochs[-1]["epoch"] if history.epochs else 0
        resume.say_resuming(checkpoint.directory, stage, epoch, running["epochs"])
        return {
            "epochs": running["epochs"],
            "restored": (history, running["best_loss"], running["since_best"]),
            "best_state": best,
            "optimizer": running["optimizer"],
            "scaler": running["scaler"],
            "parts": running["parts"],
        }

    def _write_running(
        self,
        checkpoint: resume.TrainingCheckpoint,
        module: MissingModalityModel,
        stage: str,
        epochs: int,
        history: TrainHistory,
        best_loss: float,
        since_best: int,
        best_state: dict[str, torch.Tensor] | None,
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        generator: torch.Generator,
        part_best: dict[str, _PartSelection],
    ) -> None:
        """Write a checkpoint in the middle of a stage, after a finished epoch."""
        started = time.perf_counter()
        optimizer_saved, tensors = resume.optimizer_state(optimizer)
        if module is not checkpoint.model:  # a part or a wrapper (with its own weights)
            tensors.update(resume.prefixed("stage/", module.state_dict()))
        if best_state is not None:
            tensors.update(resume.prefixed("best/", best_state))
        parts = []
        for i, selection in enumerate(part_best.values()):
            parts.append(selection.saved())
            if selection.state is not None:
                tensors.update(resume.prefixed(f"part/{i}/", selection.state))
        tensors["shuffle"] = generator.get_state()
        running = {
            "stage": stage,
            "epochs": epochs,
            "history": history.to_dict(),
            "best_loss": best_loss,
            "since_best": since_best,
            "has_best": best_state is not None,
            "optimizer": optimizer_saved,
            "scaler": scaler.state_dict(),
            "parts": parts,
        }
        checkpoint.write(running, tensors, started)

    @torch.no_grad()
    def _validate(
        self,
        module: MissingModalityModel,
        batch: MultimodalBatch,
        parts: dict[str, tuple[str, ...]],
    ) -> dict[str, float]:
        """Validation task loss (and accuracy); with ``parts``, each part's own loss too
        (``val_loss[part]``, NaN when no validation row counts for it)."""
        module.eval()
        preds, sums, counts = [], dict.fromkeys(parts, 0.0), dict.fromkeys(parts, 0)
        device = resolve_device(self.device)  # the batch may be streamed from disk
        for mb in iterate_batches(batch, max(self.batch_size, 512)):
            with autocast(device, self.precision):  # validate as the model trains
                out = module(mb.without_target())
                part_losses = module.part_losses(out, mb) if parts else {}
            preds.append(full_precision(out.prediction))
            for name, (loss, rows) in part_losses.items():
                sums[name] += full_precision(loss[rows]).sum().item()
                counts[name] += int(rows.sum())
        preds = torch.cat(preds, dim=0)  # [N, K] or [N]
        target = batch.target
        loss = module.task_loss(preds, target).item()
        row = {"val_loss": loss}
        for name in parts:
            row[f"val_loss[{name}]"] = sums[name] / counts[name] if counts[name] else float("nan")
        if module.task.is_classification:
            from mlmm.eval.metrics import accuracy  # here: mlmm.eval imports mlmm.train

            # NaN when a score is not finite: a diverged model's NaN row is not class 0
            row["val_accuracy"] = accuracy(preds.detach().cpu().numpy(), target.cpu().numpy())
        return row


class _PartSelection:
    """Early-stopping state of one selection part: its best loss, epoch and weights."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = tuple(prefixes)
        self.best_loss, self.best_epoch, self.since_best = float("inf"), 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, loss: float, epoch: int, module: torch.nn.Module) -> None:
        """Keep the part's weights when ``loss`` is its lowest so far (NaN never is)."""
        if loss < self.best_loss - 1e-5:  # False for NaN: no validation row for this part
            self.best_loss, self.best_epoch, self.since_best = loss, epoch, 0
            self.state = {
                key: value.detach().clone()
                for key, value in module.state_dict().items()
                if key.startswith(self.prefixes)
            }
        else:
            self.since_best += 1

    def saved(self) -> dict[str, Any]:
        """The selection's numbers for a training checkpoint (its weights go as tensors)."""
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "since_best": self.since_best,
            "has_state": self.state is not None,
        }

    def restore(self, saved: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str) -> None:
        """Set the selection as :meth:`saved` and its weights (``prefix`` in ``tensors``)."""
        self.best_loss, self.best_epoch = saved["best_loss"], saved["best_epoch"]
        self.since_best = saved["since_best"]
        self.state = resume.unprefixed(prefix, tensors) if saved["has_state"] else None


@torch.no_grad()
def predict_batches(
    module: MissingModalityModel, batch: MultimodalBatch, batch_size: int = 1024
) -> torch.Tensor:
    """Run ``module`` in eval mode over a big batch in chunks; returns the stacked predictions."""
    module.eval()
    no_target = batch.without_target()
    outs = [module(mb).prediction for mb in iterate_batches(no_target, batch_size)]
    return torch.cat(outs, dim=0)


def reset_parameters(module: torch.nn.Module) -> None:
    """Re-initialise every submodule that defines ``reset_parameters`` (from the global
    torch seed). Methods owning raw ``nn.Parameter`` tensors define their own
    ``reset_parameters`` so they are re-drawn too."""
    for sub in module.modules():
        fn = getattr(sub, "reset_parameters", None)
        if callable(fn) and sub is not module:
            fn()
    own = getattr(type(module), "reset_parameters", None)
    if callable(own):
        own(module)


def _check_matches(model: MissingModalityModel, dataset: MultimodalDataset, what: str) -> None:
    if tuple(dataset.specs) != tuple(model.specs):
        raise MlmmError(
            f"the {what} data's modalities {[f'{s.name}{list(s.shape)}' for s in dataset.specs]} do not "
            f"match the model's {[f'{s.name}{list(s.shape)}' for s in model.specs]}; build the model "
            f"from this dataset's specs"
        )
    if dataset.task != model.task:
        raise MlmmError(
            f"the {what} data's task {dataset.task} does not match the model's {model.task}"
        )


def _nonempty(dataset: MultimodalDataset) -> MultimodalDataset:
    """Training rows with nothing present teach nothing: drop them (explicitly, documented)."""
    keep = dataset.observed.any(axis=1)
    return dataset if keep.all() else dataset.subset(np.flatnonzero(keep))


def _table_layout(dataset: MultimodalDataset) -> dict[str, Any]:
    """The DataFrame columns a dataset came from (:func:`from_dataframe`), to predict from one."""
    columns = dataset.meta.get("columns")
    if not columns:
        return {}
    target = dataset.meta.get("target_column")
    return {
        "columns": {str(name): [str(c) for c in cols] for name, cols in columns.items()},
        "target_column": None if target is None else str(target),
    }


def _with_lengths(info: dict[str, Any] | None, train: MultimodalDataset) -> dict[str, Any]:
    """``info`` plus ``variable_length``: the sequence modalities trained with per-row
    lengths, so that prediction from arrays (which carry no lengths) is refused; and
    ``text``: the text modalities of :func:`from_dataframe` (tokenizer, length), so that a
    DataFrame's text column is tokenised at prediction as at training."""
    out = dict(info or {})
    if train.lengths:
        out["variable_length"] = sorted(train.lengths)
    text = train.meta.get("text") if isinstance(train.meta, dict) else None
    if text:
        out["text"] = {str(m): dict(t) for m, t in text.items()}
    return out


def _prior(dataset: MultimodalDataset) -> list[float]:
    if dataset.task.is_classification:
        counts = np.bincount(dataset.targets, minlength=dataset.task.n_classes).astype(float)
        return (counts / counts.sum()).tolist()
    if dataset.task.is_multilabel:  # each label's training frequency [L]
        return dataset.targets.mean(axis=0, dtype=np.float64).tolist()
    return [float(dataset.targets.mean())]


class _progress:
    """A Rich progress bar over epochs, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.enabled, self.total, self.label = enabled, total, label

    def __enter__(self):
        if not self.enabled:
            return lambda epoch, row: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            transient=True,
        )
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total, status="")

        def update(epoch: int, row: dict[str, float]) -> None:
            status = " ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k not in ("epoch", "seconds")
            )
            self._bar.update(task, completed=epoch, status=status)

        return update

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
