"""scikit-learn style estimators: ``MissingModalityClassifier(method=...).fit(X, y).predict(X)``.

``X`` is one array per modality: a dict (or :class:`MultimodalArray`) of arrays, a pandas
DataFrame or a 2-D array with a ``modalities`` mapping from modality name to columns (names for
a DataFrame, positions for an array). Without ``modalities``, a DataFrame or 2-D array is one
vector modality named ``"x"``. A modality whose row is entirely NaN is missing in that sample.
The estimators follow scikit-learn's conventions (``random_state``, ``n_features_in_``,
``classes_``), pass ``check_estimator`` (see :func:`expected_failed_checks`) and work in
``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` (wrap a dict in
:class:`MultimodalArray`, or use a DataFrame, so scikit-learn can index samples), with
``n_jobs`` too: an estimator pickles, its fitted model carried as the bytes of its artifact
(JSON + safetensors), not as pickled torch objects. To store a model, use
``estimator.trained_.save(path)``: an artifact loads without running code, a pickle does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.exceptions import NotFittedError as _SkNotFitted
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.frames import from_arrays
from mlmm.data.inputs import (  # noqa: F401 - MultimodalArray is public here too
    _PLAIN_MODALITY,
    MultimodalArray,
    _shown,
    align_modalities,
    as_sample_arrays,
)
from mlmm.data.missingness import parse_condition, simulate
from mlmm.data.specs import TaskSpec
from mlmm.data.split import split_indices
from mlmm.errors import MlmmError
from mlmm.methods.registry import create_method
from mlmm.serve.predict import check_finite_answer
from mlmm.train.trained import MULTILABEL_THRESHOLD
from mlmm.train.trainer import Trainer
from mlmm.utils import rng_for


class NotFittedError(MlmmError, _SkNotFitted):
    """``predict`` was called before ``fit`` (also a scikit-learn ``NotFittedError``)."""


_ON_EMPTY = ("error", "prior")
#: The estimator's parameters that method="auto" does not use (its budget sets them).
_AUTO_IGNORES = ("max_epochs", "weight_decay", "patience", "val_size")
_PARTIAL = ("error", "missing")
#: One fit's checkpoint folder under ``checkpoint_dir``: ``fit-`` and 16 hex digits of its key.
_FIT_FOLDER = re.compile(r"^fit-[0-9a-f]{16}$")


def _nan_rows(arrays: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per modality: rows that are entirely NaN (absent) and rows that are partly NaN."""
    out = {}
    for name, arr in arrays.items():
        if not np.issubdtype(arr.dtype, np.floating) or arr.ndim < 2:
            continue
        nan = np.isnan(arr.reshape(len(arr), -1))  # [N, F]
        all_nan = nan.all(axis=1)
        out[name] = (all_nan, nan.any(axis=1) & ~all_nan)
    return out


def _check_rows(
    arrays: dict[str, np.ndarray], partial: str, on_empty: str, single: bool, stage: str
) -> None:
    """Partly NaN rows and rows with nothing present: estimator-worded errors."""
    n = len(next(iter(arrays.values())))
    if n == 0:
        raise MlmmError(f"X has 0 samples; {stage} needs at least one")
    present = np.ones((n, len(arrays)), dtype=bool)
    rows = _nan_rows(arrays)
    for j, name in enumerate(arrays):
        if name not in rows:
            continue
        all_nan, part_nan = rows[name]
        present[:, j] = ~all_nan
        if part_nan.any() and partial == "error":
            hint = (
                "; if X holds several modalities, set modalities={name: columns} so that a "
                "modality missing in a sample is a whole NaN row"
                if single
                else ""
            )
            raise MlmmError(
                f"modality {name!r} has {int(part_nan.sum())} row(s) that are partly NaN (first: "
                f"{np.flatnonzero(part_nan)[:5].tolist()}); set partial='missing' to treat the "
                f"modality as absent in those rows, or impute them first{hint}"
            )
        if partial == "missing":
            present[:, j] &= ~part_nan
    empty = np.flatnonzero(~present.any(axis=1))
    if len(empty) and on_empty == "error":
        answer = "left out of training" if stage == "fit" else "answered with the training prior"
        raise MlmmError(
            f"{len(empty)} sample(s) have no modality present (first: {empty[:5].tolist()}); "
            f"drop them, or set on_empty='prior' to have them {answer}"
        )


def _check_feature_names(fitted: np.ndarray | None, layout: Any, estimator: str) -> None:
    """scikit-learn's rule for a table's column names at prediction: a warning when only one
    of fit and predict had names, a one-line error saying what differs when both had them."""
    given = layout.feature_names
    if fitted is None and given is not None:
        warnings.warn(
            f"X has feature names, but {estimator} was fitted without feature names",
            UserWarning,
            stacklevel=5,  # the caller of predict_proba (or of the regressor's predict)
        )
    elif fitted is not None and given is None:
        warnings.warn(
            f"X does not have valid feature names, but {estimator} was fitted with feature names",
            UserWarning,
            stacklevel=5,
        )
    elif fitted is not None and not np.array_equal(given, fitted):
        seen, now = set(fitted), set(given)  # once: a wide table has thousands of columns
        unseen = [c for c in given if c not in seen]
        missing = [c for c in fitted if c not in now]
        if unseen or missing:
            differs = "; ".join(
                f"{what}: {_shown([str(c) for c in names])}"
                for what, names in (
                    ("Feature names unseen at fit time", unseen),
                    ("Feature names seen at fit time, yet now missing", missing),
                )
                if names
            )
        else:
            differs = "Feature names must be in the same order as they were in fit"
        raise MlmmError(
            f"The feature names should match those that were passed during fit. {differs}; "
            "pass the columns of fit, in their order"
        )


def _check_column_name_types(X: Any) -> None:
    """A DataFrame's column names are all text (checked at prediction) or none are, as
    scikit-learn requires: with a mix, ``feature_names_in_`` could not be set nor checked."""
    if not (hasattr(X, "iloc") and hasattr(X, "columns")):
        return
    text = [isinstance(c, str) for c in X.columns]
    if any(text) and not all(text):
        kinds = sorted({type(c).__name__ for c in X.columns})
        raise MlmmError(
            f"X's column names mix text and other types ({', '.join(kinds)}); make them all text "
            "(X.columns = X.columns.astype(str)) so that prediction checks them, or all not text"
        )


def _trains_multilabel(method: Any) -> bool:
    """Whether ``method`` (a registered name) trains for a multilabel task; False for "auto"
    and for names that are not registered (``fit`` says what is wrong with those)."""
    from mlmm.methods.registry import METHODS

    if method not in METHODS.names():
        return False
    return "multilabel" in METHODS.get(method).obj.supported_tasks


def _check_options(estimator: Any) -> None:
    """Validate the options the estimator itself interprets (the trainer checks the rest)."""
    for name, choices in (("on_empty", _ON_EMPTY), ("partial", _PARTIAL)):
        value = getattr(estimator, name)
        if value not in choices:
            raise MlmmError(
                f"{name} must be one of {list(choices)}, got {value!r}"
                + (" (impute before calling fit)" if value == "impute" else "")
            )


def _resolve_seed(random_state: Any, seed: int | None) -> int:
    """One int seed from ``random_state`` (int, None or a RandomState) or the old ``seed``."""
    if seed is not None:
        warnings.warn(
            "seed is deprecated and will be removed; use random_state (scikit-learn's name)",
            FutureWarning,
            stacklevel=4,  # fit -> _fit -> here: point at the caller of fit
        )
        random_state = seed
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) < 2**63:
            raise MlmmError(f"random_state must be in [0, 2**63), got {random_state}")
        return int(random_state)
    if random_state is None or isinstance(random_state, np.random.RandomState):
        return int(check_random_state(random_state).randint(2**31 - 1))
    raise MlmmError(
        f"random_state must be an int, None or a numpy RandomState, got {random_state!r}"
    )


def _as_1d_target(y: Any, what: str, name: str) -> np.ndarray:
    """``y`` as a 1-D array (a column vector is ravelled with scikit-learn's warning)."""
    if y is None:
        raise MlmmError(f"{name} requires y to be passed, but the target y is None; pass {what}")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; it is ravelled",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        several = (
            "; for several targets, wrap the estimator in sklearn.multioutput."
            f"MultiOutput{'Classifier' if 'Classifier' in name else 'Regressor'}"
            if y.ndim == 2
            else ""
        )
        raise MlmmError(f"y must be 1-D with one value per sample, got shape {y.shape}{several}")
    return y


def _check_n_samples(n: int) -> None:
    if n == 0:
        raise MlmmError("y has 0 samples; fit needs at least 2")
    if n < 2:
        raise MlmmError(f"fit needs at least 2 samples, got n_samples = {n}")


def _encode_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``classes_`` (sorted unique labels) and each label's index in it; bad labels raise."""
    if y.dtype.kind == "O":
        # None, NaN, and pandas' NA (a nullable Int64, boolean or string column with gaps)
        missing = np.asarray(pd.isna(y), dtype=bool)
        if missing.any():
            raise MlmmError(
                f"y has {int(missing.sum())} missing label(s) (None, NaN or NA; first rows: "
                f"{np.flatnonzero(missing)[:5].tolist()}); drop those samples"
            )
        if len({isinstance(v, str) for v in y}) > 1:
            raise MlmmError(
                "y mixes strings and other labels; pass all labels as strings or all as numbers"
            )
    elif y.dtype.kind == "c":
        raise MlmmError(
            "Complex data not supported: y holds complex numbers; class labels must be "
            "strings or real numbers"
        )
    elif y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y))
        raise MlmmError(
            f"y has {len(bad)} NaN or infinite label(s) (first rows: {bad[:5].tolist()}); "
            "drop those samples"
        )
    target_type = type_of_target(y, input_name="y")
    if target_type == "continuous":
        raise MlmmError(
            f"y holds continuous values (e.g. {y[y != np.round(y)][0]!r}), not class labels; use "
            "MissingModalityRegressor, or bin y into classes"
        )
    if target_type == "unknown":
        raise MlmmError(
            f"Unknown label type: y has dtype {y.dtype} holding {type(y[0]).__name__} values; "
            "pass labels as strings or as numbers in a numeric array"
        )
    if target_type not in ("binary", "multiclass"):
        raise MlmmError(f"y must hold one class label per sample, got a {target_type!r} target")
    classes, encoded = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise MlmmError(f"y has a single class {classes.tolist()}; a classifier needs two or more")
    return classes, encoded


def _validation_split(data: MultimodalDataset, val_size: float, seed: int) -> dict:
    """``{"train": ..., "test": ...}`` indices; no validation part when it cannot hold every
    class (or, for regression, fewer than 2 rows), so tiny data trains for ``max_epochs``."""
    if not (isinstance(val_size, (int, float)) and 0.0 <= val_size < 1.0):
        raise MlmmError(f"val_size must be in [0, 1), got {val_size!r}")
    n = data.n_samples
    n_val = int(np.ceil(val_size * n))
    needed = data.task.n_classes if data.task.is_classification else 2
    if val_size > 0 and (n_val < needed or n - n_val < needed):
        return {"train": np.arange(n), "test": np.arange(0)}
    if val_size > 0 and data.task.kind == "classification":
        counts = np.bincount(np.asarray(data.targets), minlength=data.task.n_classes)  # [K]
        if (counts < 2).any():  # the split is stratified: it needs one of each on both sides
            k = int(np.argmin(counts))
            name = data.task.class_names[k] if data.task.class_names else k
            raise MlmmError(
                f"class {name!r} has {counts[k]} sample(s); the validation part (val_size="
                f"{val_size}) is split by class and needs at least 2 of each: add samples of "
                "it, drop it, or set val_size=0 (trains for max_epochs, no early stopping)"
            )
    return split_indices(data, test_size=val_size, val_size=0.0, seed=seed)


_FLOAT32_BATCHES = (
    "predictions come from torch in float32, computed in batches whose size changes the "
    "rounding of matrix products: a row's prediction agrees to about 1e-6 (relative) across "
    "subsets and orders, not to the check's 1e-7"
)


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """scikit-learn checks that an mlmm estimator may fail, each with its reason.

    For ``check_estimator(est, expected_failed_checks=expected_failed_checks(est))`` and
    ``parametrize_with_checks(..., expected_failed_checks=expected_failed_checks)``
    (scikit-learn >= 1.6 has no tag for them). Whether they fail depends on the method and
    the machine's float32 rounding (``logistic-mean-impute`` passes both here, ``hemis`` fails
    subset invariance), so they are listed for every method. Every other check passes, for
    every registered method (the multilabel checks too, for the methods that train for a
    multilabel task), given epochs enough to learn: ``check_regressors_train`` asks for an
    R^2 above 0.5, which ``max_epochs=2`` leaves ``mopoe``, ``mvae``, ``poe-fusion`` and
    ``missing-aware-prompts`` short of (``max_epochs=30`` passes).

    Parameters
    ----------
    estimator : MissingModalityClassifier or MissingModalityRegressor

    Returns
    -------
    dict of str to str
        Check name -> why it fails.
    """
    if not isinstance(estimator, _MissingModalityEstimator):
        return {}
    return {
        "check_methods_subset_invariance": _FLOAT32_BATCHES,
        "check_methods_sample_order_invariance": _FLOAT32_BATCHES,
    }


def remove_fit_checkpoints(checkpoint_dir: str | Path) -> None:
    """Remove the training checkpoints the estimators kept under ``checkpoint_dir`` (one
    ``fit-*`` folder per fit), and ``checkpoint_dir`` itself once it is empty; other files and
    folders are left. Nothing happens when there is none.

    Parameters
    ----------
    checkpoint_dir : str or Path
        The estimator's ``checkpoint_dir``.
    """
    from mlmm.train.resume import remove_checkpoint

    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if _FIT_FOLDER.match(entry.name) and entry.is_dir():
            remove_checkpoint(entry)
    with contextlib.suppress(OSError):  # not empty: what else is there is not ours
        folder.rmdir()


class _MissingModalityEstimator(BaseEstimator):
    _task_kind = ""

    def __init__(
        self,
        method: str = "hemis",
        method_params: dict[str, Any] | None = None,
        modalities: dict[str, Any] | None = None,
        train_missing: str = "none",
        max_epochs: int = 200,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 20,
        val_size: float = 0.1,
        random_state: int | np.random.RandomState | None = 0,
        device: str = "cpu",
        precision: str | int = "32",
        verbose: bool = False,
        on_empty: str = "error",
        partial: str = "error",
        checkpoint_dir: str | Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.method = method
        self.method_params = method_params
        self.modalities = modalities
        self.train_missing = train_missing
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_size = val_size
        self.random_state = random_state
        self.device = device
        self.precision = precision
        self.verbose = verbose
        self.on_empty = on_empty
        self.partial = partial
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # a NaN row is a missing modality, but a NaN cell is refused (partial="error"), so
        # scikit-learn's NaN-accepting checks do not apply
        tags.input_tags.allow_nan = False
        tags.input_tags.dict = True
        tags.non_deterministic = self.random_state is None and self.seed is None
        return tags

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        """The estimator's state for pickle (joblib's ``n_jobs`` copies estimators this way).

        Parameters and fitted attributes are plain values; the fitted model travels as the
        bytes of its artifact (:meth:`mlmm.TrainedModel.to_bytes`: the JSON and safetensors
        that ``trained_.save()`` writes), never as a pickled torch module. ``save()`` stays the
        way to store a model: a pickle runs code when loaded, an artifact does not.
        """
        state = dict(super().__getstate__())  # a copy: the estimator keeps its own model
        trained = state.pop("trained_", None)
        if trained is not None:
            state["trained_"] = {
                "artifact": trained.to_bytes(),
                "device": str(next(trained.model.parameters()).device),
                "precision": trained.precision,
            }
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from :meth:`__getstate__`'s state: the model from its artifact bytes, checked
        as a saved artifact is, on the device it was pickled from (the CPU when that is a GPU
        this machine lacks: none, or fewer) and predicting in the same precision. A parameter
        the pickle lacks (added to mlmm since) takes its default, so get_params and clone work."""
        import torch

        from mlmm.train.trained import TrainedModel

        state = dict(state)
        carried = state.pop("trained_", None)
        for name, param in inspect.signature(_MissingModalityEstimator.__init__).parameters.items():
            if name != "self":  # a parameter added since the pickle was written: its default
                state.setdefault(name, param.default)
        super().__setstate__(state)
        if carried is None:
            return
        if isinstance(carried, TrainedModel):  # pickled by mlmm before artifact bytes
            self.trained_ = carried
            return
        trained = TrainedModel.from_bytes(carried["artifact"], f"the pickled {type(self).__name__}")
        device = torch.device(carried["device"])
        if device.type == "cuda" and (  # no GPU here, or fewer than where it was pickled
            not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
        ):
            device = torch.device("cpu")
        self.trained_ = trained.to(device, precision=carried["precision"])

    # ---------------------------------------------------------------- input
    def _fit_inputs(self, X: Any) -> dict[str, np.ndarray]:
        """Per-modality arrays for ``fit``; records the layout checked at prediction."""
        import copy

        _check_column_name_types(X)
        arrays, layout = as_sample_arrays(X, self.modalities)
        single = layout.kind == "table" and self.modalities is None
        _check_rows(arrays, self.partial, self.on_empty, single, "fit")
        # prediction cuts tables as fit did, even after set_params(modalities=...) without a refit
        self.modalities_ = copy.deepcopy(self.modalities)
        self.n_features_in_ = layout.n_features
        if layout.feature_names is not None:
            self.feature_names_in_ = layout.feature_names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.input_kind_ = layout.kind
        self.modality_shapes_ = {k: tuple(v.shape[1:]) for k, v in arrays.items()}
        return arrays

    def _predict_inputs(self, X: Any) -> dict[str, np.ndarray]:
        """Per-modality arrays for prediction, checked against what ``fit`` saw."""
        modalities = getattr(self, "modalities_", self.modalities)  # pickled before it existed
        arrays, layout = as_sample_arrays(X, modalities)
        name = type(self).__name__
        if layout.kind == self.input_kind_ == "table":  # names first, as scikit-learn does
            _check_feature_names(getattr(self, "feature_names_in_", None), layout, name)
        if layout.kind == "table" and layout.n_features != self.n_features_in_:
            raise MlmmError(
                f"X has {layout.n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input; pass the columns used in fit"
            )
        if layout.kind != self.input_kind_:
            given = "a dict of modalities" if layout.kind == "dict" else "a table"
            raise MlmmError(
                f"X is {given}, but {name} was fitted on "
                f"{'a dict of modalities' if self.input_kind_ == 'dict' else 'a table'}; "
                "predict with X in the form used in fit"
            )
        out = align_modalities(arrays, self.modality_shapes_, "fit")
        _check_rows(out, self.partial, self.on_empty, modalities is None, "predict")
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "trained_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) before predicting"
            )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "trained_")

    # ---------------------------------------------------------------- fit
    def _fit(self, X: Any, targets: np.ndarray, task: TaskSpec):
        _check_options(self)
        seed = _resolve_seed(self.random_state, self.seed)
        inputs = self._fit_inputs(X)
        data = from_arrays(
            inputs,
            targets,
            task=task,
            name="estimator",
            partial=self.partial,
            allow_empty=self.on_empty == "prior",
        )
        condition = parse_condition(self.train_missing)
        checkpoint = self._checkpoint_folder(data, seed)
        if self.method == "auto":
            return self._fit_auto(data, condition, seed)
        idx = _validation_split(data, self.val_size, seed)
        train, _ = simulate(data.subset(idx["train"]), condition.train, rng_for(seed, "train-mask"))
        val = None
        if len(idx["test"]):
            val, _ = simulate(data.subset(idx["test"]), condition.train, rng_for(seed, "val-mask"))
        model = create_method(self.method, data.specs, data.task, **(self.method_params or {}))
        trainer = Trainer(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            patience=self.patience,
            device=self.device,
            precision=self.precision,
            seed=seed,
            progress=self.verbose,
            checkpoint_dir=checkpoint,
        )
        self.trained_ = trainer.fit(model, train, val, info={"estimator": type(self).__name__})
        if val is not None:
            from mlmm.eval.protocol import evaluate

            # each modality subset scored on the unmasked validation part, as run_experiment
            # records it: the model card's table and mlmm predict's per-row trust column
            table = evaluate(self.trained_, data.subset(idx["test"]), "none", seed, patterns=False)
            self.trained_.validation = {
                f"{r.subset}/{r.metric}": r.value for r in table.itertuples() if r.scope == "subset"
            }
        self._record_table_columns()
        self.modality_names_ = data.modality_names
        self.n_modalities_in_ = data.n_modalities
        return self

    def _check_checkpoint_dir(self) -> None:
        """Refuse a ``checkpoint_dir`` that is not a path, or that could never be resumed."""
        if self.checkpoint_dir is None:
            return
        if not isinstance(self.checkpoint_dir, (str, Path)) or not str(self.checkpoint_dir):
            raise MlmmError(
                f"checkpoint_dir must be a folder path (str or Path) or None, got "
                f"{self.checkpoint_dir!r}; pass a path"
            )
        if self.method == "auto":
            raise MlmmError(
                f"method='auto' does not take checkpoint_dir (got {str(self.checkpoint_dir)!r}): "
                "its folds resume from its fold cache; pass method_params={'cache_dir': FOLDER} "
                "instead"
            )
        if self.random_state is None and self.seed is None:
            raise MlmmError(
                "checkpoint_dir needs a fixed random_state, got None: each fit would draw "
                "another seed and never resume a checkpoint; pass random_state=0 (or any int)"
            )

    def _checkpoint_folder(self, data: MultimodalDataset, seed: int) -> Path | None:
        """This fit's own training-checkpoint folder under ``checkpoint_dir``: ``fit-`` and a
        hash of the estimator's parameters, the seed and the data, so that the fits of a
        cross-validation or a grid search (clones sharing ``checkpoint_dir``) each resume their
        own checkpoint instead of overwriting one another's. None without ``checkpoint_dir``."""
        from mlmm.train.resume import dataset_fingerprint

        if self.checkpoint_dir is None:
            return None
        skipped = ("checkpoint_dir", "verbose", "random_state", "seed")  # seed: resolved below
        params = {k: v for k, v in self.get_params(deep=False).items() if k not in skipped}
        run = {"estimator": type(self).__name__, "params": params, "seed": seed}
        digest = hashlib.sha256(json.dumps(run, sort_keys=True, default=repr).encode())
        digest.update(dataset_fingerprint(data).encode())
        return Path(self.checkpoint_dir) / f"fit-{digest.hexdigest()[:16]}"

    def _record_table_columns(self) -> None:
        """Give ``trained_`` the DataFrame layout of fit: each modality's columns, and the
        columns fit saw but no modality uses (``info["ignored_columns"]``), which the trained
        model, saved or not, ignores in a table as fit did rather than calling them extra."""
        self.trained_.columns = self._fitted_table_columns()
        if self.trained_.columns is not None:
            used = {c for cols in self.trained_.columns.values() for c in cols}
            names = [str(c) for c in self.feature_names_in_]
            unused = [c for c in names if c not in used]
            if unused:
                self.trained_.info["ignored_columns"] = unused

    def _fitted_table_columns(self) -> dict[str, list[str]] | None:
        """Each modality's DataFrame columns when ``fit`` saw a DataFrame with distinct text
        column names, so the saved model predicts from a table laid out as at fit (``mlmm predict
        rows.csv``) rather than from columns ``NAME.0``, ``NAME.1``... it never saw."""
        names = getattr(self, "feature_names_in_", None)
        if names is None or len(set(names)) < len(names):
            return None  # repeated names: a table predicts from them only as NAME.0, NAME.1...
        if self.modalities is None:
            return {_PLAIN_MODALITY: [str(c) for c in names]}
        return {str(m): [str(c) for c in cols] for m, cols in self.modalities.items()}

    def _fit_auto(self, data: MultimodalDataset, condition, seed: int):
        """``method="auto"``: :func:`mlmm.tune.auto.fit_auto` on all of ``data`` (its inner
        cross-validation replaces the validation split), ``method_params`` passed to it."""
        from mlmm.tune.auto import check_auto_options, check_auto_precision, fit_auto

        check_auto_precision(self.precision)
        check_auto_options(self.method_params)
        defaults = inspect.signature(_MissingModalityEstimator.__init__).parameters
        moved = [k for k in _AUTO_IGNORES if getattr(self, k) != defaults[k].default]
        if moved:  # set by the user and not used: said, not silently dropped
            warnings.warn(
                f"method='auto' ignores {', '.join(f'{k}={getattr(self, k)!r}' for k in moved)}: "
                "its budget sets the epochs, patience and weight decay, and its inner "
                "cross-validation replaces the validation split; cap the deep members' epochs "
                "with method_params={'max_epochs': N}",
                UserWarning,
                stacklevel=4,  # fit -> _fit -> _fit_auto -> here: point at the caller of fit
            )
        train, _ = simulate(data, condition.train, rng_for(seed, "train-mask"))
        self.trained_ = fit_auto(
            train,
            **{
                "seed": seed,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "device": self.device,
                "progress": self.verbose,
                "info": {"estimator": type(self).__name__},
                **(self.method_params or {}),
            },
        )
        self._record_table_columns()
        self.modality_names_ = data.modality_names
        self.n_modalities_in_ = data.n_modalities
        return self

    def _predict_raw(self, X: Any) -> np.ndarray:
        self._check_fitted()
        data = self.trained_.as_dataset(self._predict_inputs(X), partial=self.partial)
        raw = self.trained_.predict_raw(data, on_empty=self.on_empty)
        check_finite_answer(raw)  # argmax would read a NaN row as the first class
        return raw


class MissingModalityClassifier(ClassifierMixin, _MissingModalityEstimator):
    """A classifier over several modalities, any of which may be missing (NaN rows).

    Parameters
    ----------
    method : str, default "hemis"
        A registered method (``mlmm methods``), or ``"auto"``: a portfolio chosen by inner
        cross-validation on the training data and ensembled
        (:func:`mlmm.tune.auto.fit_auto`; ``max_epochs``, ``weight_decay``, ``patience`` and
        ``val_size`` then come from its budget, with a warning when set).
    method_params : dict, optional
        The method's hyperparameters; with ``method="auto"``, keyword arguments of
        :func:`mlmm.tune.auto.fit_auto` (``budget``, ``folds``, ``portfolio``...; the seed,
        ``batch_size``, ``lr`` and ``device`` come from the estimator's own parameters).
    modalities : dict of str to list, optional
        Modality name -> its columns, to cut a table into modalities: column names for a
        DataFrame, column positions for a 2-D array (after a ``StandardScaler`` in a
        ``Pipeline`` the table is a plain array: use positions, or
        ``set_output(transform="pandas")``). Without it a table is one modality ``"x"``.
    train_missing : str, default "none"
        Extra simulated missingness on the training data (e.g. ``"mcar:0.3"``), on top of the
        NaN rows it already has.
    max_epochs, batch_size, lr, weight_decay, patience :
        Passed to :class:`mlmm.Trainer`.
    val_size : float, default 0.1
        Fraction of the training data held out (stratified) for early stopping. When that
        part would be too small to hold every class (or 2 rows for regression), there is no
        validation part and training runs ``max_epochs``.
    random_state : int, RandomState or None, default 0
        Seed of the split, the masks and the weights: the same int gives the same model. None
        (or a RandomState) draws one, as in scikit-learn.
    device : str, default "cpu"
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available); ``"cuda"``
        without a CUDA GPU is a one-line error at ``fit``.
    precision : {"32", "bf16-mixed", "16-mixed"}, default "32"
        Training precision (:class:`mlmm.Trainer`): ``"bf16-mixed"`` autocasts the forward
        pass to bfloat16 on a CPU or a GPU, ``"16-mixed"`` to float16 with loss scaling on a
        GPU only; weights stay float32 and predictions run under the same autocast. Checked
        at ``fit``; ``method="auto"`` takes ``"32"`` only.
    verbose : bool, default False
        Show the progress bar.
    on_empty : {"error", "prior"}, default "error"
        Samples with no modality present: ``"error"`` refuses them; ``"prior"`` leaves them
        out of training and answers them with the training class frequencies (or mean).
    partial : {"error", "missing"}, default "error"
        A modality row that is only partly NaN: ``"error"`` refuses it; ``"missing"`` treats
        the modality as absent in that row. Impute before ``fit`` for anything else.
    checkpoint_dir : str, Path or None, default None
        Keep training checkpoints under this folder (:class:`mlmm.Trainer`'s
        ``checkpoint_dir``), so that a ``fit`` stopped by anything (``kill -9``, Ctrl-C, an
        exception) and called again with the same data and parameters resumes from its last
        written epoch and ends with the model of an uninterrupted fit. Each fit keeps its own
        subfolder ``fit-HASH``, named by the parameters, the seed and the data, so the clones
        of ``cross_val_score`` or ``GridSearchCV`` sharing the folder each resume their own
        fit; it is kept after ``fit`` (the same fit again loads its finished weights instead
        of training), so delete the folder, or call
        :func:`mlmm.estimator.remove_fit_checkpoints`, once the models are kept. Refused with
        ``random_state=None`` (each fit would draw another seed, and never resume) and with
        ``method="auto"``: give it ``method_params={"cache_dir": FOLDER}``, from which its
        folds resume.
    seed : int, optional
        Deprecated alias of ``random_state`` (a ``FutureWarning``); it wins when given.

    Attributes
    ----------
    classes_ : ndarray
        Class labels seen in ``fit`` (sorted); labels map to classes through it, so any
        values (1e8, strings) work.
    n_features_in_ : int
        Columns of the table seen in ``fit`` (for a dict: features over all modalities).
    feature_names_in_ : ndarray of str
        Column names, when ``fit`` saw a DataFrame with string column names.
    modalities_ : dict of str to list or None
        The ``modalities`` mapping of ``fit``: prediction cuts a table with it, so
        ``set_params(modalities=...)`` takes effect at the next ``fit``.
    modality_shapes_ : dict of str to tuple
        Per-sample shape of each modality, in the order of ``fit``. At prediction, dict keys
        may come in any order, and an omitted key is that modality absent for every sample.
    trained_ : mlmm.TrainedModel
    modality_names_ : tuple of str

    Examples
    --------
    >>> import numpy as np, mlmm
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> X = {"a": y[:, None] + rng.normal(size=(200, 3)), "b": rng.normal(size=(200, 2))}
    >>> X["b"][:50] = np.nan                      # modality b missing in 50 samples
    >>> clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=5).fit(X, y)
    >>> clf.predict(X).shape
    (200,)
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # a 0/1 label matrix y is a multilabel task, for the methods that train for one
        tags.classifier_tags.multi_label = _trains_multilabel(self.method)
        return tags

    def fit(self, X: Any, y: Any) -> MissingModalityClassifier:
        """Fit on ``X`` (per-modality arrays, NaN rows = missing) and labels ``y``.

        A 2-D ``y`` of 0/1 with several columns (scikit-learn's label-indicator format) is a
        multilabel task: ``classes_`` is then ``0..L-1`` (or a DataFrame's column names),
        ``predict`` returns the 0/1 matrix and ``predict_proba`` each label's probability.
        """
        self._check_checkpoint_dir()  # before fit records anything of X or y
        try:
            shape = np.asarray(y).shape if y is not None else ()  # array-likes without ndim too
        except ValueError:  # ragged, e.g. a list of label sets
            raise MlmmError(
                "y holds rows of different lengths (label sets?); pass one label per sample, "
                "or a 0/1 label-indicator matrix (e.g. sklearn MultiLabelBinarizer) for multilabel"
            ) from None
        if len(shape) == 2 and shape[1] > 1:
            return self._fit_multilabel(X, y)
        y = _as_1d_target(y, "one class label per sample", type(self).__name__)
        _check_n_samples(len(y))
        self.classes_, encoded = _encode_classes(y)
        names = tuple(str(c) for c in self.classes_)
        self._fit(X, encoded, TaskSpec("classification", len(self.classes_), names))
        self.trained_.classes = self.classes_.tolist()  # the labels, for the saved model
        return self

    def _fit_multilabel(self, X: Any, y: Any) -> MissingModalityClassifier:
        columns = getattr(y, "columns", None)
        y = np.asarray(y)
        target_type = type_of_target(y, input_name="y")
        if target_type != "multilabel-indicator":
            raise MlmmError(
                f"a 2-D y must be a 0/1 label-indicator matrix (multilabel), got a "
                f"{target_type!r} target of shape {y.shape}; pass one label per sample as 1-D y, "
                "or wrap the estimator in sklearn.multioutput.MultiOutputClassifier"
            )
        _check_n_samples(len(y))
        names = [str(c) for c in columns] if columns is not None else []
        self.classes_ = np.asarray(names) if names else np.arange(y.shape[1])
        task = TaskSpec("multilabel", n_labels=y.shape[1], label_names=names)
        return self._fit(X, y.astype(np.float32), task)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[N, n_classes]`` in the order of ``classes_``; for a
        multilabel fit, each label's probability ``[N, n_labels]``."""
        return self._predict_raw(X)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values of ``classes_``), or for a multilabel fit the 0/1 label
        matrix ``[N, n_labels]`` (a label is on at probability >= 0.5)."""
        proba = self._predict_raw(X)  # as predict_proba: a column-name warning names the caller
        if self.trained_.task.is_multilabel:
            return (proba >= MULTILABEL_THRESHOLD).astype(np.int64)
        return self.classes_[proba.argmax(axis=1)]


class MissingModalityRegressor(RegressorMixin, _MissingModalityEstimator):
    """A regressor over several modalities, any of which may be missing (NaN rows).

    Same parameters as :class:`MissingModalityClassifier`; ``y`` holds real values. Target
    statistics are computed in float64 (targets near 1e20 are fine); targets beyond float32's
    range (3.4e38) are refused.

    Examples
    --------
    >>> import numpy as np, mlmm
    >>> rng = np.random.default_rng(0)
    >>> X = {"a": rng.normal(size=(200, 3)), "b": rng.normal(size=(200, 2))}
    >>> y = X["a"].sum(1) + 0.1 * rng.normal(size=200)
    >>> mlmm.MissingModalityRegressor(method="hemis", max_epochs=5).fit(X, y).predict(X).shape
    (200,)
    """

    def fit(self, X: Any, y: Any) -> MissingModalityRegressor:
        """Fit on ``X`` (per-modality arrays, NaN rows = missing) and real targets ``y``."""
        self._check_checkpoint_dir()  # before fit records anything of X
        y = _as_1d_target(y, "one value per sample", type(self).__name__)
        if y.dtype.kind == "c":
            raise MlmmError("Complex data not supported: y holds complex numbers; pass real ones")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise MlmmError(f"y must hold real numbers, got dtype {y.dtype}") from None
        if not np.isfinite(y).all():  # as the classifier words it (the dataset says "targets")
            bad = np.flatnonzero(~np.isfinite(y))
            raise MlmmError(
                f"y has {len(bad)} NaN or infinite value(s) (first rows: {bad[:5].tolist()}); "
                "drop those samples"
            )
        _check_n_samples(len(y))
        return self._fit(X, y, TaskSpec("regression"))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values."""
        return self._predict_raw(X)
