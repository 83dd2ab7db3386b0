"""Shared pieces of the benchmark scripts: machine record, classical reference, tables."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlmm
from mlmm.data.missingness import simulate
from mlmm.utils import atomic_write, rng_for


class Cache:
    """Finished measurements by name, kept in a JSON file (written atomically; re-read before
    each write, so two invocations writing different keys keep each other's entries)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._read()

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, key: str, compute):
        """The value kept under ``key``, or ``compute()``, kept before it is returned."""
        if key not in self.data:
            value = compute()
            self.data = {**self._read(), key: value}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.path) as fh:
                json.dump(self.data, fh, indent=1, default=str)
        return self.data[key]


def machine() -> dict:
    """Where and with what a benchmark ran (stored beside its figures)."""
    return {
        "node": platform.node(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mlmm": mlmm.__version__,
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def per_view_logistic(
    dataset_name: str, params: dict, seed: int, missing: str = "mcar:0.5"
) -> dict:
    """Late fusion of per-view logistic regressions (scikit-learn), under the same split and
    masks as mlmm's runner: what a practitioner would pick instead of a deep model."""
    data = mlmm.load_dataset(dataset_name, **params)
    split = mlmm.train_val_test_split(data, test_size=0.2, val_size=0.1, seed=seed)
    condition = mlmm.parse_condition(missing)
    train, _ = simulate(split.train, condition.train, rng_for(seed, "train-mask"))
    test_spec = condition.test.to_string()
    test, _ = simulate(split.test, test_spec, rng_for(seed, "test-mask", test_spec))
    t0 = time.perf_counter()
    proba = np.zeros((test.n_samples, data.task.n_classes))
    for j, name in enumerate(data.modality_names):
        rows = train.observed[:, j]
        scaler = StandardScaler().fit(train.inputs[name][rows])
        clf = LogisticRegression(C=1.0, max_iter=2000)
        clf.fit(scaler.transform(train.inputs[name][rows]), train.targets[rows])
        present = test.observed[:, j]
        proba[present] += clf.predict_proba(scaler.transform(test.inputs[name][present]))
    acc = float((proba.argmax(1) == test.targets).mean())
    return {
        "dataset": dataset_name,
        "missing": missing,
        "seed": seed,
        "accuracy": acc,
        "train_seconds": time.perf_counter() - t0,
    }


def run_grid(
    spec: dict, store, jobs: int = 1, threads: int | None = None, rerun: list[str] = ()
) -> pd.DataFrame:
    """Run a benchmark spec (a mapping, as in a YAML file) into ``store`` with mlmm's runner
    (resumable: finished runs are skipped, except those of the methods in ``rerun``) and
    return the tidy table of its runs with costs."""
    from mlmm.bench import ResultsStore, parse_spec, run_benchmark

    bench = parse_spec(spec, "benchmark grid")

    def show(kind, run, progress) -> None:
        if kind in ("done", "failed", "skipped"):
            n = progress.done + progress.failed + progress.skipped
            print(f"{n}/{progress.total} {run.label()}: {kind}", flush=True)

    outcome = run_benchmark(bench, store, jobs=jobs, threads=threads, rerun=rerun, on_event=show)
    with ResultsStore(store) as db:
        table = db.table([r.key for r in bench.runs()])
        failed = db.runs([r.key for r in bench.runs()]).query("status == 'failed'")
    for row in failed.itertuples():
        print(f"FAILED {row.dataset} {row.method} seed={row.seed}: {row.error}", flush=True)
    print(f"{outcome.ran} runs ran, {outcome.skipped} from the store ({store})", flush=True)
    return table


def grid_provenance(spec: dict, store) -> dict:
    """When, where and with how many threads the runs of ``spec`` in ``store`` were made (a
    rerun of a script reads finished runs from its store: their timings are from then)."""
    from mlmm.bench import ResultsStore, parse_spec

    keys = [r.key for r in parse_spec(spec, "benchmark grid").runs()]
    with ResultsStore(store) as db:
        runs = db.runs(keys)

    def utc(stamp: float) -> str:
        return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")

    return {
        "runs": len(runs),
        "threads_per_run": sorted(int(t) for t in runs.threads.dropna().unique()),
        "machines": sorted(runs.machine.dropna().unique()),
        "finished_utc": [utc(runs.finished_at.min()), utc(runs.finished_at.max())],
    }


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of a data frame (no extra dependency)."""
    rows = [list(map(str, frame.columns))] + [
        [str(v) for v in r] for r in frame.itertuples(index=False)
    ]
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0])
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in rows[1:])


def write_report(
    out, name: str, title: str, note: str, record: dict, table: pd.DataFrame, checks: dict
) -> None:
    """Write ``<out>/<name>.json`` (the record) and ``<out>/<name>.md`` (table and checks)
    atomically, and print both."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{name}.json") as fh:
        json.dump(record, fh, indent=2, default=str)

    def fmt(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [
        f"# {title}\n",
        f"`{record['command']}` on {record['machine']}\n",
        f"{note}\n",
        markdown_table(table),
        "\n## Checks\n",
    ]
    lines += [f"- {k}: {fmt(v)}" for k, v in checks.items()]
    with atomic_write(out / f"{name}.md") as fh:
        fh.write("\n".join(lines) + "\n")
    print(table.to_string(index=False))
    for k, v in checks.items():
        print(f"{k}: {fmt(v)}")
