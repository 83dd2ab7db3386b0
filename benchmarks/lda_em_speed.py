"""EM of `lda-em`: seconds of the dense EM (before) and of the EM in each block's data basis
(now), measured in the same run on the same inputs, and how far their results differ.

The dense EM is `gaussian_em` as committed at ``--before`` (default 4ab0e04, the last commit
before the change), read from git and run beside today's. Inputs are what `lda-em`'s
`fit_classical` builds from a standardised training part:

- ``wide-2000`` / ``wide-4000``: 60 rows, 3 classes, two vector modalities of 1,000 / 2,000
  features each, about a third of the rows missing one of them (the case reported slow:
  10.6 s and 53 s per fit);
- ``handwritten-200``: `auto`'s small-data case (`handwritten`, 200 training rows, MCAR 0.3 by
  samples, tuning seed 100), six modalities of 6-240 features;
- ``handwritten-1600``: `handwritten` MCAR 0.5 (1,600 rows, tuning seed 100), more rows than
  features in every modality, so the basis is the identity: the dense EM in both.

Run:  python benchmarks/lda_em_speed.py [--threads 1] [--repeats 1] [--before 4ab0e04]
Writes <out>/lda_em_speed.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402
from auto_tuning import training_part  # noqa: E402

import mlmm  # noqa: E402
from mlmm.data.batch import MultimodalBatch  # noqa: E402
from mlmm.data.preprocessing import Standardizer  # noqa: E402
from mlmm.methods.reference._classical import flat_features  # noqa: E402
from mlmm.methods.reference.lda_em import gaussian_em  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "src/mlmm/methods/reference/lda_em.py"


def before_em(commit: str):
    """``gaussian_em`` as committed at ``commit`` (its imports and helper functions only, so
    the method is not registered twice)."""
    text = subprocess.run(
        ["git", "show", f"{commit}:{SOURCE}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    tree = ast.parse(text)
    keep = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or isinstance(node, ast.FunctionDef)
        or isinstance(node, ast.Assign)
    ]
    namespace: dict = {}
    exec(compile(ast.Module(keep, []), f"{commit}:{SOURCE}", "exec"), namespace)  # noqa: S102
    return namespace["gaussian_em"]


def wide(width: int, seed: int = 0) -> mlmm.MultimodalDataset:
    rng = np.random.default_rng(seed)
    n = 60
    y = np.arange(n) % 3
    centres = rng.normal(size=(3, width))
    x = centres[y] + rng.normal(size=(n, width))
    a, b = x[:, : width // 2].copy(), x[:, width // 2 :].copy()
    a[rng.random(n) < 0.3] = np.nan
    b[np.isfinite(a[:, 0]) & (rng.random(n) < 0.3)] = np.nan  # never both
    return mlmm.from_arrays({"a": a, "b": b}, y, task=mlmm.TaskSpec("classification", 3))


def em_inputs(data: mlmm.MultimodalDataset) -> tuple:
    """The arguments ``LdaEm.fit_classical`` passes to ``gaussian_em`` (default settings)."""
    model = mlmm.create_method("lda-em", data.specs, data.task)
    batch = MultimodalBatch.from_dataset(Standardizer().fit(data).transform(data))
    x = flat_features(batch, float("nan")).double()  # [N, D]
    columns, pattern = model._patterns(batch.present)
    group = batch.target.long()
    return (x, columns, pattern, group, data.task.n_classes, 0.05, 20, 1e-4, "isotropic")


def timed(function, args: tuple, repeats: int) -> tuple[float, tuple]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--before", default="4ab0e04")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = before_em(args.before)
    cases = {
        "wide-2000": lambda: wide(2000),
        "wide-4000": lambda: wide(4000),
        "handwritten-200": lambda: training_part("small", 100),
        "handwritten-1600": lambda: training_part("hw05", 100),
    }
    rows = []
    for name, build in cases.items():
        data = build()
        inputs = em_inputs(data)
        now_seconds, (mean, covariance, iterations) = timed(gaussian_em, inputs, args.repeats)
        before_seconds, (old_mean, old_covariance, old_iterations) = timed(
            dense, inputs, args.repeats
        )
        rows.append(
            {
                "case": name,
                "rows": data.n_samples,
                "features": inputs[0].shape[1],
                "patterns": len(inputs[1]),
                "iterations (before, now)": f"{old_iterations}, {iterations}",
                "seconds before": round(before_seconds, 3),
                "seconds now": round(now_seconds, 3),
                "before / now": round(before_seconds / now_seconds, 1),
                "max |mean diff|": float((mean - old_mean).abs().max()),
                "max |covariance diff|": float((covariance - old_covariance).abs().max()),
            }
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    write_report(
        Path(args.out),
        "lda_em_speed",
        "lda-em: EM seconds, dense (before) and in each block's data basis (now)",
        f"Both measured in this run on the same inputs (default settings: shrinkage 0.05, 20 "
        f"iterations, tol 1e-4), {args.threads} thread(s), best of {args.repeats}; before = "
        f"`gaussian_em` at {args.before}. Differences are float64 round-off.",
        {
            "command": " ".join(sys.argv),
            "machine": machine(),
            "before_commit": args.before,
            "rows": rows,
        },
        table,
        {f"{r['case']}: before / now": r["before / now"] for r in rows}
        | {
            "largest difference in any mean or covariance entry": "{:.1e}".format(
                max(max(r["max |mean diff|"], r["max |covariance diff|"]) for r in rows)
            )
        },
    )


if __name__ == "__main__":
    main()
