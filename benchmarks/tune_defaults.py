"""Re-choose method defaults by the held-out tuning protocol, on seeds disjoint from the reported ones.

For each method, on one dataset and training missingness:

1. **Study** — ``mlmm.tune`` on the training split of tuning seed 100 (validation folds inside
   that training split only; the split of seed 100 is not a reported split).
2. **Defaults on the same folds** — the current defaults scored by ``score_point`` on the
   study's own folds, so the best point and the defaults are compared on the same data.
3. **Confirmation** — both points scored on the folds of the training split of a second
   tuning seed (101), which the study never saw.
4. **Measurement only** — test accuracy of both points on the reported seeds (0, 1, 2), the
   splits the zoo tables report. It is printed and recorded, never used to choose.

A point is proposed as the new default when its validation loss is below the defaults' by at
least ``--margin`` (5%) of the defaults' loss on *both* tuning seeds. This script does not edit
any default: it records what it measured in ``results/tune_defaults.{json,md}`` (the records of
methods not named in this invocation are kept).

Each ``--methods`` entry is ``NAME[:TRIALS][:P1+P2...]`` or ``NAME:PARAM=V1/V2...``:

- ``hemis:12`` — a study of the method's whole search space and the trainer's lr, weight
  decay and batch size;
- ``shaspec:12:dropout+align_weight`` — a study of these hyperparameters only; everything else
  (the trainer included) stays at its default;
- ``late-fusion:selection=per_head/joint`` — no study: each value of one discrete
  hyperparameter is scored on the folds of both tuning seeds; the candidate is the value with
  the lowest validation loss on seed 100.

Run:  python benchmarks/tune_defaults.py --methods hemis,coordinated [--dataset handwritten]
      [--missing mcar:0.5] [--trials 12]
Resumable: studies live in ``results/tune_defaults-runs/tune.db`` and finished measurements in
``results/tune_defaults-runs/cache.json`` (both ignored by git). Two invocations may run side
by side on different methods.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import Cache, machine, markdown_table  # noqa: E402

import mlmm  # noqa: E402
from mlmm.methods.registry import METHODS, method_hyperparameters  # noqa: E402
from mlmm.tune.study import score_point, study_folds, training_part  # noqa: E402
from mlmm.utils import atomic_write  # noqa: E402

#: The trainer every run and trial uses (the benchmark budget's defaults).
BUDGET = {"max_epochs": 200, "patience": 20, "batch_size": 64, "lr": 1e-3, "weight_decay": 1e-4}


def point_id(params: dict, trainer: dict) -> str:
    """A short hash of a point (method hyperparameters and trainer): cache keys name the point,
    not its label, so a longer study's new best point is measured afresh."""
    text = json.dumps({"params": params, "trainer": trainer}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def validation_score(args, cache, method, params, trainer, seed, label, train_seed=None) -> dict:
    """A point's validation loss and accuracy (%) on the folds a study with ``seed`` would use
    (the loss is what a trial scores; the accuracy is reported beside it). ``train_seed``
    (default ``seed``, as in a trial) seeds the training only: initialisation, batches,
    dropout."""
    train_seed = seed if train_seed is None else train_seed

    def compute() -> dict:
        t0 = time.perf_counter()
        _, train = training_part(args.dataset, None, args.missing, seed, 0.2, 0.1)
        folds = study_folds(train, None, seed)
        hits = []

        def accuracy(trained, val) -> None:
            keep = np.flatnonzero(val.observed.any(axis=1))
            val = val.subset(keep)
            hits.extend(trained.predict_raw(val).argmax(axis=1) == val.targets)

        loss = score_point(
            train, method, params, {**trainer, "seed": train_seed}, folds, on_fold=accuracy
        )
        acc = 100 * float(np.mean(hits))
        print(f"  {method} {label} seed {seed} (training {train_seed}): validation loss {loss:.4f}, accuracy {acc:.2f}% "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
        return {"loss": loss, "accuracy": acc}

    key = f"val/{args.dataset}/{args.missing}/{method}/{point_id(params, trainer)}/{seed}"
    if train_seed != seed:
        key += f"/train{train_seed}"
    return cache.get(key, compute)


def test_accuracy(args, cache, method, params, trainer, seed, label) -> float:
    """Test accuracy (%) under the training condition on a reported seed: measurement only."""

    def compute() -> float:
        t0 = time.perf_counter()
        res = mlmm.run_experiment(
            args.dataset,
            method,
            method_params=params,
            missing=args.missing,
            seed=seed,
            trainer={**trainer, "progress": False},
            subsets=False,
        )
        table = res.table
        acc = table[(table.scope == "overall") & (table.metric == "accuracy")].value.iloc[0]
        print(f"  {method} {label} test seed {seed}: {100 * acc:.2f}% "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)  # fmt: skip
        return 100 * float(acc)

    key = f"test/{args.dataset}/{args.missing}/{method}/{point_id(params, trainer)}/{seed}"
    return cache.get(key, compute)


def parse_entry(entry: str, default_trials: int) -> dict:
    """``NAME[:TRIALS][:P1+P2]`` or ``NAME:PARAM=V1/V2`` (see the module docstring)."""
    method, *parts = entry.split(":")
    spec = {"method": method, "trials": default_trials, "only": None, "compare": None}
    defaults = method_hyperparameters(method)
    for part in parts:
        if "=" in part:
            name, _, values = part.partition("=")
            if name not in defaults:
                raise SystemExit(f"{method} has no hyperparameter {name!r}: {sorted(defaults)}")
            kind = type(defaults[name])
            spec["compare"] = (name, [kind(v) for v in values.split("/")])
        elif part.isdigit():
            spec["trials"] = int(part)
        else:
            spec["only"] = part.split("+")
    return spec


def one_method(args, cache, store, spec) -> dict:
    method = spec["method"]
    hyper = method_hyperparameters(method)
    if spec["compare"] is not None:
        name, values = spec["compare"]
        print(f"{method}: {name} in {values}, no study", flush=True)
        defaults, default_trainer = {name: hyper[name]}, {}
        scores_100 = {
            v: validation_score(args, cache, method, {name: v}, BUDGET, args.tuning_seed, str(v))
            for v in values
        }
        best = min(values, key=lambda v: scores_100[v]["loss"])
        tuned, tuned_trainer, study, study_seconds = {name: best}, BUDGET, None, None
        known = {("tuned", args.tuning_seed): scores_100[best]}
        alternatives = {
            str(v): {f"seed{args.tuning_seed}": scores_100[v]} for v in values if v != best
        }
    else:
        space = None
        if spec["only"] is not None:
            cls_space = METHODS.get(method).obj.search_space
            space = {k: cls_space[k] for k in spec["only"]}
        print(f"{method}: {spec['trials']}-trial study on tuning seed {args.tuning_seed}"
              + (f" over {spec['only']} only" if space else ""), flush=True)  # fmt: skip
        result = mlmm.tune(
            args.dataset,
            method,
            missing=args.missing,
            n_trials=spec["trials"],
            seed=args.tuning_seed,
            store=store,
            trainer=(
                {k: v for k, v in BUDGET.items() if k not in ("lr", "batch_size", "weight_decay")}
                if space is None
                else dict(BUDGET)
            ),
            space=space,
            trainer_space=None if space is None else {},
            on_trial=lambda r: print(
                f"  trial {r['number']}: {r['state']} {r['value']} {r.get('params')}", flush=True
            ),
        )
        # the trials' own time, so a resumed study reports what it cost, not its replay
        study_seconds = sum(record["seconds"] for record in result.records)
        defaults = {k: hyper[k] for k in result.params}
        default_trainer = {k: BUDGET[k] for k in result.trainer}
        tuned, tuned_trainer = result.params, {**BUDGET, **result.trainer}
        study, known, alternatives = result.summary(), {}, {}
        study_value = result.value
    points = {"defaults": (defaults, BUDGET), "tuned": (tuned, tuned_trainer)}
    scores = {}
    for seed in (args.tuning_seed, args.check_seed):
        for label, (params, trainer) in points.items():
            scores[(label, seed)] = known.get((label, seed)) or validation_score(
                args, cache, method, params, trainer, seed, label
            )
    for v in alternatives:  # the other values of a comparison: check seed, then measurement
        point = {spec["compare"][0]: type(tuned[spec["compare"][0]])(v)}
        alternatives[v][f"seed{args.check_seed}"] = validation_score(
            args, cache, method, point, BUDGET, args.check_seed, v
        )
        alternatives[v]["test"] = [
            test_accuracy(args, cache, method, point, BUDGET, seed, v) for seed in args.report_seeds
        ]
    if study is not None and abs(scores[("tuned", args.tuning_seed)]["loss"] - study_value) > 1e-6:
        print(f"  note: rescored best {scores[('tuned', args.tuning_seed)]['loss']:.6f} "
              f"!= study value {study_value:.6f}", flush=True)  # fmt: skip
    # the noise of the score: the defaults on the tuning seed's fold, other training seeds
    noise = {
        str(s): validation_score(
            args, cache, method, defaults, BUDGET, args.tuning_seed, "defaults", train_seed=s
        )["loss"]
        for s in args.noise_seeds
    }
    same = tuned == defaults and tuned_trainer == BUDGET
    tests = {
        label: [
            test_accuracy(args, cache, method, params, trainer, seed, label)
            for seed in args.report_seeds
        ]
        for label, (params, trainer) in points.items()
        if not (same and label == "tuned")
    }
    if same:
        tests["tuned"] = tests["defaults"]
    return {
        "method": method,
        "command": command_line(),
        "entry": spec,
        "defaults": {**defaults, **{f"trainer.{k}": v for k, v in default_trainer.items()}},
        "tuned": {
            **tuned,
            **{f"trainer.{k}": v for k, v in tuned_trainer.items() if k in default_trainer},
        },
        "study": study,
        "study_seconds": study_seconds,
        "validation_loss": {
            f"{label}@seed{seed}": v["loss"] for (label, seed), v in scores.items()
        },
        "validation_accuracy": {
            f"{label}@seed{seed}": v["accuracy"] for (label, seed), v in scores.items()
        },
        "alternatives": alternatives,
        "noise": noise,
        "test_accuracy": tests,
    }


def proposed(record: dict, margin: float, seeds: tuple[int, int]) -> bool:
    """The rule: the tuned point's validation loss is below the defaults' by at least
    ``margin`` of the defaults' loss on both tuning seeds."""
    v = record["validation_loss"]
    return all(v[f"tuned@seed{s}"] < (1 - margin) * v[f"defaults@seed{s}"] for s in seeds)


def command_line() -> str:
    return "python benchmarks/tune_defaults.py " + " ".join(sys.argv[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--methods",
        default="hemis,coordinated",
        help="comma-separated NAME[:TRIALS][:P1+P2] or NAME:PARAM=V1/V2",
    )
    parser.add_argument("--dataset", default="handwritten")
    parser.add_argument("--missing", default="mcar:0.5")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--tuning-seed", type=int, default=100)
    parser.add_argument("--check-seed", type=int, default=101)
    parser.add_argument("--report-seeds", default="0,1,2")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument(
        "--noise-seeds",
        default="",
        help="training seeds with which to rescore the defaults on the tuning seed's fold",
    )
    parser.add_argument("--max-epochs", type=int, default=BUDGET["max_epochs"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    BUDGET["max_epochs"] = args.max_epochs
    args.report_seeds = [int(s) for s in args.report_seeds.split(",")]
    args.noise_seeds = [int(s) for s in args.noise_seeds.split(",") if s]
    if {args.tuning_seed, args.check_seed} & set(args.report_seeds):
        parser.error("the tuning seeds must be disjoint from the reported seeds")
    torch.set_num_threads(1)
    out = Path(args.out)
    runs = out / "tune_defaults-runs"
    cache, store = Cache(runs / "cache.json"), runs / "tune.db"
    for entry in args.methods.split(","):
        record = one_method(args, cache, store, parse_entry(entry, args.trials))
        write(out, args, record)


def write(out: Path, args, record: dict) -> None:
    """``tune_defaults.json`` (everything) and ``.md`` (one row per method), after each method;
    the records of other methods already in the JSON are kept."""
    path = out / "tune_defaults.json"
    old = json.loads(path.read_text()) if path.exists() else {"methods": []}
    records = [r for r in old["methods"] if r["method"] != record["method"]] + [record]
    for r in records:  # records written before commands were kept per method
        r.setdefault("command", old.get("command"))
        r["proposed_as_default"] = proposed(r, args.margin, (args.tuning_seed, args.check_seed))
    data = {"machine": machine(), "margin": args.margin, "methods": records}
    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, default=str)
    rows = []
    for r in records:
        d, t = r["test_accuracy"]["defaults"], r["test_accuracy"]["tuned"]
        v, a = r["validation_loss"], r.get("validation_accuracy", {})
        s100, s101 = f"seed{args.tuning_seed}", f"seed{args.check_seed}"

        def pair(key: str, fmt: str, values: dict) -> str:
            return " / ".join(
                format(values[f"{label}@{key}"], fmt) if f"{label}@{key}" in values else "-"
                for label in ("defaults", "tuned")
            )

        rows.append(
            {
                "method": r["method"],
                f"val loss defaults / tuned ({s100})": pair(s100, ".4f", v),
                f"val loss defaults / tuned ({s101})": pair(s101, ".4f", v),
                f"val acc defaults / tuned ({s100}, {s101})": f"{pair(s100, '.2f', a)}; "
                f"{pair(s101, '.2f', a)}",
                "proposed": "yes" if r["proposed_as_default"] else "no",
                "test acc defaults (seeds 0-2)": f"{np.mean(d):.2f} ± {np.std(d):.2f}",
                "test acc tuned (seeds 0-2)": f"{np.mean(t):.2f} ± {np.std(t):.2f}",
                "trials": "-" if r["study"] is None else r["study"]["budget"]["trials"],
                "finished": "-" if r["study"] is None else r["study"]["trials"],
                "study s (trials)": "-"
                if r["study_seconds"] is None
                else round(r["study_seconds"]),
            }
        )
    lines = [
        "# Defaults re-chosen by held-out tuning\n",
        f"Machine at the last write: {data['machine']}\n",
        f"{args.dataset}, training and test missingness {args.missing}. Study: a budget of "
        f"`trials` on the training split of seed {args.tuning_seed} (validation folds inside it); "
        f"confirmation on the training split of seed {args.check_seed}; test accuracy on the "
        f"reported seeds {args.report_seeds} is measured, never used to choose. Validation "
        f"loss = cross-entropy on the study's folds (lower is better); `proposed` = the tuned "
        f"point's loss is at least {100 * args.margin:.0f}% below the defaults' on both tuning "
        f"seeds. Without a study (`trials` -), `tuned` is the value of the compared "
        f"hyperparameter with the lowest loss on seed {args.tuning_seed}.\n",
        markdown_table(pd.DataFrame(rows)),
        "\n## Points and commands\n",
    ]
    for r in records:
        lines.append(f"- `{r['method']}` (`{r['command']}`)")
        lines.append(f"  - defaults: {r['defaults']}")
        lines.append(f"  - tuned: {r['tuned']}")
        for value, by_seed in r.get("alternatives", {}).items():
            lines.append(f"  - other value {value}: {by_seed}")
        lines.append(f"  - test accuracy per seed: {r['test_accuracy']}")
        if r.get("noise"):
            values = [
                r["validation_loss"][f"defaults@seed{args.tuning_seed}"],
                *r["noise"].values(),
            ]
            lines.append(
                f"  - defaults on seed {args.tuning_seed}'s fold, training seeds "
                f"{[args.tuning_seed, *map(int, r['noise'])]}: {[round(v, 4) for v in values]} "
                f"(range {100 * (max(values) - min(values)) / min(values):.1f}% of the lowest)"
            )
    with atomic_write(out / "tune_defaults.md") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
