"""Data-parallel training on the CPU: 2 Gloo processes against 1, on `handwritten`.

Issue 14's CPU target: the 2-process run (``mlmm train --devices 2``, DistributedDataParallel
over Gloo) reaches the 1-process metrics within 0.5 points; the speed ratio is recorded. Both
runs go through the same command, with the same global batch (``--batch-size``, split over the
processes), seed, split (70/10/20), masks and early stopping; the test accuracy is computed here
from the saved artifact under the test condition. Methods with dropout draw it per rank, so a
2-process run is another random draw of the same training, not a copy: the table shows each
seed and the mean.

Timing: ``train s`` is the artifact's training time (rank 0); ``wall s`` the whole command
(process start, data loading, test evaluation). Each run pins 1 thread per process: 1 process
uses 1 core, 2 processes use 2. On a machine that other jobs load, 2 processes wait for each
other at every step (a gradient all-reduce per batch): the load average is recorded.

Two methods by default: ``hemis`` at its defaults (dropout and modality dropout, drawn per
rank), and ``late-fusion`` without dropout: no randomness in its forward pass. Even so the two
runs are not bit-identical on MCAR data: late fusion averages each head's loss over the rows
where its modality is present, and each process divides by its own count (as any DDP training
does), and float sums differ in order; over 100+ epochs a near-tie in early stopping can then
go the other way. tests/train/test_distributed.py checks the exact match on complete data.

Run:  python benchmarks/ddp_cpu.py [--methods "hemis,late-fusion[dropout=0]"] [--seeds 0,1,2]
Writes <out>/ddp_cpu.{json,md} with the machine it ran on; finished runs are kept in
<out>/ddp_cpu-runs/ (one JSON each) and reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

import mlmm  # noqa: E402
from mlmm.train.trained import TrainedModel  # noqa: E402
from mlmm.utils import atomic_write  # noqa: E402

DATASET = "handwritten"


def parse_methods(text: str) -> list[tuple[str, list[str]]]:
    """``"hemis,late-fusion[dropout=0]"`` -> ``[("hemis", []), ("late-fusion", ["dropout=0"])]``."""
    out = []
    for match in re.finditer(r"([\w-]+)(?:\[([^\]]*)\])?", text):
        params = [p for p in (match.group(2) or "").split(";") if p]
        out.append((match.group(1), params))
    return out


def one_run(
    method: str,
    params: list[str],
    seed: int,
    devices: int,
    missing: str,
    runs: Path,
    finished_only: bool = False,
) -> dict | None:
    """Train with ``mlmm train --devices`` (or read the finished run) and score the artifact;
    with ``finished_only``, only read (None when the run has not finished)."""
    label = "-".join([method, *params])
    record = runs / f"{label}-seed{seed}-devices{devices}.json"
    if record.exists():
        return json.loads(record.read_text())
    if finished_only:
        return None
    out = runs / f"{label}-seed{seed}-devices{devices}.model"
    command = [
        sys.executable, "-m", "mlmm", "train", "--dataset", DATASET, "--method", method,
        "--missing", missing, "--seed", str(seed), "--out", str(out), "--overwrite",
        "--devices", str(devices), "--quiet",
    ]  # fmt: skip
    for param in params:
        command += ["--param", param]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    trained = TrainedModel.load(out)
    data = mlmm.load_dataset(DATASET)
    split = mlmm.train_val_test_split(data, test_size=0.2, val_size=0.1, seed=seed)
    test = missing.split("=>")[-1]
    table = mlmm.evaluate(trained, split.test, test, seed=seed, patterns=False)
    overall = table[(table.scope == "overall") & (table.metric == "accuracy")]
    row = {
        "method": label if not params else f"{method} ({', '.join(params)})",
        "seed": seed,
        "devices": devices,
        "accuracy": float(overall.value.iloc[0]),
        "epochs": sum(len(h.epochs) for h in trained.histories),
        "train_seconds": trained.train_seconds,
        "wall_seconds": wall,
        "load_1m_before": load_before,
        "load_1m_after": os.getloadavg()[0],
    }
    with atomic_write(record) as handle:
        json.dump(row, handle)
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--methods",
        default="hemis,late-fusion[dropout=0]",
        help="methods, with --param values in brackets separated by ';'",
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--missing", default="mcar:0.5")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="report the finished runs only (seeds with both runs), train nothing",
    )
    args = parser.parse_args()
    out = Path(args.out)
    runs = out / "ddp_cpu-runs"
    runs.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    rows = [
        one_run(method, params, seed, devices, args.missing, runs, args.finished_only)
        for method, params in parse_methods(args.methods)
        for seed in seeds
        for devices in (1, 2)
    ]
    frame = pd.DataFrame([row for row in rows if row is not None])
    table_rows, checks = [], {}
    for method, group in frame.groupby("method", sort=False):
        paired = group.groupby("seed").devices.nunique() == 2  # seeds with both runs
        group = group[group.seed.isin(paired[paired].index)]
        if group.empty:
            continue  # --finished-only before any seed of this method has both runs
        one = group[group.devices == 1].set_index("seed").sort_index()
        two = group[group.devices == 2].set_index("seed").sort_index()
        checks[f"{method}: seeds"] = ", ".join(str(int(seed)) for seed in one.index)
        gap = 100 * (two.accuracy.mean() - one.accuracy.mean())
        ratio = one.train_seconds.sum() / two.train_seconds.sum()
        for devices, part in ((1, one), (2, two)):
            table_rows.append(
                {
                    "method": method,
                    "processes": devices,
                    "accuracy % (mean)": round(100 * part.accuracy.mean(), 2),
                    "per seed": " / ".join(f"{100 * a:.2f}" for a in part.accuracy),
                    "epochs": " / ".join(str(int(e)) for e in part.epochs),
                    "train s (sum)": round(float(part.train_seconds.sum()), 1),
                    "s / epoch": round(float(part.train_seconds.sum() / part.epochs.sum()), 3),
                    "wall s (sum)": round(float(part.wall_seconds.sum()), 1),
                }
            )
        per_seed = 100 * (two.accuracy - one.accuracy)
        checks[f"{method}: 2-process minus 1-process accuracy, mean of seeds (points)"] = float(
            round(gap, 2)
        )
        checks[f"{method}: per seed (points)"] = " / ".join(f"{d:+.2f}" for d in per_seed)
        checks[f"{method}: within 0.5 points (target)"] = bool(abs(gap) <= 0.5)
        checks[f"{method}: speed ratio, 1-process / 2-process training time"] = float(
            round(ratio, 3)
        )
        per_epoch = (one.train_seconds.sum() / one.epochs.sum()) / (
            two.train_seconds.sum() / two.epochs.sum()
        )
        checks[f"{method}: speed ratio per epoch"] = float(round(per_epoch, 3))
    checks["1-min load average over the runs (min / max)"] = (
        f"{frame.load_1m_before.min():.1f} / {frame.load_1m_after.max():.1f}"
    )
    table = pd.DataFrame(table_rows)
    record = {
        "command": f'python benchmarks/ddp_cpu.py --methods "{args.methods}" --seeds {args.seeds} '
        f"--missing {args.missing}" + (" --finished-only" if args.finished_only else ""),
        "machine": machine(),
        "wall_seconds": time.perf_counter() - t0,
        "rows": rows,
        "checks": checks,
    }
    write_report(
        out,
        "ddp_cpu",
        f"{DATASET}: data-parallel training, 2 Gloo processes against 1",
        f"`mlmm train --devices N` on `{DATASET}`, MCAR as given on train and test, global batch "
        "64, 1 thread per process; accuracy on the test split from the saved artifact. "
        "`late-fusion (dropout=0)` has no randomness in its forward pass; its per-head loss is "
        "a mean over the rows where the head's modality is present, so each process's "
        "denominator differs from the global batch's and the runs are close, not identical. "
        f"Load average during the runs: {checks['1-min load average over the runs (min / max)']} "
        f"on {os.cpu_count()} cores.",
        record,
        table,
        checks,
    )


if __name__ == "__main__":
    main()
