"""What `per-modality-kernel`'s inner cross-validations cost on `handwritten`.

Fits the method once per setting (`C=30`, `auto`'s member before `AUTO_REVISION` 6; `C="cv"`,
its member since; `C="cv", evidence_scale="cv"`) on `auto`'s training part of `handwritten`
under MCAR 0.5 and 0.7 by slots (1,600 rows, `auto_tuning.py`'s cases `hw05` and `hw07`) on
tuning seeds, one thread: the fit's seconds, the number of per-view model fits (`fit_linear`
calls) and the choices.

Run:  OMP_NUM_THREADS=1 python benchmarks/kernel_cv_cost.py [--seeds 100,101]
      (``--cases`` other ``auto_tuning.py`` cases, ``--settings`` other parameter sets as a JSON
      list, e.g. the ninth round's ``'[{"C": "cv"}, {"C": "cv", "C_grid": [1, 3, 10, 30, 100,
      300, 1000]}]'``, or the tenth's, which adds ``"gamma_grid": [0.25, 0.5, 1]``; ``--name``
      another results name; with a ``gamma_grid`` each view's chosen width is in ``view_gamma``
      and every (width, ``C``) loss in ``cv_losses``)
Writes <out>/kernel_cv_cost.{json,md} (``--name``) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--cases", default="hw05,hw07", help="auto_tuning.py cases")
    parser.add_argument(
        "--settings", default=json.dumps(SETTINGS), help="parameter sets to fit (JSON list)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", default="kernel_cv_cost", help="writes <out>/<name>.{json,md}")
    args = parser.parse_args()
    settings, case_names = json.loads(args.settings), args.cases.split(",")
    torch.set_num_threads(1)
    fits = {"count": 0}
    fit_linear = pmk.fit_linear

    def counted(*a, **k):
        fits["count"] += 1
        return fit_linear(*a, **k)

    pmk.fit_linear = counted
    table, losses = [], []  # losses: every candidate's held-out loss (cv_losses), per fit
    cases = [(c, int(seed)) for c in case_names for seed in args.seeds.split(",")]
    for case, seed in cases:
        train = training_part(case, seed)
        for params in settings:
            model = mlmm.create_method("per-modality-kernel", train.specs, train.task, **params)
            fits["count"] = 0
            start = time.perf_counter()
            mlmm.Trainer(progress=False).fit(model, train)
            table.append(
                {
                    "case": case,
                    "seed": seed,
                    "n_train": train.n_samples,
                    "params": ", ".join(f"{k}={label(v)}" for k, v in params.items()),
                    "fit_seconds": time.perf_counter() - start,
                    "view_fits": fits["count"],
                    "view_C": " ".join(f"{k}:{v:g}" for k, v in model.view_C.items()),
                    "view_gamma": " ".join(f"{k}:{v:g}" for k, v in model.view_gamma.items()),
                    "beta": model.beta,
                }
            )
            print(table[-1], flush=True)
            losses.append({"case": case, "seed": seed, "params": table[-1]["params"],
                           "C_grid": list(model.C_grid or pmk.C_GRID),
                           **model.cv_losses})  # fmt: skip
    pmk.fit_linear = fit_linear
    frame = pd.DataFrame(table)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "rows": table,
        "cv_losses": losses,
    }
    seconds = frame.groupby(["case", "params"]).fit_seconds.mean()
    names = [", ".join(f"{k}={label(v)}" for k, v in params.items()) for params in settings]
    checks = {}
    for other in names[1:]:  # each setting's fit time over the first one's
        for case in case_names:
            ratio = float(seconds[case, other]) / float(seconds[case, names[0]])
            checks[f"{case}: mean seconds, {other} / {names[0]}"] = ratio
    for params in names:
        if "C=cv" not in params.split(", "):
            continue
        top = [  # views whose held-out loss still falls at the grid's largest C
            f"{r['case']}/{r['seed']}:{name}"
            for r in losses
            if r["params"] == params
            for name, v in r["C"].items()
            if len(v) > 1 and v[-1] < min(v[:-1])
        ]
        key = "views choosing the grid's largest C with the loss still falling"
        checks[key if params == "C=cv" else f"{params}: {key}"] = " ".join(top)
    note = (
        "One fit per row on auto's training part (auto_tuning.py's cases; hw05: handwritten "
        "MCAR 0.5, hw07: MCAR 0.7), one thread; `auto` fits its kernel member 6 times (5 folds "
        "and the refit)."
    )
    write_report(args.out, args.name, "per-modality-kernel: the cost of C='cv'", note,
                 record, frame, checks)  # fmt: skip


def label(value) -> str:
    """A parameter value as the results show it (a grid without spaces)."""
    return "[" + ",".join(f"{v:g}" for v in value) + "]" if isinstance(value, list) else str(value)


if __name__ == "__main__":
    main()
