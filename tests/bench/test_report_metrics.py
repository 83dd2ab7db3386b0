"""The numbers of the report's leaderboard: intervals against SciPy, ranks with ties, and a
seed whose metric is undefined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from mlmm.bench.report import _bayes_gap, _interval, _ranking


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 500), st.data())
def test_one_seed_accuracy_interval_is_wilsons(n, data):
    k = data.draw(st.integers(0, n))
    low, high = _interval(pd.Series([k / n]), "accuracy", float(n))
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (low, high) == pytest.approx((expected.low, expected.high), abs=1e-7)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.1, 5.0), min_size=2, max_size=8))
def test_seed_interval_is_students_t(values):
    low, high = _interval(pd.Series(values), "rmse", 100.0)
    mean, sem = np.mean(values), stats.sem(values)
    if sem == 0:
        assert low == pytest.approx(mean) and high == pytest.approx(mean)
        return
    expected = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    assert low == pytest.approx(max(expected[0], 0.0)) and high == pytest.approx(expected[1])


def test_one_seed_has_no_interval_for_other_metrics_and_nan_seeds_are_left_out():
    assert _interval(pd.Series([0.5]), "rmse", 100.0) is None
    assert _interval(pd.Series([0.5]), "accuracy", 0.0) is None
    # two seeds, one undefined: the one defined seed gets its Wilson interval
    assert _interval(pd.Series([0.8, np.nan]), "accuracy", 100.0) == pytest.approx(
        _interval(pd.Series([0.8]), "accuracy", 100.0)
    )


def leaderboard(values: dict[str, list[float]], metric: str = "accuracy") -> str:
    rows = [
        dict(method=method, seed=seed, value=value, n=100, slot_rate=0.0, train_condition="none",
             condition="none", setting="train none → test none")
        for method, seeds in values.items()
        for seed, value in enumerate(seeds)
    ]  # fmt: skip
    failed = pd.DataFrame(columns=["method", "train_condition", "dataset"])
    return _ranking(pd.DataFrame(rows), metric, "toy", {}, failed)


def test_tied_means_share_the_best_rank():
    html = leaderboard({"a": [0.8, 0.6], "b": [0.7, 0.7], "c": [0.5, 0.6]})
    assert html.count("#1</span>") == 2 and "#3</span>" in html and "#2</span>" not in html


def test_a_seed_with_an_undefined_score_is_said_and_all_undefined_is_not_a_dash():
    html = leaderboard({"a": [0.8, np.nan, 0.6], "b": [np.nan, np.nan, np.nan], "c": [0.5] * 3})
    assert "70.0" in html and "(2 of 3 seeds; 1 undefined)" in html
    assert "undefined on 3 seed(s)" in html


def test_the_gap_to_bayes_counts_a_seed_whose_score_is_undefined():
    rows = [
        dict(dataset="synthetic", train_condition="none", condition="none", seed=seed,
             method=method, metric="accuracy", value=value, scope="overall", subset="all")
        for seed, (bayes, method_value) in enumerate([(0.9, 0.8), (0.9, float("nan")), (0.9, 0.6)])
        for method, value in (("bayes-optimal", bayes), ("m", method_value))
    ]  # fmt: skip
    html = _bayes_gap(pd.DataFrame(rows), {})
    # the method's mean over its two defined seeds says so; the gap is paired on them
    assert "70.0 ± 14.1 (2 of 3)" in html and "20.0 ± 14.1 (2 of 3)" in html
    undefined = pd.DataFrame(rows).assign(value=lambda x: x.value.where(x.method != "m"))
    # a method undefined on every seed: said, not the "–" of nothing measured
    assert "undefined (0 of 3)" in _bayes_gap(undefined, {})


def test_means_equal_but_for_float_noise_are_tied():
    # mean(0.1, 0.2, 0.3) is 0.20000000000000004 in floats: it ranked #1 above mean(0.2, ...)
    html = leaderboard({"a": [0.2, 0.2, 0.2], "b": [0.1, 0.2, 0.3]})
    assert html.count("#1</span>") == 2


@pytest.mark.parametrize("metric", ["rmse", "ece"])
def test_small_but_real_differences_are_not_tied(metric):
    # the rounding that merges float noise (12 decimals) keeps small-scale metrics apart
    html = leaderboard({"a": [0.0012, 0.0012], "b": [0.0014, 0.0014], "c": [1e-9, 1.1e-9]}, metric)
    assert html.count("#1</span>") == html.count("#2</span>") == html.count("#3</span>") == 1


def leaderboard_in_columns(values: dict[str, dict[str, float]]) -> str:
    """A leaderboard with one column per test condition: ``{method: {condition: value}}``
    (one seed; a condition a method lacks is a column without its score)."""
    rates = {"none": 0.0, "mcar:0.3": 0.3, "mcar:0.6": 0.6}
    rows = [
        dict(method=method, seed=0, value=value, n=100, slot_rate=rates[condition],
             train_condition="none", condition=condition, setting=f"train none → test {condition}")
        for method, scores in values.items()
        for condition, value in scores.items()
    ]  # fmt: skip
    failed = pd.DataFrame(columns=["method", "train_condition", "dataset"])
    return _ranking(pd.DataFrame(rows), "accuracy", "toy", {}, failed)


def methods_in_order(html: str, names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: html.index(f"<td>{name}</td>"))


def test_the_mean_rank_is_over_the_columns_every_method_has():
    # p has no score under mcar:0.6, where it would have to face t's win; its mean rank over
    # its own columns (1.5) put it above s (5/3), which beats or ties it where both scored
    html = leaderboard_in_columns(
        {
            "p": {"none": 0.8, "mcar:0.3": 0.9},
            "s": {"none": 0.9, "mcar:0.3": 0.8, "mcar:0.6": 0.8},
            "t": {"none": 0.7, "mcar:0.3": 0.7, "mcar:0.6": 0.9},
        }
    )
    # over none and mcar:0.3: s 1.5, p 1.5 (s first: it has every column), t 3.0
    assert methods_in_order(html, ["p", "s", "t"]) == ["s", "p", "t"]
    assert "1.5 (scored in 2 of 3 columns)" in html
    assert "mean rank over the 2 of 3 columns" in html
    assert "<td>3.0</td>" in html or ">3.0<" in html


def test_a_method_without_any_score_does_not_shrink_the_ranked_columns():
    html = leaderboard_in_columns(
        {
            "a": {"none": 0.9, "mcar:0.3": 0.7},
            "b": {"none": 0.8, "mcar:0.3": 0.8},
            "c": {"none": np.nan, "mcar:0.3": np.nan},  # undefined on every column
        }
    )
    assert "mean rank over" not in html  # both columns ranked for a and b
    assert methods_in_order(html, ["a", "b", "c"]) == ["a", "b", "c"]
    assert html.count("1.5") == 2  # a: #1, #2; b: #2, #1


def test_no_column_every_method_has_leaves_no_mean_rank_and_says_so():
    html = leaderboard_in_columns({"a": {"none": 0.9}, "b": {"mcar:0.3": 0.8, "mcar:0.6": 0.7}})
    assert "no column has a score for every method" in html
    # sorted by how many columns each has a score in
    assert methods_in_order(html, ["a", "b"]) == ["b", "a"]
    assert "– (scored in 1 of 3 columns)" in html and "– (scored in 2 of 3 columns)" in html


def test_the_new_metrics_have_their_names_directions_and_ranges():
    assert _interval(pd.Series([1.9, 2.0, 1.95]), "brier", None)[1] <= 2.0  # [0, 2]
    assert _interval(pd.Series([0.9, 1.0, 0.95]), "ccc", None)[1] <= 1.0  # [-1, 1]
    assert _interval(pd.Series([-0.9, -1.0, -0.95]), "ccc", None)[0] >= -1.0
    low, high = _interval(pd.Series([0.9, 1.0, 0.95]), "balanced_accuracy", None)
    assert high <= 1.0
    html = leaderboard({"a": [0.3, 0.4], "b": [0.5, 0.6]}, "log_loss")
    assert "log loss, lower is better" in html
    assert html.index("<td>a</td>") < html.index("<td>b</td>")  # the lower loss ranks first
    html = leaderboard({"a": [0.6, 0.7], "b": [0.8, 0.9]}, "balanced_accuracy")
    assert "balanced accuracy (%), higher is better" in html and "85.0" in html
