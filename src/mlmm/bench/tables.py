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
    seed): every run of a grid cell carries the same rows, scored under the same masks.

    Bayes rows of an MNAR test condition are kept only when they come with their Monte Carlo
    error (metric ``accuracy_mc_se``): older stores scored MNAR with the ignorable posterior,
    which is not Bayes-optimal there (the presence pattern carries class information), so
    no gap to Bayes is shown from them."""
    ref = results.method == "bayes-optimal"
    key = ["dataset", "train_condition", "seed", "scope", "condition", "subset", "metric"]
    reference = results[ref]
    cell = ["dataset", "train_condition", "seed", "condition"]
    mnar = (reference.condition.astype(str).str.split(":").str[0] == "mnar") & (
        reference.scope != "subset"
    )
    checked = reference[reference.metric == "accuracy_mc_se"][cell].drop_duplicates()
    trusted = reference[cell].merge(checked.assign(_mc=True), on=cell, how="left")._mc.notna()
    reference = reference[~mnar.to_numpy() | trusted.to_numpy()]
    return pd.concat([results[~ref], reference.drop_duplicates(key)], ignore_index=True)


def without_time_limited(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that no time limit cut short (column ``time_limited`` of
    :meth:`~mlmm.bench.ResultsStore.table`; rows without it are kept)."""
    if "time_limited" not in results.columns:
        return results
    return results[results.time_limited.fillna(0).astype(int) != 1]


def comparison_table(results: pd.DataFrame, include_time_limited: bool = False) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, train condition, test condition, method):
    accuracy, macro-F1, worst forced subset, gap to the Bayes-optimal accuracy where known,
    parameters and training time. Computed only from the tidy results table.

    Runs whose training the time limit cut short depend on the machine's load and are left
    out unless ``include_time_limited``."""
    ids = ["dataset", "train_condition", "condition", "method"]
    if not include_time_limited:
        results = without_time_limited(results)
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
        if include_time_limited and "time_limited" in g.columns:
            # marked: how many of the seeds' runs the time limit cut short
            cut = g.groupby("seed")["time_limited"].first().fillna(0).astype(int)
            row["time_limited"] = int(cut.sum())
        rows.append(row)
    return pd.DataFrame(rows)
