"""Summaries computed from the tidy evaluation table, never by hand.

Every function takes the table returned by :func:`mlmm.evaluate` (optionally with extra id
columns such as ``method``, ``dataset``, ``seed``) and groups by whichever id columns exist.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlmm.errors import MlmmError

ID_COLUMNS = ("dataset", "method", "train_condition", "seed")


def _ids(table: pd.DataFrame) -> list[str]:
    return [c for c in ID_COLUMNS if c in table.columns]


def _metric(table: pd.DataFrame, metric: str, scope: str) -> pd.DataFrame:
    sub = table[(table["metric"] == metric) & (table["scope"] == scope)]
    if sub.empty:
        raise MlmmError(f"the table has no {scope!r} rows for metric {metric!r}")
    return sub


def mean_over_conditions(table: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """Mean of the overall metric over the test conditions (e.g. over missing rates)."""
    sub = _metric(table, metric, "overall")
    ids = _ids(sub)
    return sub.groupby(ids)["value"].mean() if ids else pd.Series({"all": sub["value"].mean()})


def robustness_auc(table: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """Area under the metric-vs-realised-slot-missing-rate curve (trapezoid), divided by the
    rate span so it reads in metric units (MultiBench's relative robustness). Needs at least
    two distinct rates per group."""
    sub = _metric(table, metric, "overall")
    ids = _ids(sub)

    def area(g: pd.DataFrame) -> float:
        g = g.groupby("slot_rate")["value"].mean().sort_index()
        if len(g) < 2:
            return float("nan")
        x, y = g.index.to_numpy(float), g.to_numpy(float)
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))

    if not ids:
        return pd.Series({"all": area(sub)})
    return sub.groupby(ids)[["slot_rate", "value"]].apply(area)


def worst_subset(
    table: pd.DataFrame, metric: str = "accuracy", higher_is_better: bool = True
) -> pd.DataFrame:
    """The worst forced modality subset per group: its name and value."""
    sub = _metric(table, metric, "subset")
    ids = _ids(sub)
    pick = (
        (lambda g: g.loc[g["value"].idxmin()])
        if higher_is_better
        else (lambda g: g.loc[g["value"].idxmax()])
    )
    if not ids:
        return pick(sub)[["subset", "value"]].to_frame().T
    return sub.groupby(ids)[["subset", "value"]].apply(pick)


def full_modality_score(table: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """The metric with every modality present (the largest forced subset)."""
    sub = _metric(table, metric, "subset")
    n_mod = sub["subset"].str.count(r"\+") + 1
    full = sub[n_mod == n_mod.max()]
    ids = _ids(full)
    return full.groupby(ids)["value"].mean() if ids else pd.Series({"all": full["value"].mean()})


def ratio_to_full(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Each overall condition's metric divided by the full-modality score of its group."""
    sub = _metric(table, metric, "overall").copy()
    full = full_modality_score(table, metric)
    ids = _ids(sub)
    if ids:
        sub = sub.join(full.rename("full"), on=ids)
    else:
        sub["full"] = full.iloc[0]
    sub["ratio"] = sub["value"] / sub["full"]
    return sub[[*ids, "condition", "slot_rate", "value", "full", "ratio"]]


def summarize(table: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """One row per group: full-modality score, mean over conditions, robustness AUC, worst
    subset (name and value) and the mean ratio of condition scores to the full score."""
    higher = metric not in ("ece", "mae", "rmse")
    parts = {
        "full": full_modality_score(table, metric),
        "mean_over_conditions": mean_over_conditions(table, metric),
        "robustness_auc": robustness_auc(table, metric),
        "ratio_to_full": ratio_to_full(table, metric)
        .groupby(_ids(table) or (lambda _: "all"))["ratio"]
        .mean(),
    }
    out = pd.DataFrame(parts)
    worst = worst_subset(table, metric, higher)
    out["worst_subset"] = worst["subset"].to_numpy() if len(worst) == len(out) else None
    out["worst_subset_value"] = (
        worst["value"].to_numpy().astype(float) if len(worst) == len(out) else np.nan
    )
    out.insert(0, "metric", metric)
    return out
