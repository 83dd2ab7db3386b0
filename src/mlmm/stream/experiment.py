"""``run_stream``: train on a stream's windows, replay its test part under outages, score.

Classification streams (``basicmotions``, ``synthetic``) score accuracy; the reconstruction
stream (``daphnet``) scores, for each sensor while it is down, the NRMSE of the method's
imputation of its current reading against holding its last reading and its training mean.
Everything lands in one long table (``StreamRun.table``: model, scope, key, n, metric, value)
that the CLI prints and the results store keeps.
"""

from __future__ import annotations

import hashlib
import time as _time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.missingness import parse_missingness, simulate
from mlmm.errors import MlmmError
from mlmm.stream.baselines import ZeroFilled, hold_last_prediction
from mlmm.stream.datasets import (
    load_stream,
    step_times,
    stream_specs,
    time_split,
    window_dataset,
)
from mlmm.stream.engine import StreamPolicy, StreamResult, replay
from mlmm.stream.events import EventStream
from mlmm.stream.outages import apply_outages
from mlmm.utils import rng_for

__all__ = ["DEFAULT_WINDOWS", "StreamRun", "run_stream", "train_on_stream"]

#: (window, step) in seconds per built-in stream.
DEFAULT_WINDOWS = {"basicmotions": (2.0, 1.0), "synthetic": (2.0, 1.0), "daphnet": (0.5, 0.25)}
#: Steps (answers) each part of a stream must hold at least: the training part as training
#: windows, the test part as answers to score (fewer cannot fill the default 10 time bins).
MIN_STREAM_STEPS = 10
#: Columns of :attr:`StreamRun.table`.
TABLE_COLUMNS = ["model", "scope", "key", "n", "metric", "value"]
#: Outage-length bins (seconds) of the reconstruction scores.
OUTAGE_BINS = (0.0, 0.5, 1.0, 2.0, 4.0, np.inf)


def stream_digest(stream: EventStream) -> str:
    """A hash of a stream's tracks and truth (names, times, values): what a replay reads."""
    digest = hashlib.sha256()
    tracks = {f"track:{name}": track for name, track in stream.tracks.items()}
    if stream.truth is not None:
        tracks["truth"] = stream.truth
    for name, track in sorted(tracks.items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(track.times).tobytes())
        digest.update(np.ascontiguousarray(track.values).tobytes())
    return digest.hexdigest()[:16]


def outage_bin_label(low: float, high: float) -> str:
    """The key of an outage-length bin: ``0.5-1s``, and ``>=4s`` for the open last bin
    (written ``4-infs`` before; :meth:`mlmm.bench.ResultsStore.stream_results` reads those
    stored keys as ``>=4s``)."""
    return f"{low:g}-{high:g}s" if np.isfinite(high) else f">={low:g}s"


@dataclass
class StreamRun:
    """What :func:`run_stream` produced.

    Attributes
    ----------
    table : pandas.DataFrame
        ``model, scope, key, n, metric, value``. Scopes: ``overall`` (key ``all``; metrics
        ``accuracy``, ``accuracy_no_outage``, ``loss_vs_no_outage``, ``empty_fraction``
        (steps with every sensor down) and, under ``on_empty="hold"``,
        ``accuracy_on_empty_prior`` (the same replay answering those steps with the prior)
        for classification,
        ``nrmse`` for reconstruction), ``time`` (key = the bin's start in stream
        seconds), ``live`` (key = the live sensors, e.g. ``acc+gyro``), ``latency`` (metrics
        ``p50_ms``, ``p99_ms``), ``outage_length`` (key ``sensor:0.5-1s``: the score at the
        steps where that sensor is down, by the length of its outage in force; accuracy or
        NRMSE) and ``sensor`` (reconstruction).
    steps : pandas.DataFrame
        One row per answer and model: ``model, time, prediction, truth, live, latency_ms``
        (reconstruction: the sensor, the truth and each estimate).
    config : dict
    down : dict
        Fraction of each sensor's test readings lost.
    """

    table: pd.DataFrame
    steps: pd.DataFrame
    config: dict[str, Any]
    down: dict[str, float] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """The overall rows, one column per metric."""
        overall = self.table[self.table.scope.isin(["overall", "latency"])]
        return overall.pivot_table(index="model", columns="metric", values="value", sort=False)


def train_on_stream(
    stream: EventStream,
    method: str,
    policy: StreamPolicy,
    specs: list,
    train_missing: str = "none",
    seed: int = 0,
    epochs: int = 30,
    params: dict[str, Any] | None = None,
):
    """Train a registered method on a stream's windows (under ``train_missing``, drawn along
    time: the windows are time-ordered, so ``burst`` runs along the stream)."""
    import mlmm

    data = window_dataset(stream, specs, policy)
    if train_missing != "none":
        data, _ = simulate(data, train_missing, rng_for(seed, "stream-train-mask", train_missing))
    model = mlmm.create_method(method, data.specs, data.task, **(params or {}))
    trainer = mlmm.Trainer(max_epochs=epochs, seed=seed, progress=False)
    trained = trainer.fit(model, data)
    trained.info.update(
        {
            "stream": stream.name,
            "window": policy.window,
            "step": policy.step,
            "missing": train_missing,
            "seed": seed,
        }
    )
    return trained


def _check_steps(stream: str, parts: dict[str, EventStream], policy: StreamPolicy) -> None:
    """Refuse a window or step that leaves a part of the stream fewer than
    :data:`MIN_STREAM_STEPS` steps, in one line naming the parts' lengths and the fix (a step
    longer than the stream trained on one window and failed far from the cause)."""
    need = MIN_STREAM_STEPS
    counts = {part: len(step_times(events, policy)) for part, events in parts.items()}
    if min(counts.values()) >= need:
        return
    lengths = {part: events.end - events.start for part, events in parts.items()}
    shortest = min(lengths, key=lengths.get)
    where = ", ".join(f"{part} part {lengths[part]:g} s" for part in parts)
    if policy.window >= lengths[shortest]:
        most = lengths[shortest] - (need - 1) * policy.step
        fix = f"a window of at most {_down(most)} s" if most > 0 else "a shorter window and step"
        raise MlmmError(
            f"a window of {policy.window:g} s is longer than the {shortest} part of the "
            f"{stream} stream ({where}); a run needs {need} steps in each part: give {fix}"
        )
    most = min((lengths[part] - policy.window) / (need - 1) for part in parts)
    steps = " and ".join(f"{counts[part]} step(s) in its {part} part" for part in parts)
    raise MlmmError(
        f"a step of {policy.step:g} s leaves the {stream} stream {steps} ({where}, window "
        f"{policy.window:g} s); a run needs at least {need} in each part: give a step of at "
        f"most {_down(most)} s, or a shorter window"
    )


def _down(seconds: float) -> str:
    """``seconds`` rounded down to the millisecond, as text (a bound that still holds; not
    ``:g``, whose 6 significant digits round 1999.777 up to 1999.78)."""
    return f"{np.floor(seconds * 1000) / 1000:.3f}".rstrip("0").rstrip(".")


def run_stream(
    stream: str = "basicmotions",
    method: str = "late-fusion",
    outage: str = "burst:0.3:len=2s",
    train_missing: str = "burst:0.3:len=2",
    window: float | None = None,
    step: float | None = None,
    seed: int = 0,
    epochs: int = 30,
    params: dict[str, Any] | None = None,
    stream_params: dict[str, Any] | None = None,
    time_bins: int = 10,
    baselines: bool = True,
    on_empty: str = "hold",
) -> StreamRun:
    """Train on a built-in stream, replay its test part with outages, score against baselines.

    Parameters
    ----------
    stream : {"basicmotions", "synthetic", "daphnet"}
        ``basicmotions`` trains on the official TRAIN recordings and tests on the TEST ones;
        the others are cut in time (70 % / 30 %), no window crossing the cut.
    method : str
        A registered method (``daphnet``: one that imputes, e.g. ``knn-impute``).
    outage : str
        Test outages (:mod:`mlmm.stream.outages` grammar), seeded by ``seed``.
    train_missing : str
        Training missingness of the method (a missingness spec on the time-ordered windows,
        so a ``burst`` length counts steps: ``len=2`` with 1 s steps is a 2 s mean outage;
        ``"none"`` to train on complete windows only). Classification also trains the method
        on complete windows for the baselines.
    window, step : float, optional
        Seconds; defaults in :data:`DEFAULT_WINDOWS`. They must leave each part of the
        stream (training and test) at least :data:`MIN_STREAM_STEPS` steps, or the run is
        refused before any training.
    seed, epochs, params, stream_params
    time_bins : int
        Bins of the score over time.
    baselines : bool
        Classification: add ``hold-last-prediction`` and ``zero-filled``.
    on_empty : str, default "hold"
        ``StreamPolicy.on_empty`` of the replays: what a step with every sensor down answers
        (the last answer from data, flagged; ``"prior"``, ``"flag"``, ``"skip"``).

    Returns
    -------
    StreamRun
    """
    if train_missing != "none":
        parse_missingness(train_missing)  # a bad spec fails now, not after the first training
    default_window, default_step = DEFAULT_WINDOWS.get(stream, (2.0, 1.0))
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        # 0 trained nothing and stored the untrained models' scores as a run
        raise MlmmError(f"epochs must be a positive integer, got {epochs!r}")
    policy = StreamPolicy(  # a given 0 reaches the policy's check, not the default
        window=default_window if window is None else window,
        step=default_step if step is None else step,
        on_empty=on_empty,
    )
    config = {
        "stream": stream,
        "method": method,
        "outage": outage,
        "train_missing": train_missing,
        "window": policy.window,
        "step": policy.step,
        "seed": seed,
        "epochs": epochs,
        "params": params or {},
        "on_empty": on_empty,
        "stream_params": stream_params or {},
    }
    if stream == "basicmotions":
        taken = sorted({"split", "seed"} & set(stream_params or {}))
        if taken:
            raise MlmmError(
                f"basicmotions takes {taken[0]!r} from the run (TRAIN and TEST recordings, "
                f"seed=); drop it from the stream parameters"
            )
        train = load_stream("basicmotions", split="train", seed=seed, **(stream_params or {}))
        test = load_stream("basicmotions", split="test", seed=seed, **(stream_params or {}))
    else:
        full = load_stream(stream, **(stream_params or {}))
        if "path" in config["stream_params"]:
            # the run's key must change with the file's contents, not only its name: an edited
            # recording would otherwise replace the stored results of the old one
            config["data_sha256"] = stream_digest(full)
        train, test = time_split(full, 0.7)
    _check_steps(stream, {"training": train, "test": test}, policy)
    specs = stream_specs(train, policy.window)
    left, lost = apply_outages(test, outage, seed)
    down = lost.fraction_down()
    if test.truth is None:
        table, steps = _reconstruction(train, test, left, lost, specs, policy, config)
        return StreamRun(table, steps, config, down)

    models = {}
    complete = train_on_stream(train, method, policy, specs, "none", seed, epochs, params)
    models[f"{method} (train none)"] = complete
    if train_missing != "none":
        label = f"{method} (train {train_missing})"
        models[label] = train_on_stream(
            train, method, policy, specs, train_missing, seed, epochs, params
        )
    results: dict[str, StreamResult] = {}
    clean: dict[str, float] = {}
    span = {"start": test.start, "end": test.end}  # the steps of the stream before outages
    for label, trained in models.items():
        results[label] = replay(trained, left, policy, **span)
        clean[label] = replay(trained, test, policy, batch_steps=256).score()
    if baselines:
        names = tuple(s.name for s in specs)
        results["hold-last-prediction"] = hold_last_prediction(
            results[f"{method} (train none)"], names
        )
        results["zero-filled"] = replay(ZeroFilled(complete), left, policy, **span)
    rows, steps = [], []
    edges = np.linspace(test.start, test.end, time_bins + 1)
    for label, result in results.items():
        answers = result.answers
        rows.append((label, "overall", "all", len(answers), "accuracy", result.score()))
        if label in clean:
            rows.append((label, "overall", "all", len(answers), "accuracy_no_outage", clean[label]))
            loss = clean[label] - result.score()
            rows.append((label, "overall", "all", len(answers), "loss_vs_no_outage", loss))
            # of every step, answered or skipped (under on_empty="skip" the answers hold no
            # empty step, and the fraction read 0 however many were skipped)
            steps_total = len(answers) + result.stats.get("skipped", 0)
            empty = result.stats.get("empty", 0) / steps_total if steps_total else float("nan")
            rows.append((label, "overall", "all", len(answers), "empty_fraction", empty))
            if on_empty == "hold":  # the same replay under on_empty="prior", for comparison
                prior = _with_prior_on_empty(answers, models[label].prior)
                rows.append(
                    (label, "overall", "all", len(answers), "accuracy_on_empty_prior", prior)
                )
        which = np.clip(np.searchsorted(edges, answers["time"], side="right") - 1, 0, time_bins - 1)
        for b, group in answers.groupby(which):
            rows.append(
                (label, "time", f"{edges[b]:.1f}", len(group), "accuracy", group.correct.mean())
            )
        for live, group in answers.groupby("live", sort=True):
            rows.append((label, "live", live, len(group), "accuracy", group.correct.mean()))
        rows += _accuracy_by_outage_length(label, answers, test, lost)
        latency = answers["latency_ms"].to_numpy()
        if label in models or label == "zero-filled":
            for q, metric in ((50, "p50_ms"), (99, "p99_ms")):
                rows.append(
                    (
                        label,
                        "latency",
                        "step",
                        len(latency),
                        metric,
                        float(np.percentile(latency, q)),
                    )
                )
        frame = answers[["time", "prediction", "truth", "live", "latency_ms"]].copy()
        frame.insert(0, "model", label)
        steps.append(frame)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return StreamRun(table, pd.concat(steps, ignore_index=True), config, down)


def _accuracy_by_outage_length(label, answers, test, lost) -> list[tuple]:
    """Accuracy at the steps where each sensor is down, by the length of its outage in force
    (keys ``sensor:0-0.5s`` ... ``sensor:>=4s``, as the reconstruction's NRMSE)."""
    rows = []
    times = answers["time"].to_numpy()  # [S]
    for sensor in test.sensors:
        if not lost.down[sensor].any():
            continue
        down = lost.is_down(sensor, times)  # [S]
        if not down.any():
            continue
        lengths = _outage_lengths(lost.down[sensor], test.track(sensor).times, times[down])
        correct = answers["correct"].to_numpy()[down]  # [D]
        rows += _outage_length_rows(label, sensor, lengths, correct, "accuracy", np.mean)
    return rows


def _outage_length_rows(label, sensor, lengths, scores, metric, reduce) -> list[tuple]:
    """Rows ``(label, "outage_length", "sensor:0.5-1s", n, metric, value)``: the per-step
    ``scores [D]`` of the steps with ``lengths [D]`` in each :data:`OUTAGE_BINS` bin, reduced
    to one value by ``reduce`` (accuracy: the mean; NRMSE: the root of the mean)."""
    which = np.searchsorted(OUTAGE_BINS, lengths, side="right") - 1  # [D]
    rows = []
    for b in np.unique(which):
        key = outage_bin_label(OUTAGE_BINS[b], OUTAGE_BINS[b + 1])
        sel = which == b
        value = float(reduce(scores[sel]))
        rows.append((label, "outage_length", f"{sensor}:{key}", int(sel.sum()), metric, value))
    return rows


def _with_prior_on_empty(answers: pd.DataFrame, prior: list[float]) -> float:
    """The accuracy the replay would have had with ``on_empty="prior"``: only the answers of
    steps with no live sensor differ (they become the prior's most likely class)."""
    prediction = np.where(answers["empty"], float(np.argmax(prior)), answers["prediction"])
    return float((prediction == answers["truth"].to_numpy()).mean())


def _reconstruction(train, test, left, lost, specs, policy, config):
    """Per sensor, while it is down: NRMSE of the method's imputation of its current reading,
    of holding its last reading, and of its training mean."""
    trained = train_on_stream(
        train,
        config["method"],
        policy,
        specs,
        config["train_missing"],
        config["seed"],
        config["epochs"],
        config["params"],
    )
    model = trained.model
    if not getattr(type(model), "imputes", False):
        raise MlmmError(
            f"the daphnet stream scores reconstruction and {config['method']!r} does not impute; "
            f"use an imputation method, e.g. --method knn-impute"
        )
    started = _time.perf_counter()
    data = window_dataset(
        left, specs, policy, task=trained.task, allow_empty=True, times=step_times(test, policy)
    )
    times = data.meta["times"]
    rows, steps = [], []
    for j, spec in enumerate(specs):
        sensor = spec.name
        down = lost.is_down(sensor, times)
        if not down.any():
            continue
        present = data.observed[down].copy()
        present[:, j] = False  # reconstruct from the other sensors, not from a held window
        part = data.subset(np.flatnonzero(down)).with_presence(present, allow_empty=True)
        batch = MultimodalBatch.from_dataset(
            trained.standardizer.transform(part), with_target=False
        )
        with torch.no_grad():
            imputed = model.eval().impute(batch)[sensor][:, -1, :].numpy()  # [S, C] standardised
        mean = trained.standardizer.mean_[sensor].reshape(-1).astype(np.float64)  # [C]
        std = trained.standardizer.std_[sensor].reshape(-1).astype(np.float64)  # [C]
        estimate = imputed * std + mean  # raw units
        truth_track, left_track = test.track(sensor), left.track(sensor)
        at = times[down]
        truth = truth_track.values[np.searchsorted(truth_track.times, at, side="right") - 1]
        last = np.searchsorted(left_track.times, at, side="right") - 1
        if len(left_track.times):
            held = np.where((last >= 0)[:, None], left_track.values[np.clip(last, 0, None)], mean)
        else:  # out for the whole test part (fail:SENSOR@0): no reading to hold
            held = np.broadcast_to(mean, truth.shape)
        train_values = train.track(sensor).values
        scale = train_values.std(axis=0)
        estimates = {
            config["method"]: estimate,
            "hold-last-value": held,
            "training-mean": np.broadcast_to(train_values.mean(axis=0), truth.shape),
        }
        lengths = _outage_lengths(lost.down[sensor], truth_track.times, at)
        for label, value in estimates.items():
            sq = (((value - truth) / scale) ** 2).mean(axis=1)  # [S] per step, over channels
            rows.append((label, "sensor", sensor, len(sq), "nrmse", float(np.sqrt(sq.mean()))))
            rows += _outage_length_rows(label, sensor, lengths, sq, "nrmse", _root_mean)
            frame = pd.DataFrame(
                {
                    "model": label,
                    "time": at,
                    "prediction": value[:, 0],
                    "truth": truth[:, 0],
                    "live": sensor,
                    "latency_ms": np.nan,
                }
            )
            steps.append(frame)
    elapsed = (_time.perf_counter() - started) * 1000 / max(len(times), 1)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    per_sensor = table[table.scope == "sensor"]
    # a plain loop, not groupby.apply(include_groups=...), which needs pandas >= 2.2
    extra = [
        (
            m,
            "overall",
            "all",
            int(group.n.sum()),
            "nrmse",
            float(np.sqrt(np.average(group.value**2, weights=group.n))),
        )
        for m, group in per_sensor.groupby("model", sort=False)
    ]
    extra.append((config["method"], "latency", "step", len(times), "mean_ms", elapsed))
    table = pd.concat([pd.DataFrame(extra, columns=TABLE_COLUMNS), table], ignore_index=True)
    steps = pd.concat(steps, ignore_index=True) if steps else pd.DataFrame()
    return table, steps


def _root_mean(squares: np.ndarray) -> float:
    return float(np.sqrt(squares.mean()))


def _outage_lengths(down: np.ndarray, times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Length in seconds of the outage holding each time in ``at``."""
    edges = np.diff(np.concatenate([[0], down.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # reading indices
    idx = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 1)
    run = np.searchsorted(starts, idx, side="right") - 1
    start_t = times[starts[run]]
    # ends at the next delivered reading; one still down at the track's end, one reading
    # interval after its last reading (it measured a one-reading outage there as 0 s)
    interval = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    last = ends[run] >= len(times)
    end_t = np.where(last, times[-1] + interval, times[np.minimum(ends[run], len(times) - 1)])
    return end_t - start_t
