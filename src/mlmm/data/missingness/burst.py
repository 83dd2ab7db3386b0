"""``burst``: bursty outages along the sample order (a stream of consecutive readings).

Each modality has its own two-state Markov chain (Gilbert-Elliott: every reading is lost in
the bad state, none in the good one) with stationary outage fraction ``rate`` and mean outage
length ``len``: ``P(bad -> good) = 1 / len`` and ``P(good -> bad) = rate / (len * (1 - rate))``.
Chains start from the stationary distribution.

Rows are read as time steps only when the dataset says they are one
(``dataset.meta["time_ordered"]``, e.g. ``from_arrays(..., time_ordered=True)``). Otherwise
(every built-in dataset: rows sorted by class or by source file) the chains run along a
permutation of the rows drawn from the seed, so an outage never clusters within a class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import (
    MissingnessModel,
    as_float,
    as_generator,
    check_rate,
    format_number,
    join_spec,
    option_flag,
    option_value,
    parse_number,
    register_missingness,
)
from mlmm.errors import MlmmError

MAX_LENGTH = 1e9  # mean outage length cap: longer than any sample order mlmm is given
_CHUNK = 1024  # runs drawn per step; memory is bounded by the number of rows, not by ``len``


def gilbert_elliott(
    n_steps: int, rate: float, mean_length: float, rng: int | np.random.Generator
) -> np.ndarray:
    """Outage indicator of a two-state Markov chain (Gilbert-Elliott channel with loss 1/0).

    Parameters
    ----------
    n_steps : int
        Length of the sequence.
    rate : float
        Stationary fraction of steps in outage, in [0, 1).
    mean_length : float
        Mean outage length in steps (at least 1, at least ``rate / (1 - rate)``, and at
        most ``MAX_LENGTH``).
    rng : int or numpy.random.Generator

    Returns
    -------
    ndarray of bool, shape (n_steps,)
        True = in outage.

    Examples
    --------
    >>> gilbert_elliott(8, 0.0, 5, 0).any()
    np.False_
    """
    where = f"burst:{format_number(rate)}:len={format_number(mean_length)}"
    check_rate(rate, where, "outage rate")
    to_bad = _check_length(rate, mean_length, where)
    rng = as_generator(rng)
    if rate == 0.0 or n_steps <= 0:
        return np.zeros(max(n_steps, 0), dtype=bool)
    # sojourn times of a Markov chain are geometric; memorylessness makes the first one exact too
    start_bad = rng.random() < rate
    runs, total = [], 0
    while total < n_steps:
        bad, good = rng.geometric(1.0 / mean_length, _CHUNK), rng.geometric(to_bad, _CHUNK)
        pair = np.stack([bad, good] if start_bad else [good, bad], axis=1).ravel()
        # a run longer than the sequence ends with it; clipping keeps the sums exact in int64
        # (geometric draws saturate at 2**63 - 1 for tiny probabilities)
        pair = np.minimum(pair, n_steps)
        runs.append(pair)
        total += int(pair.sum())
    lengths = np.concatenate(runs)  # at most n_steps + 2 * _CHUNK runs: each run is >= 1 step
    is_bad = np.arange(len(lengths)) % 2 == (0 if start_bad else 1)
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, n_steps))  # the run that reaches step n_steps
    lengths = lengths[: last + 1].copy()
    lengths[last] -= ends[last] - n_steps
    return np.repeat(is_bad[: last + 1], lengths)


def _check_length(rate: float, mean_length: float, where: str) -> float:
    """Validate ``len`` and return ``P(good -> bad)``."""
    if not np.isfinite(mean_length) or mean_length < 1:
        raise MlmmError(
            f"mean outage length len must be at least 1 step, got {format_number(mean_length)} "
            f"in {where!r}"
        )
    if mean_length > MAX_LENGTH:
        raise MlmmError(
            f"mean outage length len must be at most {format_number(MAX_LENGTH)} steps, got "
            f"{format_number(mean_length)} in {where!r}; use a length shorter than the data"
        )
    to_bad = rate / (mean_length * (1.0 - rate))
    if to_bad > 1.0:
        raise MlmmError(
            f"len={format_number(mean_length)} is too short for outage rate "
            f"{format_number(rate)} in {where!r}: P(good -> bad) = rate / (len (1 - rate)) "
            f"would be {to_bad:.3g} > 1; use len >= {rate / (1 - rate):.4g} or a lower rate"
        )
    return to_bad


@register_missingness
@dataclass(frozen=True)
class Burst(MissingnessModel):
    """Bursty outages over the sample order, one independent Gilbert-Elliott chain per modality.

    Rows are consecutive time steps when ``dataset.meta["time_ordered"]`` is True (apply it
    before shuffling); otherwise the chains run along a seeded permutation of the rows, since
    the row order of such data (sorted by class, by file) is not a time. Unless
    ``allow_empty``, at a step where every observed modality is in an outage, one observed
    modality chosen at random stays present; the realised rate is then a little below
    ``rate`` (by about ``rate ** M / M`` with ``M`` modalities all observed) and is reported
    in the ``MaskResult``.

    Parameters
    ----------
    rate : float
        Stationary outage fraction per modality, in [0, 1); unit "slots".
    length : float
        Mean outage length in samples (grammar ``len=``).
    allow_empty : bool

    Examples
    --------
    >>> Burst(0.3, 20).to_string()
    'burst:0.3:len=20'
    """

    kind: ClassVar[str] = "burst"
    description: ClassVar[str] = "bursty outages over the sample order (Gilbert-Elliott chains)"
    example: ClassVar[str] = "burst:0.3:len=20"
    option_names: ClassVar[tuple[str, ...]] = ("len", "allow_empty")
    needs_argument: ClassVar[str] = "an outage rate"

    rate: float
    length: float
    allow_empty: bool = False

    def __post_init__(self) -> None:
        rate = as_float(self.rate, "outage rate", "Burst(0.3, 20)")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "length", as_float(self.length, "len", "Burst(0.3, 20)"))
        object.__setattr__(self, "rate", check_rate(rate, self.to_string()))
        _check_length(self.rate, self.length, self.to_string())

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        observed = dataset.observed
        n, m = observed.shape
        if self.rate > 0 and not self.allow_empty and not (observed.sum(axis=1) >= 2).any():
            raise MlmmError(
                f"{self.to_string()!r} can remove nothing on this dataset: no sample has two "
                "observed modalities, and one is kept per sample; add ':allow_empty' or use "
                "data with more modalities"
            )
        outage = np.stack([gilbert_elliott(n, self.rate, self.length, rng) for _ in range(m)], 1)
        if not dataset.meta.get("time_ordered", False):  # rows are not a time: no class clusters
            order = rng.permutation(n)
            outage[order] = outage.copy()  # step t of the chains is row order[t]
        removed = outage & observed
        if not self.allow_empty:
            emptied = observed.any(axis=1) & ~(observed & ~removed).any(axis=1)
            if emptied.any():  # keep one observed modality, chosen uniformly, at those steps
                score = rng.random((int(emptied.sum()), m))
                keep = np.argmax(np.where(observed[emptied], score, -1.0), axis=1)
                removed[np.flatnonzero(emptied), keep] = False
        return removed

    def to_string(self) -> str:
        options = [("len", format_number(self.length))] + [("allow_empty", True)] * self.allow_empty
        return join_spec("burst", format_number(self.rate), options)

    @classmethod
    def from_parts(cls, argument, options, text) -> Burst:
        rate = check_rate(parse_number(argument, "outage rate", text), text)
        length = option_value(options, "len", text)
        if length is None:
            raise MlmmError(
                f"burst needs a mean outage length, e.g. burst:{argument}:len=20 (got {text!r})"
            )
        length = parse_number(length, "len", text)
        return cls(rate, length, allow_empty=option_flag(options, "allow_empty", text))
