"""What `per-modality-kernel`'s inner cross-validations cost on `handwritten`.

Fits the method once per setting (`C=30`, `auto`'s member before `AUTO_REVISION` 6; `C="cv"`,
its member since; `C="cv", evidence_scale="cv"`) on 1,600 `handwritten` rows (the size of
`auto`'s training part there) under MCAR 0.5 and 0.7 by slots, on a tuning seed, one thread:
the fit's seconds, the number of per-view model fits (`fit_linear` calls) and the choices.

Run:  OMP_NUM_THREADS=1 python benchmarks/kernel_cv_cost.py [--seed 100]
Writes <out>/kernel_cv_cost.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import machine, write_report  # noqa: E402

import mlmm  # noqa: E402
import mlmm.methods.reference.per_modality_kernel as pmk  # noqa: E402

SETTINGS = [{"C": 30.0}, {"C": "cv"}, {"C": "cv", "evidence_scale": "cv"}]
N_TRAIN = 1600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = mlmm.load_dataset("handwritten")
    rows = np.random.default_rng(args.seed).permutation(data.n_samples)[:N_TRAIN]
    fits = {"count": 0}
    fit_linear = pmk.fit_linear

    def counted(*a, **k):
        fits["count"] += 1
        return fit_linear(*a, **k)

    pmk.fit_linear = counted
    table = []
    for missing in ("mcar:0.5", "mcar:0.7"):
        train, _ = mlmm.simulate(data.subset(rows), missing, seed=args.seed)
        for params in SETTINGS:
            model = mlmm.create_method("per-modality-kernel", data.specs, data.task, **params)
            fits["count"] = 0
            start = time.perf_counter()
            mlmm.Trainer(progress=False).fit(model, train)
            table.append(
                {
                    "missing": missing,
                    "params": ", ".join(f"{k}={v}" for k, v in params.items()),
                    "fit_seconds": time.perf_counter() - start,
                    "view_fits": fits["count"],
                    "view_C": " ".join(f"{k}:{v:g}" for k, v in model.view_C.items()),
                    "beta": model.beta,
                }
            )
            print(table[-1], flush=True)
    pmk.fit_linear = fit_linear
    frame = pd.DataFrame(table)
    record = {"command": " ".join(["python", *sys.argv]), "machine": machine(), "rows": table}
    base = frame[frame.params == "C=30.0"].set_index("missing").fit_seconds
    cv = frame[frame.params == "C=cv"].set_index("missing").fit_seconds
    checks = {f"{m}: C=cv seconds over C=30's": float(cv[m] / base[m]) for m in base.index}
    note = (
        f"One fit per row on {N_TRAIN} handwritten rows (seed {args.seed}, a tuning seed), one "
        "thread; `auto` fits its kernel member 6 times (5 folds and the refit)."
    )
    write_report(args.out, "kernel_cv_cost", "per-modality-kernel: the cost of C='cv'", note,
                 record, frame, checks)  # fmt: skip


if __name__ == "__main__":
    main()
