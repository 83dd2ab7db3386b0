"""CUDA path check: the same experiments on CPU and on a GPU, one flag apart.

Trains every registered method on `handwritten` (MCAR 0.5, seed 0) with ``device="cpu"`` and
``device="cuda"`` in the same process, checks the CUDA-trained model saves, loads on the CPU
and predicts the same labels there, and records accuracies and training times with the machine.

Run (on a machine with a GPU):  python benchmarks/gpu_check.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import mlmm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--devices", default="cpu,cuda")
    parser.add_argument("--dataset", default="handwritten")
    parser.add_argument("--methods", default="", help="comma-separated; default: every method")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--name", default="gpu_check", help="results file <out>/<name>.json")
    args = parser.parse_args()
    record = {
        "command": f"python benchmarks/gpu_check.py --devices {args.devices} --dataset "
        f"{args.dataset} --methods '{args.methods}' --max-epochs {args.max_epochs}",
        "machine": {
            "node": platform.node(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "runs": [],
    }
    for method in [m for m in args.methods.split(",") if m] or mlmm.list_methods():
        preds = {}
        for device in args.devices.split(","):
            t0 = time.perf_counter()
            res = mlmm.run_experiment(
                args.dataset,
                method,
                missing="mcar:0.5",
                seed=0,
                trainer={"device": device, "progress": False, "max_epochs": args.max_epochs},
            )
            wall = time.perf_counter() - t0
            tb = res.table
            acc = float(tb[(tb.scope == "overall") & (tb.metric == "accuracy")].value.iloc[0])
            with tempfile.TemporaryDirectory() as tmp:
                res.trained.save(f"{tmp}/m")
                loaded = mlmm.TrainedModel.load(f"{tmp}/m")  # always loads on the CPU
            test = mlmm.train_val_test_split(mlmm.load_dataset(args.dataset), seed=0).test
            same = bool(np.array_equal(loaded.predict(test), res.trained.predict(test)))
            preds[device] = loaded.predict(test)
            row = {
                "method": method,
                "device": device,
                "accuracy": acc,
                "train_seconds": res.trained.train_seconds,
                "wall_seconds": wall,
                "epochs": sum(len(h.epochs) for h in res.trained.histories),
                "reloaded_on_cpu_predicts_the_same": same,
            }
            record["runs"].append(row)
            print(json.dumps(row), flush=True)
        if len(preds) == 2:
            a, b = preds.values()
            record["runs"][-1]["label_agreement_cpu_vs_cuda"] = float((a == b).mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
