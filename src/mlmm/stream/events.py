"""``EventStream``: per-sensor event tracks (timestamp, values), each at its own rate.

A stream is a set of tracks, one per sensor (modality): sorted timestamps in seconds on the
stream's own clock and the values read at those times. An optional truth track holds the
answer the model should give over time (a class per time, or a signal to reconstruct).
Timestamps are data, never the wall clock, so replaying a stream is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlmm.errors import MlmmError, unknown_name_error

__all__ = ["EventStream", "Track"]


@dataclass(frozen=True)
class Track:
    """One sensor's events: ``times`` (seconds, sorted) and ``values`` ``(n, channels)``.

    Parameters
    ----------
    times : ndarray of float, shape (n,)
    values : ndarray, shape (n, channels)
        NaN marks a reading that was lost inside a live sensor.
    """

    times: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, None]
        if times.ndim != 1 or values.ndim != 2 or len(times) != len(values):
            raise MlmmError(
                f"a track needs times (n,) and values (n, channels), got {times.shape} and "
                f"{values.shape}; give one row of values per timestamp"
            )
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @property
    def channels(self) -> int:
        return self.values.shape[1]

    def rate(self) -> float:
        """Mean events per second over the track (0 with fewer than two events). Of a
        recording, before outages: a gap lowers it."""
        if len(self.times) < 2:
            return 0.0
        span = float(self.times[-1] - self.times[0])
        return (len(self.times) - 1) / span if span > 0 else 0.0

    def between(self, start: float, end: float) -> Track:
        """Events with ``start <= time < end``."""
        lo, hi = np.searchsorted(self.times, [start, end], side="left")
        return Track(self.times[lo:hi], self.values[lo:hi])


@dataclass(frozen=True)
class EventStream:
    """Per-sensor event tracks and an optional truth track.

    Parameters
    ----------
    tracks : dict of str to Track
        One track per sensor, in the order the model's modalities use.
    truth : Track, optional
        What the model should answer over time: class labels (``values[:, 0]``, the label
        from that time on) for a classification stream.
    name : str
    meta : dict
        Provenance, the official split of each stretch, the generator's ground truth...

    Examples
    --------
    >>> import numpy as np
    >>> s = EventStream.from_arrays({"a": (np.arange(4) / 2, np.ones((4, 2)))})
    >>> s.sensors, s.n_events, s.start, s.end
    (('a',), 4, 0.0, 1.5)
    """

    tracks: dict[str, Track]
    truth: Track | None = None
    name: str = "stream"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.tracks:
            raise MlmmError("a stream needs at least one sensor track")
        named = [(f"track {sensor!r}", track) for sensor, track in self.tracks.items()]
        if self.truth is not None:
            named.append(("the truth track", self.truth))
        for what, track in named:
            _check_times(what, track.times)

    @classmethod
    def from_arrays(
        cls,
        tracks: dict[str, tuple[np.ndarray, np.ndarray]],
        truth: tuple[np.ndarray, np.ndarray] | None = None,
        name: str = "stream",
        meta: dict[str, Any] | None = None,
    ) -> EventStream:
        """Build from ``{sensor: (times, values)}`` and optional ``(times, labels)``."""
        return cls(
            {k: Track(*v) for k, v in tracks.items()},
            None if truth is None else Track(*truth),
            name,
            dict(meta or {}),
        )

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self.tracks)

    @property
    def n_events(self) -> int:
        return sum(len(t.times) for t in self.tracks.values())

    @property
    def start(self) -> float:
        """The first reading's time (an error when no track has a reading)."""
        return min(float(t.times[0]) for t in self._nonempty_tracks())

    @property
    def end(self) -> float:
        """The last reading's time (an error when no track has a reading)."""
        return max(float(t.times[-1]) for t in self._nonempty_tracks())

    def _nonempty_tracks(self) -> list[Track]:
        tracks = [t for t in self.tracks.values() if len(t.times)]
        if not tracks:
            raise MlmmError(
                f"stream {self.name!r} has no reading on any sensor (e.g. every sensor fails "
                f"from the start); keep at least one sensor's readings"
            )
        return tracks

    def track(self, sensor: str) -> Track:
        if sensor not in self.tracks:
            raise unknown_name_error("sensor", sensor, self.tracks)
        return self.tracks[sensor]

    def between(self, start: float, end: float) -> EventStream:
        """The stream cut to ``start <= time < end`` (truth included)."""
        truth = None
        if self.truth is not None:  # the value in force at ``start`` starts the cut
            truth = self.truth.between(start, end)
            before = int(np.searchsorted(self.truth.times, start, side="left")) - 1
            if before >= 0 and (not len(truth.times) or truth.times[0] > start):
                truth = Track(
                    np.concatenate([[start], truth.times]),
                    np.concatenate([self.truth.values[before : before + 1], truth.values]),
                )
        tracks = {k: t.between(start, end) for k, t in self.tracks.items()}
        return EventStream(tracks, truth, self.name, dict(self.meta))

    def with_tracks(self, tracks: dict[str, Track]) -> EventStream:
        """The same stream with other sensor tracks (what an outage leaves)."""
        return EventStream(tracks, self.truth, self.name, dict(self.meta))

    def truth_at(self, times: np.ndarray) -> np.ndarray:
        """The truth track's value in force at each time ``[n]`` (its last event at or before)."""
        if self.truth is None:
            raise MlmmError(f"stream {self.name!r} has no truth track to score against")
        idx = np.searchsorted(self.truth.times, np.asarray(times), side="right") - 1
        return self.truth.values[np.clip(idx, 0, None), 0]

    def events(self) -> Iterator[tuple[float, str, np.ndarray]]:
        """All events as ``(time, sensor, values)`` in time order (ties: track order)."""
        times = np.concatenate([t.times for t in self.tracks.values()])
        which = np.concatenate(
            [np.full(len(t.times), j) for j, t in enumerate(self.tracks.values())]
        )
        rows = np.concatenate([np.arange(len(t.times)) for t in self.tracks.values()])
        order = np.lexsort((which, times))
        tracks = list(self.tracks.values())
        names = self.sensors
        for i in order:
            yield float(times[i]), names[which[i]], tracks[which[i]].values[rows[i]]


def _check_times(what: str, times: np.ndarray) -> None:
    """One-line errors for a recorded track whose timestamps are not finite, strictly
    increasing seconds: a NaN time fell out of every comparison, and a repeated time counted
    twice in the sensor's rate (so the model was built for twice the readings it gets)."""
    if not np.isfinite(times).all():
        bad = times[~np.isfinite(times)][0]
        raise MlmmError(
            f"{what} has a timestamp {bad} (timestamps are finite seconds); drop or fix those "
            f"readings"
        )
    steps = np.diff(times)  # [n - 1]
    if (steps < 0).any():
        raise MlmmError(
            f"{what} has timestamps out of order; sort it (EventStream keeps each track sorted; "
            f"unordered feeds go to StreamEngine.push)"
        )
    if (steps == 0).any():
        repeated = times[1:][steps == 0]
        raise MlmmError(
            f"{what} has {len(repeated)} repeated timestamp(s) (first at t={repeated[0]:g}); "
            f"keep one reading per time, e.g. the first with np.unique(times, return_index=True) "
            f"(StreamEngine.push drops repeats under on_duplicate='drop')"
        )
