"""The missingness contract: ``MaskResult``, ``MissingnessModel`` and the ``MISSINGNESS`` registry.

Also the small pieces every model shares: turning a seed into a generator, reading the tokens
of a spec string, writing canonical numbers, and a standardised first-principal-component score
of a modality's values (the "value" that MAR and MNAR models condition on).
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.errors import MlmmError, did_you_mean, unknown_name_error
from mlmm.registry import Registry

UNITS = ("slots", "samples")
UNIT_MEANING = {
    "slots": "fraction of observed (sample, modality) slots removed",
    "samples": "fraction of samples made incomplete",
}
_REALISED = {"slots": "of observed slots removed", "samples": "of samples made incomplete"}
MAX_STRENGTH = 1e4  # logit slope per standard deviation; beyond it the odds are a hard threshold
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")

MISSINGNESS: Registry[type[MissingnessModel]] = Registry("missingness model")


@dataclass(frozen=True, eq=False)
class MaskResult:
    """What a missingness model did to a dataset, with the realised rates.

    Parameters
    ----------
    present : ndarray of bool, shape (N, M)
        Final presence: observed and not removed.
    removed : ndarray of bool, shape (N, M)
        Observed slots that the simulator removed.
    spec : str
        Canonical spec string of the model, e.g. ``"mcar:0.5"``.
    unit : {"slots", "samples"}
        Which rate definition the spec's rate uses (see ``docs/missingness.md``).
    modalities : tuple of str
        Column names of ``present`` and ``removed``.

    Examples
    --------
    >>> import numpy as np
    >>> r = MaskResult(np.array([[True, False], [True, True]]), np.array([[False, True],
    ...     [False, False]]), "mcar:0.25", "slots", ("a", "b"))
    >>> r.slot_rate, r.sample_rate, r.per_modality
    (0.25, 0.5, {'a': 0.0, 'b': 0.5})
    """

    present: np.ndarray
    removed: np.ndarray
    spec: str
    unit: str
    modalities: tuple[str, ...]

    def __post_init__(self) -> None:
        present, removed = np.asarray(self.present, bool), np.asarray(self.removed, bool)
        if present.shape != removed.shape or present.shape[1:] != (len(self.modalities),):
            raise MlmmError(
                f"present {present.shape} and removed {removed.shape} must both be "
                f"(n_samples, {len(self.modalities)})"
            )
        if (present & removed).any():
            raise MlmmError("a slot cannot be both present and removed")
        object.__setattr__(self, "present", present)
        object.__setattr__(self, "removed", removed)
        object.__setattr__(self, "modalities", tuple(self.modalities))

    @property
    def slot_rate(self) -> float:
        """Fraction of all (sample, modality) slots missing in ``present``."""
        return float((~self.present).mean())

    @property
    def sample_rate(self) -> float:
        """Fraction of samples with at least one modality missing in ``present``."""
        return float((~self.present.all(axis=1)).mean())

    @property
    def per_modality(self) -> dict[str, float]:
        """Missing fraction of each modality in ``present``."""
        return {m: float((~self.present[:, j]).mean()) for j, m in enumerate(self.modalities)}

    @property
    def realised_rate(self) -> float:
        """The realised value of what the spec's rate controls, in its ``unit``.

        ``slots``: removed / observed slots. ``samples``: among samples with at least one
        observed modality, the fraction that lost one. Equals ``slot_rate`` / ``sample_rate``
        when the dataset was fully observed.
        """
        observed = self.present | self.removed
        if self.unit == "samples":
            rows = observed.any(axis=1)
            return float(self.removed[rows].any(axis=1).mean()) if rows.any() else 0.0
        return float(self.removed.sum() / max(observed.sum(), 1))

    def summary(self) -> str:
        """One line: spec, what its rate means, realised slot, sample and per-modality rates."""
        kind = self.spec.split(":")[0]
        meaning = "no rate" if kind in ("none", "fixed") else f"rate = {UNIT_MEANING[self.unit]}"
        per = ", ".join(f"{m} {r:.1%}" for m, r in self.per_modality.items())
        line = (
            f"{self.spec} [{meaning}] realised: {self.slot_rate:.1%} slots, "
            f"{self.sample_rate:.1%} samples incomplete; {per}"
        )
        if not (self.present | self.removed).all():  # rates above include what was never observed
            line += f"; {self.realised_rate:.1%} {_REALISED[self.unit]}"
        return line

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no arrays) for run logs and result tables."""
        return {
            "spec": self.spec,
            "unit": self.unit,
            "slot_rate": self.slot_rate,
            "sample_rate": self.sample_rate,
            "per_modality": self.per_modality,
            "realised_rate": self.realised_rate,
        }


class MissingnessModel(abc.ABC):
    """A seeded, pure simulator that removes observed modalities from a dataset.

    Subclasses are frozen dataclasses (so equal specs compare equal) registered in
    ``MISSINGNESS`` under ``kind``. ``apply`` never touches global random state and never marks
    present a slot that was not observed.

    Attributes
    ----------
    kind : str
        Grammar keyword (``"mcar"``...).
    unit : {"slots", "samples"}
        Which rate definition the model's rate uses.
    allow_empty : bool
        If False (default) every sample that had an observed modality keeps at least one.
    """

    kind: ClassVar[str]
    description: ClassVar[str]
    example: ClassVar[str]
    option_names: ClassVar[tuple[str, ...]] = ()
    needs_argument: ClassVar[str] = ""  # what the first field must be, "" when none is taken
    unit: str = "slots"
    allow_empty: bool = False

    @abc.abstractmethod
    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        """Boolean ``[N, M]`` of observed slots to remove (the heart of each model)."""

    @abc.abstractmethod
    def to_string(self) -> str:
        """Canonical spec string; ``parse_missingness(m.to_string()) == m``."""

    @classmethod
    @abc.abstractmethod
    def from_parts(
        cls, argument: str | None, options: dict[str, str | None], text: str
    ) -> MissingnessModel:
        """Build from the parsed fields of ``text`` (used by ``parse_missingness``)."""

    def apply(self, dataset: MultimodalDataset, seed: int | np.random.Generator) -> MaskResult:
        """Draw which observed modalities go missing.

        Parameters
        ----------
        dataset : MultimodalDataset
        seed : int or numpy.random.Generator
            Same seed, same mask. A Generator is advanced in place.

        Returns
        -------
        MaskResult
        """
        if not isinstance(dataset, MultimodalDataset):
            raise MlmmError(
                f"missingness applies to a MultimodalDataset, got {type(dataset).__name__}; "
                f"convert it first (an out-of-core dataset: dataset.to_memory(), for data that fits)"
            )
        removed = self.removal(dataset, as_generator(seed)) & dataset.observed
        return MaskResult(
            present=dataset.observed & ~removed,
            removed=removed,
            spec=self.to_string(),
            unit=self.unit,
            modalities=dataset.modality_names,
        )

    def __str__(self) -> str:
        return self.to_string()


def register_missingness(cls: type[MissingnessModel]) -> type[MissingnessModel]:
    """Class decorator: register ``cls`` in ``MISSINGNESS`` under ``cls.kind``."""
    return MISSINGNESS.register(cls.kind, description=cls.description, example=cls.example)(cls)


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """A ``numpy.random.Generator`` from an int seed (or the Generator itself)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise MlmmError(
        f"seed must be a non-negative int or a numpy Generator, got {' '.join(repr(seed).split())}; "
        f"pass e.g. seed=0"
    )


def as_float(value: Any, what: str, example: str) -> float:
    """``float(value)``, or a one-line error naming ``what`` and an ``example`` call."""
    try:
        return float(value)
    except (TypeError, ValueError):
        got = " ".join(repr(value).split())  # one line, also for an array
        raise MlmmError(f"{what} must be a number, got {got}; e.g. {example}") from None


def column(dataset: MultimodalDataset, name: str, spec: str = "") -> int:
    """Index of modality ``name``; unknown names raise with the spec and the closest ones."""
    if name not in dataset.modality_names:
        if not spec:
            raise unknown_name_error("modality", name, dataset.modality_names)
        hint = did_you_mean(name, dataset.modality_names)
        raise MlmmError(f"unknown modality {name!r} in {spec!r}.{hint}")
    return dataset.modality_names.index(name)


# ---------------------------------------------------------------- spec-string tokens
def format_number(x: float) -> str:
    """Shortest text that reads back as the same float (``2.0`` -> ``"2"``)."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def join_spec(kind: str, argument: str | None, options: list[tuple[str, Any]]) -> str:
    """``kind[:argument][:key=value...]``; a value of True writes a bare flag ``:key``."""
    parts = [kind] + ([argument] if argument is not None else [])
    parts += [key if value is True else f"{key}={value}" for key, value in options]
    return ":".join(parts)


def parse_number(token: str, what: str, text: str) -> float:
    """Read a decimal number or raise naming ``what`` and the spec ``text``."""
    if not _NUMBER.fullmatch(token.strip()):
        raise MlmmError(f"{what} must be a number, got {token!r} in {text!r}")
    return float(token)


def check_rate(rate: float, text: str, what: str = "missing rate") -> float:
    """Return ``rate`` if it lies in [0, 1), else raise."""
    if not 0.0 <= rate < 1.0:
        raise MlmmError(
            f"{what} must be in [0, 1), got {format_number(rate)} in {text!r}; give a fraction "
            f"below 1 such as 0.5 (1 would remove every slot)"
        )
    return float(rate)


def check_unit(unit: str, text: str) -> str:
    """Return ``unit`` if it is a known rate unit, else raise."""
    if unit not in UNITS:
        raise MlmmError(f"unit must be 'slots' or 'samples', got {unit!r} in {text!r}")
    return unit


def option_value(options: dict[str, str | None], key: str, text: str) -> str | None:
    """The value of ``key=value`` (None when absent); a bare ``:key`` raises."""
    value = options.get(key)
    if key in options and not value:
        raise MlmmError(f"option {key!r} needs a value ({key}=...) in {text!r}")
    return value


def option_flag(options: dict[str, str | None], key: str, text: str) -> bool:
    """A flag written ``:key`` (or ``key=true|false``)."""
    if key not in options:
        return False
    value = (options[key] or "true").lower()
    if value not in ("true", "false"):
        raise MlmmError(f"{key} is a flag: write ':{key}', got '{key}={options[key]}' in {text!r}")
    return value == "true"


# ---------------------------------------------------------------- value scores
def first_pc_score(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Standardised projection of each sample on the first principal component.

    Parameters
    ----------
    values : ndarray, shape (N, *shape)
        One modality's values (flattened per sample).
    rows : ndarray of bool, shape (N,)
        Samples where the modality is observed; statistics use only these.

    Returns
    -------
    ndarray, shape (N,)
        Zero mean, unit variance over ``rows``; 0 elsewhere and for constant data. The
        component's sign is fixed so that its largest loading is positive (for a 1-D modality
        the score is the z-scored value itself). The direction is estimated on about 2000
        evenly spaced rows at most, plenty for a leading component.
    """
    score = np.zeros(len(values))
    fitted = FirstPCScore.fit(values, rows)
    if fitted is not None:
        score[rows] = fitted(values[rows])
    return score


@dataclass(frozen=True, eq=False)
class FirstPCScore:
    """The affine map of :func:`first_pc_score`, fitted on some rows, applicable to new values.

    ``score(x) = (x @ direction - mean @ direction - center) / spread``: the Bayes reference
    under MNAR (``mlmm.data.datasets.synthetic``) evaluates it on values it draws itself.

    Attributes
    ----------
    mean : ndarray, shape (D,)
        Mean of the fitted rows (float64).
    direction : ndarray, shape (D,)
        Unit first principal direction, sign fixed so its largest loading is positive.
    center, spread : float
        Mean and standard deviation of the fitted rows' projections.
    """

    mean: np.ndarray
    direction: np.ndarray
    center: float
    spread: float

    @classmethod
    def fit(cls, values: np.ndarray, rows: np.ndarray) -> FirstPCScore | None:
        """Fit on ``values[rows]``; None when fewer than two rows or constant projections."""
        x = values[rows].reshape(int(rows.sum()), -1)  # [n, D], kept in its own dtype (images)
        if len(x) < 2:
            return None
        mean = x.mean(axis=0, dtype=np.float64)
        fit = x[:: max(1, len(x) // 2000)] - mean  # the direction needs few rows
        if x.shape[1] == 1:
            direction = np.ones(1)
        elif x.shape[1] <= 32:
            direction = np.linalg.eigh(fit.T @ fit)[1][:, -1]
        else:  # power iteration (matrix-vector products only); a fixed start: deterministic
            direction = np.random.default_rng(0).standard_normal(x.shape[1])
            for _ in range(100):
                previous = direction
                direction = fit.T @ (fit @ direction)
                direction /= np.linalg.norm(direction) or 1.0
                if np.abs(direction - previous).max() < 1e-8:
                    break
        direction *= np.sign(direction[np.argmax(np.abs(direction))]) or 1.0
        s = x @ direction.astype(x.dtype) - mean @ direction
        spread = s.std()
        if spread <= 1e-12 * (np.abs(s).max() + 1e-300):
            return None
        return cls(mean, direction, float(s.mean()), float(spread))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Scores ``[n]`` of ``values`` ``[n, *shape]``."""
        x = values.reshape(len(values), -1)  # [n, D]
        s = x @ self.direction.astype(x.dtype) - self.mean @ self.direction
        return (s - self.center) / self.spread


# --------------------------------------------------------------- logistic models (mar, mnar)
def check_logistic(model: Any) -> None:
    """Validate the fields MAR and MNAR share (rate, strength, unit), normalising numbers."""
    name = type(model).__name__
    rate = as_float(model.rate, "missing rate", f"{name}(0.3)")
    object.__setattr__(model, "rate", rate)
    object.__setattr__(
        model, "strength", as_float(model.strength, "strength", f"{name}(0.3, strength=2)")
    )
    object.__setattr__(model, "rate", check_rate(rate, model.to_string()))
    if not abs(model.strength) <= MAX_STRENGTH:  # also refuses NaN
        raise MlmmError(
            f"strength must be a number in [-{format_number(MAX_STRENGTH)}, "
            f"{format_number(MAX_STRENGTH)}], got {model.strength} in {model.to_string()!r}"
        )
    check_unit(model.unit, model.to_string())


def logistic_options(model: Any) -> list[tuple[str, Any]]:
    """The shared options of a logistic model, defaults left out, in canonical order."""
    return [
        ("strength", format_number(model.strength) if model.strength != 2.0 else None),
        ("unit", model.unit if model.unit != "slots" else None),
        ("allow_empty", True if model.allow_empty else None),
    ]


def parse_logistic(
    argument: str | None, options: dict[str, str | None], text: str
) -> dict[str, Any]:
    """Keyword arguments shared by MAR and MNAR, parsed from a spec's argument and options."""
    strength = option_value(options, "strength", text)
    return {
        "rate": check_rate(parse_number(argument, "missing rate", text), text),
        "strength": 2.0 if strength is None else parse_number(strength, "strength", text),
        "unit": check_unit(option_value(options, "unit", text) or "slots", text),
        "allow_empty": option_flag(options, "allow_empty", text),
    }
