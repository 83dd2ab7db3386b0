"""Summaries of the tidy table, on a small table written by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mlmm.errors import MlmmError
from mlmm.eval.summaries import (
    full_modality_score,
    mean_over_conditions,
    ratio_to_full,
    robustness_auc,
    summarize,
    worst_subset,
)

# (slot rate, accuracy, ece) per overall condition, and (accuracy, ece) per forced subset.
OVERALL = {
    "m1": {"none": (0.0, 0.9, 0.02), "mcar:0.2": (0.2, 0.8, 0.05), "mcar:0.6": (0.6, 0.5, 0.09)},
    "m2": {"none": (0.0, 0.8, 0.04), "mcar:0.2": (0.2, 0.8, 0.04), "mcar:0.6": (0.6, 0.8, 0.01)},
}
SUBSETS = {
    "m1": {"a": (0.7, 0.1), "b": (0.6, 0.3), "a+b": (0.9, 0.05)},
    "m2": {"a": (0.5, 0.2), "b": (0.75, 0.1), "a+b": (0.8, 0.15)},
}


def table(methods=("m1", "m2"), with_method_column: bool = True) -> pd.DataFrame:
    rows = []
    for method in methods:
        for cond, (slot, acc, ece) in OVERALL[method].items():
            for metric, value in (("accuracy", acc), ("ece", ece)):
                rows.append(("overall", cond, slot, "all", metric, value, method))
                rows.append(("pattern", cond, slot, "a", metric, 0.0, method))  # ignored
        for subset, (acc, ece) in SUBSETS[method].items():
            slot = 0.0 if subset == "a+b" else 0.5
            for metric, value in (("accuracy", acc), ("ece", ece)):
                rows.append(("subset", f"subset:{subset}", slot, subset, metric, value, method))
    out = pd.DataFrame(
        rows, columns=["scope", "condition", "slot_rate", "subset", "metric", "value", "method"]
    )
    return out if with_method_column else out.drop(columns="method")


def test_mean_over_conditions():
    out = mean_over_conditions(table())
    assert out["m1"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)
    assert out["m2"] == pytest.approx(0.8)
    assert mean_over_conditions(table(), "ece")["m2"] == pytest.approx(0.03)


def test_robustness_auc_is_the_trapezoid_over_unequal_rate_steps():
    out = robustness_auc(table())
    # m1: (0.2 * (0.9 + 0.8) / 2 + 0.4 * (0.8 + 0.5) / 2) / 0.6, not the plain mean 0.733
    assert out["m1"] == pytest.approx((0.17 + 0.26) / 0.6)
    assert out["m2"] == pytest.approx(0.8)


def test_robustness_auc_averages_repeated_rates_and_needs_two_rates():
    t = table(("m1",), with_method_column=False)
    extra = t[(t.scope == "overall") & (t.condition == "none")].assign(value=[0.7, 0.0])
    t = pd.concat([t, extra.assign(condition="fixed:")])  # a second condition at rate 0: 0.8
    assert robustness_auc(t)["all"] == pytest.approx((0.2 * 1.6 / 2 + 0.4 * 1.3 / 2) / 0.6)
    one_rate = t[(t.scope != "overall") | (t.slot_rate == 0.0)]
    assert math.isnan(robustness_auc(one_rate)["all"])


def test_worst_subset():
    out = worst_subset(table())
    assert out.loc["m1"].tolist() == ["b", 0.6]
    assert out.loc["m2"].tolist() == ["a", 0.5]
    lower_is_better = worst_subset(table(), "ece", higher_is_better=False)
    assert lower_is_better.loc["m1"].tolist() == ["b", 0.3]
    assert lower_is_better.loc["m2"].tolist() == ["a", 0.2]


def test_full_modality_score_is_the_largest_subset():
    out = full_modality_score(table())
    assert out["m1"] == pytest.approx(0.9) and out["m2"] == pytest.approx(0.8)


def test_ratio_to_full():
    out = ratio_to_full(table())
    assert list(out.columns) == ["method", "condition", "slot_rate", "value", "full", "ratio"]
    m1 = out[out.method == "m1"].set_index("condition")
    assert m1.ratio.to_dict() == pytest.approx({"none": 1.0, "mcar:0.2": 8 / 9, "mcar:0.6": 5 / 9})
    assert out[out.method == "m2"].ratio.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_summarize_one_row_per_group():
    out = summarize(table())
    assert list(out.index) == ["m1", "m2"]
    assert list(out.columns) == [
        "metric", "full", "mean_over_conditions", "robustness_auc", "ratio_to_full",
        "worst_subset", "worst_subset_value", "note",
    ]  # fmt: skip
    m1 = out.loc["m1"]
    assert m1.metric == "accuracy"
    assert m1.full == pytest.approx(0.9)
    assert m1.mean_over_conditions == pytest.approx(2.2 / 3)
    assert m1.robustness_auc == pytest.approx(0.43 / 0.6)
    assert m1.ratio_to_full == pytest.approx((1 + 8 / 9 + 5 / 9) / 3)
    assert (m1.worst_subset, m1.worst_subset_value) == ("b", pytest.approx(0.6))
    assert (out.loc["m2"].worst_subset, out.loc["m2"].worst_subset_value) == ("a", 0.5)
    assert (out.note == "").all()


def test_summarize_lower_is_better_metric_picks_the_highest_as_worst():
    out = summarize(table(), "ece")
    assert out.loc["m1"].worst_subset == "b" and out.loc["m2"].worst_subset == "a"


def test_summarize_without_id_columns():
    out = summarize(table(("m1",), with_method_column=False))
    assert list(out.index) == ["all"]
    row = out.loc["all"]
    assert row.full == pytest.approx(0.9)
    assert row.mean_over_conditions == pytest.approx(2.2 / 3)
    assert row.ratio_to_full == pytest.approx((1 + 8 / 9 + 5 / 9) / 3)
    assert row.worst_subset == "b"


def test_missing_metric_or_scope_is_an_error():
    with pytest.raises(MlmmError, match="no 'overall' rows for metric 'f1'"):
        mean_over_conditions(table(), "f1")
    t = table()
    with pytest.raises(MlmmError, match="no 'subset' rows for metric 'accuracy'"):
        worst_subset(t[t.scope != "subset"])


def test_summarize_without_subset_rows_gives_nan_and_says_why():
    t = table()
    out = summarize(t[t.scope != "subset"])
    assert list(out.index) == ["m1", "m2"]
    assert out.mean_over_conditions.tolist() == pytest.approx([2.2 / 3, 0.8])
    assert out.robustness_auc["m1"] == pytest.approx(0.43 / 0.6)
    assert out.full.isna().all() and out.ratio_to_full.isna().all()
    assert out.worst_subset.isna().all() and out.worst_subset_value.isna().all()
    assert out.note.str.contains("subsets=True").all()


def test_summarize_on_one_test_condition_says_why_auc_is_nan():
    t = table()
    out = summarize(t[(t.scope != "overall") | (t.condition == "mcar:0.2")])
    assert out.robustness_auc.isna().all()
    assert out.note.str.contains("two or more missing rates").all()
    assert out.loc["m1"].full == pytest.approx(0.9)  # the rest is still there


def test_summarize_picks_the_task_metric():
    regression = table().replace({"metric": {"accuracy": "rmse", "ece": "mae"}})
    out = summarize(regression)
    assert (out.metric == "rmse").all()
    # an error metric: the worst subset is the highest (m1: a+b at 0.9, m2: a+b at 0.8)
    assert out.worst_subset.tolist() == ["a+b", "a+b"]
    assert out.mean_over_conditions["m1"] == pytest.approx(2.2 / 3)


def test_summarize_a_real_regression_evaluation_without_subsets():
    import numpy as np

    import mlmm

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(120, 3)), rng.normal(size=(120, 2))
    y = a[:, 0] + b[:, 1] + 0.1 * rng.normal(size=120)
    data = mlmm.from_arrays({"a": a, "b": b}, y, task="regression")
    res = mlmm.run_experiment(
        data, "zero-impute", missing="mcar:0.3", trainer={"max_epochs": 2, "progress": False},
        subsets=False,
    )  # fmt: skip
    assert set(res.table.metric) == {"rmse", "mae", "r2", "ccc"}
    out = summarize(res.table)
    assert (out.metric == "rmse").all() and np.isfinite(out.mean_over_conditions).all()
    assert out.full.isna().all() and "subsets=True" in out.note.iloc[0]


def two_datasets() -> pd.DataFrame:
    """Forced subsets of a dataset with modalities a, b and one with a, b, c."""
    rows = []
    for dataset, subsets in (("two", ["a", "b", "a+b"]), ("three", ["a", "b", "c", "a+b+c"])):
        for subset in subsets:
            value = 0.5 + 0.1 * subset.count("+")
            rows.append((dataset, "subset", f"subset:{subset}", 0.0, subset, "accuracy", value))
        rows.append((dataset, "overall", "none", 0.0, "all", "accuracy", 0.7))
    columns = ["dataset", "scope", "condition", "slot_rate", "subset", "metric", "value"]
    return pd.DataFrame(rows, columns=columns)


def test_full_modality_score_is_the_largest_subset_of_each_dataset():
    # the largest subset over the whole table (a+b+c) left the two-modality dataset no score
    out = full_modality_score(two_datasets())
    assert out.to_dict() == pytest.approx({"two": 0.6, "three": 0.7})
    summary = summarize(two_datasets())
    assert summary.loc["two", "ratio_to_full"] == pytest.approx(0.7 / 0.6)


def test_an_undefined_subset_makes_the_worst_subset_undefined():
    rows = [("m1", "a", math.nan), ("m1", "b", 0.7), ("m1", "a+b", 0.8)]
    rows += [("m2", subset, math.nan) for subset in ("a", "b", "a+b")]  # AUROC on one class
    frame = pd.DataFrame(rows, columns=["method", "subset", "value"]).assign(
        scope="subset", condition=lambda x: "subset:" + x.subset, slot_rate=0.0, metric="auroc"
    )
    out = worst_subset(frame, "auroc")  # was "ValueError: Encountered all NA values"
    # m1 fails on subset a: its worst is not b's 0.7 (which would rank it above a model
    # scoring 0.6 on a), it is a, undefined
    assert out.loc["m1", "subset"] == "a" and math.isnan(out.loc["m1", "value"])
    assert out.loc["m2", "subset"] == "a" and math.isnan(out.loc["m2", "value"])
    overall = frame.iloc[[0, 3]].assign(scope="overall", condition="none", subset="all", value=0.5)
    summary = summarize(pd.concat([frame, overall]), "auroc")
    assert "undefined (NaN) on subset a" in summary.loc["m1", "note"]


def test_a_condition_with_an_undefined_metric_makes_the_mean_over_conditions_nan():
    frame = table()
    frame.loc[(frame.method == "m1") & (frame.condition == "mcar:0.6"), "value"] = math.nan
    means = mean_over_conditions(frame)
    # the mean over the two defined conditions (0.85) was reported as if over all three
    assert math.isnan(means["m1"]) and means["m2"] == pytest.approx(0.8)
    summary = summarize(frame)
    assert "undefined (NaN) under 1 test condition(s)" in summary.loc["m1", "note"]
    assert math.isnan(summary.loc["m1", "ratio_to_full"])
    assert math.isnan(summary.loc["m1", "robustness_auc"])
    repeated = frame[frame.method == "m1"].copy()  # a NaN beside a defined value at one rate
    repeated.loc[repeated.condition == "mcar:0.6", "slot_rate"] = 0.2
    assert math.isnan(robustness_auc(repeated).iloc[0])
    assert "undefined" not in summary.loc["m2", "note"]
