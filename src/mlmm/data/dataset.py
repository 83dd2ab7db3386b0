"""``MultimodalDataset``: per-modality arrays, an ``observed`` mask, targets and specs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error


@dataclass(frozen=True, eq=False)
class MultimodalDataset:
    """A multimodal dataset in memory, validated on construction.

    Absent entries are stored as zeros and ``observed`` is the only truth about presence:
    no code may read an absent row as data. Construction zero-fills absent rows (so NaN is
    a fine way to hand them in) and rejects NaN or inf inside a row marked present.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities, in the fixed order used by ``observed`` columns and batches.
    task : TaskSpec
        Classification (integer targets ``0..K-1``) or regression (float targets).
    inputs : dict of str to ndarray
        ``inputs[name]`` has shape ``(N, *spec.shape)``; converted to float32.
    observed : ndarray of bool, shape (N, M), optional
        True where the modality was recorded. Default: everything observed.
    targets : ndarray, shape (N,)
    name : str
        Dataset name shown in reports.
    allow_empty : bool
        Accept samples with no modality observed. Off by default: such samples carry no
        information and most methods cannot score them.
    meta : dict
        Free-form extras (provenance, the synthetic generator, official splits...).
    groups : ndarray, shape (N,), optional
        A group id per sample (patient, subject, recording): splits
        (:func:`mlmm.train_val_test_split`) and the inner folds of tuning and ``auto`` then
        keep every group on one side. Carried by :meth:`subset`.
    lengths : dict of str to ndarray, shape (N,), optional
        Variable-length sequences: for a ``sequence`` modality, the number of valid time
        steps of each row (the first ``lengths[name][i]`` steps; the rest is padding, set to
        zero here). Every sequence encoder ignores the padded steps, so padding never changes
        an output. Present rows need at least one step. Carried by :meth:`subset`.

    Examples
    --------
    >>> import numpy as np
    >>> ds = MultimodalDataset(
    ...     specs=[ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))],
    ...     task=TaskSpec("classification", 2),
    ...     inputs={"a": np.ones((4, 2)), "b": np.zeros((4, 3))},
    ...     targets=np.array([0, 1, 0, 1]),
    ... )
    >>> ds.n_samples, ds.modality_names
    (4, ('a', 'b'))
    """

    specs: tuple[ModalitySpec, ...]
    task: TaskSpec
    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    observed: np.ndarray | None = None
    name: str = "custom"
    allow_empty: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None
    lengths: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        specs = tuple(self.specs)
        if not specs:
            raise MlmmError("a dataset needs at least one modality spec")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise MlmmError(f"modality names must be unique, got {names}")
        object.__setattr__(self, "specs", specs)
        if not isinstance(self.inputs, dict):
            raise MlmmError(
                f"inputs must be a dict of modality name -> array, got {type(self.inputs).__name__}"
            )
        for key in self.inputs:
            if key not in names:
                raise unknown_name_error("modality", key, names)
        for name in names:
            if name not in self.inputs:
                raise MlmmError(f"inputs has no array for modality {name!r}; add inputs[{name!r}]")

        targets = np.asarray(self.targets)
        n = len(targets) if targets.ndim > 0 else 0
        if n == 0:
            raise MlmmError("the dataset is empty (0 samples); pass at least one sample")
        if self.task.is_multilabel:
            if targets.ndim != 2 or targets.shape[1] != self.task.n_labels:
                raise MlmmError(
                    f"multilabel targets must be a multi-hot matrix [n_samples, "
                    f"{self.task.n_labels}] (one 0/1 column per label), got shape {targets.shape}"
                )
        elif targets.ndim != 1:
            raise MlmmError(
                f"targets must be 1-D with one value per sample, got shape {targets.shape}"
            )

        observed = as_observed(self.observed, n, names)

        inputs: dict[str, np.ndarray] = {}
        for j, spec in enumerate(specs):
            arr = np.asarray(self.inputs[spec.name])
            if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
                raise MlmmError(f"modality {spec.name!r} must be numeric, got dtype {arr.dtype}")
            if arr.shape != (n, *spec.shape):
                raise MlmmError(
                    f"modality {spec.name!r} has shape {arr.shape}, expected {(n, *spec.shape)} "
                    f"(n_samples, *spec.shape); fix the array or the ModalitySpec"
                )
            present = observed[:, j]
            source_finite = _finite_rows(arr.reshape(n, -1))[present]
            with np.errstate(over="ignore"):
                arr = arr.astype(np.float32, copy=True)
            bad = ~_finite_rows(arr.reshape(n, -1))[present]
            if (bad & source_finite).any():
                rows = np.flatnonzero(present)[bad & source_finite]
                raise MlmmError(
                    f"modality {spec.name!r} has values too large for float32 (beyond +-3.4e38) "
                    f"in {len(rows)} sample(s) (first: {rows[:5].tolist()}); rescale the feature"
                )
            if bad.any():
                rows = np.flatnonzero(present)[bad]
                raise MlmmError(
                    f"modality {spec.name!r} has NaN or inf in {len(rows)} sample(s) marked present "
                    f"(first: {rows[:5].tolist()}); clean them, or mark them absent (observed False, "
                    f"or a row that is NaN throughout for from_arrays and predict)"
                )
            arr[~present] = 0.0
            inputs[spec.name] = arr
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "observed", observed.copy())

        if self.task.is_multilabel:
            targets = _multi_hot(targets)
        elif self.task.is_classification:
            if not (np.issubdtype(targets.dtype, np.integer) or _is_integral(targets)):
                raise MlmmError(
                    "classification targets must be integers 0..n_classes-1; "
                    "encode string labels first (e.g. sklearn LabelEncoder)"
                )
            targets = targets.astype(np.int64)
            bad = (targets < 0) | (targets >= self.task.n_classes)
            if bad.any():
                raise MlmmError(
                    f"labels must be in 0..{self.task.n_classes - 1}, got "
                    f"{np.unique(targets[bad])[:5].tolist()}; fix the labels or TaskSpec.n_classes"
                )
        else:
            try:
                if targets.dtype.kind in "USV":  # strings, even "1.5", are not numbers
                    raise TypeError
                with np.errstate(over="ignore"):
                    wide = targets.astype(np.float64)
                    targets = wide.astype(np.float32)
            except (TypeError, ValueError):
                raise MlmmError(
                    f"regression targets must be numeric, got dtype {targets.dtype}; "
                    f"convert them to float first"
                ) from None
            if np.isfinite(wide).all() and not np.isfinite(targets).all():
                raise MlmmError(
                    "regression targets are too large for float32 (beyond +-3.4e38); rescale "
                    "them, e.g. fit on y / 1e30 and multiply the predictions back"
                )
            if not np.isfinite(targets).all():
                raise MlmmError("regression targets contain NaN or inf; drop those samples")
        object.__setattr__(self, "targets", targets)

        if self.groups is not None:
            object.__setattr__(self, "groups", _as_groups(self.groups, n))
        if self.lengths:
            object.__setattr__(self, "lengths", _as_lengths(self.lengths, specs, observed, inputs))
        else:
            object.__setattr__(self, "lengths", None)

        empty = ~observed.any(axis=1)
        if empty.any() and not self.allow_empty:
            raise MlmmError(
                f"{int(empty.sum())} sample(s) have no modality present (first: "
                f"{np.flatnonzero(empty)[:5].tolist()}); drop them or pass allow_empty=True"
            )

    # ------------------------------------------------------------------ views
    @property
    def n_samples(self) -> int:
        return len(self.targets)

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    @property
    def n_modalities(self) -> int:
        return len(self.specs)

    def spec(self, name: str) -> ModalitySpec:
        """The spec of modality ``name`` (unknown names raise with suggestions)."""
        for s in self.specs:
            if s.name == name:
                return s
        raise unknown_name_error("modality", name, self.modality_names)

    def modality_index(self, name: str) -> int:
        """Column of ``name`` in ``observed``."""
        return self.modality_names.index(self.spec(name).name)

    def subset(self, indices: Sequence[int] | np.ndarray) -> MultimodalDataset:
        """A new dataset holding the rows ``indices`` (in that order)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            inputs={k: v[idx] for k, v in self.inputs.items()},
            observed=self.observed[idx],
            targets=self.targets[idx],
            groups=None if self.groups is None else self.groups[idx],
            lengths=None if self.lengths is None else {k: v[idx] for k, v in self.lengths.items()},
        )

    def with_presence(
        self, present: np.ndarray, allow_empty: bool | None = None
    ) -> MultimodalDataset:
        """A new dataset whose ``observed`` is ``present`` (which must not add modalities)."""
        present = np.asarray(present, dtype=bool)
        if present.shape != self.observed.shape:
            raise MlmmError(f"presence mask shape {present.shape} != {self.observed.shape}")
        if (present & ~self.observed).any():
            raise MlmmError(
                "a presence mask cannot mark present a modality that was never observed"
            )
        return replace(
            self,
            observed=present,
            allow_empty=self.allow_empty if allow_empty is None else allow_empty,
        )

    def describe(self) -> dict[str, Any]:
        """Counts and rates, for listings and reports."""
        return {
            "name": self.name,
            "n_samples": self.n_samples,
            "modalities": {s.name: f"{s.kind}{list(s.shape)}" for s in self.specs},
            "task": self.task.kind,
            "n_classes": self.task.n_classes,
            **({"n_labels": self.task.n_labels} if self.task.is_multilabel else {}),
            "observed_rate": {
                s.name: float(self.observed[:, j].mean()) for j, s in enumerate(self.specs)
            },
        }

    def __len__(self) -> int:
        return self.n_samples

    def __repr__(self) -> str:
        mods = ", ".join(f"{s.name}:{s.kind}{list(s.shape)}" for s in self.specs)
        return (
            f"MultimodalDataset(name={self.name!r}, n={self.n_samples}, modalities=[{mods}], "
            f"task={self.task.kind}{'/' + str(self.task.output_dim) if self.task.output_dim > 1 else ''})"
        )


def as_observed(observed: object, n: int, names: Sequence[str]) -> np.ndarray:
    """Validate an observed mask (None = all observed) into a fresh ``[n, M]`` bool array."""
    if observed is None:
        return np.ones((n, len(names)), dtype=bool)
    mask = np.asarray(observed)
    if mask.shape != (n, len(names)):
        raise MlmmError(
            f"observed must have shape (n_samples, n_modalities) = {(n, len(names))} with "
            f"columns {list(names)}, got {mask.shape}"
        )
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise MlmmError("observed must be boolean (True = present)")
    return mask.astype(bool, copy=True)


def _finite_rows(flat: np.ndarray, block: int = 1024) -> np.ndarray:
    """``[N]`` True where a row of ``flat`` ``[N, F]`` is finite throughout, a block of rows
    at a time: indexing the present rows first copied the whole array (a 3 GB modality
    held two more copies while the dataset was built)."""
    finite = np.empty(len(flat), dtype=bool)
    for start in range(0, len(flat), block):
        finite[start : start + block] = np.isfinite(flat[start : start + block]).all(axis=1)
    return finite


def _multi_hot(targets: np.ndarray) -> np.ndarray:
    """Multilabel targets as a float32 0/1 matrix, refusing anything else in one line."""
    if targets.dtype == bool:
        return targets.astype(np.float32)
    if not np.issubdtype(targets.dtype, np.number):
        raise MlmmError(
            f"multilabel targets must be numbers 0/1, got dtype {targets.dtype}; encode each "
            f"label as a 0/1 column (e.g. sklearn MultiLabelBinarizer)"
        )
    bad = ~np.isin(targets, (0, 1))
    if bad.any():
        raise MlmmError(
            f"multilabel targets must be 0 or 1, got {np.unique(targets[bad])[:5].tolist()} in "
            f"{int(bad.any(axis=1).sum())} row(s); pass a multi-hot matrix (1 = has the label)"
        )
    return targets.astype(np.float32)


def _as_groups(groups: object, n: int) -> np.ndarray:
    """Per-sample group ids as a 1-D array of length ``n`` (numbers or strings, no NaN)."""
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != n:
        raise MlmmError(
            f"groups must hold one id per sample (shape ({n},)), got shape {arr.shape}; pass "
            "the patient or subject id of each row"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise MlmmError("groups contain NaN or inf; give every sample a group id")
    if arr.dtype.kind == "O":
        if any(g is None for g in arr):
            raise MlmmError("groups contain None; give every sample a group id")
        arr = arr.astype(str)
    return arr.copy()


def _as_lengths(
    lengths: object,
    specs: tuple[ModalitySpec, ...],
    observed: np.ndarray,
    inputs: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Validated per-row valid-step counts of sequence modalities; zeroes the padded steps
    of ``inputs`` in place (they are copies made by the constructor)."""
    if not isinstance(lengths, dict):
        raise MlmmError(
            f"lengths must be a dict of sequence modality -> steps per row, got "
            f"{type(lengths).__name__}"
        )
    by_name = {s.name: (j, s) for j, s in enumerate(specs)}
    out: dict[str, np.ndarray] = {}
    n = observed.shape[0]
    for name, values in lengths.items():
        if name not in by_name:
            raise unknown_name_error("modality", name, list(by_name))
        j, spec = by_name[name]
        if spec.kind != "sequence":
            raise MlmmError(
                f"lengths are for sequence modalities; {name!r} is a {spec.kind}: drop it from "
                "lengths"
            )
        arr = np.asarray(values)
        steps = spec.shape[0]
        if arr.shape != (n,) or not (np.issubdtype(arr.dtype, np.integer) or _is_integral(arr)):
            raise MlmmError(
                f"lengths[{name!r}] must hold one integer per sample (shape ({n},)), got "
                f"shape {arr.shape} dtype {arr.dtype}"
            )
        arr = arr.astype(np.int64)
        if (arr < 0).any() or (arr > steps).any():
            raise MlmmError(
                f"lengths[{name!r}] must be in [0, {steps}] (the padded length), got values "
                f"from {int(arr.min())} to {int(arr.max())}"
            )
        short = observed[:, j] & (arr == 0)
        if short.any():
            raise MlmmError(
                f"lengths[{name!r}] is 0 in {int(short.sum())} row(s) where {name!r} is present "
                f"(first: {np.flatnonzero(short)[:5].tolist()}); mark them absent in observed"
            )
        padded = np.arange(steps)[None, :] >= arr[:, None]  # [N, T]
        inputs[name][padded] = 0.0
        out[name] = arr
    return out


def _is_integral(values: np.ndarray) -> bool:
    if not np.issubdtype(values.dtype, np.floating):
        return False
    return bool(np.isfinite(values).all() and (values == np.round(values)).all())
