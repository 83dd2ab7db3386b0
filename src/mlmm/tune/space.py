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
from collections.abc import Callable, Mapping, Sequence
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


@dataclass(frozen=True)
class When:
    """A dimension searched only where earlier ones took given values (a conditional
    hyperparameter: the number of heads only with attention fusion). Where the condition does
    not hold the trial leaves the hyperparameter out, so the method keeps its default.

    Parameters
    ----------
    dim : Float, Int or Categorical
        The range searched where the condition holds.
    condition : dict
        ``name -> value`` or ``name -> [values]``: dimensions listed *before* this one in the
        same space, and the value(s) of each that switch this one on (all must hold).

    Examples
    --------
    >>> space = {"fusion": Categorical(["concat", "attention"]),
    ...          "n_heads": When(Categorical([2, 4]), {"fusion": "attention"})}
    >>> draw(space, np.random.default_rng(0))
    {'fusion': 'attention', 'n_heads': 4}
    >>> draw(space, np.random.default_rng(1))
    {'fusion': 'concat'}
    """

    dim: Float | Int | Categorical
    condition: tuple[tuple[str, tuple[Any, ...]], ...]

    def __init__(self, dim: Float | Int | Categorical, condition: Mapping[str, Any]) -> None:
        if not isinstance(dim, (Float, Int, Categorical)):
            raise MlmmError(
                f"When needs a Float, Int or Categorical to search, got {dim!r}; nest no When"
            )
        if not isinstance(condition, Mapping) or not condition:
            raise MlmmError(
                f"When needs a condition {{name: value}} on an earlier dimension, got {condition!r}"
            )
        pairs = []
        for name, values in condition.items():
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            if not values:
                raise MlmmError(f"When's condition on {name!r} lists no value; give one or more")
            pairs.append((str(name), values))
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "condition", tuple(pairs))

    def holds(self, point: Mapping[str, Any]) -> bool:
        """Whether ``point`` (the values chosen so far) switches this dimension on."""
        return all(
            name in point and any(_same(point[name], v) for v in values)
            for name, values in self.condition
        )

    def suggest(self, trial: Any, name: str) -> Any:
        """The value an Optuna ``trial`` suggests for ``name`` (call only where it holds)."""
        return self.dim.suggest(trial, name)

    def draw(self, rng: np.random.Generator) -> Any:
        """A value drawn from ``rng`` (call only where the condition holds)."""
        return self.dim.draw(rng)

    def corners(self) -> list[Any]:
        """The searched range's corners."""
        return self.dim.corners()

    def distribution(self) -> Any:
        """The searched range's ``optuna.distributions`` object."""
        return self.dim.distribution()

    def __repr__(self) -> str:
        condition = {name: list(values) for name, values in self.condition}
        return f"When({self.dim!r}, {condition!r})"


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type (``1``, ``1.0`` and ``True`` are different choices)."""
    return type(a) is type(b) and a == b


Dimension = Float | Int | Categorical | When


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
    fixed: Mapping[str, Any] | None = None,
) -> None:
    """Raise a one-line :class:`MlmmError` unless every name of ``space`` is one of the
    method's ``parameters`` and every value is a :class:`Float`, :class:`Int` or
    :class:`Categorical`; with ``defaults`` (parameter -> default), an :class:`Int` range
    for a parameter whose default is a real is refused too (``{low: 1, high: 10}`` written
    for a real would search only its integers). A :class:`When` may name a ``fixed``
    hyperparameter (held at one value, so out of the space) as well as earlier dimensions."""
    defaults = defaults or {}
    for name, dim in space.items():
        if name not in parameters:
            raise MlmmError(
                f"the search space of method {method!r} names {name!r}, which is not one of its "
                f"parameters: {', '.join(parameters)}; remove it or fix its spelling"
            )
        if not isinstance(dim, (Float, Int, Categorical, When)):
            raise MlmmError(
                f"the search space of method {method!r} gives {name!r} as {dim!r}; use "
                f"Float(low, high), Int(low, high) or Categorical([...]) from mlmm.tune.space"
            )
        if isinstance(dim, When):
            _check_condition(method, space, name, dim, fixed or {})
            dim = dim.dim
        if isinstance(dim, Int) and isinstance(defaults.get(name), float):
            raise MlmmError(
                f"the search space of method {method!r} gives {name!r} as {dim!r}, integers "
                f"only, but {name} is a real (default {defaults[name]!r}); write real bounds: "
                f"{name}={{low: {float(dim.low)!r}, high: {float(dim.high)!r}}} or "
                f"Float({float(dim.low)!r}, {float(dim.high)!r})"
            )


def _check_condition(
    method: str, space: Mapping[str, Any], name: str, dim: When, fixed: Mapping[str, Any]
) -> None:
    """A :class:`When` may name only dimensions before it, with values they can take: a
    :class:`Categorical`'s choices or an :class:`Int`'s integers; a :class:`Float` takes no
    given value (the condition would never hold)."""
    before = list(space)[: list(space).index(name)]
    for parent, values in dim.condition:
        if parent in fixed and parent not in before:
            continue  # held at one value: the condition holds in every trial or in none
        if parent not in before:
            raise MlmmError(
                f"the search space of method {method!r} makes {name!r} depend on {parent!r}, "
                f"which is not a dimension before it (before it: {', '.join(before) or 'none'}); "
                f"list {parent!r} first in the space"
            )
        given = space[parent].dim if isinstance(space[parent], When) else space[parent]
        if isinstance(given, Categorical):
            lacking = [v for v in values if not any(_same(v, c) for c in given.choices)]
            if lacking:
                raise MlmmError(
                    f"the search space of method {method!r} switches {name!r} on at {parent}="
                    f"{lacking[0]!r}, which is not one of its choices {list(given.choices)!r}; "
                    f"use one of them"
                )
        elif isinstance(given, Int):
            lacking = [
                v
                for v in values
                if isinstance(v, bool)
                or not isinstance(v, (int, np.integer))
                or not given.low <= v <= given.high
            ]
            if lacking:
                raise MlmmError(
                    f"the search space of method {method!r} switches {name!r} on at {parent}="
                    f"{lacking[0]!r}, which {given!r} never takes; use integers from "
                    f"{given.low} to {given.high}"
                )
        else:
            raise MlmmError(
                f"the search space of method {method!r} switches {name!r} on at given values "
                f"of {parent!r}, a range of reals ({given!r}) that takes no given value; "
                f"condition on a Categorical or Int dimension"
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
    if isinstance(value, Mapping) and "when" in value:  # a conditional dimension
        rest = {k: v for k, v in value.items() if k != "when"}
        if set(rest) == {"choices"}:
            rest = rest["choices"]
        try:
            return When(dimension_from_plain(rest, name), value["when"])
        except MlmmError as err:
            message = str(err)
            if message.startswith("search space"):
                raise
            raise MlmmError(f"search space {name!r}: {message}") from None
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


def suggest(
    space: Mapping[str, Dimension],
    trial: Any,
    prefix: str = "",
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every dimension of ``space`` suggested by an Optuna ``trial`` (names given ``prefix``
    in the study, returned without it), in order; a :class:`When` whose condition does not
    hold (on the values suggested before it, or ``fixed`` ones) is left out."""
    return _point(space, lambda name, dim: dim.suggest(trial, prefix + name), fixed)


def draw(space: Mapping[str, Dimension], rng: np.random.Generator) -> dict[str, Any]:
    """One point of ``space`` drawn from ``rng`` (no Optuna needed), in order; a
    :class:`When` whose condition does not hold is left out."""
    return _point(space, lambda name, dim: dim.draw(rng))


def corner(
    space: Mapping[str, Dimension], end: int, fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The low (``end=0``) or high (``end=-1``) corner of ``space``: each dimension at that
    end, a :class:`When` only where its condition holds there (or on ``fixed`` values)."""
    return _point(space, lambda name, dim: dim.corners()[end], fixed)


def _point(
    space: Mapping[str, Dimension],
    value: Callable[[str, Dimension], Any],
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``name -> value(name, dim)`` over ``space`` in order, leaving out each :class:`When`
    whose condition does not hold on the values before it (and ``fixed`` ones)."""
    point: dict[str, Any] = {}
    for name, dim in space.items():
        if not isinstance(dim, When) or dim.holds({**(fixed or {}), **point}):
            point[name] = value(name, dim)
    return point


def distributions(space: Mapping[str, Dimension], prefix: str = "") -> dict[str, Any]:
    """``{prefix + name: optuna distribution}`` for replaying stored trials."""
    return {prefix + name: dim.distribution() for name, dim in space.items()}


def describe(space: Mapping[str, Dimension]) -> dict[str, str]:
    """A JSON-ready description of a space (stored with a study: a changed space is a new
    study)."""
    return {name: repr(dim) for name, dim in space.items()}
