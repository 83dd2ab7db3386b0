"""``TrainedModel``: a fitted method together with its preprocessing, ready to answer."""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.frames import _token_ids, from_arrays
from mlmm.data.inputs import (
    MultimodalArray,
    align_modalities,
    as_sample_arrays,
    default_columns,
    table_modalities,
)
from mlmm.data.lazy import batches_for, is_out_of_core
from mlmm.data.preprocessing import Standardizer
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import ArtifactError, MlmmError
from mlmm.methods.base import MissingModalityModel, upgrade_weights
from mlmm.methods.registry import METHODS, create_method
from mlmm.train.artifact_schema import method_revisions, outdated_revisions, validate_config
from mlmm.train.card import model_card, validation_by_subset
from mlmm.train.checkpoint import (
    WEIGHTS_FILE,
    artifact_bytes,
    load_artifact,
    read_artifact_bytes,
    save_artifact,
)
from mlmm.train.trainer import (
    TrainHistory,
    _check_matches,
    autocast,
    check_precision,
    full_precision,
    predict_batches,
    prediction_precision,
)

#: A multilabel prediction turns a label on when its probability is at least this.
MULTILABEL_THRESHOLD = 0.5


@dataclass
class TrainedModel:
    """A trained method plus the standardisation fitted on its training data.

    Predicts on raw (unstandardised) datasets with any presence pattern. Saved and loaded
    as an artifact directory (JSON config + safetensors weights).

    Attributes
    ----------
    model : MissingModalityModel
    standardizer : Standardizer
    histories : list of TrainHistory
        One per training stage.
    trainer_config : dict
    info : dict
        Where the model came from (dataset, missingness, split seed...).
    prior : list of float
        Training class frequencies (classification), label frequencies (multilabel) or
        target mean, used only for samples with no modality present when ``on_empty="prior"``.
    validation : dict
        Validation metrics stored with the artifact (filled by the experiment runner), keyed
        ``"SUBSET/METRIC"``: each modality subset forced on the validation data.
    classes : list, optional
        The class labels seen in training, in output order (the estimators store them; see
        :attr:`classes_` for the fallback).
    columns : dict of str to list of str, optional
        Modality name -> its DataFrame columns, when the model was trained from a DataFrame
        (:func:`mlmm.data.from_dataframe`); without it a table uses ``NAME.0``, ``NAME.1``...
    target_column : str, optional
        The training DataFrame's target column (allowed, and ignored, at prediction).
    precision : {"32", "bf16-mixed", "16-mixed"}, default "32"
        The autocast prediction runs under: the trainer's precision after :meth:`Trainer.fit`
        (``"32"`` for a method that trained outside the shared loop), ``"32"`` after
        :meth:`load`, whose weights are float32 whatever the training precision. A
        ``"16-mixed"`` model on the CPU predicts in float32. Change it with :meth:`to`.

    Examples
    --------
    >>> import numpy as np, mlmm
    >>> rng = np.random.default_rng(0)
    >>> y = np.array(["cat", "dog"] * 40)
    >>> X = {"a": (y == "dog")[:, None] + rng.normal(size=(80, 3)), "b": rng.normal(size=(80, 2))}
    >>> model = mlmm.MissingModalityClassifier("late-fusion", max_epochs=3).fit(X, y).trained_
    >>> model.predict({"b": X["b"][:2], "a": X["a"][:2]}).shape   # keys in any order
    (2,)
    >>> str(model.predict({"a": X["a"][:1]})[0]) in ("cat", "dog")  # "b" absent
    True
    """

    model: MissingModalityModel
    standardizer: Standardizer
    histories: list[TrainHistory]
    trainer_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    prior: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)
    classes: list[Any] | None = None
    columns: dict[str, list[str]] | None = None
    target_column: str | None = None
    precision: str = "32"

    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        return self.model.specs

    @property
    def task(self) -> TaskSpec:
        return self.model.task

    @property
    def method(self) -> str:
        return self.model.method_name

    def to(self, device: str | torch.device, precision: str | int | None = None) -> TrainedModel:
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``) and, when given,
        predict under ``precision`` from now on; returns ``self``."""
        from mlmm.utils import resolve_device

        if precision is not None:
            self.precision = check_precision(precision)
        self.model.to(resolve_device(device))
        return self

    def n_parameters(self) -> int:
        """Number of learnable parameters."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def classes_(self) -> np.ndarray:
        """Class labels in output order: the stored labels, else ``task.class_names``, else
        ``0..K-1`` (artifacts written before labels were stored)."""
        if self.task.is_multilabel:  # the columns of predict's 0/1 matrix
            return np.asarray(self.task.labels)
        if not self.task.is_classification:
            raise MlmmError("a regression model has no classes_; it predicts values")
        if self.classes:
            return np.asarray(self.classes)
        if self.task.class_names:
            return np.asarray(self.task.class_names)
        return np.arange(self.task.n_classes)

    @property
    def modality_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality, in the model's order."""
        return {s.name: tuple(s.shape) for s in self.specs}

    @property
    def table_columns(self) -> dict[str, list[str]]:
        """Modality name -> its columns in a table (CSV, Parquet, DataFrame)."""
        return dict(self.columns) if self.columns else default_columns(self.modality_shapes)

    def validation_scores(self) -> dict[str, dict[str, float]]:
        """Validation metrics per modality subset: ``{"a+b": {"accuracy": 0.9, ...}, ...}``."""
        return validation_by_subset(self.validation)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{s.name}{list(s.shape)}" for s in self.specs)
        if self.task.is_classification:
            labels = [str(c) for c in self.classes_.tolist()]
            shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
            task = f"classification ({len(labels)} classes: {shown})"
        elif self.task.is_multilabel:
            labels = [str(c) for c in self.task.labels]
            shown = ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "")
            task = f"multilabel ({len(labels)} labels: {shown})"
        else:
            task = "regression"
        return (
            f"TrainedModel(method={self.method!r}, modalities=[{shapes}], task={task}, "
            f"parameters={self.n_parameters():,})"
        )

    # ------------------------------------------------------------ input
    def as_dataset(
        self,
        X: Any,
        partial: str = "error",
        lengths: Mapping[str, Any] | None = None,
    ) -> MultimodalDataset:
        """Turn prediction input into a dataset matching the model (targets are placeholders).

        Parameters
        ----------
        X : dict of str to array, DataFrame, MultimodalDataset or OutOfCoreDataset
            A dict (or :class:`mlmm.MultimodalArray`) of per-modality arrays ``(N, *shape)``:
            keys in any order, an omitted key is that modality absent in every sample, an
            entirely NaN row absent in that sample. A DataFrame laid out as at training
            (:attr:`table_columns`; leaving out all of a modality's columns marks it absent;
            a text column of :func:`mlmm.data.from_dataframe` is tokenised as at training;
            the training target column and ``info["ignored_columns"]``, the columns an
            estimator's ``fit`` saw in its DataFrame but used in no modality, may be there
            and are ignored).
            A dataset is used as it is; an out-of-core one (:mod:`mlmm.data.lazy`) is read
            in mini-batches, never whole. A model trained on variable-length sequences
            (``info["variable_length"]``) takes a dataset with ``lengths``, or arrays with
            ``lengths``.
        partial : {"error", "missing"}
            A modality row that is only partly NaN: refused, or treated as absent.
        lengths : dict of str to array of int, optional
            For a model trained on variable-length sequences and arrays or a DataFrame: the
            valid steps of each row ``(N,)`` per sequence modality of
            ``info["variable_length"]``, the valid steps first in each row (the padding that
            follows is not read, and may be NaN; a row that is NaN throughout is absent, as
            without lengths). A modality left out of ``X`` needs none (nor ``lengths=`` at all
            when every sequence modality is left out). Not taken with a dataset (it carries
            its own) nor for a model trained on full-length sequences.
        """
        variable = self.info.get("variable_length") or []
        if isinstance(X, MultimodalDataset) or is_out_of_core(X):
            if lengths is not None:
                raise MlmmError(
                    "lengths= is for arrays or a DataFrame; a dataset carries its own: build it "
                    "with MultimodalDataset(..., lengths=...) and drop lengths="
                )
            return X
        if partial not in ("error", "missing"):  # "impute" would fill from the input itself
            raise MlmmError(f"partial must be 'error' or 'missing', got {partial!r}")
        if lengths is not None and not variable:
            raise MlmmError(
                f"lengths were given for {sorted(lengths)}, but this model was trained on "
                f"full-length sequences; drop lengths="
            )
        if lengths is not None:
            if not isinstance(lengths, Mapping):
                raise MlmmError(
                    f"lengths must be a dict of sequence modality -> steps per row, got "
                    f"{type(lengths).__name__}; pass lengths={{{variable[0]!r}: steps}}"
                )
            unknown = sorted(set(lengths) - set(variable))
            if unknown:
                raise MlmmError(
                    f"lengths were given for {unknown}, which this model did not train with "
                    f"lengths; give them for {variable} only"
                )
        shapes = self.modality_shapes
        if hasattr(X, "iloc") and hasattr(X, "columns"):  # a pandas DataFrame
            names = [str(c) for c in X.columns]
            repeated = sorted({c for c in names if names.count(c) > 1})
            if repeated:
                raise MlmmError(
                    f"columns {repeated[:5]} appear more than once; give each column once"
                )
            frame = X.set_axis(names, axis=1)
            text = {  # a text modality's one column -> (modality, tokenizer, ids per row)
                self.table_columns[m][0]: (m, t["tokenizer"], int(t["length"]))
                for m, t in (self.info.get("text") or {}).items()
            }

            def take(cols: list[str]) -> np.ndarray:
                if len(cols) == 1 and cols[0] in text:  # tokenised as by from_dataframe
                    return _token_ids(frame[cols], *text[cols[0]])
                try:
                    return frame[cols].to_numpy(dtype=np.float64, na_value=np.nan)
                except (TypeError, ValueError):
                    raise MlmmError(
                        f"columns {cols[:3]}... must hold numbers; encode them as at training"
                    ) from None

            ignore = (self.target_column,) if self.target_column else ()
            # the columns an estimator's fit saw in its DataFrame but used in no modality
            ignore += tuple(self.info.get("ignored_columns") or ())
            arrays = table_modalities(names, take, self.table_columns, shapes, ignore)
        else:
            if not isinstance(X, (Mapping, MultimodalArray)):
                raise MlmmError(
                    f"X must be a dict of per-modality arrays, a DataFrame or a "
                    f"MultimodalDataset, got {type(X).__name__}; e.g. "
                    f"model.predict({{{next(iter(shapes))!r}: array}})"
                )
            arrays, _ = as_sample_arrays(X, None)
        if lengths is None and any(name in arrays for name in variable):
            # arrays carry no lengths: their padding would count as data
            raise MlmmError(
                f"this model was trained on variable-length sequences {variable}, whose "
                f"per-row lengths arrays or a DataFrame do not carry; pass "
                f"lengths={{name: steps per row}} too, or a MultimodalDataset(..., lengths=...)"
            )
        lengths = lengths or {}  # none needed when every sequence modality is left out
        aligned = align_modalities(arrays, shapes, "the model")
        n = len(next(iter(aligned.values())))
        aligned = _padding_not_nan(aligned, lengths, n)
        if self.task.is_multilabel:
            dummy = np.zeros((n, self.task.n_labels), dtype=np.float32)
        else:
            dummy = np.zeros(n, dtype=np.int64 if self.task.is_classification else np.float32)
        dataset = from_arrays(
            aligned,
            dummy,
            task=self.task,
            kinds={s.name: s.kind for s in self.specs},
            standardize={s.name: s.standardize for s in self.specs},
            name="input",
            allow_empty=True,
            partial=partial,
        )
        if not variable:
            return dataset
        steps = {}
        for name in variable:  # the dataset checks each: one per row, in [1, T] where present
            j = dataset.modality_index(name)
            if name in lengths:
                steps[name] = lengths[name]
            elif dataset.observed[:, j].any():
                rows = int(dataset.observed[:, j].sum())
                raise MlmmError(
                    f"no lengths for {name!r}, which is present in {rows} row(s); add "
                    f"lengths[{name!r}] (valid steps per row)"
                )
            else:  # absent everywhere: no step is read
                steps[name] = np.zeros(dataset.n_samples, dtype=np.int64)
        return replace(dataset, lengths=steps)

    # ------------------------------------------------------------ prediction
    def predict_raw(
        self, X: Any, on_empty: str = "error", lengths: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Model outputs for ``X``: class probabilities ``[N, K]``, label probabilities
        ``[N, L]`` (multilabel: one sigmoid per label) or values ``[N]``.

        ``X`` is anything :meth:`as_dataset` takes (a dict of arrays, a DataFrame, a
        dataset); no targets are needed. ``on_empty`` says what to do with samples that have
        no modality present: ``"error"`` (default) refuses them; ``"prior"`` answers them
        with the training class frequencies (or target mean). ``lengths``: the valid steps per
        row of a variable-length model's sequences, with arrays (see :meth:`as_dataset`).
        """
        dataset = self.as_dataset(X, lengths=lengths)
        _check_matches(self.model, dataset, "input")
        if on_empty not in ("error", "prior"):
            raise MlmmError(f"on_empty must be 'error' or 'prior', got {on_empty!r}")
        empty = ~dataset.observed.any(axis=1)
        if empty.any() and on_empty == "error":
            raise MlmmError(
                f"{int(empty.sum())} sample(s) have no modality present and cannot be answered; "
                f"drop them or pass on_empty='prior'"
            )
        data = self.standardizer.transform(dataset)
        device = next(self.model.parameters()).device
        # a 16-mixed model moved to the CPU, or a bf16-mixed one on a GPU without bfloat16,
        # predicts in float32
        precision = prediction_precision(self.precision, device)
        with autocast(device, precision):
            batches = batches_for(data, device, with_target=False)
            pred = full_precision(predict_batches(self.model, batches)).cpu()
        if self.task.is_classification:
            out = torch.softmax(pred.double(), dim=1).numpy()
            out[empty] = np.asarray(self.prior)
        elif self.task.is_multilabel:
            out = torch.sigmoid(pred.double()).numpy()  # [N, L]
            out[empty] = np.asarray(self.prior)
        else:
            out = self.standardizer.inverse_target(pred.double().numpy())
            out[empty] = self.prior[0]
        return out

    def predict_proba(
        self, X: Any, on_empty: str = "error", lengths: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Class probabilities ``[N, K]`` in the order of :attr:`classes_`; for multilabel,
        each label's probability ``[N, L]`` (rows need not sum to 1). Arguments as
        :meth:`predict_raw`."""
        if self.task.is_regression:
            raise MlmmError("predict_proba is for classification; use predict for regression")
        return self.predict_raw(X, on_empty, lengths)

    def predict(
        self, X: Any, on_empty: str = "error", lengths: Mapping[str, Any] | None = None
    ) -> np.ndarray:
        """Class labels ``[N]`` (values of :attr:`classes_`), a 0/1 label matrix ``[N, L]``
        (multilabel: a label is on when its probability is at least 0.5) or values ``[N]``
        (regression). Arguments as :meth:`predict_raw`."""
        out = self.predict_raw(X, on_empty, lengths)
        if self.task.is_multilabel:
            return (out >= MULTILABEL_THRESHOLD).astype(np.int64)
        return self.classes_[out.argmax(axis=1)] if self.task.is_classification else out

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-ready data."""
        return {
            "library_version": mlmm.__version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": self.method,
            "class": type(self.model).__qualname__,
            "hyperparameters": self.model.get_hyperparameters(),
            "resolved_hyperparameters": self.model.resolved_hyperparameters(),
            "revisions": method_revisions(self.model),
            "modalities": [s.to_dict() for s in self.specs],
            "task": self.task.to_dict(),
            "preprocessing": self.standardizer.to_dict(),
            "prior": self.prior,
            "trainer": self.trainer_config,
            "train_seconds": self.train_seconds,
            "histories": [h.to_dict() for h in self.histories],
            "info": self.info,
            "validation": self.validation,
            "classes": self.classes,
            "columns": self.columns,
            "target_column": self.target_column,
        }

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Save as an artifact directory (see :mod:`mlmm.train.checkpoint`).

        Parameters
        ----------
        path : str or Path
            A new path or an empty directory; an existing artifact only with ``overwrite``.
            Anything else (a file, a directory of other files) is refused before writing.
        overwrite : bool, default False
            Replace an existing artifact's own files (the model card ``README.md`` among
            them); other files in it stay. The old artifact stays whole until the new one is
            complete.

        The artifact holds a model card, ``README.md`` (:func:`mlmm.train.card.model_card`):
        method and paper, data, training missingness, per-subset validation table, intended
        use and limits.
        """
        config = self.config()
        card = model_card(config)
        return save_artifact(path, self.model.state_dict(), config, overwrite=overwrite, card=card)

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Load and check an artifact directory written by :meth:`save`.

        The whole ``config.json`` is validated (:mod:`mlmm.train.artifact_schema`) and the
        model's size is checked against the stored weights on the ``meta`` device (nothing
        allocated) before the model is built, so a corrupt or edited config cannot make it
        allocate more than the weights file holds.

        The model is built from ``resolved_hyperparameters`` where the config records them
        (:meth:`MissingModalityModel.resolved_hyperparameters`: sizes a method chose itself),
        so it is the model that was trained whatever the current sizing rules; an artifact
        written before they were recorded is built from ``hyperparameters`` alone, and
        refused in one line when today's rules give a model its weights do not fit. Weights
        saved before a method gained a buffer are brought up to date by its
        :meth:`~MissingModalityModel.upgrade_state_dict`.
        """
        config, state = load_artifact(path)
        return cls._from_artifact(config, state, path)

    def to_bytes(self) -> dict[str, bytes]:
        """The artifact :meth:`save` writes, as bytes (weights, config and manifest; no card).

        How a pickled estimator carries its model (joblib's ``n_jobs``): the same JSON and
        safetensors as on disk, never a pickled module. :meth:`from_bytes` reads it back.
        """
        return artifact_bytes(self.model.state_dict(), self.config())

    @classmethod
    def from_bytes(cls, files: dict[str, bytes], where: str = "the model bytes") -> TrainedModel:
        """The model :meth:`to_bytes` gave, checked as :meth:`load` checks an artifact (on the
        CPU, predicting in float32; ``where`` names the bytes in errors)."""
        config, state = read_artifact_bytes(files, where)
        return cls._from_artifact(config, state, where)

    @classmethod
    def _from_artifact(
        cls, config: dict[str, Any], state: dict[str, torch.Tensor], path: str | Path
    ) -> TrainedModel:
        """Build the model from a checked artifact's ``config`` and weights (``path`` names it
        in errors)."""
        stored = sum(t.numel() for t in state.values())
        cfg = validate_config(config, path, stored)
        method = cfg.method
        if method not in METHODS:
            raise ArtifactError(
                f"{path} holds a {method!r} model, a method this mlmm does not have; "
                f"upgrade mlmm or install the plugin that provides it"
            )
        try:
            specs = [ModalitySpec.from_dict(m.model_dump()) for m in cfg.modalities]
            task = TaskSpec.from_dict(cfg.task.model_dump())
            given, resolved = cfg.hyperparameters, cfg.resolved_hyperparameters
            if not resolved:  # written before sizes were recorded: read them off the weights
                resolved = METHODS.get(method).obj.resolved_from_state(dict(given), state)
            needed = _values_needed(method, specs, task, {**given, **resolved}, state)
            if needed is not None and needed > stored:
                raise ArtifactError(
                    f"{path}: config.json describes a {method!r} model of {needed:,} values but "
                    f"{WEIGHTS_FILE} holds {stored:,}; the config was edited or is corrupt, or "
                    f"another mlmm version sizes this method differently from the same "
                    f"hyperparameters; retrain or restore the model"
                )
            model = create_method(method, specs, task, **{**given, **resolved})
            for name in resolved:  # the record of what was asked (None: sized by the method)
                setattr(model, name, given[name])
            standardizer = Standardizer.from_dict(cfg.preprocessing.model_dump())
        except MlmmError as err:
            if isinstance(err, ArtifactError):
                raise
            raise ArtifactError(f"{path}/config.json is incompatible: {err}") from None
        except (KeyError, TypeError, ValueError) as err:  # a value the method cannot take
            raise ArtifactError(
                f"{path}/config.json is incompatible with the {method!r} method "
                f"({type(err).__name__}: {err}); retrain the model"
            ) from None
        # torch checks names and shapes; a module whose buffers hold data (a k-NN bank of
        # training samples) sizes them from the stored tensors in its _load_from_state_dict
        expected = set(model.state_dict())
        upgrade_weights(model, state)  # weights of an earlier mlmm, brought up
        try:
            model.load_state_dict(state)
            shapes_fit = True
        except RuntimeError:
            shapes_fit = False
        if not shapes_fit or expected != set(state):
            missing = sorted(expected - set(state))[:3]
            extra = sorted(set(state) - expected)[:3]
            raise ArtifactError(
                f"{path}: weights do not fit the {method!r} model (missing {missing}, unexpected "
                f"{extra}, or shapes differ); it was written by an incompatible version, retrain it"
            )
        model.eval()
        outdated = outdated_revisions(model, cfg.revisions, path)
        if outdated is not None:  # load -> _from_artifact -> here: point at load's caller
            warnings.warn(outdated, UserWarning, stacklevel=3)
        histories = [TrainHistory(**h.model_dump()) for h in cfg.histories]
        return cls(
            model,
            standardizer,
            histories,
            cfg.trainer,
            cfg.info,
            cfg.prior,
            cfg.train_seconds,
            cfg.validation,
            cfg.classes,
            cfg.columns,
            cfg.target_column,
        )


def _padding_not_nan(
    arrays: dict[str, np.ndarray], lengths: Mapping[str, Any], n: int
) -> dict[str, np.ndarray]:
    """``arrays`` with the padding after each row's valid steps set to 0 where it is NaN, so
    NaN padding does not read as a partly-NaN row (refused, or made absent by
    ``partial="missing"``). A row NaN throughout stays NaN: it marks an absent modality.
    Lengths that are not one number per row are left for the dataset to refuse."""
    out = dict(arrays)
    for name, values in lengths.items():
        x = arrays.get(name)
        steps = np.asarray(values)
        if (
            x is None
            or x.ndim < 2
            or not np.issubdtype(x.dtype, np.floating)
            or steps.shape != (n,)
            or not np.issubdtype(steps.dtype, np.number)
            or not np.isfinite(steps).all()
        ):
            continue
        if (steps < 0).any() or (steps > x.shape[1]).any():  # before from_arrays reads NaN
            raise MlmmError(
                f"lengths[{name!r}] must be in [0, {x.shape[1]}] (the padded length), got "
                f"values from {steps.min():g} to {steps.max():g}"
            )
        nan = np.isnan(x.reshape(n, x.shape[1], -1))  # [N, T, C]
        absent = nan.all(axis=(1, 2))  # [N]
        padded = np.arange(x.shape[1])[None, :] >= np.clip(steps, 0, None)[:, None]  # [N, T]
        fill = padded[:, :, None] & nan & ~absent[:, None, None]  # [N, T, C]
        if fill.any():
            x = x.copy()
            x.reshape(fill.shape)[fill] = 0.0
            out[name] = x
    return out


def _values_needed(
    method: str,
    specs: list[ModalitySpec],
    task: TaskSpec,
    hyperparameters: dict[str, Any],
    state: dict[str, torch.Tensor],
) -> int | None:
    """Values ``state`` must hold for ``method`` built from a config, counted without
    allocating: all of its state's, less what :func:`upgrade_weights` adds to ``state``.

    Built on PyTorch's ``meta`` device, where tensors have shapes but no storage. None when
    the method cannot be built there (a plugin doing arithmetic on tensors in ``__init__``);
    the real build then runs unchecked, bounded only by the config schema.
    """
    try:
        with torch.device("meta"):
            skeleton = create_method(method, specs, task, **hyperparameters)
    except MlmmError:
        raise
    except Exception:  # noqa: BLE001 - a method that cannot be built on meta: skip the pre-check
        return None
    # what upgrade_weights fills in for weights of an earlier mlmm (a buffer added since,
    # at its default) is not needed from the file
    upgraded = dict(state)
    try:
        upgrade_weights(skeleton, upgraded)
    except Exception:  # noqa: BLE001 - a plugin's upgrade that needs real tensors: none counted
        upgraded = state
    added = sum(upgraded[k].numel() for k in upgraded.keys() - state.keys())
    return sum(t.numel() for t in skeleton.state_dict().values()) - added
