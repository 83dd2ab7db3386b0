"""The method contract: an ``nn.Module`` built from ``(specs, task, **hyperparameters)``."""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


@dataclass
class MethodOutput:
    """What ``forward(batch)`` returns.

    Attributes
    ----------
    prediction : Tensor
        ``[B, K]`` class logits (or log-probabilities) for classification, ``[B, L]`` label
        logits for multilabel, ``[B]`` for regression.
    loss : Tensor or None
        Task loss plus every auxiliary loss; set only when the batch carries a target.
    aux_losses : dict of str to Tensor
        Auxiliary terms (reconstruction, alignment, distillation...), already included in ``loss``.
    embedding : Tensor or None
        The fused representation ``[B, D]`` where the method has one.
    extras : dict of str to Tensor
        Anything else (imputations, per-modality predictions, uncertainty).
    """

    prediction: torch.Tensor
    loss: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    embedding: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class MissingModalityModel(nn.Module, abc.ABC):
    """Base class of every method.

    Subclasses take ``(specs, task, **hyperparameters)``, store each hyperparameter unchanged
    as an attribute of the same name (the scikit-learn convention, so
    :meth:`get_hyperparameters` reads them back from the signature), validate them at
    construction, and implement :meth:`forward`. Methods that train in stages override
    :meth:`fit`; all others use the shared loop of :class:`mlmm.Trainer`.

    Registration (:func:`mlmm.methods.register_method`) sets the class attributes
    ``method_name``, ``family``, ``subtype`` and ``paper``.
    """

    method_name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    subtype: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    #: True for methods that fill in absent *inputs* (imputation family); they implement
    #: :meth:`impute`, which the imputation score (:func:`mlmm.eval.imputation_scores`) uses.
    imputes: ClassVar[bool] = False
    #: False for methods whose fit has no randomness (a convex solver, deterministic tree
    #: growing): the contract suite then checks that another seed gives the *same* result.
    uses_seed: ClassVar[bool] = True
    #: False for methods whose fit needs the whole training set in memory (scikit-learn
    #: solvers, neighbour banks, per-modality means read from ``train.inputs``): ``Trainer.fit``
    #: then refuses an out-of-core dataset (:mod:`mlmm.data.lazy`) in one line naming the fix.
    #: Methods trained by the shared loop (``trainer.fit_module``) read mini-batches and stream.
    streams_data: ClassVar[bool] = True
    #: How many separately trained models the method holds, reported as a cost (one per subset
    #: for dedicated training, one per expert for a scheduler); override where it is not 1.
    n_models: int = 1
    #: The hyperparameters worth tuning and their ranges, ``name -> Float | Int | Categorical``
    #: (:mod:`mlmm.tune.space`); every name is a constructor argument. ``mlmm tune`` samples it.
    search_space: ClassVar[dict[str, Any]] = {}
    #: The task kinds (:attr:`mlmm.data.TaskSpec.kind`) the method trains for. Methods built
    #: on the shared heads and :meth:`task_loss` get all three; a method with its own
    #: softmax maths (a product rule, a Dirichlet, a class-conditional model) lists only
    #: ``("classification", "regression")`` and is refused a multilabel task at construction.
    supported_tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "multilabel")
    #: Whether the method trains data-parallel (``mlmm train --devices N``, torchrun): True when
    #: every weight is learned in :meth:`Trainer.fit_module`. A method that cannot sets it False
    #: and says why in ``data_parallel_reason`` (one line, shown before any process starts).
    supports_data_parallel: ClassVar[bool] = True
    data_parallel_reason: ClassVar[str] = ""
    #: The revision of the method's maths, recorded in every artifact (``config.json``'s
    #: ``revisions``; an artifact without it is at 1). Raise it, and say what changed in
    #: :attr:`revision_notes`, when a fix makes weights saved before it answer differently.
    revision: ClassVar[int] = 1
    #: ``revision -> what changed in it`` for each revision that changes the answers of
    #: artifacts saved before it: loading one warns in one line naming the change and the fix
    #: (:func:`mlmm.train.artifact_schema.outdated_revisions`, through :meth:`changes_since`).
    revision_notes: ClassVar[dict[int, str]] = {}

    def __init__(self, specs: Sequence[ModalitySpec], task: TaskSpec) -> None:
        super().__init__()
        specs = tuple(specs)
        if not specs:
            raise MlmmError("a method needs at least one modality spec")
        check_task_supported(type(self), task)
        self.specs = specs
        self.task = task
        self.modalities = tuple(s.name for s in specs)

    # ----------------------------------------------------------------- contract
    @abc.abstractmethod
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        """Predict from a batch (absent rows are zeros; ``batch.present`` says which)."""

    def fit(
        self,
        trainer: Trainer,
        train: MultimodalDataset,
        val: MultimodalDataset | None,
    ) -> TrainHistory:
        """Train on standardised data. The default runs the shared loop once; staged methods
        (teacher then student, one model per subset) override this and call
        ``trainer.fit_module`` once per stage."""
        return trainer.fit_module(self, train, val)

    def set_frozen(self, frozen: bool, *names: str) -> None:
        """Freeze (or unfreeze) parts of the model by attribute name: no gradients, and the
        frozen submodules stay in eval mode (no dropout) while the rest trains. Staged methods
        freeze a pretrained part for a later stage (``self.set_frozen(True, "encoders")``)."""
        parts = self.__dict__.setdefault("_frozen_parts", set())
        for name in names:
            getattr(self, name).requires_grad_(not frozen)
            (parts.add if frozen else parts.discard)(name)
        self.train(self.training)

    def is_frozen(self, name: str) -> bool:
        """Whether :meth:`set_frozen` froze the part ``name``."""
        return name in self.__dict__.get("_frozen_parts", ())

    def train(self, mode: bool = True) -> MissingModalityModel:
        """``nn.Module.train``, keeping the frozen parts in eval mode."""
        super().train(mode)
        for name in self.__dict__.get("_frozen_parts", ()):
            part = getattr(self, name)
            if isinstance(part, nn.Module):
                part.eval()
        return self

    def selection_parts(self) -> dict[str, tuple[str, ...]]:
        """Parts of the model that are early-stopped each on its own validation loss.

        A method whose parts are trained independently of each other (late fusion's
        per-modality classifiers) maps each part's name to the ``state_dict`` key prefixes it
        owns, and implements :meth:`part_losses`. The trainer then keeps every part's weights
        from the epoch where *its* validation loss was lowest, and stops once no part (and not
        the whole) has improved for ``patience`` epochs. The default, no parts, selects the
        whole model on its validation loss.
        """
        return {}

    def part_losses(
        self, output: MethodOutput, batch: MultimodalBatch
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per part of :meth:`selection_parts`: the validation loss of each row ``[B]`` and the
        rows that count for it ``[B]`` (bool), from ``output`` on ``batch`` (with its target)."""
        raise MlmmError(
            f"{type(self).__name__} names selection parts but does not define part_losses"
        )

    # ----------------------------------------------------------------- helpers
    def task_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on logits (classification), binary cross-entropy on one logit per
        label averaged over labels (multilabel), or mean squared error (regression)."""
        if self.task.is_classification:
            return F.cross_entropy(prediction, target)
        if self.task.is_multilabel:  # prediction [B, L] logits, target [B, L] 0/1
            return F.binary_cross_entropy_with_logits(prediction, target.to(prediction.dtype))
        return F.mse_loss(prediction.reshape(-1), target.reshape(-1).to(prediction.dtype))

    def output(
        self,
        batch: MultimodalBatch,
        prediction: torch.Tensor,
        aux_losses: dict[str, torch.Tensor] | None = None,
        task_loss: torch.Tensor | None = None,
        **extras: Any,
    ) -> MethodOutput:
        """Assemble a :class:`MethodOutput`; adds the loss when the batch has a target.

        ``task_loss`` overrides the default loss on ``prediction`` (late fusion trains each
        head on its own); auxiliary losses are always added to it.
        """
        if self.task.is_regression:
            prediction = prediction.reshape(-1)
        aux = aux_losses or {}
        loss = None
        if batch.target is not None:
            loss = self.task_loss(prediction, batch.target) if task_loss is None else task_loss
            for value in aux.values():
                loss = loss + value
        embedding = extras.pop("embedding", None)
        return MethodOutput(prediction, loss, aux, embedding, extras)

    def get_hyperparameters(self) -> dict[str, Any]:
        """The constructor's hyperparameters, read back from attributes of the same name."""
        params = {}
        for name, p in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "specs", "task") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            params[name] = getattr(self, name)
        return params

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters given as a rule and resolved at construction, with their values.

        A hyperparameter whose given value asks the method to size something itself (``None``:
        sized from the modality specs and the other hyperparameters) maps to the value that
        was used; one that asks the fit to choose it from the training data
        (``per-modality-kernel``'s ``C="cv"``) maps to the choice once fitted. Building the method with these in place of the given ones gives the same
        architecture whatever the rule becomes in a later mlmm; :meth:`mlmm.TrainedModel.save`
        records them and :meth:`mlmm.TrainedModel.load` builds from them, then sets the given
        values back, so :meth:`get_hyperparameters` reads as before. The default, ``{}``, is for
        a method that resolves nothing; a method holding other methods records each one's
        :meth:`built_hyperparameters` (its defaults included: they may change too).
        """
        return {}

    @classmethod
    def resolved_from_state(
        cls, hyperparameters: dict[str, Any], state: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """For an artifact written before :meth:`resolved_hyperparameters` were recorded: the
        sizes this method resolved, read from the shapes of its saved weights ``state``
        (``hyperparameters``: as given), so that a later change of the sizing rule does not
        stop it loading. :meth:`mlmm.TrainedModel.load` builds from them as from recorded
        ones. The default reads nothing.
        """
        return {}

    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Bring weights saved by an earlier mlmm up to this version, in place.

        :func:`upgrade_weights` (which :meth:`mlmm.TrainedModel.load` runs) calls it on every
        method in the model (``prefix``: the method's key prefix inside ``state``, ``""`` at the
        top) before loading ``state``. A method that adds a buffer fills it in here for
        artifacts written without it, with the value that reproduces how they predicted when
        saved; the default changes nothing. A submodule with its own ``upgrade_state_dict``
        (:class:`~mlmm.nn.retrieval.BankLengths`) is upgraded by :func:`upgrade_weights` too,
        so the method need not forward to it.
        """

    def built_hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter with the value the model was built with: the given ones, and
        the :meth:`resolved_hyperparameters` in their place. Building the method from them
        gives this architecture in any later mlmm that keeps the method's arguments."""
        return {**self.get_hyperparameters(), **self.resolved_hyperparameters()}

    def impute(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        """Inputs with every absent modality filled in (standardised units), ``name -> [B, *shape]``.

        Present rows are returned unchanged. Only methods with ``imputes = True`` implement it.
        """
        raise MlmmError(f"method {self.method_name!r} does not impute inputs (imputes = False)")

    def onnx_module(self) -> nn.Module:
        """The module ONNX export traces in place of this one (:mod:`mlmm.serve.export`).

        Its ``forward(batch)`` returns a :class:`MethodOutput` whose ``prediction`` equals this
        model's; the export checks that on the presence patterns it runs (all of them up to 8
        modalities). By default the model itself; a method whose prediction needs an operation
        ONNX lacks (``lda-em``'s Cholesky) returns an equivalent module made of operations ONNX
        has.
        """
        return self

    def changes_since(self, revision: int) -> list[str]:
        """What changed the answers of this model since weights saved at ``revision``: the
        :attr:`revision_notes` newer than it. A method whose change touches only some of its
        configurations overrides it to leave the others out (``moddrop``: its
        ``mean_variance`` fusion only)."""
        notes = sorted(self.revision_notes.items())
        return [note for r, note in notes if revision < r <= self.revision]

    def present_mask(self, batch: MultimodalBatch) -> torch.Tensor:
        """``batch.present`` after checking the batch matches this model's modalities."""
        if tuple(batch.modalities) != self.modalities:
            raise MlmmError(
                f"batch modalities {list(batch.modalities)} do not match the model's "
                f"{list(self.modalities)}; build the batch from a dataset with the same specs"
            )
        return batch.present


def upgrade_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Bring ``state``, weights saved by an earlier mlmm, up to ``model``'s version in place:
    every module of ``model`` with an ``upgrade_state_dict(state, prefix)`` (methods,
    :class:`~mlmm.nn.retrieval.BankLengths`) gets its key prefix in ``state``."""
    for name, module in model.named_modules():
        upgrade = getattr(module, "upgrade_state_dict", None)
        if callable(upgrade):
            upgrade(state, f"{name}." if name else "")


def check_task_supported(cls: type, task: TaskSpec) -> None:
    """Refuse, in one line, a task kind the method class does not list in ``supported_tasks``."""
    supported = getattr(cls, "supported_tasks", ())
    if task.kind not in supported:
        name = getattr(cls, "method_name", "") or cls.__name__
        raise MlmmError(
            f"method {name!r} supports {' and '.join(supported)} tasks, not {task.kind}; "
            f"pick a method listed by `mlmm methods --task {task.kind}`"
        )


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise a clear :class:`MlmmError` when a hyperparameter is out of range.

    NaN and infinities are refused whatever the bounds (NaN compares False with every bound,
    so it would otherwise pass any range).
    """
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise MlmmError(f"{name} must be an integer, got {value!r}")
    if not integer and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise MlmmError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MlmmError(f"{name} must be a finite number, got {value!r}")
    below = low is not None and (value < low if low_inclusive else value <= low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if below or above:
        lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        hi = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise MlmmError(f"{name} must be in {lo}, {hi}, got {value!r}")


#: Ranges of the hyperparameters that many methods share (keyword arguments of check_range).
COMMON_RANGES: dict[str, dict[str, Any]] = {
    "embed_dim": {"low": 1, "integer": True},
    "latent_dim": {"low": 1, "integer": True},
    "hidden": {"low": 1, "integer": True},
    "depth": {"low": 0, "integer": True},
    "dropout": {"low": 0, "high": 1, "high_inclusive": False},
    "modality_dropout": {"low": 0, "high": 1, "high_inclusive": False},
}


def check_common(**values: Any) -> None:
    """Validate shared hyperparameters by name (``check_common(hidden=hidden, dropout=dropout)``)
    against :data:`COMMON_RANGES`, with the same clear errors as :func:`check_range`."""
    for name, value in values.items():
        check_range(name, value, **COMMON_RANGES[name])


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise a clear :class:`MlmmError` when a hyperparameter is not one of ``choices``."""
    if value not in choices:
        raise MlmmError(f"{name} must be one of {list(choices)}, got {value!r}")
