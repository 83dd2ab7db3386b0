"""The schema of an artifact's ``config.json``, checked in full before a model is built.

Every key is known (an unknown key is an error), every number the model will use is
finite, the training prior has one entry per class, the standardisation statistics have
the shape the modality specs imply, and sizes are bounded, so that an edited or corrupt
config is refused in one line instead of giving probabilities that sum to 4, a mean
broadcast silently, or an attempt to allocate a ``10**12``-wide layer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlmm.errors import ArtifactError

#: Largest size of one axis of a modality, and of one sample of a modality.
MAX_AXIS = 2**31 - 1
MAX_SAMPLE_SIZE = 2**31
#: Most classes a classification artifact may have.
MAX_CLASSES = 1_000_000
#: Integer hyperparameters may not exceed this, or the number of stored weights if larger:
#: a layer width or depth beyond it could not have produced the weights in the file.
MIN_INT_BOUND = 2**16

_RANK = {"vector": 1, "sequence": 2, "image": 3}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModalityConfig(_Strict):
    """One modality spec (:meth:`mlmm.data.ModalitySpec.to_dict`)."""

    name: StrictStr
    kind: Literal["vector", "sequence", "image"]
    shape: list[StrictInt] = Field(min_length=1, max_length=3)
    standardize: StrictBool = True

    @model_validator(mode="after")
    def _bounded_shape(self) -> ModalityConfig:
        if len(self.shape) != _RANK[self.kind] or any(not 1 <= s <= MAX_AXIS for s in self.shape):
            raise ValueError(
                f"a {self.kind} modality needs {_RANK[self.kind]} sizes in [1, {MAX_AXIS}], "
                f"got {self.shape}"
            )
        if math.prod(self.shape) > MAX_SAMPLE_SIZE:
            raise ValueError(
                f"shape {self.shape} has more than {MAX_SAMPLE_SIZE:,} values per sample"
            )
        return self


class TaskConfig(_Strict):
    """The task (:meth:`mlmm.data.TaskSpec.to_dict`)."""

    kind: Literal["classification", "regression", "multilabel"]
    n_classes: StrictInt = Field(0, ge=0, le=MAX_CLASSES)
    class_names: list[StrictStr] = Field(default_factory=list, max_length=MAX_CLASSES)
    n_labels: StrictInt = Field(0, ge=0, le=MAX_CLASSES)
    label_names: list[StrictStr] = Field(default_factory=list, max_length=MAX_CLASSES)


class PreprocessingConfig(_Strict):
    """Standardisation statistics (:meth:`mlmm.data.Standardizer.to_dict`)."""

    mean: dict[StrictStr, Any]
    std: dict[StrictStr, Any]
    target_mean: float = Field(allow_inf_nan=False)
    target_std: float = Field(gt=0, allow_inf_nan=False)


class HistoryConfig(_Strict):
    """One training stage (:class:`mlmm.train.TrainHistory`)."""

    epochs: list[dict[StrictStr, Any]] = Field(default_factory=list)
    best_epoch: StrictInt = 0
    best_val_loss: float = float("nan")
    part_best_epochs: dict[StrictStr, StrictInt] = Field(default_factory=dict)
    stopped_early: StrictBool = False
    time_limited: StrictBool = False
    seconds: float = 0.0
    stage: StrictStr = "main"


def _finite_and_bounded(value: Any, where: str, int_bound: int) -> None:
    """Every float in ``value`` is finite and every integer within ``int_bound``."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{at} must be a finite number, got {item!r}")
        if isinstance(item, int) and abs(item) > int_bound:
            raise ValueError(
                f"{at} is {item}, larger than the {int_bound:,} the stored weights allow"
            )
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))


class ArtifactConfig(_Strict):
    """The whole ``config.json`` of a model artifact, as :meth:`TrainedModel.config` writes it."""

    format: Literal["mlmm-artifact"]
    format_version: StrictInt
    library_version: StrictStr = "unknown"
    created_utc: StrictStr = ""
    method: StrictStr
    class_name: StrictStr = Field("", alias="class")
    hyperparameters: dict[StrictStr, Any] = Field(default_factory=dict)
    #: what the method resolved at construction (absent from artifacts written before mlmm
    #: recorded it: those rebuild from ``hyperparameters`` alone)
    resolved_hyperparameters: dict[StrictStr, Any] = Field(default_factory=dict)
    #: ``method -> revision`` of the method and the methods it holds when saved
    #: (:func:`method_revisions`; absent from earlier artifacts: every method at 1)
    revisions: dict[StrictStr, StrictInt] = Field(default_factory=dict)
    modalities: list[ModalityConfig] = Field(min_length=1)
    task: TaskConfig
    preprocessing: PreprocessingConfig
    prior: list[float]
    trainer: dict[StrictStr, Any] = Field(default_factory=dict)
    train_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    histories: list[HistoryConfig] = Field(default_factory=list)
    info: dict[StrictStr, Any] = Field(default_factory=dict)
    validation: dict[StrictStr, Any] = Field(default_factory=dict)
    classes: list[StrictBool | StrictInt | StrictFloat | StrictStr] | None = None
    columns: dict[StrictStr, list[StrictStr]] | None = None
    target_column: StrictStr | None = None
    weights_sha256: StrictStr

    @field_validator("hyperparameters", "resolved_hyperparameters")
    @classmethod
    def _finite_hyperparameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict:
        bound = max(MIN_INT_BOUND, (info.context or {}).get("stored_values", 0))
        _finite_and_bounded(value, info.field_name, bound)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactConfig:
        unknown = sorted(set(self.resolved_hyperparameters) - set(self.hyperparameters))
        if unknown:
            raise ValueError(
                f"resolved_hyperparameters names {unknown}, which hyperparameters does not"
            )
        if any(r < 1 for r in self.revisions.values()):
            raise ValueError(f"revisions must be integers >= 1, got {self.revisions}")
        names = [m.name for m in self.modalities]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names repeat: {names}")
        task = self.task
        if task.kind == "classification" and task.n_classes < 2:
            raise ValueError(f"a classification task needs n_classes >= 2, got {task.n_classes}")
        if task.kind == "multilabel" and task.n_labels < 2:
            raise ValueError(f"a multilabel task needs n_labels >= 2, got {task.n_labels}")
        expected = {"classification": task.n_classes, "multilabel": task.n_labels}.get(task.kind, 1)
        if len(self.prior) != expected:
            raise ValueError(
                f"prior has {len(self.prior)} values for a {task.kind} task that needs {expected}"
            )
        _finite_and_bounded(self.prior, "prior", MAX_AXIS)
        if self.classes is not None:
            if task.kind != "classification" or len(self.classes) != task.n_classes:
                raise ValueError(
                    f"classes has {len(self.classes)} labels for a {task.kind} task with "
                    f"n_classes={task.n_classes}"
                )
            _finite_and_bounded(self.classes, "classes", 2**63)
        if self.columns is not None:
            text = self.info.get("text") if isinstance(self.info.get("text"), dict) else {}
            by_name = {  # a text modality is one column of strings, tokenised at prediction
                m.name: 1 if m.name in text else math.prod(m.shape) for m in self.modalities
            }
            sizes = {name: len(cols) for name, cols in self.columns.items()}
            if sizes != by_name:
                raise ValueError(
                    f"columns gives {sizes} columns per modality, the specs need {by_name}"
                )
        if task.kind == "classification" and (
            min(self.prior) < 0 or abs(sum(self.prior) - 1) > 1e-4
        ):
            raise ValueError(f"prior must be class frequencies summing to 1, got {self.prior}")
        if task.kind == "multilabel" and not all(0 <= p <= 1 for p in self.prior):
            raise ValueError(f"prior must be label frequencies in [0, 1], got {self.prior}")
        for stat in ("mean", "std"):
            table = getattr(self.preprocessing, stat)
            if sorted(table) != sorted(names):
                raise ValueError(
                    f"preprocessing.{stat} has modalities {sorted(table)}, the specs {sorted(names)}"
                )
            for spec in self.modalities:
                self._check_statistic(stat, spec, table[spec.name])
        return self

    @staticmethod
    def _check_statistic(stat: str, spec: ModalityConfig, value: Any) -> None:
        where = f"preprocessing.{stat}.{spec.name}"
        # one value per feature (vector) or channel (sequence [T, C], image [C, H, W])
        shape = spec.shape
        if spec.kind == "vector":
            want: tuple[int, ...] = (shape[0],)
        elif spec.kind == "sequence":
            want = (1, shape[1])
        else:
            want = (shape[0], 1, 1)
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a nested list of numbers of shape {want}") from None
        if array.shape != want:
            raise ValueError(
                f"{where} has shape {list(array.shape)}, the {spec.kind} spec {spec.shape} "
                f"needs {list(want)}"
            )
        if not np.isfinite(array).all() or (stat == "std" and (array <= 0).any()):
            kind = "positive finite" if stat == "std" else "finite"
            raise ValueError(f"{where} must hold {kind} numbers")


def method_revisions(model: Any) -> dict[str, int]:
    """``method_name -> revision`` of every method in ``model`` (its modules: a scheduler's or
    an ensemble's members too), as ``config.json`` records them."""
    return {
        m.method_name: int(m.revision)
        for m in model.modules()
        if getattr(m, "method_name", "") and hasattr(m, "revision")
    }


def outdated_revisions(model: Any, recorded: dict[str, int], path: str | Path) -> str | None:
    """One line saying that the artifact at ``path`` answers differently from when it was
    saved, or None when it does not.

    ``recorded``: ``config.json``'s ``revisions`` (a method absent from it is at revision 1).
    For each method in ``model`` whose ``changes_since(recorded revision)`` names a change
    (its ``revision_notes`` newer than the recorded revision), the line names the method and
    what changed, and gives the fix: retrain.
    """
    changes = {}
    for m in model.modules():
        name = getattr(m, "method_name", "")
        if name and hasattr(m, "changes_since") and name not in changes:
            was = recorded.get(name, 1)
            notes = m.changes_since(was)
            if notes:
                what = "; ".join(notes)
                changes[name] = f"{name} (saved at revision {was}, now {m.revision}: {what})"
    if not changes:
        return None
    return (
        f"{path} was saved before a change to {', '.join(changes.values())}; it loads, but "
        f"answers differently from when it was saved; retrain it with this mlmm"
    )


def validate_config(config: dict[str, Any], path: str | Path, stored_values: int) -> ArtifactConfig:
    """Check a loaded ``config.json`` against :class:`ArtifactConfig`; one-line errors.

    Parameters
    ----------
    config : dict
        The parsed ``config.json``.
    path : str or Path
        The artifact directory (for the message).
    stored_values : int
        Number of values in the artifact's weights; integer hyperparameters are bounded by
        ``max(MIN_INT_BOUND, stored_values)``.

    Raises
    ------
    ArtifactError
        Naming the first field that is wrong.
    """
    try:
        return ArtifactConfig.model_validate(config, context={"stored_values": stored_values})
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key (this mlmm does not write it)"
        elif first["type"] == "missing":
            message = "required key is missing"
        raise ArtifactError(
            f"{Path(path) / 'config.json'} is not a valid mlmm artifact config: {field}: "
            f"{message}; retrain or restore the model"
        ) from None
    except RecursionError:
        raise ArtifactError(
            f"{Path(path) / 'config.json'} is nested too deeply to be an mlmm artifact config; "
            f"retrain or restore the model"
        ) from None
