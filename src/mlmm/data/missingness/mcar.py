"""``mcar``: missing completely at random, one rate for all modalities or one per modality.

Every observed slot is dropped independently with a probability that depends on nothing but its
modality. The probabilities are calibrated so the expected realised rate matches the request
under the at-least-one-modality guarantee (see ``calibration``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import (
    MissingnessModel,
    as_float,
    check_rate,
    check_unit,
    column,
    format_number,
    join_spec,
    option_flag,
    option_value,
    parse_number,
    register_missingness,
)
from mlmm.data.missingness.calibration import (
    check_feasible,
    conditional_rates,
    draw_removal,
    logit,
    rate_in_unit,
    sigmoid,
    solve_increasing,
)
from mlmm.errors import MlmmError


@register_missingness
@dataclass(frozen=True)
class MCAR(MissingnessModel):
    """Missing completely at random.

    With one rate, a single drop probability ``p`` is shared by every slot and calibrated so
    that the expected rate in ``unit`` equals ``rate``. With per-modality rates, each
    modality's probability is calibrated (a monotone fixed-point iteration) so its expected
    rate, over the samples where it was observed, equals its requested rate; unlisted
    modalities are never removed.
    ``unit="samples"`` uses the same iid scheme, calibrated on the fraction of samples made
    incomplete (so an incomplete sample loses a random, possibly multi-modality subset).

    Parameters
    ----------
    rate : float or mapping of str to float
        In [0, 1). A mapping gives a rate per modality name (``unit`` must be "slots").
    unit : {"slots", "samples"}
        Rate definition: fraction of observed slots removed, or of samples made incomplete.
    allow_empty : bool
        Drop the at-least-one-modality guarantee (slots are then dropped fully independently).

    Examples
    --------
    >>> MCAR({"pix": 0.8, "fou": 0.2}).to_string()
    'mcar:pix=0.8,fou=0.2'
    """

    kind: ClassVar[str] = "mcar"
    description: ClassVar[str] = "missing completely at random (one rate, or one per modality)"
    example: ClassVar[str] = "mcar:0.5"
    option_names: ClassVar[tuple[str, ...]] = ("unit", "allow_empty")
    needs_argument: ClassVar[str] = "a missing rate (or name=rate pairs)"

    rate: float | tuple[tuple[str, float], ...]
    unit: str = "slots"
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.rate, (Mapping, tuple, list)):
            items = list(self.rate.items() if isinstance(self.rate, Mapping) else self.rate)
            example = "MCAR({'pix': 0.8, 'fou': 0.2})"
            if not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in items):
                got = " ".join(repr(self.rate).split())
                raise MlmmError(
                    f"per-modality rates are a dict of modality name -> rate (or name, rate "
                    f"pairs), got {got}; e.g. {example}"
                )
            names = [k for k, _ in items]
            # the spec string must read back: names are identifiers, each given once
            bad = [k for k in names if not (isinstance(k, str) and k.isidentifier())]
            if bad:
                raise MlmmError(
                    f"per-modality rates are keyed by modality names (letters, digits, _), "
                    f"got {bad[0]!r}; e.g. MCAR({{'pix': 0.8, 'fou': 0.2}})"
                )
            if len(set(names)) != len(names):
                twice = next(k for k in names if names.count(k) > 1)
                raise MlmmError(
                    f"modality {twice!r} is given twice in per-modality rates; give each once"
                )
            pairs = tuple((k, as_float(v, f"missing rate for {k!r}", example)) for k, v in items)
            object.__setattr__(self, "rate", pairs)
            for name, value in pairs:
                check_rate(value, self.to_string(), f"missing rate for {name!r}")
            if not pairs:
                raise MlmmError("per-modality rates are empty; give at least one name=rate")
            if self.unit != "slots":
                raise MlmmError(
                    f"per-modality rates count slots, so unit={self.unit} does not apply in "
                    f"{self.to_string()!r}; give one rate for unit=samples"
                )
        else:
            rate = as_float(self.rate, "missing rate", "MCAR(0.5)")
            object.__setattr__(self, "rate", rate)
            object.__setattr__(self, "rate", check_rate(rate, self.to_string()))
        check_unit(self.unit, self.to_string())

    @property
    def rates(self) -> dict[str, float] | None:
        """Per-modality rates, or None for a single rate."""
        return dict(self.rate) if isinstance(self.rate, tuple) else None

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        # all rows sharing an observed pattern share their probabilities: calibrate per pattern
        patterns, counts = np.unique(dataset.observed, axis=0, return_counts=True)
        counts = counts.astype(np.float64)
        if self.rates is None:
            theta = np.full(dataset.n_modalities, self._calibrate_global(patterns, counts))
        else:
            theta = self._calibrate_per_modality(dataset, patterns, counts)
        p = sigmoid(theta)[None, :].repeat(dataset.n_samples, axis=0)  # [N, M]
        return draw_removal(p, dataset.observed, self.allow_empty, rng)

    def _calibrate_global(self, patterns: np.ndarray, counts: np.ndarray) -> float:
        if self.rate == 0.0:
            return -np.inf
        droppable = np.ones(patterns.shape, dtype=bool)
        check_feasible(
            droppable, patterns, self.rate, self.unit, self.allow_empty, counts, self.to_string()
        )

        def expected(theta: float) -> float:
            p = np.full(patterns.shape, sigmoid(theta))
            drop, incomplete = conditional_rates(p, patterns, self.allow_empty)
            return rate_in_unit(drop, incomplete, patterns, self.unit, counts)

        return solve_increasing(expected, self.rate)

    def _calibrate_per_modality(
        self, dataset: MultimodalDataset, patterns: np.ndarray, counts: np.ndarray
    ) -> np.ndarray:
        target = np.zeros(dataset.n_modalities)
        for name, value in self.rate:
            target[column(dataset, name, self.to_string())] = value
        seen = (counts[:, None] * patterns).sum(axis=0)  # observed count per modality
        active = (target > 0) & (seen > 0)
        theta = np.where(active, logit(target), -np.inf)

        def realised(theta: np.ndarray) -> np.ndarray:
            p = np.broadcast_to(sigmoid(theta), patterns.shape)
            drop, _ = conditional_rates(p, patterns, self.allow_empty)
            return (counts[:, None] * drop).sum(axis=0) / np.maximum(seen, 1.0)

        # Within a pattern, the odds of dropping j given that the row keeps something are
        # odds(p_j) * (1 - prod_{k != j} p_k): logit(rate_j) has slope <= 1 in theta_j and falls
        # as the others rise. So theta += logit(target) - logit(rate) is a monotone map; from
        # the allow_empty solution (a lower bound) it climbs to the smallest solution, or to the
        # cap when there is none.
        for _ in range(10_000):
            got = realised(theta)
            error = np.abs(got - target)[active]
            if not active.any() or error.max() < 1e-10 or theta[active].max() >= 60.0:
                break
            step = logit(target[active]) - logit(got[active])
            theta[active] = np.minimum(theta[active] + step, 60.0)
        if active.any() and error.max() > 1e-4:
            reached = realised(theta)
            names = np.array(dataset.modality_names)[active]
            got = ", ".join(f"{n} {r:.3f}" for n, r in zip(names, reached[active], strict=True))
            raise MlmmError(
                f"per-modality rates in {self.to_string()!r} are infeasible while keeping at "
                f"least one modality per sample (closest found: {got}); lower them or add "
                f"':allow_empty'"
            )
        return theta

    def to_string(self) -> str:
        if isinstance(self.rate, tuple):
            argument = ",".join(f"{n}={format_number(r)}" for n, r in self.rate)
        else:
            argument = format_number(self.rate)
        options = [("unit", self.unit)] if self.unit != "slots" else []
        return join_spec("mcar", argument, options + [("allow_empty", True)] * self.allow_empty)

    @classmethod
    def from_parts(cls, argument, options, text) -> MCAR:
        unit = option_value(options, "unit", text) or "slots"
        check_unit(unit, text)
        allow_empty = option_flag(options, "allow_empty", text)
        if "=" not in argument:
            rate = check_rate(parse_number(argument, "missing rate", text), text)
            return cls(rate, unit=unit, allow_empty=allow_empty)
        rates: dict[str, float] = {}
        for item in argument.split(","):
            name, _, value = item.partition("=")
            if not name.isidentifier() or not value:
                raise MlmmError(
                    f"per-modality rates are name=rate pairs separated by ',', got {item!r} in "
                    f"{text!r}; e.g. 'mcar:pix=0.8,fou=0.2'"
                )
            if name in rates:
                raise MlmmError(f"modality {name!r} is given twice in {text!r}")
            rates[name] = check_rate(
                parse_number(value, f"missing rate for {name!r}", text),
                text,
                f"missing rate for {name!r}",
            )
        return cls(rates, unit=unit, allow_empty=allow_empty)
