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
