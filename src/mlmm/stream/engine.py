"""The stream engine: answer at every step from what arrived within the window.

A :class:`StreamEngine` wraps a trained model (anything with ``specs``, ``task``, ``prior`` and
``predict_raw(dataset)``, e.g. :class:`~mlmm.train.TrainedModel`) and turns per-sensor events
into the fixed-shape windows the model was trained on. Every ``policy.step`` seconds of the
stream's clock it builds one window per modality from the events in ``(t - window, t]`` and
calls the model's own predict path once; it holds no model code.

The clock is the largest timestamp seen, never wall time, so a replay is deterministic: the
same events give the same answers. Wall time is only *measured* (``latency_ms``).

How a window is built
---------------------
* Sequence modality of shape ``(T, C)``: the model's rate is ``T / window`` readings per
  second. Slot ``k`` takes the last reading at or before ``t - window + (k + 1) window / T``
  (sample and hold; slots before the first reading of the window take that first reading).
  A sensor at another rate is thereby resampled to the model's rate.
* Vector modality of shape ``(C,)``: the mean of the window's readings.
* A modality is *live* when its readings cover at least ``min_coverage`` of the slots
  (readings / (window x model rate)) and its newest reading is at most ``horizon`` old.
  Otherwise it is missing: the model is told so through ``present``, never given zeros as data.

Staleness (``StreamPolicy.staleness``)
--------------------------------------
``"drop"`` (the default): a modality that is not live is missing. ``"hold"``: its last live
window is given to the model again, marked present, until it is ``horizon`` seconds old; its
age is reported in every answer (``age_<sensor>``). Drop is the default because a held window
tells the model stale data is current; hold suits sensors whose signal changes slowly.
"""

from __future__ import annotations

import time as _time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error
from mlmm.stream.events import EventStream

__all__ = ["AGE", "Answer", "StreamEngine", "StreamPolicy", "StreamResult", "Predictor", "replay"]

#: Steps whose readings :func:`replay` delivers at once (rounded up to a multiple of
#: ``batch_steps``).
_CHUNK_STEPS = 256
#: Name of the modality that carries each sensor's age when ``StreamPolicy.age_input``.
AGE = "age"

_CHOICES = {
    "staleness": ("drop", "hold"),
    "on_empty": ("hold", "prior", "flag", "skip"),
    "on_unknown": ("error", "ignore"),
    "on_nan": ("missing", "error"),
    "on_duplicate": ("drop", "error"),
    "on_late": ("drop", "error"),
    "on_reset": ("restart", "error"),
    "on_jump": ("restart", "error"),
    "on_rate_mismatch": ("resample", "error"),
}


class Predictor(Protocol):
    """What the engine needs of a model (:class:`~mlmm.train.TrainedModel` has it all)."""

    specs: tuple[ModalitySpec, ...]
    task: TaskSpec
    prior: list[float]

    def predict_raw(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray: ...


@dataclass(frozen=True)
class StreamPolicy:
    """How windows are cut, when a sensor counts as missing, and what to do with bad input.

    Parameters
    ----------
    window : float
        Window length in stream seconds. A sequence modality of shape ``(T, C)`` is read at
        the model's rate ``T / window``.
    step : float
        Seconds between answers.
    deadline : float, default 0
        How long after a step's end (stream seconds) the engine waits for readings that
        arrive out of order before it answers that step. A reading for an answered step is late.
    staleness : {"drop", "hold"}, default "drop"
        See the module docstring.
    horizon : float, optional
        Drop: the newest reading of a live modality is at most this old (default
        ``window / 2``). Hold: a held window is used until it is this old (default
        ``5 * window``).
    min_coverage : float, default 0.5
        Fraction of the window's slots that readings must cover for a live modality.
    on_empty : {"hold", "prior", "flag", "skip"}, default "hold"
        A step with no live modality: repeat the last answer given from data (flagged
        ``empty``; the prior before any), answer the training prior (flagged), answer NaN
        (flagged), or give no answer. Hold is the default because what a stream measures
        persists from one step to the next, so the last answer from data beats the prior
        (``docs/streams.md``: measured on a tuning seed, not the reported ones).
    on_unknown : {"error", "ignore"}, default "error"
        A reading from a sensor the model does not know: raise, or count and drop it.
    on_nan : {"missing", "error"}, default "missing"
        A reading with NaN or inf inside a live sensor: drop the reading (counted; a burst of
        them lowers the coverage until the modality is missing), or raise.
    on_duplicate : {"drop", "error"}, default "drop"
        A second reading of a sensor at a timestamp it already has: keep the first.
    on_late : {"drop", "error"}, default "drop"
        A reading older than an answered step (out of order beyond ``deadline``).
    on_reset : {"restart", "error"}, default "restart"
        A sensor's timestamp more than ``reset_after`` before its previous one (a clock
        reset): forget all
        buffered readings and start a new timeline there, or raise.
    reset_after : float, optional
        Default ``window``.
    on_jump : {"restart", "error"}, default "restart"
        A timestamp more than ``jump_after`` ahead of the clock (a clock set forward, or
        milliseconds sent as seconds): start a new timeline there, as at a clock reset, instead
        of answering every step up to it (which a single bad reading would make endless), or
        raise.
    jump_after : float, optional
        Default ``max(window, 10,000 steps)``.
    on_rate_mismatch : {"resample", "error"}, default "resample"
        A sensor whose measured rate in a window differs from the model's training rate by
        more than ``rate_tolerance`` (relative): resample it to the model's slots (counted),
        or raise. Checked on the median spacing of the sensor's last 32 readings, once at
        least 4 have arrived and then every 32 readings; ``stats["rate_mismatch"]`` counts
        the checks that found it off the rate.
    rate_tolerance : float, default 0.2
    age_input : bool, default False
        Give the model each sensor's age as an input: the model then has a vector modality
        named ``"age"`` of shape ``(n_sensors,)`` (:func:`~mlmm.stream.stream_specs` with
        ``age=True``), always present, holding the age in seconds of each sensor's data
        (its newest reading, or its held window), capped at ``horizon`` (a missing sensor
        reads ``horizon``). Train it on :func:`~mlmm.stream.window_dataset` windows, which fill
        it the same way.

    Examples
    --------
    >>> StreamPolicy(window=10.0, step=1.0).staleness
    'drop'
    """

    window: float
    step: float
    deadline: float = 0.0
    staleness: str = "drop"
    horizon: float | None = None
    min_coverage: float = 0.5
    on_empty: str = "hold"
    on_unknown: str = "error"
    on_nan: str = "missing"
    on_duplicate: str = "drop"
    on_late: str = "drop"
    on_reset: str = "restart"
    reset_after: float | None = None
    on_jump: str = "restart"
    jump_after: float | None = None
    on_rate_mismatch: str = "resample"
    rate_tolerance: float = 0.2
    age_input: bool = False

    def __post_init__(self) -> None:
        for name in ("window", "step"):
            value = getattr(self, name)
            # numpy numbers (a window read from an array) are numbers; True is not a second
            number = isinstance(value, (int, float, np.integer, np.floating))
            if isinstance(value, (bool, np.bool_)) or not (
                number and np.isfinite(value) and value > 0
            ):
                raise MlmmError(f"{name} must be a positive number of seconds, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not (np.isfinite(self.deadline) and self.deadline >= 0):
            raise MlmmError(f"deadline must be >= 0 seconds, got {self.deadline!r}")
        if not 0 < self.min_coverage <= 1:
            raise MlmmError(f"min_coverage must be in (0, 1], got {self.min_coverage!r}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise MlmmError(
                    f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}"
                )
        if self.horizon is not None and not self.horizon > 0:
            raise MlmmError(f"horizon must be a positive number of seconds, got {self.horizon!r}")
        # 0 would restart the engine (forgetting every buffer) at any out-of-order reading
        if self.reset_after is not None and not self.reset_after > 0:
            raise MlmmError(
                f"reset_after must be a positive number of seconds (or None: window), got "
                f"{self.reset_after!r}"
            )
        if self.jump_after is not None and not (
            np.isfinite(self.jump_after) and self.jump_after > 0
        ):
            raise MlmmError(
                f"jump_after must be a positive number of seconds (or None: max(window, "
                f"10,000 steps)), got {self.jump_after!r}"
            )
        if not (np.isfinite(self.rate_tolerance) and self.rate_tolerance >= 0):
            raise MlmmError(
                f"rate_tolerance must be a relative difference >= 0 (0.2 = 20 %), got "
                f"{self.rate_tolerance!r}"
            )

    @property
    def effective_horizon(self) -> float:
        if self.horizon is not None:
            return float(self.horizon)
        return self.window / 2 if self.staleness == "drop" else 5 * self.window

    @property
    def effective_reset_after(self) -> float:
        return float(self.window if self.reset_after is None else self.reset_after)

    @property
    def effective_jump_after(self) -> float:
        if self.jump_after is not None:
            return float(self.jump_after)
        return float(max(self.window, 10_000 * self.step))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Answer:
    """The engine's answer at stream time ``time``.

    ``output`` is class probabilities ``[K]`` or a value; ``prediction`` the label or value
    (NaN when flagged empty under ``on_empty="flag"``); ``present`` which modalities the
    model saw; ``age`` the age in seconds of each modality's newest data (NaN if none);
    ``empty`` True when no modality was live; ``latency_ms`` the measured compute time.
    """

    time: float
    output: np.ndarray
    prediction: float
    present: np.ndarray
    age: np.ndarray
    empty: bool
    latency_ms: float


class _Buffer:
    """One sensor's readings, sorted by time, in growable arrays."""

    def __init__(self, channels: int) -> None:
        self.times = np.empty(256)
        self.values = np.empty((256, channels), dtype=np.float32)
        self.n = 0

    @property
    def last(self) -> float:
        return float(self.times[self.n - 1]) if self.n else -np.inf

    def view(self) -> tuple[np.ndarray, np.ndarray]:
        return self.times[: self.n], self.values[: self.n]

    def trim(self, keep_from: float) -> None:
        cut = int(np.searchsorted(self.times[: self.n], keep_from, side="left"))
        if cut:
            keep = self.n - cut
            self.times[:keep] = self.times[cut : self.n]
            self.values[:keep] = self.values[cut : self.n]
            self.n = keep

    def append(self, times: np.ndarray, values: np.ndarray) -> None:
        need = self.n + len(times)
        if need > len(self.times):
            size = max(need, 2 * len(self.times))
            grown_t, grown_v = np.empty(size), np.empty((size, self.values.shape[1]), np.float32)
            grown_t[: self.n], grown_v[: self.n] = self.times[: self.n], self.values[: self.n]
            self.times, self.values = grown_t, grown_v
        self.times[self.n : need] = times
        self.values[self.n : need] = values
        self.n = need

    def append_one(self, t: float, value: np.ndarray) -> None:
        if self.n == len(self.times):
            self.append(np.array([t]), value[None])
            return
        self.times[self.n] = t
        self.values[self.n] = value
        self.n += 1

    def insert(self, t: float, value: np.ndarray) -> bool:
        """Insert one reading in time order; False if the sensor already has time ``t``."""
        times, _ = self.view()
        pos = int(np.searchsorted(times, t, side="left"))
        if pos < self.n and times[pos] == t:
            return False
        self.append(np.array([t]), value[None])
        if pos < self.n - 1:  # move it from the end into place
            self.times[pos + 1 : self.n] = self.times[pos : self.n - 1].copy()
            self.values[pos + 1 : self.n] = self.values[pos : self.n - 1].copy()
            self.times[pos], self.values[pos] = t, value
        return True


class StreamEngine:
    """Answer a model at every step of a stream from what arrived within the window.

    river-style interface: feed readings with :meth:`push` (one) or :meth:`push_many` (one
    sensor's chunk), collect the answers they make due; :meth:`predict_one` answers for any
    time from the current buffers; :meth:`close` answers the steps left at the end.

    Parameters
    ----------
    model : Predictor
        A :class:`~mlmm.train.TrainedModel` (or anything with its predict interface) trained
        on windows whose modalities are the stream's sensors.
    policy : StreamPolicy

    Attributes
    ----------
    clock : float
        The largest timestamp seen (since the last clock reset).
    stats : collections.Counter
        What the bad-input policies did: ``unknown``, ``nan``, ``duplicate``, ``late``,
        ``reset``, ``rate_mismatch``, ``empty`` (steps with no live modality), ``skipped``.

    Examples
    --------
    See ``docs/streams.md``.
    """

    def __init__(self, model: Predictor, policy: StreamPolicy) -> None:
        self.model, self.policy = model, policy
        self.specs = tuple(model.specs)
        self.names = tuple(s.name for s in self.specs)
        self._age_j = self.names.index(AGE) if AGE in self.names else None
        self._index = {n: j for j, n in enumerate(self.names) if j != self._age_j}
        self._sensors = list(self._index.values())  # the modalities that are sensors
        n_sensors = len(self._index)
        if policy.age_input and (
            self._age_j is None or self.specs[self._age_j].shape != (n_sensors,)
        ):
            raise MlmmError(
                f"age_input needs a vector modality 'age' of shape ({n_sensors},) in the model; "
                f"build the specs with stream_specs(..., age=True) and train on them"
            )
        if self._age_j is not None and not policy.age_input:
            raise MlmmError(
                "the model has an 'age' modality (trained with sensor ages); use "
                "StreamPolicy(age_input=True)"
            )
        self.rates = [
            s.shape[0] / policy.window if s.kind == "sequence" else None for s in self.specs
        ]
        for s in self.specs:
            if s.kind not in ("sequence", "vector"):
                raise MlmmError(
                    f"stream modality {s.name!r} is a {s.kind}; streams feed vector (C,) or "
                    f"sequence (T, C) modalities"
                )
        self.stats: Counter[str] = Counter()
        self._restart()

    # ------------------------------------------------------------------ state
    def _restart(self) -> None:
        self._buffers = [_Buffer(s.shape[-1]) for s in self.specs]
        self._held: list[tuple[np.ndarray, float] | None] = [None] * len(self.specs)
        self._since_check = [-1] * len(self.specs)  # readings since the last rate check
        self.clock = -np.inf
        # step k of the timeline is at origin + k * step, computed afresh (not by adding step
        # to the previous one, whose rounding drifted: push and replay disagreed on whether a
        # reading at the step's exact time was in its window)
        self._origin: float | None = None
        self._k = 0  # the next step's index
        self._answered_until = -np.inf
        self._last_output: np.ndarray | None = None

    # ------------------------------------------------------------------ input
    def _sensor(self, sensor: str) -> int | None:
        j = self._index.get(sensor)
        if j is None:
            if self.policy.on_unknown == "error":
                raise unknown_name_error("sensor", sensor, list(self._index))
            self.stats["unknown"] += 1
        return j

    def ingest(self, sensor: str, times: np.ndarray, values: np.ndarray) -> None:
        """Take one sensor's readings ``times [n]``, ``values [n, C]`` without answering."""
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        j = self._sensor(sensor)
        if j is None or not len(times):  # an empty chunk (a sensor out throughout) is nothing
            if j is None:
                self.stats["unknown"] += len(times) - 1
            return
        values = np.asarray(values, dtype=np.float32).reshape(len(times), -1)
        channels = self.specs[j].shape[-1]
        if values.shape[1] != channels:
            raise MlmmError(
                f"sensor {sensor!r} sends {values.shape[1]} values per reading, the model expects "
                f"{channels}; send the channels of ModalitySpec {self.specs[j].shape}"
            )
        if not np.isfinite(times).all():
            raise MlmmError(f"sensor {sensor!r} sent a NaN or infinite timestamp; fix the clock")
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            if self.policy.on_nan == "error":
                raise MlmmError(
                    f"sensor {sensor!r} sent NaN or inf in {int((~finite).sum())} reading(s) "
                    f"(first at t={times[~finite][0]:g}); clean them or use on_nan='missing'"
                )
            self.stats["nan"] += int((~finite).sum())
            times, values = times[finite], values[finite]
            if not len(times):
                return
        buffer = self._buffers[j]
        floor = max(buffer.last, self._answered_until)
        jump_to = self.clock + self.policy.effective_jump_after  # -inf before any reading
        in_reach = times[-1] <= jump_to or not np.isfinite(self.clock)
        if in_reach and times[0] > floor and (len(times) == 1 or (np.diff(times) > 0).all()):
            buffer.append(times, values)  # the common case: in order, all new
            self.clock = max(self.clock, float(times[-1]))
        else:
            for t, v in zip(times, values, strict=True):
                self._ingest_one(j, float(t), v)
        self._check_rate(j, len(times))
        self._trim()

    def _ingest_one(self, j: int, t: float, value: np.ndarray) -> None:
        if np.isfinite(self.clock) and t > self.clock + self.policy.effective_jump_after:
            if self.policy.on_jump == "error":
                raise MlmmError(
                    f"timestamp {t:g} of sensor {self.names[j]!r} jumps ahead of the stream's "
                    f"clock {self.clock:g} by more than jump_after; fix the clock (seconds, "
                    f"not milliseconds?) or use on_jump='restart'"
                )
            self.stats["jump"] += 1
            self._restart()
        elif t < self._buffers[j].last - self.policy.effective_reset_after:
            if self.policy.on_reset == "error":
                raise MlmmError(
                    f"timestamp {t:g} of sensor {self.names[j]!r} jumps back from its last "
                    f"{self._buffers[j].last:g} (more than reset_after); fix the clock or use "
                    f"on_reset='restart'"
                )
            self.stats["reset"] += 1
            self._restart()
        elif t <= self._answered_until:
            if self.policy.on_late == "error":
                raise MlmmError(
                    f"reading of {self.names[j]!r} at {t:g} arrived after the step at "
                    f"{self._answered_until:g} was answered; raise deadline or use on_late='drop'"
                )
            self.stats["late"] += 1
            return
        if not self._buffers[j].insert(t, value):
            if self.policy.on_duplicate == "error":
                raise MlmmError(
                    f"sensor {self.names[j]!r} sent two readings at t={t:g}; "
                    f"deduplicate the feed or use on_duplicate='drop'"
                )
            self.stats["duplicate"] += 1
            return
        self.clock = max(self.clock, t)

    @property
    def _next_step(self) -> float | None:
        """The time of the next step to answer (None before the timeline's first step is set)."""
        return None if self._origin is None else self._origin + self._k * self.policy.step

    def _start_timeline(self, first_step: float) -> None:
        self._origin, self._k = float(first_step), 0

    def _trim(self) -> None:
        if self._next_step is None:
            return
        keep_from = self._next_step - self.policy.window - self.policy.step
        for buffer in self._buffers:
            if buffer.n > 4096 and buffer.times[0] < keep_from:
                buffer.trim(keep_from)

    def push(self, time: float, sensor: str, values: np.ndarray) -> list[Answer]:
        """One reading; returns the answers of the steps it made due (often none)."""
        row = np.asarray(values, dtype=np.float32).reshape(-1)  # [C]
        t = float(time)
        j = self._index.get(sensor)
        buffer = None if j is None else self._buffers[j]
        if (  # the common case, without ingest's array checks: in order, new, finite
            buffer is not None
            and row.shape[0] == buffer.values.shape[1]
            and t > buffer.last
            and t > self._answered_until
            and (t <= self.clock + self.policy.effective_jump_after or self.clock == -np.inf)
            and np.isfinite(t)
            and np.isfinite(row).all()
        ):
            buffer.append_one(t, row)
            self.clock = max(self.clock, t)
            self._check_rate(j, 1)
            if buffer.n > 4096:
                self._trim()
        else:
            self.ingest(sensor, np.array([time]), row.reshape(1, -1))
        if self._next_step is not None and self.clock <= self._next_step + self.policy.deadline:
            return []  # no step due yet
        return self.advance()

    def push_many(self, sensor: str, times: np.ndarray, values: np.ndarray) -> list[Answer]:
        """One sensor's chunk of readings; returns the answers of the steps made due."""
        self.ingest(sensor, times, values)
        return self.advance()

    # ------------------------------------------------------------------ output
    def advance(self, until: float | None = None) -> list[Answer]:
        """Answer every step whose deadline the clock has passed (or every step <= ``until``)."""
        steps = self.due(until)
        return self.answer(steps) if len(steps) else []

    def due(self, until: float | None = None) -> np.ndarray:
        """The steps whose deadline the clock has passed (or every step <= ``until``, within
        1e-9 of a step as :func:`~mlmm.stream.datasets.step_times`), marked answered: the
        caller answers them (:meth:`respond`). ``[S]`` times, maybe empty."""
        if not np.isfinite(self.clock) and (until is None or self._origin is None):
            return np.empty(0)  # nothing heard yet (replay's span answers up to ``until``)
        if self._origin is None:
            first = min(b.times[0] for b in self._buffers if b.n)
            self._start_timeline(float(first) + self.policy.window)
        steps = []
        # up to ``until``: the steps :func:`~mlmm.stream.datasets.step_times` counts there (its
        # 1e-9 step tolerance), so a last step rounded a hair past ``until`` is not dropped
        last = None if until is None else np.floor((until - self._origin) / self.policy.step + 1e-9)
        while True:
            k = self._k + len(steps)
            t = self._origin + k * self.policy.step
            due = k <= last if last is not None else self.clock > t + self.policy.deadline
            if not due:
                break
            steps.append(t)
        if not steps:
            return np.empty(0)
        self._k += len(steps)
        self._answered_until = steps[-1]
        return np.asarray(steps)

    def close(self) -> list[Answer]:
        """Answer the steps left up to the clock (the stream ended; no more late readings)."""
        return self.advance(until=self.clock)

    def predict_one(self, now: float) -> Answer | None:
        """The answer for the window ending at ``now``, from the current buffers."""
        answers = self.answer(np.array([float(now)]))
        return answers[0] if answers else None

    def windows(self, times: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """The model's inputs at each step time: ``inputs`` (name -> ``[S, *shape]``, zero where
        missing), ``present [S, M]`` and ``age [S, M]`` (seconds; NaN when nothing seen)."""
        p = self.policy
        times = np.asarray(times, dtype=np.float64)  # [S]
        n_steps, horizon = len(times), p.effective_horizon
        inputs = {s.name: np.zeros((n_steps, *s.shape), np.float32) for s in self.specs}
        present = np.zeros((n_steps, len(self.specs)), bool)
        age = np.full((n_steps, len(self.specs)), np.nan)
        for j, spec in enumerate(self.specs):
            buf_t, buf_v = self._buffers[j].view()
            if not len(buf_t) or j == self._age_j:
                continue  # never heard from (or forgotten at a clock reset): missing
            lo = np.searchsorted(buf_t, times - p.window, side="right")
            hi = np.searchsorted(buf_t, times, side="right")
            count = hi - lo
            has = count > 0
            seen = hi > 0  # a reading at or before t, maybe before the window
            newest = np.where(seen, times - buf_t[np.maximum(hi - 1, 0)], np.inf)
            rate = self.rates[j]
            if rate is None:
                live = has & (newest <= horizon)
            else:
                live = has & (count >= p.min_coverage * p.window * rate) & (newest <= horizon)
            age[seen, j] = newest[seen]
            if spec.kind == "sequence":
                n_slots = spec.shape[0]
                offsets = (np.arange(n_slots) + 1) * (p.window / n_slots) - p.window  # [T]
                slots = times[:, None] + offsets  # [S, T]
                idx = np.searchsorted(buf_t, slots, side="right") - 1
                # >= 0 (lo >= 0); lo is n when no reading is in the window (then not live)
                idx = np.minimum(np.maximum(idx, lo[:, None]), len(buf_t) - 1)
                window = buf_v[idx] if len(buf_t) else np.zeros((n_steps, *spec.shape))
            else:  # running sums over the readings the steps' windows span, not the buffer
                base = int(lo.min()) if n_steps else 0
                part = buf_v[base : int(hi.max()) if n_steps else 0].astype(np.float64)
                total = np.concatenate([np.zeros((1, buf_v.shape[1])), np.cumsum(part, 0)])
                window = (total[hi - base] - total[lo - base]) / np.maximum(count, 1)[:, None]
            window = window.astype(np.float32, copy=False)  # [S, *shape]
            if p.staleness == "hold":
                for s in range(n_steps):  # the held window evolves step by step
                    if live[s]:
                        self._held[j] = (window[s], float(times[s]))
                    elif self._held[j] is not None and times[s] - self._held[j][1] <= horizon:
                        window[s] = self._held[j][0]
                        live[s] = True
                        age[s, j] = times[s] - self._held[j][1]
            inputs[spec.name][live] = window[live]
            present[:, j] = live
        if self._age_j is not None:
            sensors = [j for j in range(len(self.specs)) if j != self._age_j]
            ages = np.where(present[:, sensors], age[:, sensors], horizon)
            inputs[AGE] = np.minimum(np.nan_to_num(ages, nan=horizon), horizon).astype(np.float32)
            present[:, self._age_j] = True
        return inputs, present, age

    def _check_rate(self, j: int, count: int) -> None:
        """Compare the median spacing of the sensor's newest readings with the model's rate
        (a median, so an outage inside the window does not look like a slow sensor). Checked
        at the 4th reading and then at every 32nd, on the 32 readings up to it: where
        ``count`` readings arrived at once (:meth:`ingest`, :func:`replay`'s chunks), at each
        of them where :meth:`push` would have checked, so both paths count (and raise) alike."""
        rate, buffer = self.rates[j], self._buffers[j]
        if rate is None:
            return
        since, n_new = self._since_check[j], min(count, buffer.n)
        before = buffer.n - n_new  # readings held before these arrived
        if since < 0:  # not checked yet: first at the 4th reading
            first = max(4, before + 1)
        else:
            first = before + max(32 - since, 1)
        if first > buffer.n:  # no check among these readings
            self._since_check[j] = -1 if since < 0 else since + count
            return
        ends = np.arange(first, buffer.n + 1, 32)  # [K] buffer length at each check
        self._since_check[j] = int(buffer.n - ends[-1])
        times = buffer.times[: buffer.n]
        spacing = np.empty(len(ends))  # [K] median spacing of the 32 readings up to each check
        short = ends < 32  # the first checks see fewer readings
        for k in np.flatnonzero(short).tolist():
            spacing[k] = np.median(np.diff(times[: ends[k]]))
        if not short.all():
            lo = max(int(ends[~short][0]) - 32, 0)  # only the readings these checks see
            gaps = np.lib.stride_tricks.sliding_window_view(np.diff(times[lo:]), 31)  # [., 31]
            spacing[~short] = np.median(gaps[ends[~short] - 32 - lo], axis=1)
        measured = 1.0 / np.maximum(spacing, 1e-12)  # [K] Hz
        off = np.abs(measured / rate - 1) > self.policy.rate_tolerance
        if off.any() and self.policy.on_rate_mismatch == "error":
            raise MlmmError(
                f"sensor {self.names[j]!r} runs at {measured[off][0]:.4g} Hz, the model was "
                f"trained at {rate:.4g} Hz; resample the feed or use on_rate_mismatch='resample'"
            )
        self.stats["rate_mismatch"] += int(off.sum())

    def answer(self, times: np.ndarray) -> list[Answer]:
        """Answers for windows ending at ``times`` (one model call for all of them)."""
        return self._as_answers(self.respond(np.asarray(times, dtype=np.float64)))

    def respond(self, times: np.ndarray, batch_steps: int | None = None) -> dict[str, np.ndarray]:
        """Answers for windows ending at ``times`` as arrays (what :meth:`answer` wraps).

        The windows of all ``times`` are assembled at once (:meth:`windows`), then the model is
        called once per block of ``batch_steps`` consecutive steps (default: one call for all)
        on the block's steps with a live modality.

        Returns
        -------
        dict
            ``time [S]``, ``output [S, K]`` (classification) or ``[S, 1]``, ``prediction [S]``,
            ``present [S, M]``, ``age [S, M]``, ``empty [S]``, ``latency_ms [S]`` (the step's
            share of the window assembly plus its block's model call over the block's steps),
            ``keep [S]`` (False for a step skipped under ``on_empty="skip"``).
        """
        started = _time.perf_counter()
        times = np.asarray(times, dtype=np.float64)  # [S]
        n_steps = len(times)
        block = n_steps if batch_steps is None else int(batch_steps)
        inputs, present, age = self.windows(times)
        live = present[:, self._sensors].any(axis=1)  # [S] the age alone is no data
        classification = self.model.task.is_classification
        width = self.model.task.n_classes if classification else 1
        outputs = np.full((n_steps, width), np.nan)  # [S, K]
        latency = np.zeros(n_steps)
        live_idx = np.flatnonzero(live)
        assembled = _time.perf_counter()
        block = max(block, 1)
        starts = np.arange(0, n_steps, block)  # [B] first step of each block
        edges = np.searchsorted(live_idx, np.append(starts, n_steps)).tolist()  # live per block
        with torch.inference_mode():
            for lo, a, b in zip(starts.tolist(), edges[:-1], edges[1:], strict=True):
                if a == b:
                    continue
                call = _time.perf_counter()
                first, last = int(live_idx[a]), int(live_idx[b - 1])
                # consecutive live steps (always so one step per call) are a view, not a copy
                rows = slice(first, last + 1) if last - first == b - a - 1 else live_idx[a:b]
                dataset = MultimodalDataset(
                    specs=self.specs,
                    task=self.model.task,
                    inputs={k: v[rows] for k, v in inputs.items()},
                    targets=np.zeros(b - a, np.int64 if classification else np.float32),
                    observed=present[rows],
                )
                out = self.model.predict_raw(dataset)
                outputs[rows] = np.asarray(out).reshape(b - a, -1)
                stop = min(lo + block, n_steps)
                latency[lo:stop] += (_time.perf_counter() - call) * 1000 / (stop - lo)
        called = _time.perf_counter()
        empty = ~live
        self.stats["empty"] += int(empty.sum())
        if self.policy.on_empty in ("prior", "hold") and empty.any():
            outputs[empty] = np.asarray(self.model.prior, dtype=np.float64).reshape(1, -1)
        if self.policy.on_empty == "hold" and n_steps:
            # the last answer from data, carried across calls: step s takes the output of the
            # newest live step at or before it
            source = np.maximum.accumulate(np.where(live, np.arange(n_steps), -1))
            held = empty & (source >= 0)
            outputs[held] = outputs[source[held]]
            if self._last_output is not None:
                outputs[source < 0] = self._last_output
            if live_idx.size:
                self._last_output = outputs[live_idx[-1]].copy()
        if classification:
            finite = np.isfinite(outputs).all(axis=1)
            if finite.all():
                prediction = np.argmax(outputs, axis=1)
            else:
                prediction = np.where(finite, np.argmax(np.nan_to_num(outputs), axis=1), np.nan)
        else:
            prediction = outputs[:, 0].copy()
        keep = np.ones(n_steps, bool)
        if self.policy.on_empty == "skip":
            keep = live
            self.stats["skipped"] += int(empty.sum())
        # the assembly and the bookkeeping, shared by every step
        latency += (assembled - started + _time.perf_counter() - called) * 1000 / max(n_steps, 1)
        return {
            "time": times,
            "output": outputs,
            "prediction": prediction.astype(np.float64),
            "present": present,
            "age": age,
            "empty": empty,
            "latency_ms": latency,
            "keep": keep,
        }

    def _as_answers(self, r: dict[str, np.ndarray]) -> list[Answer]:
        classification = self.model.task.is_classification
        return [
            Answer(
                float(r["time"][s]),
                r["output"][s] if classification else r["output"][s, 0],
                float(r["prediction"][s]),
                r["present"][s],
                r["age"][s],
                bool(r["empty"][s]),
                float(r["latency_ms"][s]),
            )
            for s in np.flatnonzero(r["keep"])
        ]


@dataclass
class StreamResult:
    """What a replay produced: one row per answer, the outputs and the policy counters.

    Attributes
    ----------
    answers : pandas.DataFrame
        ``time, prediction, truth, correct`` (classification) or ``error`` (regression),
        ``live`` (the live modalities joined by ``+``, ``"none"``), ``empty``,
        ``present_<m>``, ``age_<m>``, ``latency_ms``.
    outputs : ndarray
        ``[S, K]`` probabilities or ``[S]`` values, one per answer.
    stats : dict
        :attr:`StreamEngine.stats` at the end.
    """

    answers: pd.DataFrame
    outputs: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)

    def score(self) -> float:
        """Accuracy (classification) or RMSE (regression) over all answers with a truth."""
        if "correct" in self.answers:
            return float(self.answers["correct"].mean())
        return float(np.sqrt(np.nanmean(self.answers["error"] ** 2)))


def answers_frame(
    answers: list[Answer], names: tuple[str, ...], stream: EventStream | None, classification: bool
) -> tuple[pd.DataFrame, np.ndarray]:
    """The answers as a tidy frame (see :class:`StreamResult`) and their outputs."""
    n = len(answers)
    arrays = {
        "time": np.array([a.time for a in answers], dtype=np.float64),
        "prediction": np.array([a.prediction for a in answers], dtype=np.float64),
        "present": np.array([a.present for a in answers], bool).reshape(n, len(names)),
        "age": np.array([a.age for a in answers], dtype=np.float64).reshape(n, len(names)),
        "empty": np.array([a.empty for a in answers], bool),
        "latency_ms": np.array([a.latency_ms for a in answers], dtype=np.float64),
    }
    outputs = np.array([a.output for a in answers]) if answers else np.empty((0,))
    return _frame(arrays, names, stream, classification), outputs


def _frame(
    r: dict[str, np.ndarray],
    names: tuple[str, ...],
    stream: EventStream | None,
    classification: bool,
) -> pd.DataFrame:
    """The tidy answers frame from :meth:`StreamEngine.respond`'s arrays (kept steps only)."""
    times, present = r["time"], r["present"]  # [S], [S, M]
    frame = pd.DataFrame({"time": times, "prediction": r["prediction"]})
    if stream is not None and stream.truth is not None and len(times):
        truth = stream.truth_at(times)
        frame["truth"] = truth
        if classification:
            frame["correct"] = frame["prediction"].to_numpy() == truth
        else:
            frame["error"] = frame["prediction"].to_numpy() - truth
    # one label per distinct set of live modalities, not one join per row
    codes = present.astype(np.int64) @ (1 << np.arange(len(names), dtype=np.int64))  # [S]
    unique, inverse = np.unique(codes, return_inverse=True)
    labels = np.array(
        ["+".join(n for j, n in enumerate(names) if code >> j & 1) or "none" for code in unique],
        dtype=object,
    )
    frame["live"] = labels[inverse.reshape(-1)] if len(times) else np.array([], dtype=object)
    frame["empty"] = r["empty"]
    for j, name in enumerate(names):
        frame[f"present_{name}"] = present[:, j]
        frame[f"age_{name}"] = r["age"][:, j]
    frame["latency_ms"] = r["latency_ms"]
    return frame


def replay(
    model: Predictor,
    stream: EventStream,
    policy: StreamPolicy,
    batch_steps: int = 1,
    engine: StreamEngine | None = None,
    start: float | None = None,
    end: float | None = None,
) -> StreamResult:
    """Feed a recorded stream through a :class:`StreamEngine` and collect its answers.

    Readings are delivered in chunks that end at a step's deadline, all sensors before the
    due steps are answered, so the answers are those of a live feed at the same clock: a
    step's window holds only readings at or before its time, and it is answered once a
    reading past its deadline has arrived. A chunk spans up to 256 steps (a multiple of
    ``batch_steps``); the windows of a chunk's due steps are assembled at once
    (:meth:`StreamEngine.respond`), then the model is called once per ``batch_steps`` steps.

    Parameters
    ----------
    model : Predictor
    stream : EventStream
        Its sensors must be the model's modalities (unknown ones follow ``on_unknown``).
    policy : StreamPolicy
    batch_steps : int, default 1
        Steps answered per model call. 1 measures a live per-step latency (the step's model
        call plus its share of the chunk's window assembly); more replays faster (the
        answers are the same).
    engine : StreamEngine, optional
        An engine to continue (its buffers and counters); default a new one.
    start, end : float, optional
        The span to answer: steps at ``start + window``, then every ``step``, up to ``end``
        (default: the stream's first and last reading). Give the span of the stream before
        outages when replaying it after them: an outage of every sensor at the stream's start
        or end otherwise moves the first step or drops the last ones, which are then neither
        answered nor scored (with them, they are answered under ``on_empty``). Readings after
        ``end + deadline`` are not delivered (nor counted in ``stats``).

    Returns
    -------
    StreamResult
    """
    if batch_steps < 1:
        raise MlmmError(f"batch_steps must be >= 1, got {batch_steps}")
    engine = engine or StreamEngine(model, policy)
    start = stream.start if start is None else float(start)
    end = stream.end if end is None else float(end)
    first = start + policy.window
    if engine._origin is None:  # a new timeline: its steps start from ``start``
        engine._start_timeline(first)
    n_steps = int(np.floor((end - first) / policy.step + 1e-9)) + 1 if end >= first else 0
    chunk = batch_steps * max(1, -(-_CHUNK_STEPS // batch_steps))  # steps per delivery
    bounds = first + (np.arange(0, n_steps, chunk) + chunk - 1) * policy.step
    # the last delivery stops at end's deadline: a reading after it reaches no step of the
    # span, and steps past ``end`` it made due were answered and counted (stats) though dropped
    bounds = np.append(np.minimum(bounds, end), end) + policy.deadline
    cursors = dict.fromkeys(stream.sensors, 0)
    parts: list[dict[str, np.ndarray]] = []
    for bound in bounds:
        for sensor, track in stream.tracks.items():
            stop = int(np.searchsorted(track.times, bound, side="right"))
            if stop > cursors[sensor]:
                engine.ingest(
                    sensor,
                    track.times[cursors[sensor] : stop],
                    track.values[cursors[sensor] : stop],
                )
                cursors[sensor] = stop
        parts.append(engine.respond(engine.due(), batch_steps))
    parts.append(engine.respond(engine.due(until=end), batch_steps))
    merged = {k: np.concatenate([p[k][p["keep"]] for p in parts]) for k in parts[0] if k != "keep"}
    past = (merged["time"] - end) / policy.step > 1e-9  # steps after ``end`` (as step_times)
    if past.any():  # a continued engine whose clock was past ``end``
        merged = {k: v[~past] for k, v in merged.items()}
    names = engine.names
    frame = _frame(merged, names, stream, model.task.is_classification)
    outputs = merged["output"] if model.task.is_classification else merged["output"][:, 0]
    return StreamResult(frame, outputs, dict(engine.stats))
