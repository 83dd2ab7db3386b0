"""Search spaces: declared once, next to each method's hyperparameters.

A method lists the hyperparameters worth tuning as a class attribute, a plain mapping from
constructor argument to a range::

    @register_method("hemis", ...)
    class HeMIS(MissingModalityModel):
        \"\"\"...\"\"\"

        search_space = {
            "embed_dim": Int(16, 128, log=True),
            "dropout": Float(0.0, 0.6),
            "depth": Categorical([1, 2]),
        }

The same declaration is sampled by an Optuna trial (:meth:`Float.suggest`) during a study and
drawn from a NumPy generator (:meth:`Float.draw`) by the contract suite, which builds every
method at a few sampled points. This module imports neither torch nor Optuna, so method
modules can import it freely.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlmm.errors import MlmmError

#: Prefix of the trainer's parameters in a study (``trainer.lr``), so they never clash with a
#: method hyperparameter of the same name.
TRAINER_PREFIX = "trainer."


@dataclass(frozen=True)
class Float:
    """A real-valued hyperparameter in ``[low, high]``, uniform or log-uniform.

    Parameters
    ----------
    low, high : float
        Inclusive bounds, ``low < high``.
    log : bool, default False
        Sample ``log(value)`` uniformly (for scales: learning rates, loss weights); needs
        ``low > 0``.

    Examples
    --------
    >>> Float(1e-4, 1e-2, log=True).draw(np.random.default_rng(0)) < 1e-2
    True
    """

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_bounds(self, self.low, self.high, self.log)

    def suggest(self, trial: Any, name: str) -> float:
        """The value an Optuna ``trial`` suggests for ``name``."""
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def draw(self, rng: np.random.Generator) -> float:
        """A value drawn from ``rng`` with the same distribution."""
        if self.log:
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def corners(self) -> list[float]:
        """The bounds: the extreme points a contract check builds."""
        return [float(self.low), float(self.high)]

    def distribution(self) -> Any:
        """The matching ``optuna.distributions`` object (to replay stored trials)."""
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in ``[low, high]``, uniform or log-uniform.

    Parameters
    ----------
    low, high : int
        Inclusive bounds, ``low < high``.
    log : bool, default False
        Sample on a log scale (for widths: 16, 32, ... 256 equally likely per octave).

    Examples
    --------
    >>> 16 <= Int(16, 256, log=True).draw(np.random.default_rng(0)) <= 256
    True
    """

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, np.integer)):
                raise MlmmError(
                    f"Int bounds must be integers, got Int({self.low!r}, {self.high!r})"
                )
        _check_bounds(self, self.low, self.high, self.log)

    def suggest(self, trial: Any, name: str) -> int:
        """The value an Optuna ``trial`` suggests for ``name``."""
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def draw(self, rng: np.random.Generator) -> int:
        """A value drawn from ``rng`` with (nearly) the same distribution."""
        if self.log:
            value = np.exp(rng.uniform(np.log(self.low - 0.5), np.log(self.high + 0.5)))
            return int(min(max(round(value), self.low), self.high))
        return int(rng.integers(self.low, self.high + 1))

    def corners(self) -> list[int]:
        """The bounds: the extreme points a contract check builds."""
        return [int(self.low), int(self.high)]

    def distribution(self) -> Any:
        """The matching ``optuna.distributions`` object (to replay stored trials)."""
        from optuna.distributions import IntDistribution

        return IntDistribution(int(self.low), int(self.high), log=self.log)


@dataclass(frozen=True)
class Categorical:
    """One of a few choices (strings, numbers, booleans or None).

    Examples
    --------
    >>> Categorical(["mean", "cls"]).draw(np.random.default_rng(0)) in ("mean", "cls")
    True
    """

    choices: tuple[Any, ...]

    def __init__(self, choices: Sequence[Any]) -> None:
        choices = tuple(choices)
        if not choices:
            raise MlmmError("Categorical needs at least one choice, got []")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise MlmmError(
                    f"Categorical choices must be None, bool, int, float or str, got {choice!r}"
                )
        # by type too: 1, 1.0 and True are equal in Python but different choices
        if len({(type(c), c) for c in choices}) < len(choices):
            raise MlmmError(
                f"Categorical choices must differ, got {list(choices)!r}; give each choice once "
                f"(a repeated choice is sampled more often)"
            )
        object.__setattr__(self, "choices", choices)

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna ``trial`` suggests for ``name``."""
        return trial.suggest_categorical(name, self.choices)

    def draw(self, rng: np.random.Generator) -> Any:
        """A choice drawn uniformly from ``rng``."""
        return self.choices[int(rng.integers(len(self.choices)))]

    def corners(self) -> list[Any]:
        """The first and last choice: the points a contract check builds."""
        return [self.choices[0], self.choices[-1]]

    def distribution(self) -> Any:
        """The matching ``optuna.distributions`` object (to replay stored trials)."""
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(self.choices)


Dimension = Float | Int | Categorical


def _check_bounds(dim: Any, low: float, high: float, log: bool) -> None:
    name = type(dim).__name__
    if not np.isfinite(low) or not np.isfinite(high) or not low < high:
        raise MlmmError(
            f"{name} needs finite bounds with low < high, got {name}({low!r}, {high!r})"
        )
    if log and low <= 0:
        raise MlmmError(
            f"{name}(log=True) needs low > 0, got {name}({low!r}, {high!r}, log=True); "
            f"use a positive lower bound or log=False"
        )


#: The shared trainer's parameters (:class:`mlmm.Trainer`), tuned with every method that trains
#: by gradient; the reference family (fitted by scikit-learn) tunes only its own space.
TRAINER_SPACE: dict[str, Dimension] = {
    "lr": Float(1e-4, 1e-2, log=True),
    "weight_decay": Float(1e-6, 1e-2, log=True),
    "batch_size": Categorical([32, 64, 128]),
}


def method_parameters(cls: type) -> list[str]:
    """The constructor hyperparameters of a method class (what a space may name)."""
    return [
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "specs", "task") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def check_space(
    method: str,
    space: Mapping[str, Any],
    parameters: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Raise a one-line :class:`MlmmError` unless every name of ``space`` is one of the
    method's ``parameters`` and every value is a :class:`Float`, :class:`Int` or
    :class:`Categorical`; with ``defaults`` (parameter -> default), an :class:`Int` range
    for a parameter whose default is a real is refused too (``{low: 1, high: 10}`` written
    for a real would search only its integers)."""
    defaults = defaults or {}
    for name, dim in space.items():
        if name not in parameters:
            raise MlmmError(
                f"the search space of method {method!r} names {name!r}, which is not one of its "
                f"parameters: {', '.join(parameters)}; remove it or fix its spelling"
            )
        if not isinstance(dim, (Float, Int, Categorical)):
            raise MlmmError(
                f"the search space of method {method!r} gives {name!r} as {dim!r}; use "
                f"Float(low, high), Int(low, high) or Categorical([...]) from mlmm.tune.space"
            )
        if isinstance(dim, Int) and isinstance(defaults.get(name), float):
            raise MlmmError(
                f"the search space of method {method!r} gives {name!r} as {dim!r}, integers "
                f"only, but {name} is a real (default {defaults[name]!r}); write real bounds: "
                f"{name}={{low: {float(dim.low)!r}, high: {float(dim.high)!r}}} or "
                f"Float({float(dim.low)!r}, {float(dim.high)!r})"
            )


def dimension_from_plain(value: Any, name: str) -> Dimension:
    """A dimension written as plain data (YAML, a command line): a list of choices is a
    :class:`Categorical`; a mapping ``{low, high}`` with optional ``log`` is an :class:`Int`
    when both bounds are integers, else a :class:`Float`.

    Examples
    --------
    >>> dimension_from_plain({"low": 1e-4, "high": 1e-2, "log": True}, "lr")
    Float(low=0.0001, high=0.01, log=True)
    >>> dimension_from_plain({"low": 8, "high": 64}, "embed_dim")
    Int(low=8, high=64, log=False)
    >>> dimension_from_plain(["mean", "cls"], "pooling")
    Categorical(choices=('mean', 'cls'))
    """
    try:  # the dimension's own errors (low >= high, no choices) name the search space too
        if isinstance(value, (list, tuple)):
            return Categorical(value)
        if isinstance(value, Mapping) and {"low", "high"} <= set(value) <= {"low", "high", "log"}:
            low, high, log = value["low"], value["high"], value.get("log", False)
            if not isinstance(log, bool):
                raise MlmmError(f"log must be true or false, got {log!r}")
            bounds = (low, high)
            if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
                return Int(low, high, log=log)
            if all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds):
                return Float(float(low), float(high), log=log)
    except MlmmError as err:
        raise MlmmError(f"search space {name!r}: {err}") from None
    # YAML reads {low:1, high:8} (no space after the colons) as two keys "low:1", "high:8"
    colon = isinstance(value, Mapping) and any(":" in str(k) for k in value)
    raise MlmmError(
        f"search space {name!r} must be a list of choices ([a, b]) or a range "
        f"({{low: 1, high: 8}}, integers; {{low: 1e-4, high: 1e-2, log: true}}), got {value!r}"
        + ("; put a space after each colon" if colon else "")
    )


def suggest(space: Mapping[str, Dimension], trial: Any, prefix: str = "") -> dict[str, Any]:
    """Every dimension of ``space`` suggested by an Optuna ``trial`` (names given ``prefix``
    in the study, returned without it)."""
    return {name: dim.suggest(trial, prefix + name) for name, dim in space.items()}


def draw(space: Mapping[str, Dimension], rng: np.random.Generator) -> dict[str, Any]:
    """One point of ``space`` drawn from ``rng`` (no Optuna needed)."""
    return {name: dim.draw(rng) for name, dim in space.items()}


def distributions(space: Mapping[str, Dimension], prefix: str = "") -> dict[str, Any]:
    """``{prefix + name: optuna distribution}`` for replaying stored trials."""
    return {prefix + name: dim.distribution() for name, dim in space.items()}


def describe(space: Mapping[str, Dimension]) -> dict[str, str]:
    """A JSON-ready description of a space (stored with a study: a changed space is a new
    study)."""
    return {name: repr(dim) for name, dim in space.items()}
