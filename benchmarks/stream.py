"""Stream benchmarks (issue 16 targets): outage robustness, reconstruction, latency, speed.

    python benchmarks/stream.py                 # the full run (see benchmarks/README.md)
    python benchmarks/stream.py --smoke         # a short check that every part runs

Writes ``benchmarks/results/stream.{json,md}`` (``stream-smoke.*`` with ``--smoke``) with the
machine it ran on. Parts:

1. BasicMotions with per-sensor Gilbert-Elliott outages (30 % of time down, mean outage 2 s):
   each method trained with ``burst`` outages vs its own no-outage accuracy and vs the two
   baselines (hold the last prediction; zero-filled outages).
2. Daphnet reconstruction: per sensor, NRMSE while down vs holding the last value and the
   training mean, for several mean outage lengths.
3. Per-step latency p50 / p99 of late-fusion, hemis, masked-attention, and the engine's
   overhead against calling the model in a plain loop on the same windows.
4. Replay speed of each built-in stream against real time, and 1M synthetic events through
   late-fusion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, markdown_table  # noqa: E402

import mlmm  # noqa: E402
from mlmm.data.dataset import MultimodalDataset  # noqa: E402
from mlmm.stream import (  # noqa: E402
    StreamEngine,
    StreamPolicy,
    apply_outages,
    load_stream,
    replay,
    stream_specs,
    synthetic_stream,
    time_split,
)
from mlmm.stream.datasets import step_times  # noqa: E402
from mlmm.stream.experiment import run_stream, train_on_stream  # noqa: E402
from mlmm.utils import atomic_write  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LATENCY_METHODS = ("late-fusion", "hemis", "masked-attention")


def outage_robustness(methods, seeds, epochs, on_empty="hold") -> list[dict]:
    rows = []
    for method in methods:
        for seed in seeds:
            run = run_stream(
                "basicmotions",
                method,
                outage="burst:0.3:len=2s",
                train_missing="burst:0.3:len=2",
                seed=seed,
                epochs=epochs,
                on_empty=on_empty,
            )
            s = run.summary()
            trained = f"{method} (train burst:0.3:len=2)"
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    "down": run.down,
                    "accuracy_outage": s.loc[trained, "accuracy"],
                    "accuracy_no_outage": s.loc[trained, "accuracy_no_outage"],
                    "complete_model_accuracy_outage": s.loc[f"{method} (train none)", "accuracy"],
                    "hold_last_prediction": s.loc["hold-last-prediction", "accuracy"],
                    "zero_filled": s.loc["zero-filled", "accuracy"],
                }
            )
            print(rows[-1], flush=True)
    return rows


def reconstruction(lengths, epochs) -> list[dict]:
    rows = []
    for length in lengths:
        run = run_stream(
            "daphnet",
            "knn-impute",
            outage=f"burst:0.3:len={length}",
            train_missing="none",
            epochs=epochs,
        )
        table = run.table[run.table.scope == "sensor"]
        for _, r in table.iterrows():
            rows.append(
                {
                    "len_readings": length,
                    "sensor": r.key,
                    "model": r.model,
                    "n": int(r.n),
                    "nrmse": float(r.value),
                }
            )
    return rows


def latency(methods, epochs) -> list[dict]:
    train = load_stream("basicmotions", split="train", seed=0)
    test = load_stream("basicmotions", split="test", seed=0)
    policy = StreamPolicy(window=2.0, step=1.0)
    specs = stream_specs(train, policy.window)
    left, _ = apply_outages(test, "burst:0.3:len=2s", seed=0)
    rows = []
    for method in methods:
        trained = train_on_stream(train, method, policy, specs, "burst:0.3:len=2", 0, epochs)
        # the same windows, the model called in a plain loop; best of 3 of each, interleaved
        engine = StreamEngine(trained, policy)
        for sensor, track in left.tracks.items():
            engine.ingest(sensor, track.times, track.values)
        times = step_times(left, policy)
        inputs, present, _ = engine.windows(times)

        engine_s, plain_s = np.inf, np.inf
        for _ in range(3):
            started = time.perf_counter()
            result = replay(trained, left, policy)
            engine_s = min(engine_s, time.perf_counter() - started)
            started = time.perf_counter()
            _plain_loop(trained, inputs, present)
            plain_s = min(plain_s, time.perf_counter() - started)
        lat = result.answers.latency_ms.to_numpy()
        rows.append(
            {
                "method": method,
                "steps": len(lat),
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
                "engine_s": engine_s,
                "plain_loop_s": plain_s,
                "overhead": engine_s / plain_s - 1,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _plain_loop(trained, inputs, present) -> None:
    """The model's predict path on one window at a time, nothing else."""
    for s in range(len(present)):
        if not present[s].any():
            continue
        one = MultimodalDataset(
            specs=trained.specs,
            task=trained.task,
            inputs={k: v[s : s + 1] for k, v in inputs.items()},
            targets=np.zeros(1, np.int64),
            observed=present[s : s + 1],
        )
        trained.predict_raw(one)


def speed(epochs, synthetic_events) -> list[dict]:
    rows = []
    for name in ("basicmotions", "daphnet", "synthetic"):
        stream = load_stream(name, **({"split": "test"} if name == "basicmotions" else {}))
        window = 0.5 if name == "daphnet" else 2.0
        policy = StreamPolicy(window=window, step=window / 2)
        train = stream if name != "basicmotions" else load_stream("basicmotions", split="train")
        if name != "basicmotions":
            train, stream = time_split(stream, 0.7)
        method = "mean-impute" if name == "daphnet" else "late-fusion"
        trained = train_on_stream(
            train, method, policy, stream_specs(train, window), "none", 0, epochs
        )
        duration = stream.end - stream.start
        for batch_steps in (1, 256):
            started = time.perf_counter()
            result = replay(trained, stream, policy, batch_steps=batch_steps)
            wall = time.perf_counter() - started
            rows.append(
                {
                    "stream": name,
                    "method": method,
                    "events": stream.n_events,
                    "answers": len(result.answers),
                    "batch_steps": batch_steps,
                    "stream_s": duration,
                    "wall_s": wall,
                    "x_real_time": duration / wall,
                }
            )
            print(rows[-1], flush=True)
    # 1M events: rates 10 + 20 + 5 Hz = 35 events per second of stream
    duration = synthetic_events / 35.0
    big = synthetic_stream(duration=duration, seed=0)
    train, test = time_split(synthetic_stream(duration=600, seed=0), 0.7)
    policy = StreamPolicy(window=2.0, step=1.0)
    trained = train_on_stream(
        train, "late-fusion", policy, stream_specs(train, 2.0), "none", 0, epochs
    )
    for batch_steps in (1, 256):
        started = time.perf_counter()
        result = replay(trained, big, policy, batch_steps=batch_steps)
        wall = time.perf_counter() - started
        rows.append(
            {
                "stream": "synthetic-big",
                "method": "late-fusion",
                "events": big.n_events,
                "answers": len(result.answers),
                "batch_steps": batch_steps,
                "stream_s": duration,
                "wall_s": wall,
                "x_real_time": duration / wall,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument(
        "--on-empty",
        default="hold",
        help="what a step with every sensor down answers (hold: StreamPolicy's default, prior)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.smoke:
        seeds, epochs, methods = seeds[:1], 2, ("late-fusion",)
        lengths, events = (64,), 50_000
    else:
        epochs, methods = args.epochs, LATENCY_METHODS
        lengths, events = (16, 64, 256), 1_000_000
    started = time.time()
    out = {
        "outage_robustness": outage_robustness(methods, seeds, epochs, args.on_empty),
        "reconstruction": reconstruction(lengths, epochs),
        "latency": latency(methods, epochs),
        "speed": speed(epochs, events),
        "config": {
            "smoke": args.smoke,
            "seeds": seeds,
            "epochs": epochs,
            "on_empty": args.on_empty,
            "mlmm": mlmm.__version__,
        },
        "seconds": time.time() - started,
        "machine": machine(),
    }
    name = "stream-smoke" if args.smoke else "stream"
    RESULTS.mkdir(exist_ok=True)
    with atomic_write(RESULTS / f"{name}.json") as fh:
        json.dump(out, fh, indent=1, default=float)
    with atomic_write(RESULTS / f"{name}.md") as fh:
        fh.write(_markdown(out))
    print(_markdown(out))
    return 0


def _markdown(out) -> str:
    import pandas as pd

    lines = [
        f"# Stream benchmark ({'smoke' if out['config']['smoke'] else 'full'})",
        "",
        f"machine: {out['machine']}",
        "",
    ]
    rob = pd.DataFrame(out["outage_robustness"]).drop(columns="down")
    if len(rob):
        mean = rob.drop(columns="seed").groupby("method").mean()
        mean["kept"] = mean.accuracy_outage / mean.accuracy_no_outage
        lines += [
            "## BasicMotions, burst 30 % down, mean outage 2 s",
            "",
            markdown_table(mean.reset_index()),
            "",
        ]
    rec = pd.DataFrame(out["reconstruction"])
    if len(rec):
        wide = rec.pivot_table(index=["len_readings", "sensor"], columns="model", values="nrmse")
        lines += [
            "## Daphnet reconstruction NRMSE while down",
            "",
            markdown_table(wide.reset_index()),
            "",
        ]
    lines += ["## Latency", "", markdown_table(pd.DataFrame(out["latency"])), ""]
    lines += ["## Replay speed", "", markdown_table(pd.DataFrame(out["speed"])), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
