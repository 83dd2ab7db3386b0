"""Metrics on random inputs against scikit-learn (hypothesis), and on the edge cases a user's
data hits: no sample, one class, ties, NaN predictions, a constant target, a column of
predictions."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from mlmm.errors import MlmmError
from mlmm.eval.metrics import (
    CLASSIFICATION_EXTRA_METRICS,
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    REGRESSION_EXTRA_METRICS,
    REGRESSION_METRICS,
    accuracy,
    classification_metrics,
    concordance_correlation,
    expected_calibration_error,
    multilabel_metrics,
    regression_metrics,
)

FAST = settings(max_examples=60, deadline=None)


@st.composite
def classification_case(draw):
    """Probabilities on a coarse grid (ties are common) and labels drawn from some classes."""
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 4, size=(n, k)) + np.eye(k, dtype=int)[rng.integers(0, k, n)]
    proba = counts / counts.sum(1, keepdims=True)  # [N, K], rows sum to 1, many ties
    present = rng.choice(k, size=draw(st.integers(1, k)), replace=False)
    target = rng.choice(present, n)
    return proba, target


@FAST
@given(classification_case())
def test_classification_metrics_match_sklearn(case):
    proba, target = case
    out = classification_metrics(proba, target)
    pred = proba.argmax(1)
    classes = np.unique(target)
    assert out["accuracy"] == pytest.approx(accuracy_score(target, pred))
    # macro over the classes present in the target (a class only predicted is a false
    # positive of that class, and a false negative of the true one, but not averaged in)
    expected_f1 = f1_score(target, pred, labels=classes, average="macro", zero_division=0.0)
    assert out["macro_f1"] == pytest.approx(expected_f1)
    if len(classes) < 2:
        assert math.isnan(out["auroc"])  # undefined, never 0.5
    else:
        sub = proba[:, classes]
        if len(classes) < proba.shape[1]:  # renormalised over the present classes
            sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-300, None)
        # a row with no probability on any present class has no renormalised scores that
        # scikit-learn accepts (they sum to 0)
        assume(len(classes) == 2 or bool(np.isclose(sub.sum(1), 1.0).all()))
        if len(classes) == 2:
            expected = roc_auc_score(target == classes[1], sub[:, 1])
        else:
            expected = roc_auc_score(target, sub, multi_class="ovr", labels=classes)
        assert out["auroc"] == pytest.approx(expected)
    assert 0.0 <= out["ece"] <= 1.0


@FAST
@given(classification_case())
def test_ece_with_one_bin_is_the_gap_between_accuracy_and_mean_confidence(case):
    proba, target = case
    correct = proba.argmax(1) == target
    expected = abs(correct.mean() - proba.max(1).mean())
    assert expected_calibration_error(proba, target, n_bins=1) == pytest.approx(expected)


@FAST
@given(st.integers(2, 30), st.integers(0, 2**31 - 1), st.booleans())
def test_regression_metrics_match_sklearn(n, seed, as_column):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=n).round(1)  # ties and, sometimes, a constant target
    pred = target + rng.normal(size=n)
    out = regression_metrics(pred[:, None] if as_column else pred, target)
    assert out["rmse"] == pytest.approx(math.sqrt(mean_squared_error(target, pred)))
    assert out["mae"] == pytest.approx(mean_absolute_error(target, pred))
    if np.ptp(target) > 0:
        assert out["r2"] == pytest.approx(r2_score(target, pred))
    else:
        assert math.isnan(out["r2"])  # undefined; scikit-learn would say 0.0


def test_a_column_of_regression_predictions_is_scored_per_sample():
    # [N, 1] against [N] used to broadcast into an [N, N] error matrix: RMSE 1.528, not 0.577
    out = regression_metrics(np.array([[1.0], [2.0], [3.0]]), np.array([1.0, 2.0, 4.0]))
    assert out["rmse"] == pytest.approx(math.sqrt(1 / 3))
    assert out["mae"] == pytest.approx(1 / 3)


def test_regression_predictions_of_another_shape_are_refused():
    with pytest.raises(MlmmError, match="shape"):
        regression_metrics(np.zeros((3, 2)), np.zeros(3))


def test_regression_constant_target_and_one_sample_give_nan_r2():
    assert math.isnan(regression_metrics(np.array([1.0, 2.0]), np.array([3.0, 3.0]))["r2"])
    out = regression_metrics(np.array([1.5]), np.array([1.0]))
    assert out["rmse"] == pytest.approx(0.5) and math.isnan(out["r2"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_regression_prediction_leaves_every_metric_undefined(bad):
    # an infinite prediction gave RMSE inf and R² -inf, not the NaN docs/tasks.md promises
    out = regression_metrics(np.array([1.0, bad, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert all(math.isnan(v) for v in out.values())


@pytest.mark.parametrize(
    "proba",
    [
        np.full((4, 3), np.nan),
        np.array([[0.2, 0.8, 0.0], [np.nan] * 3, [0.9, 0.1, 0.0]] + [[0.3, 0.7, 0.0]]),
    ],
    ids=["all-nan", "one-nan-row"],
)
def test_nan_probabilities_leave_every_classification_metric_undefined(proba):
    # argmax over NaN picks class 0: a diverged model scored 50% accuracy here before
    out = classification_metrics(proba, np.array([0, 0, 1, 2]))
    assert list(out) == [*CLASSIFICATION_METRICS, *CLASSIFICATION_EXTRA_METRICS]
    assert all(math.isnan(v) for v in out.values())
    assert math.isnan(accuracy(proba, np.array([0, 0, 1, 2])))


def test_no_sample_leaves_every_metric_undefined():
    out = classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert all(math.isnan(v) for v in out.values())  # ECE was 0.0: perfectly calibrated
    assert math.isnan(expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int)))
    assert all(math.isnan(v) for v in regression_metrics(np.zeros(0), np.zeros(0)).values())
    out = multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"])  # was a ValueError
    assert list(out) == [*MULTILABEL_METRICS, "auroc[a]", "auroc[b]"]
    assert all(math.isnan(v) for v in out.values())


def test_nan_label_probabilities_leave_every_multilabel_metric_undefined():
    proba = np.array([[0.2, np.nan], [0.7, 0.1], [0.4, 0.6]])  # was a ValueError
    out = multilabel_metrics(proba, np.array([[0, 1], [1, 0], [1, 1]]))
    assert all(math.isnan(v) for v in out.values())


def test_one_sample_and_one_class():
    out = classification_metrics(np.array([[0.3, 0.7]]), np.array([1]))
    assert out["accuracy"] == 1.0 and out["macro_f1"] == 1.0
    assert math.isnan(out["auroc"])
    assert out["ece"] == pytest.approx(0.3)
    assert out["balanced_accuracy"] == 1.0  # the one present class, recalled
    assert out["log_loss"] == pytest.approx(-math.log(0.7))
    assert out["brier"] == pytest.approx(0.3**2 + 0.3**2)


def test_regression_keys():
    assert list(regression_metrics(np.zeros(2), np.ones(2))) == [
        *REGRESSION_METRICS,
        *REGRESSION_EXTRA_METRICS,
    ]


def test_targets_outside_the_probability_columns_are_refused_in_one_line():
    with pytest.raises(MlmmError, match="class indices 0..1"):  # was a numpy reshape error
        classification_metrics(np.array([[0.4, 0.6], [0.5, 0.5]]), np.array([0, 2]))
    with pytest.raises(MlmmError, match=r"\[N, K\]"):
        classification_metrics(np.array([0.4, 0.6]), np.array([0, 1]))


@FAST
@given(st.integers(1, 25), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_multilabel_metrics_match_sklearn(n, n_labels, seed):
    rng = np.random.default_rng(seed)
    target = (rng.random((n, n_labels)) < rng.random(n_labels)).astype(int)  # some labels constant
    proba = rng.integers(0, 5, size=(n, n_labels)) / 4  # ties, and exactly 0.5
    out = multilabel_metrics(proba, target)
    pred = (proba >= 0.5).astype(int)
    for average in ("micro", "macro", "samples"):
        expected = f1_score(target, pred, average=average, zero_division=0.0)
        assert out[f"{average}_f1"] == pytest.approx(expected)
    aurocs = []
    for j in range(n_labels):
        if 0 < target[:, j].sum() < n:
            aurocs.append(roc_auc_score(target[:, j], proba[:, j]))
            assert out[f"auroc[{j}]"] == pytest.approx(aurocs[-1])
        else:
            assert math.isnan(out[f"auroc[{j}]"])  # undefined, never 0.5
    if aurocs:
        assert out["macro_auroc"] == pytest.approx(np.mean(aurocs))
    else:
        assert math.isnan(out["macro_auroc"])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.filterwarnings("ignore:A single label was found")
@FAST
@given(classification_case())
def test_balanced_accuracy_log_loss_and_brier_match_sklearn(case):
    proba, target = case
    out = classification_metrics(proba, target)
    labels = np.arange(proba.shape[1])
    expected = balanced_accuracy_score(target, proba.argmax(1))
    assert out["balanced_accuracy"] == pytest.approx(expected)
    assert out["log_loss"] == pytest.approx(log_loss(target, proba, labels=labels))
    # the multiclass Brier score in [0, 2]: the squared error summed over the K columns, a
    # reference every supported scikit-learn has (pyproject allows 1.3)
    one_hot = np.eye(proba.shape[1])[target]  # [N, K]
    expected = mean_squared_error(one_hot, proba) * proba.shape[1]
    assert out["brier"] == pytest.approx(expected)
    if "scale_by_half" in inspect.signature(brier_score_loss).parameters:  # scikit-learn >= 1.7
        expected = brier_score_loss(target, proba, labels=labels, scale_by_half=False)
        assert out["brier"] == pytest.approx(expected)


def test_new_classification_metrics_by_hand():
    proba = np.array([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])  # [N, K]
    out = classification_metrics(proba, np.array([0, 1, 1]))
    assert out["balanced_accuracy"] == pytest.approx((1 / 1 + 1 / 2) / 2)  # recall 1 and 1/2
    assert out["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.8) + math.log(0.4)) / 3)
    assert out["brier"] == pytest.approx((0.18 + 0.08 + 0.72) / 3)


def test_log_loss_of_a_certain_wrong_answer_is_clipped_as_sklearn_clips():
    # probability 0 for the label: -log(eps), finite, not infinity
    out = classification_metrics(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([1, 1]))
    assert out["log_loss"] == pytest.approx(-math.log(np.finfo(float).eps) / 2)
    assert out["brier"] == pytest.approx(1.0)  # 2 on the wrong row, 0 on the right one


def test_balanced_accuracy_sees_through_a_majority_class_answer():
    proba = np.tile([0.9, 0.1], (10, 1))  # always class 0; 9 of 10 labels are 0
    out = classification_metrics(proba, np.array([0] * 9 + [1]))
    assert out["accuracy"] == pytest.approx(0.9) and out["balanced_accuracy"] == pytest.approx(0.5)


@FAST
@given(st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_ccc_against_its_definition_and_its_bounds(n, seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=n)
    pred = 0.5 * target + rng.normal(size=n) + 0.3
    ccc = regression_metrics(pred, target)["ccc"]
    # Lin (1989): rho_c = rho * 2 s_x s_y / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)
    rho = np.corrcoef(pred, target)[0, 1]
    sx, sy = pred.std(), target.std()
    expected = rho * 2 * sx * sy / (sx**2 + sy**2 + (pred.mean() - target.mean()) ** 2)
    assert ccc == pytest.approx(expected)
    assert -1.0 <= ccc <= 1.0


def test_ccc_penalises_shift_and_scale_that_correlation_ignores():
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert concordance_correlation(target, target) == pytest.approx(1.0)
    assert concordance_correlation(target + 1.0, target) == pytest.approx(1.25 / 1.75)
    assert concordance_correlation(2 * target, target) == pytest.approx(2 * 2.5 / (5 + 1.25 + 6.25))
    assert concordance_correlation(-target, target) == pytest.approx(-2.5 / (1.25 + 1.25 + 25))


def test_ccc_is_undefined_on_one_sample_a_shared_constant_and_a_nan_prediction():
    assert math.isnan(regression_metrics(np.array([1.5]), np.array([1.0]))["ccc"])
    assert math.isnan(concordance_correlation(np.array([3.0, 3.0]), np.array([3.0, 3.0])))
    # a constant target with other predictions: defined, no agreement beyond chance
    assert concordance_correlation(np.array([1.0, 2.0]), np.array([3.0, 3.0])) == 0.0
    assert math.isnan(regression_metrics(np.array([1.0, np.nan]), np.array([1.0, 2.0]))["ccc"])
