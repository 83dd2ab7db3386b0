"""Summary tables computed only from the tidy results table (never typed in by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlmm.eval.summaries import worst_subset


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{100 * values.iloc[0]:.1f}"
    return f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"


def one_reference_copy(results: pd.DataFrame) -> pd.DataFrame:
    """The results with one copy of the Bayes-optimal rows per (dataset, training condition,
    seed): every run of a grid cell carries the same rows, scored under the same masks."""
    ref = results.method == "bayes-optimal"
    key = ["dataset", "train_condition", "seed", "scope", "condition", "subset", "metric"]
    return pd.concat([results[~ref], results[ref].drop_duplicates(key)], ignore_index=True)


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, train condition, test condition, method):
    accuracy, macro-F1, worst forced subset, gap to the Bayes-optimal accuracy where known,
    parameters and training time. Computed only from the tidy results table."""
    ids = ["dataset", "train_condition", "condition", "method"]
    results = one_reference_copy(results)
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
