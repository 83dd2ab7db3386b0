"""The first benchmark runner: a grid of experiments, one CSV per finished run, resumable.

Each run (dataset, its parameters, method, its hyperparameters, missingness, seed, budget)
is keyed by a hash of its whole configuration. Its tidy table is written atomically to
``<out>/runs/<hash>.csv`` when it finishes, so a rerun skips finished runs and a killed
benchmark loses at most the run in progress.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlmm
from mlmm.data.missingness import parse_condition
from mlmm.errors import MlmmError
from mlmm.eval.summaries import worst_subset
from mlmm.utils import atomic_write

#: The quick suite: the three first methods on two built-in datasets under MCAR 0.5.
QUICK = {
    "datasets": {"handwritten": {}, "synthetic": {"n_samples": 5000}},
    "methods": {"zero-impute": {}, "late-fusion": {}, "hemis": {}},
    "missing": ["mcar:0.5"],
    "seeds": [0],
}


@dataclass
class BenchConfig:
    """A benchmark grid.

    Attributes
    ----------
    datasets : dict of name to loader parameters
    methods : dict of name to hyperparameters
    missing : list of str
        Missingness conditions (``"mcar:0.5"`` trains and tests under it; ``"none=>mcar:0.5"``
        trains on full data and tests under MCAR 0.5).
    seeds : list of int
    trainer : dict
        Trainer arguments (``max_epochs``, ``batch_size``...).
    test_size, val_size : float
    """

    datasets: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(QUICK["datasets"]))
    methods: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(QUICK["methods"]))
    missing: list[str] = field(default_factory=lambda: list(QUICK["missing"]))
    seeds: list[int] = field(default_factory=lambda: list(QUICK["seeds"]))
    trainer: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    val_size: float = 0.1

    def validate(self) -> None:
        """Check every name and spec before any run starts."""
        from mlmm.data.datasets import DATASETS
        from mlmm.methods import METHODS, method_hyperparameters

        for name in self.datasets:
            DATASETS.get(name)
        for name, params in self.methods.items():
            METHODS.get(name)
            accepted = method_hyperparameters(name)
            for key in params:
                if key not in accepted:
                    raise MlmmError(
                        f"method {name!r} has no hyperparameter {key!r}; accepted: {', '.join(accepted)}"
                    )
        for spec in self.missing:
            parse_condition(spec)
        for seed in self.seeds:
            if not isinstance(seed, int) or seed < 0:
                raise MlmmError(f"seeds must be non-negative integers, got {seed!r}")
        if not (self.datasets and self.methods and self.missing and self.seeds):
            raise MlmmError(
                "a benchmark needs at least one dataset, method, missingness spec and seed"
            )

    def runs(self) -> list[dict[str, Any]]:
        """Every run's full configuration, in a stable order."""
        return [
            {
                "dataset": d,
                "dataset_params": dp,
                "method": m,
                "method_params": mp,
                "missing": parse_condition(miss).to_string(),
                "seed": s,
                "trainer": self.trainer,
                "test_size": self.test_size,
                "val_size": self.val_size,
                "version": mlmm.__version__,
            }
            for d, dp in self.datasets.items()
            for miss in self.missing
            for m, mp in self.methods.items()
            for s in self.seeds
        ]


def run_key(run: dict[str, Any]) -> str:
    """A stable hash of a run's whole configuration."""
    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _one_run(run: dict[str, Any]) -> pd.DataFrame:
    from mlmm.experiment import run_experiment

    t0 = time.perf_counter()
    res = run_experiment(
        run["dataset"],
        run["method"],
        method_params=run["method_params"],
        dataset_params=run["dataset_params"],
        missing=run["missing"],
        seed=run["seed"],
        test_size=run["test_size"],
        val_size=run["val_size"],
        trainer={"progress": False, **run["trainer"]},
    )
    seconds = time.perf_counter() - t0
    table = res.table.assign(
        n_parameters=res.trained.n_parameters(),
        train_seconds=res.trained.train_seconds,
        run_seconds=seconds,
        epochs=sum(len(h.epochs) for h in res.trained.histories),
    )
    if res.reference is not None:
        table = pd.concat(
            [
                table,
                res.reference.assign(n_parameters=0, train_seconds=0.0, run_seconds=0.0, epochs=0),
            ],
            ignore_index=True,
        )
    return table.assign(run_key=run_key(run), machine=platform.node(), threads=_threads())


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run_bench(
    config: BenchConfig,
    out_dir: str | Path,
    on_progress: Callable[[int, int, dict[str, Any], str], None] | None = None,
) -> pd.DataFrame:
    """Run every run of ``config`` not already finished in ``out_dir``; return all results.

    ``on_progress(done, total, run, status)`` is called after each run with status
    ``"done"``, ``"skipped"`` (finished earlier) or ``"failed: <error>"``. A failing run is
    recorded in ``<out>/failures.jsonl`` and does not stop the others.
    """
    config.validate()
    out = Path(out_dir)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "bench.json") as fh:
        json.dump(asdict(config), fh, indent=2)
    runs = config.runs()
    tables = []
    for i, run in enumerate(runs, 1):
        path = out / "runs" / f"{run_key(run)}.csv"
        if path.exists():
            tables.append(pd.read_csv(path))
            status = "skipped"
        else:
            try:
                table = _one_run(run)
            except MlmmError as err:
                with open(out / "failures.jsonl", "a") as fh:
                    fh.write(json.dumps({"run": run, "error": str(err)}) + "\n")
                status = f"failed: {err}"
            else:
                with atomic_write(path) as fh:
                    table.to_csv(fh, index=False)
                tables.append(table)
                status = "done"
        if on_progress:
            on_progress(i, len(runs), run, status)
    if not tables:
        raise MlmmError(f"no run of the benchmark finished; see {out / 'failures.jsonl'}")
    results = pd.concat(tables, ignore_index=True)
    with atomic_write(out / "results.csv") as fh:
        results.to_csv(fh, index=False)
    return results


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{100 * values.iloc[0]:.1f}"
    return f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, train condition, test condition, method):
    accuracy, macro-F1, worst forced subset, gap to the Bayes-optimal accuracy where known,
    parameters and training time. Computed only from the tidy results table."""
    ids = ["dataset", "train_condition", "condition", "method"]
    # every run of a grid cell carries the same Bayes reference rows: keep one copy
    ref = results.method == "bayes-optimal"
    key = ["dataset", "train_condition", "seed", "scope", "condition", "subset", "metric"]
    results = pd.concat([results[~ref], results[ref].drop_duplicates(key)], ignore_index=True)
    overall = results[results.scope == "overall"]
    rows = []
    for key, g in overall.groupby(ids, sort=False):
        acc = g[g.metric == "accuracy"].set_index("seed")["value"]
        f1 = g[g.metric == "macro_f1"]["value"]
        runs = results[
            (results.dataset == key[0])
            & (results.train_condition == key[1])
            & (results.method == key[3])
        ]
        worst = worst_subset(runs, "accuracy") if (runs.scope == "subset").any() else None
        row = dict(zip(ids, key, strict=True))
        row["accuracy"] = _mean_std(acc)
        row["macro_f1"] = _mean_std(f1)
        row["worst_subset"] = (
            "-"
            if worst is None
            else (f"{_mean_std(worst['value'].astype(float))} ({worst['subset'].mode().iloc[0]})")
        )
        bayes = overall[
            (overall.dataset == key[0])
            & (overall.train_condition == key[1])
            & (overall.condition == key[2])
            & (overall.method == "bayes-optimal")
            & (overall.metric == "accuracy")
        ].set_index("seed")["value"]
        row["gap_to_bayes"] = (
            "-" if bayes.empty or key[3] == "bayes-optimal" else _mean_std((bayes - acc).dropna())
        )
        row["n_parameters"] = int(g["n_parameters"].iloc[0])
        row["train_seconds"] = float(np.mean(g.groupby("seed")["train_seconds"].first()))
        row["seeds"] = int(g["seed"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)
