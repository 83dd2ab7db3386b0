"""Calibration maths shared by the rate-driven models (mcar, mar, mnar).

These models drop each observed slot independently with probability
``P[i, j] = sigmoid(theta + offset[i, j])`` (``offset = -inf``: never dropped). Unless
``allow_empty``, a row whose observed modalities were all dropped is redrawn whole (rejection),
so the drops follow the independent law conditioned on "the row keeps something". With
``Q_i = prod_{k observed} P_ik`` that law has closed-form moments::

    E[drop_ij | kept something]    = (P_ij - Q_i) / (1 - Q_i)
    P(incomplete | kept something) = 1 - prod_k (1 - P_ik) / (1 - Q_i)

and both rise with ``theta`` (an exponential tilt of the number of drops), so ``theta`` is found
by a bracketed root search so that the rate matches the request in expectation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlmm.data.missingness.base import UNIT_MEANING, format_number
from mlmm.errors import MlmmError

MAX_P = 1.0 - 1e-9  # keeps 1 - Q_i > 0, so the conditional law is always defined
_REJECTION_ROUNDS = 100
RATE_TOLERANCE = 1e-4  # calibrated expected rate vs the request


def sigmoid(x: np.ndarray | float) -> np.ndarray:
    """Logistic function, exact at +-inf."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def conditional_rates(
    p: np.ndarray, observed: np.ndarray, allow_empty: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Expected drops ``[K, M]`` and incompleteness ``[K]`` given that the row was accepted."""
    p = np.where(observed, np.minimum(p, MAX_P), 0.0)
    nonempty = observed.any(axis=1)
    q, none_dropped = nonempty.astype(np.float64), np.ones(len(p))
    for j in range(p.shape[1]):  # column loops: reductions over a short axis are slow in numpy
        q *= np.where(observed[:, j], p[:, j], 1.0)
        none_dropped *= 1.0 - p[:, j]
    if allow_empty:
        q[:] = 0.0
    accepted = 1.0 - q
    drop = np.where(observed, np.maximum(p - q[:, None], 0.0) / accepted[:, None], 0.0)  # [K, M]
    incomplete = np.where(nonempty, np.maximum(1.0 - none_dropped / accepted, 0.0), 0.0)
    return drop, incomplete


def rate_in_unit(
    drop: np.ndarray, incomplete: np.ndarray, observed: np.ndarray, unit: str, weights: np.ndarray
) -> float:
    """Expected rate in ``unit`` from :func:`conditional_rates` (rows weighted by ``weights``)."""
    # elementwise sums, not ``@``: BLAS calls on long vectors can be slow under thread contention
    if unit == "slots":
        return float(
            (weights[:, None] * drop).sum() / max((weights[:, None] * observed).sum(), 1e-300)
        )
    rows = observed.any(axis=1)
    return float((weights * incomplete)[rows].sum() / max(weights[rows].sum(), 1e-300))


def max_rate(
    droppable: np.ndarray, observed: np.ndarray, unit: str, allow_empty: bool, weights: np.ndarray
) -> float:
    """Supremum of the reachable rate as ``theta -> inf`` (only ``droppable`` slots can go)."""
    m, d = observed.sum(axis=1), (droppable & observed).sum(axis=1)
    if unit == "slots":
        most = d if allow_empty else np.where(d == m, np.maximum(m - 1, 0), d)
        return float((weights * most).sum() / max((weights * m).sum(), 1e-300))
    rows = m > 0
    can = (d > 0) & (allow_empty | (m >= 2))
    return float((weights * can)[rows].sum() / max(weights[rows].sum(), 1e-300))


def logit(x: np.ndarray | float) -> np.ndarray:
    """Log-odds; -inf at 0 and +inf at 1."""
    with np.errstate(divide="ignore"):
        return np.log(x) - np.log1p(-np.asarray(x, dtype=np.float64))


def solve_increasing(
    f: Callable[[float], float], target: float, lo: float = -60.0, hi: float = 60.0
) -> float:
    """``theta`` in ``[lo, hi]`` with ``f(theta) = target`` for increasing ``f`` valued in (0, 1).

    Regula falsi (Illinois variant) on ``logit(f) - logit(target)``, which is close to linear
    in ``theta`` for these models, so a handful of evaluations suffice; it falls back to
    bisection steps when the interpolation is not usable. Stays bracketed, hence safe.
    """
    goal = logit(target)

    def gap(theta: float) -> float:
        return float(logit(f(theta)) - goal)

    g_lo, g_hi, last = gap(lo), gap(hi), 0
    if g_lo >= 0:
        return lo
    if g_hi <= 0:
        return hi
    for _ in range(200):
        mid = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
        if not (np.isfinite(mid) and lo < mid < hi):
            mid = 0.5 * (lo + hi)
        g_mid = gap(mid)
        if abs(g_mid) < 1e-12 or hi - lo < 1e-12:
            return mid
        if g_mid < 0:
            lo, g_lo = mid, g_mid
            g_hi = g_hi / 2 if last < 0 else g_hi  # Illinois: stop the stale end from sticking
            last = -1
        else:
            hi, g_hi = mid, g_mid
            g_lo = g_lo / 2 if last > 0 else g_lo
            last = 1
    return mid


def draw_removal(
    p: np.ndarray, observed: np.ndarray, allow_empty: bool, rng: np.random.Generator
) -> np.ndarray:
    """Independent drops with probabilities ``p``; rows left empty are redrawn whole.

    After ``_REJECTION_ROUNDS`` rounds the few rows still empty (only when ``Q_i`` is close to 1)
    are drawn column by column from the same conditional law, exactly, instead of looping on.
    """
    p = np.where(observed, np.minimum(p, MAX_P), 0.0)
    removed = (rng.random(p.shape) < p) & observed
    if allow_empty:
        return removed
    todo = np.flatnonzero(observed.any(axis=1) & ~(observed & ~removed).any(axis=1))
    for _ in range(_REJECTION_ROUNDS):
        if todo.size == 0:
            return removed
        removed[todo] = (rng.random((todo.size, p.shape[1])) < p[todo]) & observed[todo]
        todo = todo[~(observed[todo] & ~removed[todo]).any(axis=1)]
    if todo.size:
        removed[todo] = _draw_keeping_one(p[todo], observed[todo], rng)
    return removed


def _draw_keeping_one(p: np.ndarray, observed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact sequential draw of independent drops conditioned on one observed slot kept."""
    n, m = p.shape
    tail = np.ones((n, m + 1))  # tail[:, k] = prod of p over observed columns >= k
    tail[:, :m] = np.cumprod(np.where(observed, p, 1.0)[:, ::-1], axis=1)[:, ::-1]
    removed = np.zeros((n, m), dtype=bool)
    all_dropped = np.ones(n, dtype=bool)
    for k in range(m):
        rest = tail[:, k + 1]
        given_all_dropped = p[:, k] * (1.0 - rest) / (1.0 - p[:, k] * rest)
        pk = np.where(all_dropped, given_all_dropped, p[:, k])
        removed[:, k] = (rng.random(n) < pk) & observed[:, k]
        all_dropped &= removed[:, k] | ~observed[:, k]
    return removed


def calibrated_removal(
    offsets: np.ndarray,
    observed: np.ndarray,
    rate: float,
    unit: str,
    allow_empty: bool,
    rng: np.random.Generator,
    spec: str,
    never_removed: str = "",
) -> np.ndarray:
    """Calibrate ``theta`` so the expected rate in ``unit`` is ``rate``, then draw the removal.

    Parameters
    ----------
    offsets : ndarray, shape (N, M)
        Per-slot logit offsets; ``-inf`` marks slots the model never removes.
    observed : ndarray of bool, shape (N, M)
    rate, unit, allow_empty :
        The request.
    rng : numpy.random.Generator
    spec : str
        Canonical spec, quoted in errors.
    never_removed : str
        Why some slots are never removed (e.g. "the driver 'a' is never removed"), for errors.

    Returns
    -------
    ndarray of bool, shape (N, M)
    """
    if rate == 0.0:
        return np.zeros(observed.shape, dtype=bool)
    theta = calibrate_theta(offsets, observed, rate, unit, allow_empty, spec, never_removed)
    return draw_removal(sigmoid(theta + offsets), observed, allow_empty, rng)


def calibrate_theta(
    offsets: np.ndarray,
    observed: np.ndarray,
    rate: float,
    unit: str,
    allow_empty: bool,
    spec: str,
    never_removed: str = "",
) -> float:
    """The ``theta`` of :func:`calibrated_removal`: the expected rate in ``unit`` of drops
    with probabilities ``sigmoid(theta + offsets)`` is ``rate`` (``-inf`` for rate 0).
    Raises the one-line infeasibility error of :func:`check_feasible`."""
    if rate == 0.0:
        return -np.inf
    weights = np.ones(len(observed))
    droppable = offsets > -np.inf
    check_feasible(droppable, observed, rate, unit, allow_empty, weights, spec, never_removed)

    def expected(theta: float) -> float:
        drop, incomplete = conditional_rates(sigmoid(theta + offsets), observed, allow_empty)
        return rate_in_unit(drop, incomplete, observed, unit, weights)

    # the bracket must reach past every offset, or strong dependence (offsets of +-600 for
    # strength=200) saturates the search at its edge and the rate is silently missed
    finite = np.abs(offsets[droppable & observed])
    reach = 60.0 + (float(finite.max()) if finite.size else 0.0)
    theta = solve_increasing(expected, rate, -reach, reach)
    met = expected(theta)
    if abs(met - rate) > RATE_TOLERANCE:
        raise MlmmError(
            f"missing rate {format_number(rate)} in {spec!r} cannot be met: with this strength "
            f"the expected rate jumps past it (closest {met:.4g}) because the score takes few "
            "distinct values on this dataset; use a smaller strength"
        )
    return theta


def check_feasible(
    droppable: np.ndarray,
    observed: np.ndarray,
    rate: float,
    unit: str,
    allow_empty: bool,
    weights: np.ndarray,
    spec: str,
    never_removed: str = "",
) -> None:
    """Raise a one-line error naming the maximum and the fix when ``rate`` is out of reach."""
    most = max_rate(droppable, observed, unit, allow_empty, weights)
    if rate < most - 1e-12:
        return
    limits = ([] if allow_empty else ["keeping at least one modality per sample"]) + (
        [never_removed] if never_removed else []
    )
    fix = "lower the rate"
    if not allow_empty and rate < max_rate(droppable, observed, unit, True, weights) - 1e-12:
        fix += " or add ':allow_empty'"
    raise MlmmError(
        f"missing rate {format_number(rate)} in {spec!r} is infeasible: the maximum is "
        f"{most:.4g} ({UNIT_MEANING[unit]}, approached but never reached) on this dataset when "
        f"{' and '.join(limits) or 'using this model'}; {fix}"
    )
