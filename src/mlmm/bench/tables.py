"""Summary tables computed only from the tidy results table (never typed in by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlmm.eval.metrics import (
    MULTILABEL_METRICS,
    MULTILABEL_PRIMARY,
    is_percent,
    primary_metric,
    task_metrics,
)
from mlmm.eval.summaries import worst_subset


def format_value(value: float, metric: str) -> str:
    """One number as every table shows it: accuracy-type metrics in percent with one decimal,
    the others (RMSE, MAE, R², ECE) with three decimals; ``-`` for NaN."""
    if pd.isna(value):
        return "-"
    return f"{100 * value:.1f}" if is_percent(metric) else f"{value:.3f}"


def _mean_std(values: pd.Series, metric: str = "accuracy") -> str:
    """Mean ± std (ddof 1) over the defined values; when some are NaN (a metric undefined on a
    seed, e.g. a diverged model), how many of them the mean is over: ``"70.0 ± 14.1 (2 of 3)"``."""
    everything = pd.to_numeric(values, errors="coerce")
    values = everything.dropna()
    if values.empty:  # nothing measured, or undefined on every seed (not the same)
        return "-" if everything.empty else f"undefined (0 of {len(everything)})"
    text = format_value(values.iloc[0], metric)
    if len(values) > 1:
        text = f"{format_value(values.mean(), metric)} ± {format_value(values.std(ddof=1), metric)}"
    return (
        text if len(values) == len(everything) else f"{text} ({len(values)} of {len(everything)})"
    )


def table_metrics(results: pd.DataFrame, metrics: Sequence[str] | None = None) -> list[str]:
    """The metrics to show for ``results`` (one task): those of ``metrics`` that the table
    holds, in that order, or the task's default list (accuracy, macro-F1, AUROC, ECE; RMSE,
    MAE, R²; micro-F1, macro-F1, samples-F1, macro AUROC) when none of them is there. The
    first is the primary metric; a multilabel table ranks by micro-F1 or macro AUROC only, so
    micro-F1 leads when ``metrics`` starts with neither. Per-label rows (``auroc[LABEL]``)
    are shown only when ``metrics`` names them."""
    available = set(results.loc[results.scope == "overall", "metric"])
    chosen = [m for m in metrics or () if m in available]
    default = [m for m in task_metrics(available) if m in available]
    if default and default[0] == MULTILABEL_METRICS[0] and chosen:
        if chosen[0] not in MULTILABEL_PRIMARY:
            chosen = [default[0], *(m for m in chosen if m != default[0])]
    return chosen or default


def bayes_gap_metric(available: set[str] | Sequence[str], primary: str) -> str | None:
    """The metric the gap to the Bayes-optimal reference is shown on, or None.

    Accuracy for a classification table ranked by accuracy (the ``argmax`` of the exact
    posterior maximises it); macro AUROC for a multi-label table (each label's exact posterior
    ranks its samples optimally, so no method's expected AUROC is higher; the 0.5-threshold
    F1 scores are not optimal and get no gap); None otherwise."""
    available = set(available)
    if primary == "accuracy":
        return "accuracy"
    if task_metrics(available) is MULTILABEL_METRICS and "macro_auroc" in available:
        return "macro_auroc"
    return None


def one_reference_copy(results: pd.DataFrame) -> pd.DataFrame:
    """The results with one copy of the Bayes-optimal rows per (dataset, training condition,
    seed): every run of a grid cell carries the same rows, scored under the same masks.

    Bayes rows of an MNAR test condition are kept only when they come with their Monte Carlo
    error (metric ``accuracy_mc_se``, or ``macro_auroc_mc_se`` for multi-label): older
    stores scored MNAR with the ignorable posterior, which is not Bayes-optimal there (the
    presence pattern carries class information), so no gap to Bayes is shown from them."""
    ref = results.method == "bayes-optimal"
    key = ["dataset", "train_condition", "seed", "scope", "condition", "subset", "metric"]
    reference = results[ref]
    cell = ["dataset", "train_condition", "seed", "condition"]
    mnar = (reference.condition.astype(str).str.split(":").str[0] == "mnar") & (
        reference.scope != "subset"
    )
    errors = reference.metric.isin(("accuracy_mc_se", "macro_auroc_mc_se"))
    checked = reference[errors][cell].drop_duplicates()
    trusted = reference[cell].merge(checked.assign(_mc=True), on=cell, how="left")._mc.notna()
    reference = reference[~mnar.to_numpy() | trusted.to_numpy()]
    return pd.concat([results[~ref], reference.drop_duplicates(key)], ignore_index=True)


#: The columns that make two runs one cell of the tables: a later run of a cell replaces an
#: earlier one (:func:`superseded_keys`).
RUN_CELL = ("dataset", "method", "train_condition", "seed")


def superseded_keys(frame: pd.DataFrame) -> set[str]:
    """Keys of the runs that a later run of the same (dataset, method, training condition,
    seed) replaces: an earlier configuration of it, left in the store when the spec changed
    between runs (hyperparameters, budget, dataset parameters, test conditions). Averaging
    both would mix two configurations under one seed count.

    Parameters
    ----------
    frame : pandas.DataFrame
        Runs (:meth:`~mlmm.bench.ResultsStore.runs`: only finished and failed runs count) or
        tidy results (:meth:`~mlmm.bench.ResultsStore.table`, whose ``run_method`` names the
        run of each Bayes-optimal row). "Later" is by ``finished_at`` where the frame has it,
        else by position: the store lists runs in the order they were first planned.

    Returns
    -------
    set of str
    """
    if frame.empty or "run_key" not in frame.columns:
        return set()
    runs = frame
    if "run_method" in runs.columns:  # the run's method, also on its Bayes-optimal rows
        runs = runs.assign(method=runs.run_method)
    else:
        runs = runs[runs.method != "bayes-optimal"]
    if "status" in runs.columns:
        runs = runs[runs.status.isin(["done", "failed"])]
    runs = runs.drop_duplicates("run_key")
    runs = runs.assign(_order=np.arange(len(runs)))
    order = ["finished_at", "_order"] if "finished_at" in runs.columns else ["_order"]
    runs = runs.sort_values(order, kind="stable", na_position="first")
    latest = runs.drop_duplicates(list(RUN_CELL), keep="last")
    return set(runs.run_key) - set(latest.run_key)


def without_time_limited(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs that no time limit cut short (column ``time_limited`` of
    :meth:`~mlmm.bench.ResultsStore.table`; rows without it are kept)."""
    if "time_limited" not in results.columns:
        return results
    return results[results.time_limited.fillna(0).astype(int) != 1]


def comparison_table(
    results: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    include_time_limited: bool = False,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, train condition, test condition, method).

    Parameters
    ----------
    results : pandas.DataFrame
        The tidy results of a benchmark (with each run's costs), e.g.
        :meth:`mlmm.bench.ResultsStore.table`.
    metrics : list of str, optional
        The metrics to show, in order (a spec's ``metrics:``); the first is the primary one.
        Metrics of another task are skipped; default (or when none applies): the task's own
        (accuracy, macro-F1, AUROC, ECE for classification; RMSE, MAE, R² for regression).
    include_time_limited : bool
        Also show the runs whose training the time limit cut short (they depend on the
        machine's load), marked in a ``time_limited`` column; left out by default.
    runs : pandas.DataFrame, optional
        The runs (:meth:`mlmm.bench.ResultsStore.runs`): when some failed, a ``failed``
        column counts the failed seeds of each row beside ``seeds``, the finished ones; their
        finish times tell which of two configurations of a run is the later one.

    A run that a later run of the same (dataset, method, training condition, seed) replaced
    (:func:`superseded_keys`: the spec changed between runs) is left out, so one cell never
    averages two configurations.

    Returns
    -------
    pandas.DataFrame
        One column per metric (accuracy-type metrics in percent), the worst forced subset (the
        mean over seeds of each seed's worst subset score, named by the subset most often
        worst: a seed's minimum is noisier than a subset's mean, so it reads lower) and
        the gap to the Bayes-optimal reference (where known; on accuracy, or on macro AUROC
        for a multi-label dataset, :func:`bayes_gap_metric`), parameters,
        training time and the number of seeds. Computed only from the tidy results table.
    """
    ids = ["dataset", "train_condition", "condition", "method"]
    # by the runs' finish times when given (the results know only their order)
    superseded = superseded_keys(results if runs is None else runs)
    if superseded:
        results = results[~results.run_key.isin(superseded)]
    if not include_time_limited:
        results = without_time_limited(results)
    results = one_reference_copy(results)
    failed = None  # failed seeds per (dataset, training condition, method)
    if runs is not None and (runs.status == "failed").any():
        failed_runs = runs[(runs.status == "failed") & ~runs.run_key.isin(superseded)]
        failed = failed_runs.groupby(["dataset", "train_condition", "method"]).size()
    overall = results[results.scope == "overall"]
    shown = {d: table_metrics(g, metrics) for d, g in results.groupby("dataset", sort=False)}
    available = {d: set(g.metric) for d, g in overall.groupby("dataset", sort=False)}
    rows = []
    for key, g in overall.groupby(ids, sort=False):
        dataset_metrics = shown[key[0]]
        primary = primary_metric(set(dataset_metrics), dataset_metrics)
        row = dict(zip(ids, key, strict=True))
        for metric in dataset_metrics:
            row[metric] = _mean_std(g[g.metric == metric]["value"], metric)
        runs = results[
            (results.dataset == key[0])
            & (results.train_condition == key[1])
            & (results.method == key[3])
        ]
        has_subsets = ((runs.scope == "subset") & (runs.metric == primary)).any()
        worst = worst_subset(runs, primary) if has_subsets else None
        # a seed undefined (NaN) on a subset has that subset as its worst, undefined
        row["worst_subset"] = (
            f"{_mean_std(worst['value'].astype(float), primary)} ({worst['subset'].mode().iloc[0]})"
            if worst is not None
            else "-"
        )
        gap_metric = bayes_gap_metric(available[key[0]], primary)
        if gap_metric is not None:
            acc = g[g.metric == gap_metric].set_index("seed")["value"]
            bayes = overall[
                (overall.dataset == key[0])
                & (overall.train_condition == key[1])
                & (overall.condition == key[2])
                & (overall.method == "bayes-optimal")
                & (overall.metric == gap_metric)
            ].set_index("seed")["value"]
            paired = bayes.index.intersection(acc.index)  # seeds with both; NaN ones counted
            gap = _mean_std(bayes[paired] - acc[paired], gap_metric)
            row["gap_to_bayes"] = (
                "-"
                if bayes.empty or key[3] == "bayes-optimal" or gap == "-"
                else gap
                if gap_metric == "accuracy"
                else f"{gap} ({gap_metric})"
            )
        row["n_parameters"] = int(g["n_parameters"].iloc[0])
        row["train_seconds"] = float(np.mean(g.groupby("seed")["train_seconds"].first()))
        row["seeds"] = int(g["seed"].nunique())
        if include_time_limited and "time_limited" in g.columns:
            # marked: how many of the seeds' runs the time limit cut short
            cut = g.groupby("seed")["time_limited"].first().fillna(0).astype(int)
            row["time_limited"] = int(cut.sum())
        if failed is not None:
            row["failed"] = int(failed.get((key[0], key[1], key[3]), 0))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # each dataset's rows together, each training condition's within them: the Bayes rows
    # (appended by one_reference_copy) came after every dataset's
    order = {c: {v: i for i, v in enumerate(pd.unique(table[c]))} for c in ids[:2]}
    table = table.sort_values(
        ids[:2], key=lambda column: column.map(order[column.name]), kind="stable"
    ).reset_index(drop=True)
    # the metric columns first; datasets of different tasks share one table, and a metric of
    # the other task has no value ("-")
    metric_columns = list(dict.fromkeys(m for ms in shown.values() for m in ms))
    others = [c for c in table.columns if c not in ids and c not in metric_columns]
    return table[[*ids, *metric_columns, *others]].fillna("-")
