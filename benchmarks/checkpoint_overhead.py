"""What training checkpoints cost: Trainer.fit without a checkpoint_dir, with the default
(adaptive: each write waits 20 times as long as the last took) and after every epoch.

A small run, where the overhead shows most: ``hemis`` (about 100k parameters) on
``synthetic`` (1000 samples, 700 training rows), 40 epochs, no early stopping, one thread.
The three settings are interleaved, ``--reps`` times each, so that a change of the machine's
load falls on all of them; the table has each setting's median training seconds and the
overhead against no checkpoints, the same for the process's CPU seconds, and the checkpoint
writes and their total seconds (copying the state to the CPU, serialising, hashing, writing
and syncing).

Run:  OMP_NUM_THREADS=1 python benchmarks/checkpoint_overhead.py [--reps 3]
Writes <out>/checkpoint_overhead.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import machine, write_report  # noqa: E402

import mlmm  # noqa: E402
from mlmm.train import resume  # noqa: E402

SETTINGS = {"none": None, "adaptive (default)": "adaptive", "every epoch": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mlmm.load_dataset("synthetic", n_samples=1000, seed=0)
    split = mlmm.train_val_test_split(data, seed=0)
    opened: list[resume.TrainingCheckpoint] = []
    original = resume.TrainingCheckpoint.open.__func__

    def kept_open(cls, *a, **k):  # the run's checkpoint: its writes and their seconds
        opened.append(original(cls, *a, **k))
        return opened[-1]

    resume.TrainingCheckpoint.open = classmethod(kept_open)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    counts: dict[str, list[int]] = {name: [] for name in SETTINGS}
    write_seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for rep in range(args.reps + 1):  # the first round warms up and is not kept
        for name, every in SETTINGS.items():
            with tempfile.TemporaryDirectory() as folder:
                options = {}
                if every is not None:
                    options["checkpoint_dir"] = folder
                    options["checkpoint_every"] = None if every == "adaptive" else every
                trainer = mlmm.Trainer(
                    max_epochs=args.epochs, patience=10_000, progress=False, seed=0, **options
                )
                model = mlmm.create_method("hemis", data.specs, data.task)
                opened.clear()
                cpu = time.process_time()
                trained = trainer.fit(model, split.train, split.val)
                cpu = time.process_time() - cpu
            if rep:
                seconds[name].append(trained.train_seconds)
                cpu_seconds[name].append(cpu)
                counts[name].append(opened[0].writes if opened else 0)
                write_seconds[name].append(opened[0].write_seconds if opened else 0.0)
    base = statistics.median(seconds["none"])
    cpu_base = statistics.median(cpu_seconds["none"])
    rows = []
    for name in SETTINGS:
        median = statistics.median(seconds[name])
        cpu = statistics.median(cpu_seconds[name])
        rows.append(
            {
                "checkpoints": name,
                "median_train_seconds": median,
                "overhead_percent": 100 * (median - base) / base,
                "median_cpu_seconds": cpu,
                "cpu_overhead_percent": 100 * (cpu - cpu_base) / cpu_base,
                "writes_per_run": statistics.median(counts[name]),
                "median_write_seconds_per_run": statistics.median(write_seconds[name]),
            }
        )
    table = pd.DataFrame(rows)
    command = f"OMP_NUM_THREADS=1 python benchmarks/checkpoint_overhead.py --reps {args.reps}"
    record = {
        "command": command,
        "machine": machine(),
        "epochs": args.epochs,
        "reps": args.reps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "writes": counts,
        "write_seconds": write_seconds,
        "rows": rows,
    }
    checks = {
        "write share of the default's training time (%)": 100
        * statistics.median(write_seconds["adaptive (default)"])
        / statistics.median(seconds["adaptive (default)"]),
        "write share when writing every epoch (%)": 100
        * statistics.median(write_seconds["every epoch"])
        / statistics.median(seconds["every epoch"]),
    }
    note = (
        "hemis on synthetic (1000 samples), 40 epochs, one thread, settings interleaved. "
        "The wall-clock overhead is noisy on a loaded machine (see load_average in the "
        "record); the process CPU seconds (of the whole fit) and the write share (seconds "
        "spent gathering and writing checkpoints / training seconds) are steadier."
    )
    write_report(
        args.out, "checkpoint_overhead", "Training checkpoint overhead", note, record, table, checks
    )


if __name__ == "__main__":
    main()
