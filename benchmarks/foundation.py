"""Foundation benchmark: the first methods on `synthetic` and `handwritten` under MCAR 0.5.

Targets (issue "Foundation"):
* `synthetic` (3 modalities, 10,000 training samples, MCAR 0.5 on train and test): `hemis`
  within 2 accuracy points of the Bayes-optimal classifier under the same masks;
* `handwritten` (stratified 80/20 split, MCAR 0.5 on train and test): `hemis` and
  `late-fusion` each at least 95% test accuracy, mean of 3 seeds.

Also runs a classical reference the way a practitioner would: per-view logistic regressions
(scikit-learn, standardised on the training rows where the view is present), trained on the
same masked training data, combined by averaging the probabilities of the present views.

Run:  python benchmarks/foundation.py [--seeds 0,1,2] [--out benchmarks/results]
Results are resumable (mlmm's results store <out>/foundation-runs/results.db) and written to
<out>/foundation.json and <out>/foundation.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, per_view_logistic, run_grid, write_report  # noqa: E402

from mlmm.bench import comparison_table  # noqa: E402

# 13,890 samples: 20% test (2,778), then 10% of the rest for early stopping (1,112),
# leaving exactly 10,000 samples to fit on.
SYNTHETIC = {"n_samples": 13890}
METHODS = {"zero-impute": {}, "late-fusion": {}, "hemis": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    datasets = {"synthetic": SYNTHETIC, "handwritten": {}}
    spec = {"datasets": datasets, "methods": METHODS, "missing": ["mcar:0.5"], "seeds": seeds}
    t0 = time.perf_counter()
    results = run_grid(spec, out / "foundation-runs" / "results.db")
    table = comparison_table(results)
    with threadpool_limits(1):
        classical = pd.DataFrame(
            [per_view_logistic(d, p, s) for d, p in datasets.items() for s in seeds]
        )
    acc = results[(results.scope == "overall") & (results.metric == "accuracy")]
    per_seed = acc.pivot_table(
        index=["dataset", "method"], columns="seed", values="value", aggfunc="first"
    )
    bayes = per_seed.loc[("synthetic", "bayes-optimal")]
    checks = {
        "synthetic: hemis gap to Bayes (points, mean of seeds)": float(
            100 * (bayes - per_seed.loc[("synthetic", "hemis")]).mean()
        ),
        "handwritten: hemis accuracy (mean of seeds)": float(
            per_seed.loc[("handwritten", "hemis")].mean()
        ),
        "handwritten: late-fusion accuracy (mean of seeds)": float(
            per_seed.loc[("handwritten", "late-fusion")].mean()
        ),
        "handwritten: per-view logistic late fusion (mean of seeds)": float(
            classical[classical.dataset == "handwritten"].accuracy.mean()
        ),
        "synthetic: per-view logistic late fusion (mean of seeds)": float(
            classical[classical.dataset == "synthetic"].accuracy.mean()
        ),
    }
    record = {
        "command": "python benchmarks/foundation.py --seeds " + args.seeds,
        "machine": machine(),
        "wall_seconds": time.perf_counter() - t0,
        "checks": checks,
        "comparison": table.to_dict(orient="records"),
        "per_seed_accuracy": {
            f"{d}/{m}": row.dropna().to_dict() for (d, m), row in per_seed.iterrows()
        },
        "classical_per_view_logistic": classical.to_dict(orient="records"),
    }
    write_report(
        out,
        "foundation",
        "Foundation benchmark",
        "MCAR 0.5 on train and test; rate = fraction of (sample, modality) slots removed.",
        record,
        table,
        checks,
    )


if __name__ == "__main__":
    main()
