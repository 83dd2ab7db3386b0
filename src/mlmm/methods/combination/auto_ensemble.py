"""Auto ensemble: registered methods mixed with fixed weights, over whatever modalities are present.

The artifact that ``method="auto"`` (:func:`mlmm.tune.auto.fit_auto`) produces: the members its
inner cross-validation chose, each a registered method trained on all training data, and the
weights that greedy ensemble selection with replacement found on their out-of-fold
predictions (R. Caruana, A. Niculescu-Mizil, G. Crew, A. Ksikes, "Ensemble Selection from
Libraries of Models", ICML 2004, doi:10.1145/1015330.1015432; as auto-sklearn and AutoGluon
use it). Each member answers every presence pattern on its own, so the ensemble does too:
classification mixes the members' class probabilities, regression their predictions.

Deliberate differences: one weight per member for every presence pattern (the paper's
ensemble has one weight per model too; a weight per pattern would need out-of-fold
predictions for every pattern). Built on its own (``mlmm.create_method("auto-ensemble")``)
it is an equally weighted ensemble of ``per-modality-logistic`` and ``hemis``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_range
from mlmm.methods.registry import create_method, member_resolved_from_state, register_method
from mlmm.utils import torch_seed_for

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

#: Members of an ``auto-ensemble`` built without ``members``.
DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = (
    {"method": "per-modality-logistic"},
    {"method": "hemis"},
)
_MEMBER_KEYS = {"name", "method", "params", "epochs", "weight_decay"}


def member_label(member: Mapping[str, Any]) -> str:
    """A member's display name: its ``name``, or the method and its non-default parameters."""
    if member.get("name"):
        return str(member["name"])
    params = member.get("params") or {}
    inner = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{member['method']}[{inner}]" if inner else str(member["method"])


def _check_member(member: Any, index: int) -> dict[str, Any]:
    if not isinstance(member, Mapping) or "method" not in member:
        raise MlmmError(
            f"auto-ensemble member {index} must be a dict with a 'method' key, got {member!r}"
        )
    unknown = set(member) - _MEMBER_KEYS
    if unknown:
        raise MlmmError(
            f"auto-ensemble member {index} has unknown keys {sorted(unknown)}; "
            f"use {sorted(_MEMBER_KEYS)}"
        )
    if member["method"] == "auto-ensemble":
        raise MlmmError("an auto-ensemble member cannot itself be an auto-ensemble")
    if member.get("epochs") is not None:
        check_range(f"member {index} epochs", member["epochs"], 1, integer=True)
    if member.get("weight_decay") is not None:
        check_range(f"member {index} weight_decay", member["weight_decay"], 0)
    return {
        "name": member_label(member),
        "method": str(member["method"]),
        "params": dict(member.get("params") or {}),
        "epochs": member.get("epochs"),
        "weight_decay": member.get("weight_decay"),
    }


def fit_member(
    trainer: Trainer,
    model: MissingModalityModel,
    member: Mapping[str, Any],
    train: MultimodalDataset,
    val: MultimodalDataset | None,
) -> list[TrainHistory]:
    """Train one member on standardised data with its own epochs and weight decay.

    Its initial weights are re-drawn from the trainer's seed and the member's name, so a member
    comes out the same whether it is trained inside an ensemble or alone. With a fixed
    ``epochs`` it trains exactly that many epochs and ignores ``val`` (no early stopping);
    without, it uses the trainer's ``max_epochs`` and early stopping on ``val``.
    """
    from mlmm.train.trainer import reset_parameters  # trainer imports the methods

    own = copy.copy(trainer)
    if member.get("epochs") is not None:
        own.max_epochs, val = int(member["epochs"]), None
    if member.get("weight_decay") is not None:
        own.weight_decay = float(member["weight_decay"])
    torch.manual_seed(torch_seed_for(trainer.seed, "weights", member_label(member)))
    reset_parameters(model)
    result = model.fit(own, train, val)
    histories = result if isinstance(result, list) else [result]
    for history in histories:
        history.stage = f"{member_label(member)}: {history.stage}"
    return histories


@register_method(
    "auto-ensemble",
    family="combination",
    subtype="ensemble",
    paper="Caruana et al., Ensemble Selection from Libraries of Models, ICML 2004",
)
class AutoEnsemble(MissingModalityModel):
    """Registered methods whose predictions are mixed with fixed weights.

    Classification: ``p(y | x) = sum_i w_i p_i(y | x)`` over the members' class probabilities
    (the prediction is its log, so a softmax gives the mixture back). Regression: ``sum_i w_i
    f_i(x)``. Every member sees the same batch and answers its presence pattern as it would
    alone. Training (``fit``) trains each member in turn with its own fixed epoch count and
    weight decay (see :func:`fit_member`); ``mlmm.tune.fit_auto`` chooses the members, epochs
    and weights by inner cross-validation and records them here.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    members : sequence of dict, optional
        One dict per member: ``method`` (a registered name), optional ``params`` (its
        hyperparameters), ``epochs`` (a fixed epoch count; None: the trainer's, with early
        stopping), ``weight_decay`` (None: the trainer's) and ``name``. None:
        ``per-modality-logistic`` and ``hemis`` at their defaults.
    weights : sequence of float, optional
        Non-negative, one per member, summing to 1. None: equal weights.
    leaderboard : sequence of dict, optional
        The inner cross-validation leaderboard ``fit_auto`` recorded (every candidate, its
        score, weight and notes); kept in the artifact, shown by :meth:`leaderboard_frame`.

    Attributes
    ----------
    models : nn.ModuleDict
        ``"m0"``, ``"m1"``... -> each member's model (names in ``member_specs``).
    member_specs : list of dict
        The members, checked and with their display ``name``.
    ensemble_weights : Tensor, shape (n_members,)
        Buffer: the weights.

    References
    ----------
    R. Caruana, A. Niculescu-Mizil, G. Crew, A. Ksikes. "Ensemble Selection from Libraries of
    Models." ICML 2004. doi:10.1145/1015330.1015432

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("auto-ensemble", ds.specs, ds.task)
    >>> [m["name"] for m in model.member_specs], model.ensemble_weights.tolist()
    (['per-modality-logistic', 'hemis'], [0.5, 0.5])
    """

    streams_data = False  # members may be reference methods fitted on the whole training matrix
    #: multilabel is refused: its mixture of class probabilities is single-label
    supported_tasks = ("classification", "regression")
    supports_data_parallel = False
    data_parallel_reason = (
        "it trains its members separately through their own fits, some by classical solvers"
    )

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        members: Sequence[Mapping[str, Any]] | None = None,
        weights: Sequence[float] | None = None,
        leaderboard: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(specs, task)
        self.members, self.weights, self.leaderboard = members, weights, leaderboard
        chosen = DEFAULT_MEMBERS if members is None else members
        if isinstance(chosen, (str, Mapping)) or not len(chosen):
            raise MlmmError(
                f"members must be a non-empty list of dicts like {{'method': 'hemis'}}, "
                f"got {members!r}"
            )
        self.member_specs = [_check_member(m, i) for i, m in enumerate(chosen)]
        names = [m["name"] for m in self.member_specs]
        if len(set(names)) != len(names):
            raise MlmmError(f"auto-ensemble member names must be unique, got {names}")
        n = len(self.member_specs)
        w = [1.0 / n] * n if weights is None else [float(v) for v in weights]
        if len(w) != n or any(not v >= 0 for v in w) or abs(sum(w) - 1.0) > 1e-6:
            raise MlmmError(
                f"weights must be {n} non-negative numbers summing to 1 (one per member), "
                f"got {weights!r}"
            )
        self.models = nn.ModuleDict(
            {
                f"m{i}": create_method(m["method"], specs, task, **m["params"])
                for i, m in enumerate(self.member_specs)
            }
        )
        self.n_models = sum(getattr(model, "n_models", 1) for model in self.models.values())
        self.register_buffer("ensemble_weights", torch.tensor(w, dtype=torch.float64))

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """``members`` as they were built: :attr:`member_specs` (:data:`DEFAULT_MEMBERS` for
        ``members=None``) with each member's ``params`` as its model was built (its defaults
        and the sizes it resolved included), so an artifact rebuilds the same members
        whatever the defaults become."""
        built = [
            {**spec, "params": model.built_hyperparameters()}
            for spec, model in zip(self.member_specs, self.models.values(), strict=True)
        ]
        return {"members": built}

    @classmethod
    def resolved_from_state(
        cls, hyperparameters: dict[str, Any], state: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """For an artifact written before sizes were recorded: ``members`` with each member's
        sizes read off its weights (``models.mI.*``; the member's own ``resolved_from_state``,
        a scheduler's reading its experts'), so a later change of a member's sizing rule does
        not stop it loading. Empty when no member resolved anything."""
        members = hyperparameters.get("members")
        try:
            specs = [
                _check_member(m, i)
                for i, m in enumerate(DEFAULT_MEMBERS if members is None else members)
            ]
        except (MlmmError, TypeError):  # the load refuses the value in its own words
            return {}
        built, changed = [], False
        for i, spec in enumerate(specs):
            resolved = member_resolved_from_state(
                spec["method"], spec["params"], state, f"models.m{i}."
            )
            changed = changed or bool(resolved)
            # named as built (a member's default name lists its params: not the sizes read)
            built.append({**spec, "params": {**spec["params"], **resolved}})
        return {"members": built} if changed else {}

    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Train every member in turn (:func:`fit_member`), on the same standardised data."""
        histories = []
        for key, member in zip(self.models, self.member_specs, strict=True):
            histories += fit_member(trainer, self.models[key], member, train, val)
        return histories

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        self.present_mask(batch)
        plain = batch.without_target().zero_padding()  # members may read raw inputs
        outs = [self.models[key](plain).prediction for key in self.models]  # n x [B, K] or [B]
        weights = self.ensemble_weights
        if self.task.is_classification:
            probs = torch.stack([torch.softmax(o.double(), dim=1) for o in outs])  # [E, B, K]
            mixture = (weights[:, None, None] * probs).sum(0)  # [B, K]
            prediction = mixture.clamp_min(1e-300).log().to(outs[0].dtype)  # [B, K]
        else:
            values = torch.stack([o.reshape(-1).double() for o in outs])  # [E, B]
            prediction = (weights[:, None] * values).sum(0).to(outs[0].dtype)  # [B]
        return self.output(batch, prediction)

    def onnx_module(self) -> nn.Module:
        """A copy whose members are their own ``onnx_module()`` (``flex-moe``'s dense experts,
        ``lda-em``'s table of pattern maps), so an ensemble exports whenever its members do;
        traced with the members as they are, it was refused (``lda-em``) or, before the export
        check drew a second batch, written answering other inputs wrongly (``flex-moe``)."""
        # the members are not copied here: each one's onnx_module() copies what it changes
        clone = copy.deepcopy(self, {id(m): m for m in self.models.values()})
        for key, member in self.models.items():
            clone.models[key] = member.onnx_module()
        return clone

    def leaderboard_frame(self) -> pd.DataFrame:
        """The recorded inner cross-validation leaderboard (or, without one, the members and
        their weights), one row per candidate, best first."""
        if self.leaderboard:
            frame = pd.DataFrame([dict(row) for row in self.leaderboard])
            if "epochs" in frame:
                frame["epochs"] = frame["epochs"].astype("Int64")  # None for non-deep members
            return frame
        return pd.DataFrame(
            {
                "model": [m["name"] for m in self.member_specs],
                "weight": self.ensemble_weights.tolist(),
            }
        )
