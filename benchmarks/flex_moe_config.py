"""Choose `flex-moe`'s configuration for zoo_three.py on tuning seeds (never the reported 0-2).

At its defaults `flex-moe` uses 66% of its parameters per sample on `synthetic` (3 modalities:
7 experts, top-2 routing, and 256-wide encoders and head that every sample passes through), so
the issue's target "active parameters <= 1/3 of the total" is met only on `handwritten` (63
experts). The MoE convention behind the target is that the experts hold most of the capacity
and a sample uses few of them: top-1 routing (the S-Router's fixed expert alone, as in Switch
Transformers), wider experts, narrower dense parts. This script scores the defaults and such
candidates on tuning seeds 100 and 101 (MCAR 0.5 on train and test, every method setting
otherwise as in zoo_three.py) and picks, among the candidates at or under 1/3 active on both
datasets, the one with the best mean accuracy over the two datasets and seeds.

Run:  python benchmarks/flex_moe_config.py [--seeds 100,101] [--out benchmarks/results]
Writes <out>/flex_moe_config.json (the scores, the choice and the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

import mlmm  # noqa: E402
from mlmm.utils import atomic_write  # noqa: E402

DATASETS = {"synthetic": {"n_samples": 5000}, "handwritten": {}}
CANDIDATES = {
    "defaults": {},
    "top1-narrow-dense": {"top_k": 1, "hidden": 64, "expert_hidden": 256},
    "top1-wide-experts": {"top_k": 1, "hidden": 128, "expert_hidden": 512},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="100,101")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument(
        "--report-seeds",
        default="",
        help="after choosing, score the chosen configuration on these seeds (the reported "
        "ones; never used to choose); the defaults' figures are zoo_three.py's",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    datasets = {d: DATASETS[d] for d in args.datasets.split(",")}
    t0 = time.perf_counter()
    rows = []
    for name, params in CANDIDATES.items():
        shares, accs = {}, []
        for dataset, dataset_params in datasets.items():
            ds = mlmm.load_dataset(dataset, **dataset_params)
            model = mlmm.create_method("flex-moe", ds.specs, ds.task, **params)
            shares[dataset] = model.active_parameters() / model.total_parameters()
            for seed in seeds:
                result = mlmm.run_experiment(
                    dataset,
                    "flex-moe",
                    method_params=params,
                    dataset_params=dataset_params,
                    missing="mcar:0.5",
                    seed=seed,
                    trainer={"progress": False},
                    subsets=False,
                )
                t = result.table
                acc = float(t[(t.scope == "overall") & (t.metric == "accuracy")].value.iloc[0])
                accs.append({"dataset": dataset, "seed": seed, "accuracy": round(100 * acc, 2)})
                print(name, dataset, seed, round(100 * acc, 2), flush=True)
        rows.append(
            {
                "candidate": name,
                "params": params,
                "active share": {k: round(v, 4) for k, v in shares.items()},
                "runs": accs,
                "mean accuracy": round(sum(a["accuracy"] for a in accs) / len(accs), 2),
                **{
                    f"{d} mean": round(
                        sum(a["accuracy"] for a in accs if a["dataset"] == d) / len(seeds), 2
                    )
                    for d in datasets
                },
            }
        )
    # the share is a count: check it on both datasets even where no run was made
    for r in rows:
        for dataset, dataset_params in DATASETS.items():
            ds = mlmm.load_dataset(dataset, **dataset_params)
            model = mlmm.create_method("flex-moe", ds.specs, ds.task, **r["params"])
            share = model.active_parameters() / model.total_parameters()
            r["active share"][dataset] = round(share, 4)
    eligible = [r for r in rows if max(r["active share"].values()) <= 1 / 3]
    choice = max(eligible, key=lambda r: r["mean accuracy"]) if eligible else None
    reported = []
    for seed in [int(x) for x in args.report_seeds.split(",") if x] if choice else []:
        for dataset, dataset_params in datasets.items():
            result = mlmm.run_experiment(
                dataset,
                "flex-moe",
                method_params=choice["params"],
                dataset_params=dataset_params,
                missing="mcar:0.5",
                seed=seed,
                trainer={"progress": False},
                subsets=False,
            )
            t = result.table
            acc = float(t[(t.scope == "overall") & (t.metric == "accuracy")].value.iloc[0])
            reported.append({"dataset": dataset, "seed": seed, "accuracy": round(100 * acc, 2)})
            print("chosen on reported seed", dataset, seed, round(100 * acc, 2), flush=True)
    record = {
        "command": f"python benchmarks/flex_moe_config.py --seeds {args.seeds} "
        f"--datasets {args.datasets}"
        + (f" --report-seeds {args.report_seeds}" if args.report_seeds else ""),
        "machine": machine(),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "rule": "among candidates with active/total <= 1/3 on both datasets, best mean accuracy "
        "over the datasets run (--datasets) and the tuning seeds (MCAR 0.5, test split of each "
        "tuning seed)",
        "candidates": rows,
        "choice": choice["candidate"] if choice else None,
        "choice_params": choice["params"] if choice else None,
        "chosen_on_reported_seeds": reported,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "flex_moe_config.json") as fh:
        fh.write(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("choice", "choice_params", "wall_seconds")}))


if __name__ == "__main__":
    main()
