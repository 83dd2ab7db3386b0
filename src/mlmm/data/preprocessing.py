"""Standardisation fitted on the training split only, and only on entries that are present."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.errors import MlmmError

_MIN_STD = 1e-6
#: A spread under _MIN_STD that is also at most this share of the mean's magnitude is float32
#: rounding of a constant, not data (float32 resolves about 1e-7 of a value).
_REL_STD = 1e-6
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _spread(std: np.ndarray | float, mean: np.ndarray | float) -> np.ndarray:
    """``std`` with 1.0 where a column is constant: no spread (or one float32 cannot hold), or
    a spread under ``_MIN_STD`` that is rounding of its mean. A small spread around a small
    mean (values in units of 1e-9) is data, and is scaled: were it kept as it is, every
    method would see those features (or learn that target) as zeros."""
    std, mean = np.asarray(std, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    constant = (std < _FLOAT32_TINY) | ((std < _MIN_STD) & (std <= _REL_STD * np.abs(mean)))
    return np.where(constant, 1.0, std)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def absent_modality_error(name: str) -> MlmmError:
    """The one-line error for training data in which modality ``name`` is in no row."""
    return MlmmError(
        f"modality {name!r} is absent from every training sample, so it cannot be standardised "
        f"or learned; drop it or use a training missingness that keeps it"
    )


def _check_float32(mean: np.ndarray | float, std: np.ndarray | float, what: str) -> None:
    """Statistics are kept in float32 (artifacts, tensors): refuse what does not fit."""
    if not (np.all(np.abs(mean) <= _FLOAT32_MAX) and np.all(np.abs(std) <= _FLOAT32_MAX)):
        raise MlmmError(
            f"the values of {what} are too large for float32 (mean or spread beyond +-3.4e38); "
            "rescale them before training"
        )


def _check_standardised(x: np.ndarray, name: str) -> None:
    """Standardised values must fit the float32 tensors the model reads."""
    if not np.all(np.abs(x) <= _FLOAT32_MAX):
        raise MlmmError(
            f"modality {name!r} has values too large for float32 after standardisation "
            "(more than 3.4e38 training standard deviations from the training mean); rescale "
            "the inputs or check for corrupt values"
        )


def _feature_axes(kind: str, rank: int) -> tuple[int, ...]:
    """Axes (of a ``[N, *shape]`` array) averaged over: all but the feature/channel axis."""
    if kind == "vector":
        return (0,)
    if kind == "sequence":  # [N, T, C]: per channel
        return (0, 1)
    return (0, *range(2, rank))  # image [N, C, H, W]: per channel


@dataclass
class Standardizer:
    """Per-feature (vectors) or per-channel (sequences, images) z-scoring.

    Statistics come from the rows where a modality is present, in the data passed to
    :meth:`fit` (the training split); absent rows stay exactly zero after :meth:`transform`,
    which is also the mean of the standardised modality. Features with no spread, or one
    under 1e-6 that is float32 rounding of their mean (at most 1e-6 of it), are centred and
    left unscaled; a small spread around a small mean (data in units of 1e-9) is scaled. A
    modality whose spec says ``standardize=False`` (token ids, codes) keeps its values (mean
    0, scale 1); its absent rows are zero too. For regression the target is standardised too
    (by the same rule), and :meth:`inverse_target` maps predictions back.

    Attributes
    ----------
    mean_, std_ : dict of str to ndarray
        Fitted statistics, broadcastable to one sample of each modality.
    target_mean_, target_std_ : float
        Regression target statistics (0 and 1 for classification).
    """

    mean_: dict[str, np.ndarray] = field(default_factory=dict)
    std_: dict[str, np.ndarray] = field(default_factory=dict)
    target_mean_: float = 0.0
    target_std_: float = 1.0

    def fit(self, dataset: MultimodalDataset) -> Standardizer:
        """Fit statistics on the present entries of ``dataset``; returns ``self``.

        An out-of-core dataset (:mod:`mlmm.data.lazy`) is read in one streaming pass of
        chunks, with float64 running statistics merged per chunk (Chan et al.): the result
        matches the in-memory fit to float rounding.
        """
        if getattr(dataset, "out_of_core", False):
            return self._fit_streaming(dataset)
        for j, spec in enumerate(dataset.specs):
            present = dataset.observed[:, j]
            x = dataset.inputs[spec.name][present].astype(np.float64)
            if len(x) == 0:
                raise absent_modality_error(spec.name)
            axes = _feature_axes(spec.kind, x.ndim)
            if dataset.lengths is not None and spec.name in dataset.lengths:
                # variable-length sequences: statistics of the valid steps, not the padding
                steps = dataset.lengths[spec.name][present]  # [n]
                x = x[np.arange(x.shape[1])[None, :] < steps[:, None]][None]  # [1, valid, C]
            mean = x.mean(axis=axes, keepdims=True)[0]
            std = x.std(axis=axes, keepdims=True)[0]
            std = _spread(std, mean)
            if not spec.standardize:  # codes, not measurements: kept as they are
                mean, std = np.zeros_like(mean), np.ones_like(std)
            _check_float32(mean, std, f"modality {spec.name!r}")
            self.mean_[spec.name] = mean.astype(np.float32)
            self.std_[spec.name] = std.astype(np.float32)
        if dataset.task.is_regression:
            targets = dataset.targets.astype(np.float64)  # float32 squares overflow near 1e20
            self.target_mean_ = float(targets.mean())
            self.target_std_ = float(_spread(targets.std(), self.target_mean_))
            _check_float32(self.target_mean_, self.target_std_, "the regression target")
        return self

    def _fit_streaming(self, dataset: Any) -> Standardizer:
        """:meth:`fit` on an out-of-core dataset: one pass over chunks, float64 merges."""
        stats: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
        for positions, inputs in dataset.chunks():
            observed = dataset.observed[positions]
            for j, spec in enumerate(dataset.specs):
                x = inputs[spec.name][observed[:, j]].astype(np.float64)
                if not len(x):
                    continue
                if spec.kind == "image":  # [n, C, H, W] -> rows of C channels
                    x = np.moveaxis(x, 1, -1)
                flat = x.reshape(-1, x.shape[-1])  # [rows, features or channels]
                count, mean = float(len(flat)), flat.mean(axis=0)
                m2 = ((flat - mean) ** 2).sum(axis=0)
                if spec.name in stats:  # Chan et al.'s pairwise merge of (count, mean, M2)
                    n_a, mean_a, m2_a = stats[spec.name]
                    total = n_a + count
                    delta = mean - mean_a
                    mean = mean_a + delta * (count / total)
                    m2 = m2_a + m2 + delta**2 * (n_a * count / total)
                    count = total
                stats[spec.name] = (count, mean, m2)
        for spec in dataset.specs:
            if spec.name not in stats:
                raise absent_modality_error(spec.name)
            count, mean, m2 = stats[spec.name]
            std = np.sqrt(m2 / count)
            shape = {"vector": (-1,), "sequence": (1, -1), "image": (-1, 1, 1)}[spec.kind]
            mean, std = mean.reshape(shape), std.reshape(shape)
            std = _spread(std, mean)
            if not spec.standardize:
                mean, std = np.zeros_like(mean), np.ones_like(std)
            _check_float32(mean, std, f"modality {spec.name!r}")
            self.mean_[spec.name] = mean.astype(np.float32)
            self.std_[spec.name] = std.astype(np.float32)
        if dataset.task.is_regression:
            targets = dataset.targets.astype(np.float64)
            self.target_mean_ = float(targets.mean())
            self.target_std_ = float(_spread(targets.std(), self.target_mean_))
            _check_float32(self.target_mean_, self.target_std_, "the regression target")
        return self

    def transform_array(self, name: str, raw: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Standardise rows ``raw`` ``(k, *shape)`` of modality ``name``; absent rows become 0."""
        if name not in self.mean_:
            raise MlmmError(f"Standardizer was fitted without modality {name!r}")
        mean, std = self.mean_[name], self.std_[name]
        with np.errstate(over="ignore", invalid="ignore"):
            x = (raw - mean) / std
        x[~present] = 0.0
        if not np.isfinite(x).all():  # x - mean overflows float32 for inputs near +-3e38
            x = (raw.astype(np.float64) - mean) / std
            x[~present] = 0.0
            _check_standardised(x, name)
        return x.astype(np.float32)

    def transform(self, dataset: MultimodalDataset) -> MultimodalDataset:
        """Standardise present rows (absent rows and padded steps stay zero); returns a new
        dataset.

        For an out-of-core dataset this returns a view that standardises rows as they are
        read (nothing is read here).
        """
        if not self.mean_:
            raise MlmmError("Standardizer is not fitted; call fit(train_dataset) first")
        if getattr(dataset, "out_of_core", False):
            for spec in dataset.specs:
                if spec.name not in self.mean_:
                    raise MlmmError(f"Standardizer was fitted without modality {spec.name!r}")
            return dataset.with_standardizer(self, self._scaled_targets(dataset))
        inputs = {}
        for j, spec in enumerate(dataset.specs):
            if spec.name not in self.mean_:
                raise MlmmError(f"Standardizer was fitted without modality {spec.name!r}")
            inputs[spec.name] = self.transform_array(
                spec.name, dataset.inputs[spec.name], dataset.observed[:, j]
            )
        return replace(dataset, inputs=inputs, targets=self._scaled_targets(dataset))

    def _scaled_targets(self, dataset: Any) -> np.ndarray:
        targets = dataset.targets
        if dataset.task.is_regression:
            scaled = (targets.astype(np.float64) - self.target_mean_) / self.target_std_
            targets = scaled.astype(np.float32)
        return targets

    def fit_transform(self, dataset: MultimodalDataset) -> MultimodalDataset:
        return self.fit(dataset).transform(dataset)

    def inverse_target(self, values: np.ndarray) -> np.ndarray:
        """Map standardised regression predictions back to target units (computed in float64)."""
        return np.asarray(values, dtype=np.float64) * self.target_std_ + self.target_mean_

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (stored in a model artifact's config)."""
        return {
            "mean": {k: v.tolist() for k, v in self.mean_.items()},
            "std": {k: v.tolist() for k, v in self.std_.items()},
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        return cls(
            {k: np.asarray(v, dtype=np.float32) for k, v in d["mean"].items()},
            {k: np.asarray(v, dtype=np.float32) for k, v in d["std"].items()},
            float(d["target_mean"]),
            float(d["target_std"]),
        )
