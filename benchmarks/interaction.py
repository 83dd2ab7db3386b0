"""A benchmark where fusion matters: `synthetic-interaction` at MCAR 0.3, gap to Bayes per family.

The class of `synthetic-interaction` is the XOR of two latent signs seen by different
modalities (docs/datasets.md): no single modality carries class information, so methods that
decide per modality and average (late fusion) stay at chance by construction, while methods
that fuse features before deciding can reach the Bayes limit. Every run also scores the exact
Bayes classifier on the same masked test rows (the `bayes-optimal` reference of mlmm's
runner), so each method's gap to Bayes carries no sampling noise between the two numbers.

Representatives of every family (or --methods), MCAR 0.3 on train and test (also scored on the
full test set), n = 20,000 (70/10/20 split), 3 seeds, through mlmm's resumable runner.

Target (issue 13): the best method within 2 points of Bayes at n = 20,000; per-modality late
fusion near chance; the gap reported for every family.

Run:  python benchmarks/interaction.py [--seeds 0,1,2] [--jobs 1] [--methods a,b,...]
Writes <out>/interaction.{json,md} with the machine it ran on; the store is
<out>/interaction-runs/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import grid_provenance, machine, run_grid, write_report  # noqa: E402

from mlmm.methods import METHODS  # noqa: E402

#: one representative per family / subtype (the taxonomy of `mlmm methods`)
METHODS_DEFAULT = [
    "per-modality-logistic",  # reference / classical
    "late-fusion",  # combination / ensemble
    "per-subset",  # combination / dedicated training
    "moddrop",  # combination / dedicated training
    "zero-impute",  # imputation / composition
    "mean-impute",  # imputation / composition
    "hemis",  # representation / composition
    "shaspec",  # representation / coordinated
    "masked-attention",  # architecture / attention
    "bipartite-graph",  # architecture / graph learning
    "distill",  # architecture / distillation
    "flex-moe",  # architecture / large multimodal models
]
CONDITION = "mcar:0.3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--methods", default=",".join(METHODS_DEFAULT))
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs of --seeds x --methods already in the store "
        "(the table's `seeds` column says how many each method has)",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    out = Path(args.out)
    t0 = time.perf_counter()
    spec = {
        "name": "interaction",
        "datasets": {"synthetic-interaction": {"n_samples": args.n_samples}},
        "methods": {m: {} for m in methods},
        "missing": [{"train": CONDITION, "test": [CONDITION, "none"]}],
        "seeds": seeds,
        "budget": {"max_epochs": args.max_epochs, "patience": args.patience},
    }
    store = out / "interaction-runs" / "results.db"
    if args.report_only:
        from mlmm.bench import ResultsStore, parse_spec

        with ResultsStore(store) as db:
            results = db.table([r.key for r in parse_spec(spec, "benchmark grid").runs()])
    else:
        results = run_grid(spec, store, args.jobs, args.threads)
    overall = results[(results.scope == "overall") & (results.metric == "accuracy")]
    bayes = (
        overall[overall.method == "bayes-optimal"]
        .groupby(["condition", "seed"])
        .value.first()  # the same masks for every method of a seed: one Bayes value
        .rename("bayes")
    )
    runs = overall[overall.method == overall.run_method].join(bayes, on=["condition", "seed"])
    runs = runs.assign(gap=runs.bayes - runs.value)
    rows = []
    for (condition, method), g in runs.groupby(["condition", "method"]):
        info = METHODS.get(method).info
        rows.append(
            {
                "condition": condition,
                "family": f"{info.get('family')} / {info.get('subtype')}",
                "method": method,
                "seeds": len(g),
                "accuracy": f"{100 * g.value.mean():.2f} ± {100 * g.value.std(ddof=1):.2f}"
                if len(g) > 1
                else f"{100 * g.value.mean():.2f}",
                "Bayes": round(100 * g.bayes.mean(), 2),
                "gap (points)": round(100 * g.gap.mean(), 2),
                "train s": round(float(g.train_seconds.mean()), 1),
            }
        )
    table = pd.DataFrame(rows).sort_values(["condition", "gap (points)"], ascending=[False, True])
    main_rows = table[table.condition == CONDITION]
    # the best among the methods with every seed (a one-seed gap is noisier, see the note)
    complete = main_rows[main_rows.seeds == main_rows.seeds.max()]
    best = complete.iloc[0]
    bayes_main = bayes.xs(CONDITION, level="condition")
    checks: dict = {
        "seeds": seeds,
        "n_samples": args.n_samples,
        f"{CONDITION}: Bayes-optimal accuracy (%), mean over seeds": round(
            100 * float(bayes_main.mean()), 2
        ),
        f"{CONDITION}: best method (among those with {int(best.seeds)} seeds)": best.method,
        f"{CONDITION}: best method's gap to Bayes (points)": float(best["gap (points)"]),
        f"{CONDITION}: target met (best within 2 points of Bayes)": bool(
            best["gap (points)"] <= 2.0
        ),
    }
    for name in ("late-fusion", "per-modality-logistic"):
        if name in set(main_rows.method):
            acc = runs[(runs.method == name) & (runs.condition == CONDITION)].value.mean()
            checks[f"{CONDITION}: {name} accuracy (%) (chance 50)"] = round(100 * float(acc), 2)
    checks[f"{CONDITION}: best gap per family (points)"] = {
        family: float(g["gap (points)"].min()) for family, g in main_rows.groupby("family")
    }
    record = {
        "command": "python benchmarks/interaction.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "provenance": grid_provenance(spec, store),
        "spec": spec,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "table": table.to_dict(orient="records"),
        "checks": checks,
    }
    note = (
        "`synthetic-interaction` (class = XOR of two latent signs seen by different "
        f"modalities), n = {args.n_samples} (70/10/20), trained and tested under {CONDITION}, "
        "also scored on the full test set (`none`). Bayes: the exact posterior scored on the "
        "same masked test rows; gap = Bayes − method, mean over seeds (± is the standard "
        f"deviation over seeds). Budget: {args.max_epochs} epochs, patience {args.patience}. "
        "Test rows whose presence pattern misses every modality of one sign (a single modality, "
        "or m0+m2) have a Bayes posterior of exactly 1/2: every classifier is a coin flip "
        "there, and the Bayes classifier breaks the tie to class 0, so on a finite test set a "
        "method can score above it by chance (a negative gap; about ±1 point per seed on "
        "4,000 test rows). Seeds: the `seeds` column; methods with fewer than 3 seeds ran out "
        "of the time the shared machine allowed."
    )
    write_report(out, "interaction", "Interaction benchmark", note, record, table, checks)


if __name__ == "__main__":
    main()
