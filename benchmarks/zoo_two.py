"""Method zoo II benchmark: `per-subset` against every other method, per modality subset.

Every registered method (or those given with --methods) on `synthetic` (3 modalities) and
`handwritten` (6 views, stratified 80/20) under MCAR 0.5 on train and test, 3 seeds, through
mlmm's own runner (a resumable results store). Records, per method: accuracy on every forced
modality subset, overall accuracy, training time, parameters and number of models.

Target (issue "Method zoo II"): the best single model (one trained model, not `per-subset` nor
a scheduler over several) within 1 point of `per-subset` on every subset's accuracy, while
costing at most a fifth of its training time. "Best" is chosen per dataset by mean overall
accuracy over the seeds; subset accuracies are means over the seeds.

Run:  python benchmarks/zoo_two.py [--seeds 0,1,2] [--jobs 2] [--methods a,b,...] [--rerun a,b]
(--rerun: those methods' runs are done again even when the store has them, e.g. `per-subset`
beside a changed method, so that the time ratio compares runs of one invocation.)
Writes <out>/zoo_two.{json,md} with the machine it ran on; the store is <out>/zoo-two-runs/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import grid_provenance, machine, run_grid, write_report  # noqa: E402

from mlmm.methods import list_methods  # noqa: E402

DATASETS = {"synthetic": {"n_samples": 5000}, "handwritten": {}}


def subset_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over seeds per (dataset, method, forced subset)."""
    sub = results[(results.scope == "subset") & (results.metric == "accuracy")]
    return sub.groupby(["dataset", "method", "subset"]).value.mean().unstack("subset")


def costs(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method): mean overall accuracy, training seconds, parameters, models."""
    overall = results[(results.scope == "overall") & (results.metric == "accuracy")]
    overall = overall[overall.method == overall.run_method]  # not the Bayes rows
    per_run = overall.groupby(["dataset", "method", "seed"]).agg(
        accuracy=("value", "first"),
        train_seconds=("train_seconds", "first"),
        n_parameters=("n_parameters", "first"),
        n_models=("n_models", "first"),
    )
    return per_run.groupby(["dataset", "method"]).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--methods", default="", help="comma-separated; default: every method")
    parser.add_argument("--rerun", default="", help="comma-separated methods to run anew")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m] or list_methods()
    out = Path(args.out)
    t0 = time.perf_counter()
    spec = {
        "name": "zoo-two",
        "datasets": DATASETS,
        "methods": {m: {} for m in methods},
        "missing": ["mcar:0.5"],
        "seeds": seeds,
    }
    rerun = [m for m in args.rerun.split(",") if m]
    results = run_grid(
        spec, out / "zoo-two-runs" / "results.db", args.jobs, args.threads, rerun=rerun
    )
    subsets = subset_table(results)
    cost = costs(results)
    rows, checks, record_versus = [], {}, {}
    for dataset in DATASETS:
        if dataset not in cost.index.get_level_values("dataset"):
            continue
        c = cost.loc[dataset]
        for method, r in c.sort_values("accuracy", ascending=False).iterrows():
            s = subsets.loc[(dataset, method)].dropna()
            rows.append(
                {
                    "dataset": dataset,
                    "method": method,
                    "accuracy": round(100 * r.accuracy, 2),
                    "worst subset": f"{100 * s.min():.1f} ({s.idxmin()})",
                    "mean over subsets": round(100 * s.mean(), 2),
                    "train s": round(r.train_seconds, 1),
                    "parameters": int(r.n_parameters),
                    "models": int(r.n_models),
                }
            )
        if "per-subset" not in c.index:  # --methods without it: the table alone, no checks
            continue
        single = c[(c.n_models == 1) & (c.index != "per-subset")]
        best = single.accuracy.idxmax()
        gap = (subsets.loc[(dataset, "per-subset")] - subsets.loc[(dataset, best)]).dropna()
        time_ratio = c.loc[best, "train_seconds"] / c.loc["per-subset", "train_seconds"]
        checks[f"{dataset}: best single model"] = best
        checks[f"{dataset}: largest subset gap, per-subset minus best (points)"] = round(
            100 * gap.max(), 2
        )
        checks[f"{dataset}: subset where per-subset leads most"] = gap.idxmax()
        checks[f"{dataset}: subsets where the best is more than 1 point below"] = int(
            (gap > 0.01).sum()
        )
        checks[f"{dataset}: training time ratio best / per-subset"] = round(float(time_ratio), 3)
        checks[f"{dataset}: target met (gap <= 1 point everywhere, time <= 1/5)"] = bool(
            gap.max() <= 0.01 and time_ratio <= 0.2
        )
        # the same test for every single model, not only the most accurate one
        versus = {}
        for method in single.index:
            g = (subsets.loc[(dataset, "per-subset")] - subsets.loc[(dataset, method)]).dropna()
            ratio = c.loc[method, "train_seconds"] / c.loc["per-subset", "train_seconds"]
            versus[method] = {
                "largest gap (points)": round(100 * g.max(), 2),
                "subsets > 1 point below": int((g > 0.01).sum()),
                "time ratio": round(float(ratio), 3),
            }
        checks[f"{dataset}: single models within 1 point on every subset"] = sorted(
            m for m, v in versus.items() if v["subsets > 1 point below"] == 0
        )
        checks[f"{dataset}: single models meeting both conditions"] = sorted(
            m
            for m, v in versus.items()
            if v["subsets > 1 point below"] == 0 and v["time ratio"] <= 0.2
        )
        record_versus[dataset] = versus
        # the same question for the learned (non-reference) models alone
        reference = set(list_methods(family="reference"))
        deep = single[~single.index.isin(reference)]
        if len(deep):
            best_deep = deep.accuracy.idxmax()
            checks[f"{dataset}: best single model outside the reference family"] = best_deep
            checks[f"{dataset}: ... its largest gap (points), time ratio"] = [
                float(versus[best_deep]["largest gap (points)"]),
                float(versus[best_deep]["time ratio"]),
            ]
    table = pd.DataFrame(rows)
    runs = grid_provenance(spec, out / "zoo-two-runs" / "results.db")
    record = {
        "command": f"python benchmarks/zoo_two.py --seeds {args.seeds} --jobs {args.jobs}"
        + (f" --methods {args.methods}" if args.methods else "")
        + (f" --rerun {args.rerun}" if args.rerun else ""),
        "machine": machine(),
        "wall_seconds": time.perf_counter() - t0,
        "runs": runs,
        "checks": checks,
        "summary": rows,
        "single_models_versus_per_subset": record_versus,
        "subset_accuracy": {
            f"{d}/{m}": row.dropna().round(4).to_dict() for (d, m), row in subsets.iterrows()
        },
    }
    write_report(
        out,
        "zoo_two",
        "Method zoo II benchmark: per-subset against single models",
        "MCAR 0.5 on train and test (fraction of slots), mean of seeds; `worst subset` and "
        "`mean over subsets` are over every forced non-empty modality subset. The "
        f"{runs['runs']} runs finished between {runs['finished_utc'][0]} and "
        f"{runs['finished_utc'][1]} (UTC) with {runs['threads_per_run']} thread(s) each; a "
        "rerun of this script reads finished runs, and their timings, from its store.",
        record,
        table,
        checks,
    )


if __name__ == "__main__":
    main()
