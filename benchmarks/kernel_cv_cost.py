"""What `per-modality-kernel`'s inner cross-validations cost on `handwritten`.

Fits the method once per setting (`C=30`, `auto`'s member before `AUTO_REVISION` 6; `C="cv"`,
its member since; `C="cv", evidence_scale="cv"`) on `auto`'s training part of `handwritten`
under MCAR 0.5 and 0.7 by slots (1,600 rows, `auto_tuning.py`'s cases `hw05` and `hw07`) on
tuning seeds, one thread: the fit's seconds, the number of per-view model fits (`fit_linear`
calls) and the choices.

Run:  OMP_NUM_THREADS=1 python benchmarks/kernel_cv_cost.py [--seeds 100,101]
Writes <out>/kernel_cv_cost.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import machine, write_report  # noqa: E402
from auto_tuning import training_part  # noqa: E402

import mlmm  # noqa: E402
import mlmm.methods.reference.per_modality_kernel as pmk  # noqa: E402

SETTINGS = [{"C": 30.0}, {"C": "cv"}, {"C": "cv", "evidence_scale": "cv"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="100,101", help="tuning seeds, comma-separated")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fits = {"count": 0}
    fit_linear = pmk.fit_linear

    def counted(*a, **k):
        fits["count"] += 1
        return fit_linear(*a, **k)

    pmk.fit_linear = counted
    table, losses = [], []  # losses: every candidate's held-out loss (cv_losses), per fit
    cases = [(c, int(seed)) for c in ("hw05", "hw07") for seed in args.seeds.split(",")]
    for case, seed in cases:
        train = training_part(case, seed)
        for params in SETTINGS:
            model = mlmm.create_method("per-modality-kernel", train.specs, train.task, **params)
            fits["count"] = 0
            start = time.perf_counter()
            mlmm.Trainer(progress=False).fit(model, train)
            table.append(
                {
                    "case": case,
                    "seed": seed,
                    "n_train": train.n_samples,
                    "params": ", ".join(f"{k}={v}" for k, v in params.items()),
                    "fit_seconds": time.perf_counter() - start,
                    "view_fits": fits["count"],
                    "view_C": " ".join(f"{k}:{v:g}" for k, v in model.view_C.items()),
                    "beta": model.beta,
                }
            )
            print(table[-1], flush=True)
            losses.append({"case": case, "seed": seed, "params": table[-1]["params"],
                           "C_grid": list(pmk.C_GRID), **model.cv_losses})  # fmt: skip
    pmk.fit_linear = fit_linear
    frame = pd.DataFrame(table)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "rows": table,
        "cv_losses": losses,
    }
    seconds = frame.groupby(["case", "params"]).fit_seconds.mean()
    checks = {
        f"{case}: mean seconds, C=cv / C=30.0": float(seconds[case, "C=cv"])
        / float(seconds[case, "C=30.0"])
        for case in ("hw05", "hw07")
    }
    top = [  # views whose held-out loss still falls at the grid's largest C
        f"{r['case']}/{r['seed']}:{name}"
        for r in losses
        if r["params"] == "C=cv"
        for name, v in r["C"].items()
        if v and v[-1] < min(v[:-1])
    ]
    checks["views choosing the grid's largest C with the loss still falling"] = " ".join(top)
    note = (
        "One fit per row on auto's training part (hw05: MCAR 0.5, hw07: MCAR 0.7), one thread; "
        "`auto` fits its kernel member 6 times (5 folds and the refit)."
    )
    write_report(args.out, "kernel_cv_cost", "per-modality-kernel: the cost of C='cv'", note,
                 record, frame, checks)  # fmt: skip


if __name__ == "__main__":
    main()
