"""Outage simulation on the time axis: which readings a sensor never delivers.

One short grammar, terms joined by ``+``:

* ``none`` — no outage.
* ``burst:RATE:len=L`` — a Gilbert-Elliott chain per sensor (the ``burst`` missingness model's
  :func:`~mlmm.data.missingness.burst.gilbert_elliott`, run along each sensor's own readings,
  which *are* time-ordered): ``RATE`` is the stationary fraction of time down, ``L`` the mean
  outage length in the sensor's readings, or in seconds with an ``s`` suffix (``len=2s``).
  Per-sensor rates: ``burst:acc=0.3,gyro=0.1:len=20``.
* ``fail:SENSOR@T`` — the sensor is down from ``T`` seconds after the stream's start to its end.
* ``gaps:PATH`` — replay recorded gaps: a CSV file with a header ``sensor,start,end`` (stream
  seconds, absolute; a reading at ``start <= t < end`` is lost).

Every term is seeded: :func:`apply_outages` draws sensor ``s`` of term ``i`` from
``rng_for(seed, "outage", i, s)``, so adding a sensor or a term leaves the others unchanged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlmm.data.missingness.base import check_rate, parse_number
from mlmm.data.missingness.burst import Burst, gilbert_elliott
from mlmm.errors import MlmmError, unknown_name_error
from mlmm.stream.events import EventStream, Track
from mlmm.utils import rng_for

__all__ = ["Outages", "apply_outages", "parse_outages"]

_KINDS = ("none", "burst", "fail", "gaps")


@dataclass(frozen=True)
class _Term:
    kind: str
    rates: dict[str, float] | float | None = None
    length: float = 1.0
    seconds: bool = False
    sensor: str = ""
    at: float = 0.0
    path: str = ""


@dataclass(frozen=True)
class Outages:
    """Which readings of each sensor were lost: ``down[sensor]`` is ``[n_readings]`` bool
    over the original track (True = lost)."""

    down: dict[str, np.ndarray]
    stream: EventStream
    spec: str

    def is_down(self, sensor: str, times: np.ndarray) -> np.ndarray:
        """Whether ``sensor`` was down at each time (the state of its reading at or before it)."""
        track = self.stream.track(sensor)
        idx = np.searchsorted(track.times, np.asarray(times), side="right") - 1
        return self.down[sensor][np.clip(idx, 0, None)] & (idx >= 0)

    def fraction_down(self) -> dict[str, float]:
        return {s: float(d.mean()) if len(d) else 0.0 for s, d in self.down.items()}


def parse_outages(text: str) -> list[_Term]:
    """Parse an outage spec (see the module docstring); raises one-line errors."""
    if not isinstance(text, str) or not text.strip():
        raise MlmmError(f"an outage spec is e.g. 'burst:0.3:len=20' or 'fail:acc@30', got {text!r}")
    terms = []
    for part in text.split("+"):
        part = part.strip()
        kind, _, rest = part.partition(":")
        kind = kind.lower()
        if kind not in _KINDS:
            raise MlmmError(
                f"unknown outage kind {kind!r} in {text!r}; use one of {list(_KINDS)} "
                f"(e.g. burst:0.3:len=20, fail:acc@30, gaps:gaps.csv)"
            )
        if kind == "none":
            continue
        if kind == "burst":
            terms.append(_parse_burst(part, rest))
        elif kind == "fail":
            sensor, at_sign, at = rest.partition("@")
            if not sensor or not at_sign:
                raise MlmmError(f"write a sensor failure as fail:SENSOR@SECONDS, got {part!r}")
            seconds = parse_number(at, "failure time", part)
            if seconds < 0:  # it would take the sensor down for the whole stream
                raise MlmmError(
                    f"failure time is in seconds after the stream's start, >= 0, got {at!r} in "
                    f"{part!r}; use fail:SENSOR@0 for a sensor down throughout"
                )
            terms.append(_Term("fail", sensor=sensor.strip(), at=seconds))
        else:
            if not rest:
                raise MlmmError(f"write recorded gaps as gaps:PATH.csv, got {part!r}")
            terms.append(_Term("gaps", path=rest))
    return terms


def _parse_burst(part: str, rest: str) -> _Term:
    fields = rest.split(":")
    length_field = [f for f in fields[1:] if f.startswith("len=")]
    if not fields[0] or not length_field:
        raise MlmmError(
            f"burst needs a rate and a mean outage length, e.g. burst:0.3:len=20 or "
            f"burst:acc=0.3,gyro=0.1:len=2s, got {part!r}"
        )
    unknown = [f for f in fields[1:] if not f.startswith("len=")]
    if unknown:
        raise MlmmError(f"burst takes only len=, got {unknown[0]!r} in {part!r}")
    length_text = length_field[0][4:]
    seconds = length_text.endswith("s")
    length = parse_number(length_text.rstrip("s"), "len", part)
    if seconds and not length > 0:  # it became one reading, silently
        raise MlmmError(
            f"mean outage length len must be > 0 seconds, got {length_text!r} in {part!r}; "
            f"e.g. len=2s"
        )
    if "=" in fields[0]:
        rates: dict[str, float] | float = {}
        for item in fields[0].split(","):
            sensor, _, value = item.partition("=")
            rates[sensor.strip()] = check_rate(
                parse_number(value, "outage rate", part), part, "outage rate"
            )
    else:
        rates = check_rate(parse_number(fields[0], "outage rate", part), part, "outage rate")
    if not seconds:  # the burst model validates the length against each rate
        for rate in rates.values() if isinstance(rates, dict) else [rates]:
            Burst(rate, length)
    return _Term("burst", rates=rates, length=length, seconds=seconds)


def apply_outages(stream: EventStream, spec: str, seed: int = 0) -> tuple[EventStream, Outages]:
    """Remove the readings an outage spec loses; returns the stream left and what was lost.

    Parameters
    ----------
    stream : EventStream
    spec : str
        See the module docstring, e.g. ``"burst:0.3:len=2s"`` or ``"fail:acc@30+burst:0.1:len=5"``.
    seed : int

    Returns
    -------
    (EventStream, Outages)

    Examples
    --------
    >>> import numpy as np
    >>> s = EventStream.from_arrays({"a": (np.arange(10.0), np.ones((10, 1)))})
    >>> left, lost = apply_outages(s, "fail:a@4")
    >>> len(left.track("a").times), lost.fraction_down()
    (4, {'a': 0.6})
    """
    down = {s: np.zeros(len(t.times), bool) for s, t in stream.tracks.items()}
    start = stream.start
    for i, term in enumerate(parse_outages(spec)):
        if term.kind == "burst":
            rates = (
                term.rates
                if isinstance(term.rates, dict)
                else dict.fromkeys(stream.sensors, term.rates)
            )
            for sensor, rate in rates.items():
                track = stream.track(sensor)
                length = term.length
                if term.seconds:
                    length = max(term.length * track.rate(), 1.0)
                    Burst(rate, length)  # validates the length in readings
                lost = gilbert_elliott(
                    len(track.times), rate, length, rng_for(seed, "outage", i, sensor)
                )
                down[sensor] |= lost
        elif term.kind == "fail":
            track = stream.track(term.sensor)
            down[term.sensor] |= track.times >= start + term.at
        else:
            for sensor, lo, hi in _read_gaps(term.path):
                if sensor not in stream.tracks:
                    raise unknown_name_error("sensor", sensor, stream.sensors)
                times = stream.tracks[sensor].times
                down[sensor] |= (times >= lo) & (times < hi)
    tracks = {s: Track(t.times[~down[s]], t.values[~down[s]]) for s, t in stream.tracks.items()}
    return stream.with_tracks(tracks), Outages(down, stream, spec)


def _read_gaps(path: str) -> list[tuple[str, float, float]]:
    file = Path(path)
    if not file.is_file():
        raise MlmmError(f"gap file {path!r} not found; give a CSV with columns sensor,start,end")
    rows = []
    with file.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"sensor", "start", "end"} <= set(reader.fieldnames):
            raise MlmmError(
                f"gap file {path!r} needs the header sensor,start,end, got {reader.fieldnames}"
            )
        for n, row in enumerate(reader, start=2):
            where = f"{path} line {n}"
            lo = parse_number(row["start"], "start", where)
            hi = parse_number(row["end"], "end", where)
            if hi < lo:
                raise MlmmError(
                    f"gap ends before it starts ({lo:g} > {hi:g}) at {where}; swap them"
                )
            rows.append((row["sensor"].strip(), lo, hi))
    return rows
