"""scikit-learn style estimators: ``MissingModalityClassifier(method=...).fit(X, y).predict(X)``.

``X`` is one array per modality: a dict (or :class:`MultimodalArray`) of arrays, a pandas
DataFrame or a 2-D array with a ``modalities`` mapping from modality name to columns. A
modality whose row is entirely NaN is missing in that sample. The estimators pass through
``sklearn.base.clone`` and ``cross_val_score`` (wrap a dict in :class:`MultimodalArray`, or
use a DataFrame, so scikit-learn can index samples).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError as _SkNotFitted

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.frames import from_arrays
from mlmm.data.missingness import parse_condition, simulate
from mlmm.data.specs import TaskSpec
from mlmm.data.split import split_indices
from mlmm.errors import MlmmError, unknown_name_error
from mlmm.methods.registry import create_method
from mlmm.train.trainer import Trainer
from mlmm.utils import rng_for


class NotFittedError(MlmmError, _SkNotFitted):
    """``predict`` was called before ``fit`` (also a scikit-learn ``NotFittedError``)."""


class MultimodalArray:
    """A dict of per-modality arrays that scikit-learn can index along samples.

    ``MultimodalArray({"img": A, "txt": B})[idx]`` selects the same rows of every array, so
    ``cross_val_score`` and friends can split it.

    Examples
    --------
    >>> import numpy as np
    >>> X = MultimodalArray({"a": np.zeros((5, 2)), "b": np.ones((5, 3))})
    >>> X.shape, X[[0, 2]]["b"].shape
    ((5,), (2, 3))
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        arrays = {k: np.asarray(v) for k, v in data.items()}
        if not arrays:
            raise MlmmError("MultimodalArray needs at least one modality")
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise MlmmError(f"every modality needs the same number of samples, got {lengths}")
        self.data = arrays

    @property
    def shape(self) -> tuple[int]:
        return (len(next(iter(self.data.values()))),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.data[key]
        return MultimodalArray({k: v[key] for k, v in self.data.items()})

    def keys(self):
        return self.data.keys()

    def __repr__(self) -> str:
        return f"MultimodalArray({', '.join(f'{k}{list(v.shape)}' for k, v in self.data.items())})"


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
        seed: int = 0,
        device: str = "cpu",
        verbose: bool = False,
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
        self.seed = seed
        self.device = device
        self.verbose = verbose

    # ---------------------------------------------------------------- input
    def _inputs(self, X: Any) -> dict[str, np.ndarray]:
        """Per-modality float arrays from any accepted form of ``X``."""
        if isinstance(X, MultimodalArray):
            return {k: np.asarray(v, dtype=float) for k, v in X.data.items()}
        if isinstance(X, Mapping):
            return {k: np.asarray(v, dtype=float) for k, v in X.items()}
        if self.modalities is None:
            raise MlmmError(
                f"X is a {type(X).__name__}: pass a dict of arrays per modality, or set "
                f"modalities={{name: columns}} to cut a table into modalities"
            )
        if hasattr(X, "iloc"):
            out = {}
            for name, cols in self.modalities.items():
                unknown = [c for c in cols if c not in X.columns]
                if unknown:
                    raise unknown_name_error("column", str(unknown[0]), [str(c) for c in X.columns])
                out[name] = X[list(cols)].to_numpy(dtype=float)
            return out
        arr = np.asarray(X, dtype=float)
        if arr.ndim != 2:
            raise MlmmError(
                f"a plain array X must be 2-D (samples, features), got shape {arr.shape}"
            )
        return {name: arr[:, cols] for name, cols in self.modalities.items()}

    def _dataset(self, X: Any, targets: np.ndarray, task: TaskSpec) -> MultimodalDataset:
        return from_arrays(self._inputs(X), targets, task=task, name="estimator")

    def _check_fitted(self) -> None:
        if not hasattr(self, "trained_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X, y) before predicting"
            )

    # ---------------------------------------------------------------- fit
    def _fit(self, X: Any, targets: np.ndarray, task: TaskSpec):
        data = self._dataset(X, targets, task)
        condition = parse_condition(self.train_missing)
        if self.method == "auto":
            return self._fit_auto(data, condition)
        idx = split_indices(data, test_size=self.val_size, val_size=0.0, seed=self.seed)
        train, _ = simulate(
            data.subset(idx["train"]), condition.train, rng_for(self.seed, "train-mask")
        )
        val = None
        if len(idx["test"]):
            val, _ = simulate(
                data.subset(idx["test"]), condition.train, rng_for(self.seed, "val-mask")
            )
        model = create_method(self.method, data.specs, data.task, **(self.method_params or {}))
        trainer = Trainer(
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            patience=self.patience,
            device=self.device,
            seed=self.seed,
            progress=self.verbose,
        )
        self.trained_ = trainer.fit(model, train, val, info={"estimator": type(self).__name__})
        self.modality_names_ = data.modality_names
        self.n_modalities_in_ = data.n_modalities
        return self

    def _fit_auto(self, data: MultimodalDataset, condition):
        """``method="auto"``: :func:`mlmm.tune.auto.fit_auto` on all of ``data`` (its inner
        cross-validation replaces the validation split), ``method_params`` passed to it."""
        from mlmm.tune.auto import fit_auto

        train, _ = simulate(data, condition.train, rng_for(self.seed, "train-mask"))
        self.trained_ = fit_auto(
            train,
            **{
                "seed": self.seed,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "device": self.device,
                "progress": self.verbose,
                "info": {"estimator": type(self).__name__},
                **(self.method_params or {}),
            },
        )
        self.modality_names_ = data.modality_names
        self.n_modalities_in_ = data.n_modalities
        return self

    def _predict_raw(self, X: Any) -> np.ndarray:
        self._check_fitted()
        inputs = self._inputs(X)
        if tuple(inputs) != self.modality_names_:
            raise MlmmError(
                f"X has modalities {list(inputs)}, the model was fitted on {list(self.modality_names_)}"
            )
        n = len(next(iter(inputs.values())))
        task = self.trained_.task
        dummy = np.zeros(n, dtype=np.int64 if task.is_classification else float)
        return self.trained_.predict_raw(self._dataset(inputs, dummy, task))


class MissingModalityClassifier(ClassifierMixin, _MissingModalityEstimator):
    """A classifier over several modalities, any of which may be missing (NaN rows).

    Parameters
    ----------
    method : str, default "hemis"
        A registered method (``mlmm methods``), or ``"auto"``: a portfolio chosen by inner
        cross-validation on the training data and ensembled
        (:func:`mlmm.tune.auto.fit_auto`; ``max_epochs``, ``weight_decay``, ``patience`` and
        ``val_size`` then come from its budget).
    method_params : dict, optional
        The method's hyperparameters; with ``method="auto"``, keyword arguments of
        :func:`mlmm.tune.auto.fit_auto` (``budget``, ``folds``, ``portfolio``...).
    modalities : dict of str to columns, optional
        Needed when ``X`` is a DataFrame (column names) or a 2-D array (column indices).
    train_missing : str, default "none"
        Extra simulated missingness on the training data (e.g. ``"mcar:0.3"``), on top of the
        NaN rows it already has.
    max_epochs, batch_size, lr, weight_decay, patience :
        Passed to :class:`mlmm.Trainer`.
    val_size : float, default 0.1
        Fraction of the training data held out (stratified) for early stopping.
    seed : int, default 0
    device : str, default "cpu"
    verbose : bool, default False
        Show the progress bar.

    Attributes
    ----------
    classes_ : ndarray
        Class labels seen in ``fit``.
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

    def fit(self, X: Any, y: Any) -> MissingModalityClassifier:
        """Fit on ``X`` (per-modality arrays, NaN rows = missing) and labels ``y``."""
        y = np.asarray(y)
        if y.ndim != 1:
            raise MlmmError(f"y must be 1-D with one label per sample, got shape {y.shape}")
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise MlmmError(
                f"y has a single class {self.classes_.tolist()}; a classifier needs two or more"
            )
        task = TaskSpec("classification", len(self.classes_), tuple(str(c) for c in self.classes_))
        return self._fit(X, encoded, task)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[N, n_classes]`` in the order of ``classes_``."""
        return self._predict_raw(X)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values of ``classes_``)."""
        self._check_fitted()
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class MissingModalityRegressor(RegressorMixin, _MissingModalityEstimator):
    """A regressor over several modalities, any of which may be missing (NaN rows).

    Same parameters as :class:`MissingModalityClassifier`; ``y`` holds real values.

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
        y = np.asarray(y, dtype=float)
        if y.ndim != 1:
            raise MlmmError(f"y must be 1-D with one value per sample, got shape {y.shape}")
        return self._fit(X, y, TaskSpec("regression"))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values."""
        return self._predict_raw(X)
