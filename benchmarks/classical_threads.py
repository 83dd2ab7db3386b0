"""Fit time of the classical references with 2 threads: BLAS threads in the linear fits.

`fit_linear` (scikit-learn's L-BFGS logistic regression and ridge, used by
`per-modality-kernel`, `per-modality-logistic` and `logistic-mean-impute`) runs its BLAS calls
on ``LINEAR_BLAS_THREADS`` threads (1). This script fits each reference on `auto`'s training
part of `handwritten` MCAR 0.5 (1,600 rows, tuning seed 100) inside the same thread limit
the trainer sets (``--threads``, default 2), once with the linear fits' BLAS on 1 thread and
once on the surrounding count, alternating, and stores the seconds and their ratio.

Run:  python benchmarks/classical_threads.py [--threads 2] [--repeats 2]
Writes <out>/classical_threads.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402
from auto_tuning import training_part  # noqa: E402

import mlmm  # noqa: E402
from mlmm.data.batch import MultimodalBatch  # noqa: E402
from mlmm.methods.reference import _classical  # noqa: E402

MEMBERS = (
    ("per-modality-kernel", {"C": 30.0}),
    ("per-modality-kernel", {"C": "cv"}),
    ("per-modality-logistic", {"C": 1.0}),
    ("logistic-mean-impute", {"C": 1.0}),
    ("lda-em", {}),
)


def fit_seconds(train, batch, name: str, params: dict, threads: int, blas: int | None) -> float:
    _classical.LINEAR_BLAS_THREADS = blas
    model = mlmm.create_method(name, train.specs, train.task, **params)
    start = time.perf_counter()
    with threadpool_limits(limits=threads):  # as ClassicalReference.fit
        model.fit_classical(batch, None, 0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = training_part("hw05", 100)
    batch = MultimodalBatch.from_dataset(train)
    rows = []
    for name, params in MEMBERS:
        times = {1: [], None: []}
        for _ in range(args.repeats):
            for blas in (None, 1):
                times[blas].append(fit_seconds(train, batch, name, params, args.threads, blas))
        one, shared = min(times[1]), min(times[None])
        rows.append(
            {
                "method": name,
                "params": str(params),
                f"seconds, BLAS on {args.threads} threads (before)": round(shared, 2),
                "seconds, BLAS on 1 thread in fit_linear (now)": round(one, 2),
                "before / now": round(shared / one, 2),
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_report(
        Path(args.out),
        "classical_threads",
        "classical references: fit seconds with the linear fits' BLAS on 1 thread or shared",
        f"{args.threads} threads (torch, OpenMP, BLAS limits as the trainer sets them); best of "
        f"{args.repeats}; `handwritten` MCAR 0.5, 1,600 training rows (tuning seed 100). "
        "lda-em does not use fit_linear: its two columns measure the noise.",
        {"command": " ".join(sys.argv), "machine": machine(), "rows": rows},
        table,
        {f"{r['method']} {r['params']}: before / now": r["before / now"] for r in rows},
    )


if __name__ == "__main__":
    main()
