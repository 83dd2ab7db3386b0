"""Training on data that does not fit in memory: `hemis` on a generated >= 4 GB memory-mapped set.

1. `generate`: writes a seeded data set chunk by chunk with `mlmm.data.lazy.DatasetWriter`
   (three float32 vector modalities, 4 class-conditional Gaussian classes, MCAR 0.3 over
   modalities with at least one kept) into a temporary folder; its last rows are the
   validation and test parts.
2. `full`: opens it (`open_dataset`, nothing loaded), fits the Standardizer in one streaming
   pass and trains `hemis` for one epoch through the DataLoader path, then predicts the test
   rows out of core. Peak resident memory (VmHWM) of this process is the figure the target
   is about: the inputs are memory-mapped and the pages a read touches are given back
   (`madvise(MADV_DONTNEED)`) every 64 MB, so they do not accumulate in the process's RSS
   (the kernel may keep them in its page cache, which is not this process's memory).
3. `memory` and `streamed`: the same subset of training rows that fits in memory, trained
   with the same seed and epochs once loaded into a `MultimodalDataset` and once out of
   core: test accuracy, throughput, and the largest difference of their test probabilities.

Each phase runs in its own process, so each peak RSS is its own. The folder is deleted at
the end (also on failure).

Run:   python benchmarks/out_of_core.py      (10-15 min on 2 idle cores; 40+ min on 2 busy ones)
       A phase's result is stored in the work folder: `--work DIR --keep` resumes an
       interrupted run without regenerating the data; run one phase with `--phase NAME`.
Smoke: python benchmarks/out_of_core.py --rows 60000 --subset 20000 --smoke
Writes <out>/out_of_core.{json,md} (not with --smoke) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

import mlmm  # noqa: E402
from mlmm.data.lazy import DatasetWriter, open_dataset  # noqa: E402
from mlmm.utils import atomic_write, rng_for  # noqa: E402

DIMS = {"a": 192, "b": 192, "c": 96}  # 480 float32 values = 1,920 bytes per row
N_CLASSES = 4
N_VAL, N_TEST = 20_000, 50_000


def peak_rss_mb() -> dict:
    """This process's peak and current resident memory (MiB), from /proc/self/status."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    fields["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return fields


def generate(folder: Path, rows: int, seed: int, chunk: int = 50_000) -> dict:
    specs = [mlmm.ModalitySpec(name, "vector", (d,)) for name, d in DIMS.items()]
    task = mlmm.TaskSpec("classification", N_CLASSES)
    centre_rng = rng_for(seed, "class-means")
    # a weak signal per coordinate over many coordinates: no modality is decisive alone
    means = {name: centre_rng.normal(0, 0.07, (N_CLASSES, d)) for name, d in DIMS.items()}
    t0 = time.perf_counter()
    with DatasetWriter(folder, specs, task, n_samples=rows, name="ooc-synthetic") as writer:
        for i, start in enumerate(range(0, rows, chunk)):
            k = min(chunk, rows - start)
            rng = rng_for(seed, "chunk", i)
            y = rng.integers(0, N_CLASSES, k)
            inputs = {
                name: (means[name][y] + rng.standard_normal((k, d), dtype=np.float32)).astype(
                    np.float32
                )
                for name, d in DIMS.items()
            }
            observed = rng.random((k, len(DIMS))) >= 0.3
            empty = ~observed.any(axis=1)
            observed[empty, rng.integers(0, len(DIMS), int(empty.sum()))] = True
            writer.append(inputs, y, observed)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return {"rows": rows, "bytes": size, "seconds": time.perf_counter() - t0}


def parts(data, rows: int):
    n_train = rows - N_VAL - N_TEST
    train = data.subset(np.arange(n_train))
    val = data.subset(np.arange(n_train, n_train + N_VAL))
    test = data.subset(np.arange(n_train + N_VAL, rows))
    return train, val, test


def train_and_score(train, val, test, epochs: int, batch_size: int, seed: int) -> dict:
    model = mlmm.create_method("hemis", train.specs, train.task)
    trainer = mlmm.Trainer(
        max_epochs=epochs, batch_size=batch_size, seed=seed, progress=False, num_threads=1
    )
    t0 = time.perf_counter()
    trained = trainer.fit(model, train, val)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = trained.predict_proba(test)
    predict_seconds = time.perf_counter() - t0
    epoch_seconds = [row["seconds"] for row in trained.histories[0].epochs]
    return {
        "n_train": int(train.n_samples),
        "epochs": epochs,
        "accuracy": float((proba.argmax(1) == test.targets).mean()),
        "fit_seconds": fit_seconds,
        "epoch_seconds": epoch_seconds,
        # an epoch's time covers its training steps and the validation pass
        "train_samples_per_s": train.n_samples * len(epoch_seconds) / sum(epoch_seconds),
        "predict_samples_per_s": test.n_samples / predict_seconds,
        "proba": proba,
    }


def phase(args) -> None:
    torch.set_num_threads(1)
    folder = Path(args.dir)
    out: dict
    if args.phase == "generate":
        out = generate(folder, args.rows, args.seed)
    else:
        data = open_dataset(folder)
        train, val, test = parts(data, args.rows)
        epochs = 1
        if args.phase in ("memory", "streamed"):
            train = train.subset(np.arange(args.subset))
            epochs = args.subset_epochs
        if args.phase == "memory":
            train, val, test = train.to_memory(), val.to_memory(), test.to_memory()
        out = train_and_score(train, val, test, epochs, args.batch_size, args.seed)
        np.save(folder.parent / f"proba-{args.phase}.npy", out.pop("proba"))
    out["memory_mb"] = peak_rss_mb()
    with atomic_write(folder.parent / f"{args.phase}.json") as fh:  # a rerun with --work reuses it
        json.dump(out, fh)
    print("RESULT " + json.dumps(out), flush=True)


def run_phase(name: str, args, folder: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--dir", str(folder)]
    cmd += ["--rows", str(args.rows), "--subset", str(args.subset), "--seed", str(args.seed)]
    cmd += ["--batch-size", str(args.batch_size), "--subset-epochs", str(args.subset_epochs)]
    print(f"[{time.strftime('%H:%M:%S')}] phase {name}", flush=True)
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(result)[:400]}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_300_000, help="rows generated in all")
    parser.add_argument("--subset", type=int, default=200_000, help="training rows that fit")
    parser.add_argument("--subset-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--smoke", action="store_true", help="print only; write nothing")
    parser.add_argument("--work", type=Path, help="reuse the data generated in this folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return
    started = time.perf_counter()
    work = args.work or Path(tempfile.mkdtemp(prefix="mlmm-out-of-core-", dir=args.tmp))
    try:
        folder = work / "data"
        results = {}
        for name in ("generate", "full", "memory", "streamed"):
            done = work / f"{name}.json"
            if done.exists():  # --work: phases an interrupted run (or a parallel one) finished
                results[name] = json.loads(done.read_text()) | {"reused": str(done)}
            else:
                results[name] = run_phase(name, args, folder)
        diff = float(
            np.abs(np.load(work / "proba-memory.npy") - np.load(work / "proba-streamed.npy")).max()
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    gen = results["generate"]
    rows = []
    for name, label in [
        ("full", "out of core, all training rows"),
        ("memory", "in memory, subset"),
        ("streamed", "out of core, same subset"),
    ]:
        r = results[name]
        rows.append(
            {
                "path": label,
                "training rows": r["n_train"],
                "epochs": r["epochs"],
                "test accuracy": round(r["accuracy"], 4),
                "train samples/s": round(r["train_samples_per_s"]),
                "predict samples/s": round(r["predict_samples_per_s"]),
                "fit s": round(r["fit_seconds"], 1),
                "peak RSS MiB": round(r["memory_mb"]["VmHWM"]),
            }
        )
    table = pd.DataFrame(rows)
    full, mem, streamed = results["full"], results["memory"], results["streamed"]
    checks = {
        "data set size GB": gen["bytes"] / 1e9,
        "data set >= 4 GB": gen["bytes"] >= 4e9,
        "peak RSS of the out-of-core run < 2 GB": full["memory_mb"]["VmHWM"] * 2**20 < 2e9,
        "subset: max |p_memory - p_streamed|": diff,
        "subset: same test accuracy (within 0.001)": abs(mem["accuracy"] - streamed["accuracy"])
        <= 1e-3,
    }
    command = "python benchmarks/out_of_core.py " + " ".join(sys.argv[1:])
    record = {
        "command": command,
        "machine": machine(),
        "settings": {k: str(v) for k, v in vars(args).items() if k not in ("phase", "dir")},
        "generate": gen,
        "runs": results,
        "wall_seconds": time.perf_counter() - started,
    }
    if args.smoke:
        print(table.to_string(index=False))
        for k, v in checks.items():
            print(f"{k}: {v}")
        return
    note = (
        f"`hemis` (defaults, batch {args.batch_size}, 1 torch thread, seed {args.seed}) on a "
        f"generated data set of {gen['rows']:,} rows x 480 float32 values "
        f"({gen['bytes'] / 1e9:.2f} GB on disk, written chunk by chunk in {gen['seconds']:.0f} s); "
        f"{N_VAL:,} validation and {N_TEST:,} test rows held out. Each row of the table is its "
        f"own process; peak RSS is its VmHWM. The in-memory and out-of-core subset runs use the "
        f"same {args.subset:,} training rows, seed and epochs. Throughput counts training rows per "
        f"second of epoch time (training steps plus the validation pass). Shared machine: "
        f"1-minute load average {os.getloadavg()[0]:.1f} at the end."
    )
    write_report(args.out, "out_of_core", "Training out of core", note, record, table, checks)


if __name__ == "__main__":
    main()
