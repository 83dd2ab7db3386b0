"""Summaries computed from the tidy evaluation table, never by hand.

Every function takes the table returned by :func:`mlmm.evaluate` (optionally with extra id
columns such as ``method``, ``dataset``, ``seed``) and groups by whichever id columns exist.
``metric=None`` picks the task's primary metric from the table: accuracy for classification,
RMSE for regression.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlmm.errors import MlmmError
from mlmm.eval.metrics import higher_is_better as _higher_is_better
from mlmm.eval.metrics import primary_metric

ID_COLUMNS = ("dataset", "method", "train_condition", "seed")


def _ids(table: pd.DataFrame) -> list[str]:
    return [c for c in ID_COLUMNS if c in table.columns]


def _resolve(table: pd.DataFrame, metric: str | None) -> str:
    return primary_metric(set(table["metric"])) if metric is None else metric


def _metric(table: pd.DataFrame, metric: str | None, scope: str) -> pd.DataFrame:
    metric = _resolve(table, metric)
    sub = table[(table["metric"] == metric) & (table["scope"] == scope)]
    if sub.empty:
        raise MlmmError(f"the table has no {scope!r} rows for metric {metric!r}")
    return sub


def mean_over_conditions(table: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """Unweighted mean of the overall metric over the test conditions (e.g. over missing
    rates; each condition counts once, whatever its number of samples). NaN when the metric
    is undefined (NaN) under any of them: a mean over fewer conditions than another group's
    would not compare."""
    sub = _metric(table, metric, "overall")
    ids = _ids(sub)
    if not ids:
        return pd.Series({"all": sub["value"].mean(skipna=False)})
    return sub.groupby(ids)["value"].apply(lambda v: v.mean(skipna=False))


def robustness_auc(table: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """Area under the metric-vs-realised-slot-missing-rate curve (trapezoid), divided by the
    rate span so it reads in metric units (MultiBench's relative robustness).

    A curve needs test conditions at two or more distinct missing rates per group; a group
    tested at one rate (a single test condition) gets NaN, which :func:`summarize` explains in
    its ``note`` column, and so does a group whose metric is undefined (NaN) under a
    condition."""
    sub = _metric(table, metric, "overall")
    ids = _ids(sub)

    def area(g: pd.DataFrame) -> float:
        g = g.groupby("slot_rate")["value"].agg(lambda v: v.mean(skipna=False)).sort_index()
        if len(g) < 2:
            return float("nan")
        x, y = g.index.to_numpy(float), g.to_numpy(float)
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))

    if not ids:
        return pd.Series({"all": area(sub)})
    return sub.groupby(ids)[["slot_rate", "value"]].apply(area)


def worst_subset(
    table: pd.DataFrame, metric: str | None = None, higher_is_better: bool | None = None
) -> pd.DataFrame:
    """The worst forced modality subset per group: its name and value (the lowest, or the
    highest for an error metric unless ``higher_is_better`` says otherwise).

    A subset whose value is NaN (undefined: a diverged model's NaN predictions, AUROC on one
    class) makes the group's worst undefined too: that subset is named, with value NaN. The
    minimum over the defined subsets only would rank a model that fails on one subset above
    one that scores it badly."""
    metric = _resolve(table, metric)
    sub = _metric(table, metric, "subset")
    ids = _ids(sub)
    higher = _higher_is_better(metric) if higher_is_better is None else higher_is_better

    def pick(g: pd.DataFrame) -> pd.Series:
        undefined = g["value"].isna()
        if undefined.any():  # not skipped: the worst over fewer subsets would not compare
            return pd.Series({"subset": g.loc[undefined, "subset"].iloc[0], "value": float("nan")})
        return g.loc[g["value"].idxmin() if higher else g["value"].idxmax(), ["subset", "value"]]

    if not ids:
        return pick(sub)[["subset", "value"]].to_frame().T
    return sub.groupby(ids)[["subset", "value"]].apply(pick)


def full_modality_score(table: pd.DataFrame, metric: str | None = None) -> pd.Series:
    """The metric with every modality present: the largest forced subset of each group (of
    each dataset, when the table holds datasets with different numbers of modalities)."""
    sub = _metric(table, metric, "subset")
    n_mod = sub["subset"].str.count(r"\+") + 1
    ids = _ids(sub)
    largest = (
        n_mod.groupby([sub[c] for c in ids], dropna=False).transform("max") if ids else n_mod.max()
    )
    full = sub[n_mod == largest]
    return full.groupby(ids)["value"].mean() if ids else pd.Series({"all": full["value"].mean()})


def ratio_to_full(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Each overall condition's metric divided by the full-modality score of its group."""
    metric = _resolve(table, metric)
    sub = _metric(table, metric, "overall").copy()
    full = full_modality_score(table, metric)
    ids = _ids(sub)
    if ids:
        sub = sub.join(full.rename("full"), on=ids)
    else:
        sub["full"] = full.iloc[0]
    sub["ratio"] = sub["value"] / sub["full"]
    return sub[[*ids, "condition", "slot_rate", "value", "full", "ratio"]]


def summarize(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """One row per group: full-modality score, mean over conditions, robustness AUC, worst
    subset (name and value), the mean ratio of condition scores to the full score, and a note.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`mlmm.evaluate`'s table, optionally with id columns (``method``, ``seed``...).
    metric : str, optional
        Default: accuracy for classification, RMSE for regression.

    Returns
    -------
    pandas.DataFrame
        Columns ``metric, full, mean_over_conditions, robustness_auc, ratio_to_full,
        worst_subset, worst_subset_value, note``. A field that the table cannot give is NaN
        (``worst_subset`` None) and ``note`` says why: ``robustness_auc`` needs test conditions
        at two or more missing rates (one test condition gives no curve), and ``full``,
        ``ratio_to_full`` and the worst subset need the forced-subset rows
        (``evaluate(..., subsets=True)``); a metric undefined (NaN) under a test condition
        makes ``mean_over_conditions`` NaN, and the note names how many conditions; one
        undefined on a forced subset makes ``worst_subset_value`` NaN, naming it. ``note``
        is empty when every field is there.
    """
    metric = _resolve(table, metric)
    out = pd.DataFrame({"mean_over_conditions": mean_over_conditions(table, metric)})
    out["robustness_auc"] = robustness_auc(table, metric)
    overall = _metric(table, metric, "overall")
    ids = _ids(overall)
    rates = (
        overall.groupby(ids)["slot_rate"].nunique()
        if ids
        else pd.Series({"all": overall["slot_rate"].nunique()})
    )
    notes = {key: [] for key in out.index}
    undefined = (
        overall.groupby(ids)["value"].apply(lambda v: int(v.isna().sum()))
        if ids
        else pd.Series({"all": int(overall["value"].isna().sum())})
    )
    for key in out.index:
        if undefined.get(key, 0):
            notes[key].append(
                f"{metric} is undefined (NaN) under {undefined[key]} test condition(s), so the "
                "mean over conditions and the robustness AUC are too"
            )
        if rates.get(key, 0) < 2:
            notes[key].append(
                "robustness_auc needs test conditions at two or more missing rates "
                f"(this group has {rates.get(key, 0)})"
            )
    has_subsets = ((table["metric"] == metric) & (table["scope"] == "subset")).any()
    if has_subsets:
        out["full"] = full_modality_score(table, metric)
        ratio = ratio_to_full(table, metric)
        out["ratio_to_full"] = (
            ratio.groupby(ids)["ratio"].apply(lambda v: v.mean(skipna=False))
            if ids
            else pd.Series({"all": ratio.ratio.mean(skipna=False)})
        )
        worst = worst_subset(table, metric)
        if not ids:
            worst.index = ["all"]
        out["worst_subset"] = worst["subset"].reindex(out.index)
        out["worst_subset_value"] = worst["value"].reindex(out.index).astype(float)
        for key in out.index:
            if pd.notna(out.loc[key, "worst_subset"]) and pd.isna(
                out.loc[key, "worst_subset_value"]
            ):
                notes[key].append(
                    f"{metric} is undefined (NaN) on subset {out.loc[key, 'worst_subset']}, so "
                    "the worst subset is too"
                )
    else:
        out["full"] = out["ratio_to_full"] = out["worst_subset_value"] = np.nan
        out["worst_subset"] = None
        for key in out.index:
            notes[key].append(
                "full, ratio_to_full and worst_subset need forced-subset rows "
                "(evaluate with subsets=True)"
            )
    out["note"] = ["; ".join(notes[key]) for key in out.index]
    out.insert(0, "metric", metric)
    columns = ["metric", "full", "mean_over_conditions", "robustness_auc", "ratio_to_full"]
    return out[[*columns, "worst_subset", "worst_subset_value", "note"]]
