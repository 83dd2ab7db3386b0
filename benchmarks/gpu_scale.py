"""GPU scale: training throughput of hemis, masked-attention and late-fusion, fp32 vs bf16.

Targets (issue 14, item 4), where a GPU is lent:
* ``bf16-mixed`` at least 1.5x the ``32`` throughput for ``masked-attention`` at batch 4096;
* the GPU at least 20x faster than 2 CPU cores for ``hemis`` on 1M samples;
* every CUDA-trained model saves, reloads on the CPU (float32) and predicts there exactly
  what the same weights predict in float32 (and the label agreement with its own CUDA
  predictions, in its training precision, is recorded).

Data: ``synthetic`` (3 modalities of ``--dims`` features, 4 classes) with ``--samples``
training samples plus ``--test-samples`` held out from the same generator, MCAR 0.5 over
(sample, modality) slots on both. Throughput is training samples per second of one epoch of
the shared loop (``TrainHistory.epochs[0]["seconds"]``: forward, loss, backward, step; the
copy of the data to the device and the standardisation are outside it), after a warm-up fit
of the same configuration on a small slice (kernels, autotuning). The CPU baseline trains
``hemis`` with 2 torch threads on the first ``--cpu-samples`` training samples (a shorter
slice: its samples/s are what is compared; the time for all samples is extrapolated from them
and stated as such). Also a ``16-mixed`` check on CUDA (``late-fusion``, one epoch on a slice:
the loss-scaled loop runs and predicts finite values).

Run (on a machine with a GPU; sized for about 5 minutes, not yet timed on one):  python benchmarks/gpu_scale.py
CPU smoke (a few minutes on 2 idle cores):  python benchmarks/gpu_scale.py --device cpu --samples 20000
Writes <out>/<name>.json and <out>/<name>.md (default benchmarks/results/gpu_scale) with the
machine it ran on.
"""

from __future__ import annotations

import argparse
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
from mlmm.data.missingness import simulate  # noqa: E402
from mlmm.errors import MlmmError  # noqa: E402
from mlmm.utils import resolve_device, rng_for  # noqa: E402

MISSING = "mcar:0.5"


def make_data(args) -> tuple[mlmm.MultimodalDataset, mlmm.MultimodalDataset]:
    """Training and test parts of one generated dataset, each masked from its own stream."""
    data = mlmm.load_dataset(
        "synthetic", n_samples=args.samples + args.test_samples, dims=args.dims, seed=0
    )
    order = rng_for(0, "gpu-scale-split").permutation(data.n_samples)
    train = data.subset(np.sort(order[: args.samples]))
    test = data.subset(np.sort(order[args.samples :]))
    train, _ = simulate(train, MISSING, rng_for(0, "train-mask"))
    test, _ = simulate(test, MISSING, rng_for(0, "test-mask"))
    return train, test


def fit(method, train, device, precision, batch_size, threads=None):
    """One epoch of ``method`` on ``train``; returns the trained model and its wall time."""
    model = mlmm.create_method(method, train.specs, train.task)
    trainer = mlmm.Trainer(
        max_epochs=1,
        batch_size=batch_size,
        device=device,
        precision=precision,
        seed=0,
        progress=False,
        num_threads=threads,
    )
    t0 = time.perf_counter()
    trained = trainer.fit(model, train)
    return trained, time.perf_counter() - t0


def throughput(trained, n: int) -> float:
    (history,) = trained.histories
    return n / history.epochs[0]["seconds"]


def reload_check(trained, test, device: str) -> dict:
    """Save, reload on the CPU in float32, compare with the same weights and with the
    predictions on the training device in the training precision."""
    labels = test.targets
    on_device = trained.predict_proba(test)
    with tempfile.TemporaryDirectory() as tmp:
        trained.save(f"{tmp}/model")
        loaded = mlmm.TrainedModel.load(f"{tmp}/model")
    assert loaded.precision == "32" and next(loaded.model.parameters()).device.type == "cpu"
    reloaded = loaded.predict_proba(test)
    precision = trained.precision
    same_weights = trained.to("cpu", precision="32").predict_proba(test)
    trained.to(device, precision=precision)
    return {
        "accuracy_on_device": float((on_device.argmax(1) == labels).mean()),
        "accuracy_reloaded_cpu_fp32": float((reloaded.argmax(1) == labels).mean()),
        "reloaded_equals_same_weights_fp32": bool(np.array_equal(reloaded, same_weights)),
        "label_agreement_device_vs_reloaded": float(
            (on_device.argmax(1) == reloaded.argmax(1)).mean()
        ),
        "max_abs_probability_difference": float(np.abs(on_device - reloaded).max()),
        "predictions_finite": bool(np.isfinite(on_device).all() and np.isfinite(reloaded).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (a smoke run)")
    parser.add_argument("--samples", type=int, default=1_000_000, help="training samples")
    parser.add_argument("--test-samples", type=int, default=20_000)
    parser.add_argument("--dims", type=int, default=32, help="features per modality (3)")
    parser.add_argument("--methods", default="hemis,masked-attention,late-fusion")
    parser.add_argument("--batch-sizes", default="256,4096")
    parser.add_argument("--precisions", default="32,bf16-mixed")
    parser.add_argument("--warmup-samples", type=int, default=20_000)
    parser.add_argument("--cpu-samples", type=int, default=50_000, help="CPU baseline slice")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--name", default="gpu_scale")
    args = parser.parse_args()
    try:
        device = str(resolve_device(args.device))
    except MlmmError as err:  # CUDA asked for on a machine without it: one line
        parser.exit(2, f"error: {err}\n")
    methods = args.methods.split(",")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")
    start = time.perf_counter()
    t0 = time.perf_counter()
    train, test = make_data(args)
    print(f"data: {train.n_samples:,} train, {test.n_samples:,} test "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)  # fmt: skip
    warm = train.subset(np.arange(min(args.warmup_samples, train.n_samples)))
    rows = []
    for method in methods:
        for batch_size in batch_sizes:
            for precision in precisions:
                fit(method, warm, device, precision, batch_size)  # warm-up, not measured
                trained, wall = fit(method, train, device, precision, batch_size)
                row = {
                    "method": method,
                    "device": device,
                    "precision": precision,
                    "batch_size": batch_size,
                    "samples": train.n_samples,
                    "samples_per_s": throughput(trained, train.n_samples),
                    "fit_seconds": wall,
                    **reload_check(trained, test, device),
                }
                rows.append(row)
                print({k: row[k] for k in list(row)[:8]}, flush=True)
                del trained
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    # CPU baseline: hemis on 2 threads over a slice (samples/s extrapolate to all samples)
    threads = torch.get_num_threads()
    cpu_slice = train.subset(np.arange(min(args.cpu_samples, train.n_samples)))
    cpu_rows = []
    for batch_size in batch_sizes:
        fit("hemis", cpu_slice.subset(np.arange(min(2000, cpu_slice.n_samples))), "cpu", "32",
            batch_size, args.cpu_threads)  # fmt: skip
        trained, wall = fit("hemis", cpu_slice, "cpu", "32", batch_size, args.cpu_threads)
        rate = throughput(trained, cpu_slice.n_samples)
        cpu_rows.append(
            {
                "method": "hemis",
                "device": f"cpu ({args.cpu_threads} threads)",
                "precision": "32",
                "batch_size": batch_size,
                "samples": cpu_slice.n_samples,
                "samples_per_s": rate,
                "fit_seconds": wall,
                "extrapolated_epoch_seconds_all_samples": train.n_samples / rate,
            }
        )
        print(cpu_rows[-1], flush=True)
    torch.set_num_threads(threads)
    half = None
    if device.startswith("cuda"):
        trained, wall = fit("late-fusion", warm, device, "16-mixed", batch_sizes[0])
        half = {
            "method": "late-fusion",
            "samples": warm.n_samples,
            "batch_size": batch_sizes[0],
            "samples_per_s": throughput(trained, warm.n_samples),
            **reload_check(trained, test, device),
        }
        print({"16-mixed": half}, flush=True)

    frame = pd.DataFrame(rows)

    def rate(method: str, precision: str, batch_size: int) -> float:
        hit = frame[
            (frame.method == method)
            & (frame.precision == precision)
            & (frame.batch_size == batch_size)
        ]
        return float(hit.samples_per_s.iloc[0]) if len(hit) else float("nan")

    cpu = {r["batch_size"]: r["samples_per_s"] for r in cpu_rows}
    checks = {}
    for batch_size in batch_sizes:
        checks[f"bf16 / fp32 throughput, masked-attention, batch {batch_size}"] = rate(
            "masked-attention", "bf16-mixed", batch_size
        ) / rate("masked-attention", "32", batch_size)
    for batch_size in batch_sizes:
        checks[f"{device} fp32 / {args.cpu_threads} CPU threads throughput, hemis, batch "
               f"{batch_size}"] = rate("hemis", "32", batch_size) / cpu[batch_size]  # fmt: skip
    checks["every reloaded model predicts exactly what its weights predict in fp32 on the CPU"] = (
        bool(frame.reloaded_equals_same_weights_fp32.all())
    )
    for precision in precisions:
        part = frame[frame.precision == precision]
        checks[f"lowest label agreement, {precision} on {device} vs reloaded on the CPU"] = float(
            part.label_agreement_device_vs_reloaded.min()
        )
    checks["every prediction finite"] = bool(frame.predictions_finite.all())
    if half is not None:
        checks["16-mixed on CUDA: accuracy after one epoch on the warm-up slice"] = half[
            "accuracy_on_device"
        ]
    command = (
        f"python benchmarks/gpu_scale.py --device {args.device} --samples {args.samples} "
        f"--dims {args.dims} --methods {args.methods} --batch-sizes {args.batch_sizes} "
        f"--precisions {args.precisions} --cpu-samples {args.cpu_samples}"
    )
    hardware = machine()
    hardware["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    record = {
        "command": command,
        "machine": hardware,
        "wall_seconds": time.perf_counter() - start,
        "data": {
            "dataset": "synthetic",
            "dims": args.dims,
            "train": train.n_samples,
            "test": test.n_samples,
            "missing": MISSING,
        },
        "runs": rows,
        "cpu_baseline": cpu_rows,
        "sixteen_mixed": half,
        "checks": checks,
    }
    table = pd.concat([frame, pd.DataFrame(cpu_rows)], ignore_index=True)
    columns = ["method", "device", "precision", "batch_size", "samples", "samples_per_s"]
    columns += ["accuracy_on_device", "label_agreement_device_vs_reloaded"]
    shown = table[columns].copy()
    shown["samples_per_s"] = shown.samples_per_s.map(lambda v: f"{v:,.0f}")
    note = (
        "Training samples per second over one epoch of the shared loop after a warm-up "
        f"(synthetic, 3 x {args.dims} features, 4 classes, {MISSING}). The CPU baseline ran on "
        f"the first {cpu_slice.n_samples:,} training samples with {args.cpu_threads} threads; "
        "its time for all samples is extrapolated from its samples/s. Accuracy: one epoch, "
        f"{test.n_samples:,} held-out samples. Wall time {record['wall_seconds']:.0f}s."
    )
    write_report(Path(args.out), args.name, "GPU scale", note, record, shown, checks)


if __name__ == "__main__":
    main()
