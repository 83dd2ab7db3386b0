"""Built-in streams and the windows a model trains on.

* :func:`basicmotions_stream` — UEA BasicMotions recordings concatenated in a seeded order
  (classification: the activity changes over time). Official TRAIN and TEST recordings make
  separate streams, so no recording is both trained and tested on.
* :func:`daphnet_stream` — Daphnet subject 06 run 02: three accelerometers (ankle, leg,
  trunk) at about 64 Hz, 7,040 readings (reconstruction: no label).
* :func:`synthetic_stream` — seeded multi-sensor stream with regime switches, per-sensor
  rates and noise, and its ground truth (the regime at every time).

:func:`window_dataset` turns a stream into the windows a :class:`StreamEngine` would build at
each step — the same code — so a model trains on exactly what it will see.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets._files import read_npz
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, did_you_mean, unknown_name_error
from mlmm.stream.engine import AGE, StreamEngine, StreamPolicy
from mlmm.stream.events import EventStream
from mlmm.utils import rng_for

__all__ = [
    "STREAMS",
    "basicmotions_stream",
    "daphnet_stream",
    "load_stream",
    "step_times",
    "stream_specs",
    "synthetic_stream",
    "time_split",
    "window_dataset",
]

DAPHNET_SENSORS = ("ankle", "leg", "trunk")
DAPHNET_TASKS = ("reconstruction", "freeze")


def basicmotions_stream(split: str = "train", seed: int = 0) -> EventStream:
    """BasicMotions replayed as a classification stream (``acc``, ``gyro`` at 10 Hz).

    The 40 recordings of the official ``split`` (10 s each) are concatenated in an order drawn
    from ``seed``; the truth track holds each recording's activity from its first reading.

    Parameters
    ----------
    split : {"train", "test"}
        The official UEA file the recordings come from.
    seed : int

    Returns
    -------
    EventStream
        ``meta["recordings"]``: the dataset row of each recording in stream order;
        ``meta["class_names"]``.

    Examples
    --------
    >>> s = basicmotions_stream("test", seed=0)
    >>> s.sensors, s.n_events, round(s.end, 1)
    (('acc', 'gyro'), 8000, 399.9)
    """
    from mlmm.data.datasets.basicmotions import BASICMOTIONS_CLASSES, load_basicmotions

    if split not in ("train", "test"):
        raise MlmmError(f"split must be 'train' or 'test', got {split!r}")
    data = load_basicmotions()
    rows = np.flatnonzero(data.meta["official_split"] == split)
    rows = rows[rng_for(seed, "basicmotions-stream", split).permutation(len(rows))]
    length, rate = 100, 10.0
    times = (np.arange(len(rows) * length) / rate).round(6)  # [R * 100]
    tracks = {name: (times, data.inputs[name][rows].reshape(-1, 3)) for name in ("acc", "gyro")}
    truth = (np.arange(len(rows)) * length / rate, data.targets[rows].astype(np.float64))
    return EventStream.from_arrays(
        tracks,
        truth,
        name=f"basicmotions-{split}",
        meta={
            "recordings": rows,
            "class_names": BASICMOTIONS_CLASSES,
            "task": "classification",
            "rate_hz": rate,
            "source": data.meta["source"],
            "license": data.meta["license"],
        },
    )


def daphnet_stream(
    path: str | os.PathLike | None = None,
    segment: int | None = None,
    task: str = "reconstruction",
) -> EventStream:
    """Daphnet as three 3-axis accelerometer sensors (``ankle``, ``leg``, ``trunk``).

    Without ``path``: the built-in S06R02 excerpt, 7,040 readings about 15.6 ms apart (64 Hz,
    110 s), values in mg. With ``path``: your own files, the UCI release's ``S<ss>R<rr>.txt``
    or TimeEval's ``.csv``, or a folder of them (read by
    :func:`mlmm.data.formats.daphnet.read_daphnet`: readings annotated 0, "not part of the
    experiment", are dropped and the experiment segments joined end to end).

    Parameters
    ----------
    path : path, optional
        A Daphnet file or folder; None for the built-in excerpt (see ``_files/ATTRIBUTION.md``).
    segment : int, optional
        Keep one experiment segment (0-based, counted over the files in name order; in
        one UCI file, segment k looks like TimeEval's ``E<k>``), None for all.
    task : {"reconstruction", "freeze"}
        ``reconstruction``: no truth track (predict a sensor's signal while it is down), as
        the built-in excerpt, whose freeze label is 0 throughout. ``freeze``: a truth track
        of freeze of gait (class 1, ``"freeze"``) against the rest of the experiment (class
        0, ``"no-freeze"``: standing, walking, turning), for recordings with a freeze.

    Examples
    --------
    >>> s = daphnet_stream()
    >>> s.sensors, len(s.track("ankle").times), round(s.track("leg").rate())
    (('ankle', 'leg', 'trunk'), 7040, 64)
    """
    if task not in DAPHNET_TASKS:
        raise unknown_name_error("daphnet task", str(task), DAPHNET_TASKS)
    meta: dict[str, Any] = {
        "task": "classification" if task == "freeze" else "reconstruction",
        "rate_hz": 64.0,
        "license": "CC BY 4.0",
        "citation": "Bächlin et al., IEEE TITB 14(2):436-446, 2010",
    }
    if path is None:
        arrays = read_npz("daphnet_s06r02.npz")
        times = arrays["time_ms"].astype(np.float64) / 1000.0
        values = arrays["values"].astype(np.float32)  # [7040, 9]
        freeze = np.zeros(len(times), np.int8)  # the excerpt's is_anomaly: 0 throughout
        if segment not in (None, 0):
            raise MlmmError(
                f"segment must be in [0, 1) (the built-in excerpt is one segment), got {segment!r}"
            )
        meta["source"] = (
            "Daphnet Freezing of Gait (UCI, doi:10.24432/C56K78), S06R02, via aeon 1.6.0"
        )
    else:
        from mlmm.data.formats.daphnet import read_daphnet

        recording = read_daphnet(path, segment=segment)
        times, values, freeze = recording.times, recording.values, recording.freeze
        meta.update(recording.meta, segments=recording.segments)
        meta["source"] = f"{recording.meta['source']} (Daphnet Freezing of Gait, your files)"
    truth = None
    if task == "freeze":
        if not freeze.any():
            raise MlmmError(
                f"task='freeze' needs a recording with a freeze of gait, and "
                f"{'the built-in excerpt' if path is None else path} has none (subjects 4 and "
                "10 never freeze); use task='reconstruction' or another recording"
            )
        truth = (times, freeze.astype(np.float64))
        meta["class_names"] = ("no-freeze", "freeze")
    tracks = {s: (times, values[:, 3 * j : 3 * j + 3]) for j, s in enumerate(DAPHNET_SENSORS)}
    return EventStream.from_arrays(tracks, truth, name="daphnet", meta=meta)


def synthetic_stream(
    duration: float = 600.0,
    n_sensors: int = 3,
    rates: tuple[float, ...] | None = None,
    noise: tuple[float, ...] | None = None,
    n_regimes: int = 3,
    mean_dwell: float = 20.0,
    channels: int = 2,
    seed: int = 0,
) -> EventStream:
    """A seeded multi-sensor stream with regime switches and known ground truth.

    The regime (the class to predict) follows a Markov chain: exponential dwell times of
    mean ``mean_dwell`` seconds, then a jump to another regime drawn uniformly. Sensor ``s``
    reads ``mu[regime, s] + noise[s] * N(0, 1)`` per channel at ``rates[s]`` Hz, where the
    regime means ``mu`` are drawn once from the seed. Every sensor alone carries the regime,
    more or less clearly (its noise).

    Parameters
    ----------
    duration : float
        Seconds of stream.
    n_sensors : int
    rates : tuple of float, optional
        Readings per second of each sensor; default 10, 20, 5, ... cycling.
    noise : tuple of float, optional
        Noise standard deviation of each sensor; default 1.0, 1.5, 2.0, ... .
    n_regimes, mean_dwell, channels, seed

    Returns
    -------
    EventStream
        Sensors ``s0, s1, ...``; truth = regime from each switch time on;
        ``meta["means"]`` the regime means ``[n_regimes, n_sensors, channels]``.

    Examples
    --------
    >>> s = synthetic_stream(duration=60, seed=1)
    >>> s.sensors, len(s.track("s1").times)
    (('s0', 's1', 's2'), 1200)
    """
    for label, value, kind in (
        ("duration", duration, "a number of seconds"),
        ("mean_dwell", mean_dwell, "a number of seconds"),
        ("n_sensors", n_sensors, "an integer"),
        ("n_regimes", n_regimes, "an integer"),
        ("channels", channels, "an integer"),
    ):  # a string from --stream-param duration=abc was a TypeError in a comparison
        number = isinstance(value, (int, float, np.integer, np.floating))
        integral = isinstance(value, (int, np.integer)) or kind != "an integer"
        if isinstance(value, bool) or not number or not integral or not np.isfinite(value):
            raise MlmmError(f"{label} must be {kind}, got {value!r}")
    rates = tuple(rates or [(10.0, 20.0, 5.0)[i % 3] for i in range(n_sensors)])
    noise = tuple(noise or [1.0 + 0.5 * i for i in range(n_sensors)])
    if len(rates) != n_sensors or len(noise) != n_sensors:
        raise MlmmError(f"give one rate and one noise level per sensor ({n_sensors} sensors)")
    # a rate of 0 was a ZeroDivisionError, a negative one a sensor without readings (refused
    # later as "too few readings to measure its rate")
    for label, values, least in (("rates", rates, "> 0 Hz"), ("noise", noise, ">= 0")):
        ok = [
            isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)
            and np.isfinite(v)
            and (v > 0 if label == "rates" else v >= 0)
            for v in values
        ]
        if not all(ok):
            raise MlmmError(f"{label} must be finite numbers {least}, got {list(values)!r}")
    if n_regimes < 2 or duration <= 0 or mean_dwell <= 0:
        raise MlmmError("need n_regimes >= 2, duration > 0 and mean_dwell > 0")
    rng = rng_for(seed, "synthetic-stream")
    means = rng.normal(0.0, 1.5, size=(n_regimes, n_sensors, channels))
    switches, regimes, t = [0.0], [int(rng.integers(n_regimes))], 0.0
    while True:
        t += float(rng.exponential(mean_dwell))
        if t >= duration:
            break
        step = int(rng.integers(1, n_regimes))
        switches.append(t)
        regimes.append((regimes[-1] + step) % n_regimes)
    switches_arr, regimes_arr = np.asarray(switches), np.asarray(regimes)
    tracks = {}
    for s in range(n_sensors):
        times = np.arange(0.0, duration, 1.0 / rates[s])  # [n]
        regime = regimes_arr[np.searchsorted(switches_arr, times, side="right") - 1]
        values = means[regime, s] + noise[s] * rng.standard_normal((len(times), channels))
        tracks[f"s{s}"] = (times, values)
    return EventStream.from_arrays(
        tracks,
        (switches_arr, regimes_arr.astype(np.float64)),
        name="synthetic",
        meta={
            "task": "classification",
            "means": means,
            "rates": rates,
            "noise": noise,
            "class_names": tuple(f"regime{k}" for k in range(n_regimes)),
        },
    )


STREAMS: dict[str, Callable[..., EventStream]] = {
    "basicmotions": basicmotions_stream,
    "daphnet": daphnet_stream,
    "synthetic": synthetic_stream,
}


def load_stream(name: str, **params: Any) -> EventStream:
    """A built-in stream by name (``basicmotions``, ``daphnet``, ``synthetic``)."""
    if name not in STREAMS:
        raise unknown_name_error("stream", name, STREAMS)
    accepted = inspect.signature(STREAMS[name]).parameters
    for key in params:
        if key not in accepted:
            if not accepted:
                raise MlmmError(f"stream {name!r} takes no parameters, got {key!r}")
            raise MlmmError(
                f"stream {name!r} has no parameter {key!r}.{did_you_mean(key, accepted)}"
            )
    return STREAMS[name](**params)


def stream_specs(
    stream: EventStream, window: float, rate: float | None = None, age: bool = False
) -> list[ModalitySpec]:
    """One sequence modality ``(window x rate, channels)`` per sensor (rate: the sensor's own,
    measured, unless given); with ``age``, a last vector modality ``"age"`` of one value per
    sensor (see ``StreamPolicy.age_input``)."""
    specs = []
    for sensor, track in stream.tracks.items():
        if rate is None and track.rate() <= 0:  # it read "lengthen the window", in vain
            raise MlmmError(
                f"sensor {sensor!r} has {len(track.times)} reading(s) in stream "
                f"{stream.name!r}, too few to measure its rate; build the specs from a stream "
                f"where it reports (two readings or more), or give rate="
            )
        slots = int(round(window * (rate or track.rate())))
        if slots < 1:
            raise MlmmError(f"window {window:g} s holds no reading of {sensor!r}; lengthen it")
        specs.append(ModalitySpec(sensor, "sequence", (slots, track.channels)))
    if age:
        specs.append(ModalitySpec(AGE, "vector", (len(specs),)))
    return specs


class _Shapes:
    """What :class:`StreamEngine` needs to build windows without a model."""

    def __init__(self, specs, task) -> None:
        self.specs, self.task, self.prior = tuple(specs), task, []


def step_times(
    stream: EventStream, policy: StreamPolicy, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """Step times ``t`` with the whole window ``(t - window, t]`` inside ``[start, end)``."""
    lo = stream.start if start is None else start
    hi = stream.end if end is None else end
    first = lo + policy.window
    if hi < first:
        return np.empty(0)
    return first + policy.step * np.arange(int(np.floor((hi - first) / policy.step + 1e-9)) + 1)


def window_dataset(
    stream: EventStream,
    specs: list[ModalitySpec],
    policy: StreamPolicy,
    task: TaskSpec | None = None,
    start: float | None = None,
    end: float | None = None,
    allow_empty: bool = False,
    times: np.ndarray | None = None,
) -> MultimodalDataset:
    """The windows a :class:`StreamEngine` builds at each step, as a dataset.

    Parameters
    ----------
    stream : EventStream
        Its truth track gives the targets (the class at the window's end); a stream without
        one gets regression targets of 0 (for methods trained only to impute).
    specs : list of ModalitySpec
        E.g. :func:`stream_specs`.
    policy : StreamPolicy
        Window, step, liveness and staleness rules, applied as the engine applies them (with
        ``staleness="hold"`` held windows are present, with ``age_input`` the ages are filled).
    task : TaskSpec, optional
        Default: classification over the truth's classes (``stream.meta["class_names"]``).
    start, end : float, optional
        Only windows lying wholly in ``[start, end)``: cut a stream in time without a window
        crossing the cut.
    allow_empty : bool
        Keep windows with no live modality (dropped by default).
    times : ndarray, optional
        The step times ``[S]`` themselves, instead of ``start`` and ``end`` (e.g. the steps of
        the stream before outages, :func:`step_times`, so that an outage of every sensor at
        an edge moves no step); each window holds the stream's readings in ``(t - window, t]``.

    Returns
    -------
    MultimodalDataset
        ``observed`` = the live modalities; ``meta["time_ordered"] = True`` (rows are steps in
        time), ``meta["times"]`` the step times.
    """
    if task is None:
        if stream.truth is not None:
            names = tuple(stream.meta.get("class_names", ()))
            n = len(names) or int(stream.truth.values.max()) + 1
            task = TaskSpec("classification", n, names or None)
        else:
            task = TaskSpec("regression")
    if times is not None:
        times = np.asarray(times, dtype=np.float64)  # [S]
        cut = stream  # a window reads only (t - window, t]
    else:
        times = step_times(stream, policy, start, end)
        lo = stream.start if start is None else start
        hi = stream.end + 1 if end is None else end
        cut = stream.between(lo, hi)
    if not len(times):
        raise MlmmError(f"no whole window of {policy.window:g} s fits in [{start}, {end})")
    engine = StreamEngine(_Shapes(specs, task), policy)
    for sensor, track in cut.tracks.items():
        engine.ingest(sensor, track.times, track.values)
    inputs, present, _ = engine.windows(times)
    if not allow_empty:
        keep = present[:, [s.name != AGE for s in specs]].any(axis=1)
        inputs, present, times = {k: v[keep] for k, v in inputs.items()}, present[keep], times[keep]
    if task.is_classification:
        targets = stream.truth_at(times).astype(np.int64)
    else:
        targets = np.zeros(len(times), np.float32)
    return MultimodalDataset(
        specs=specs,
        task=task,
        inputs=inputs,
        targets=targets,
        observed=present,
        name=stream.name,
        allow_empty=allow_empty,
        meta={"time_ordered": True, "times": times},
    )


def time_split(stream: EventStream, fraction: float = 0.7) -> tuple[EventStream, EventStream]:
    """Cut a stream at ``start + fraction x duration``: (before, after). Windows cut from each
    part by :func:`window_dataset` never cross the cut."""
    if not 0 < fraction < 1:
        raise MlmmError(f"fraction must be in (0, 1), got {fraction!r}")
    cut = stream.start + fraction * (stream.end - stream.start)
    return stream.between(stream.start, cut), stream.between(cut, stream.end + 1)
