"""Metrics against scikit-learn and against numbers computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mlmm.errors import MlmmError
from mlmm.eval.metrics import (
    accuracy,
    auroc_ovr,
    balanced_accuracy,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    log_loss,
    macro_f1,
    regression_metrics,
)


def random_case(n: int, k: int, seed: int, labels=None):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(k), size=n)
    target = rng.integers(0, k, n) if labels is None else rng.choice(labels, n)
    return proba, target


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("labels", [None, [0, 2, 3]], ids=["all-classes", "class-1-missing"])
def test_accuracy_and_macro_f1_match_sklearn(seed, labels):
    proba, target = random_case(60, 4, seed, labels)
    pred = proba.argmax(1)
    out = classification_metrics(proba, target)
    assert out["accuracy"] == pytest.approx(accuracy_score(target, pred))
    expected = f1_score(target, pred, average="macro", labels=np.unique(target))
    assert out["macro_f1"] == pytest.approx(expected)


def test_macro_f1_by_hand():
    target = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1, fp 1, fn 1 -> 2/4; class 1: tp 2, fp 1, fn 0 -> 4/5; class 2: 0
    assert macro_f1(pred, target, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    # a class never in the target is left out even if predicted
    assert macro_f1(np.array([0, 2, 0]), np.array([0, 0, 0]), 3) == pytest.approx(0.8)


@pytest.mark.parametrize("seed", range(3))
def test_binary_auroc_matches_sklearn(seed):
    proba, target = random_case(50, 2, seed)
    assert auroc_ovr(proba, target) == pytest.approx(roc_auc_score(target, proba[:, 1]))


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_ovr_auroc_matches_sklearn(seed):
    proba, target = random_case(80, 4, seed)
    expected = roc_auc_score(target, proba, multi_class="ovr", average="macro")
    assert auroc_ovr(proba, target) == pytest.approx(expected)


def test_auroc_with_missing_classes_matches_sklearn_on_renormalised_scores():
    proba, target = random_case(80, 5, 0, labels=[0, 1, 3])
    classes = np.unique(target)
    sub = proba[:, classes] / proba[:, classes].sum(1, keepdims=True)
    expected = roc_auc_score(target, sub, multi_class="ovr", labels=classes)
    assert auroc_ovr(proba, target) == pytest.approx(expected)


def test_auroc_binary_subset_of_multiclass():
    proba, target = random_case(40, 3, 1, labels=[0, 2])
    score = proba[:, 2] / (proba[:, 0] + proba[:, 2])
    assert auroc_ovr(proba, target) == pytest.approx(roc_auc_score(target, score))


def test_auroc_with_ties_matches_sklearn_and_hand_value():
    target = np.array([0, 0, 1, 1])
    p1 = np.array([0.3, 0.5, 0.5, 0.9])
    proba = np.stack([1 - p1, p1], 1)
    # pairs (neg, pos): (0.3, 0.5) win, (0.3, 0.9) win, (0.5, 0.5) tie, (0.5, 0.9) win -> 3.5/4
    assert auroc_ovr(proba, target) == pytest.approx(3.5 / 4)
    assert auroc_ovr(proba, target) == pytest.approx(roc_auc_score(target, p1))
    flat = np.full((6, 3), 1 / 3)
    assert auroc_ovr(flat, np.array([0, 1, 2, 0, 1, 2])) == pytest.approx(0.5)


def test_auroc_is_nan_with_one_class():
    proba, _ = random_case(10, 3, 0)
    assert math.isnan(auroc_ovr(proba, np.full(10, 2)))
    assert math.isnan(classification_metrics(proba, np.full(10, 2))["auroc"])


def test_ece_by_hand():
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.5, 0.5]])
    target = np.array([0, 1, 1, 0, 0])
    # with 5 bins of width 0.2: confidence 0.9 -> bin 4 (acc 1/2), 0.7 -> bin 3 (acc 1),
    # 0.6 -> bin 3 (acc 0), 0.5 -> bin 2 (acc 1, argmax picks class 0)
    # bin 2: 1/5 * |1 - 0.5| = 0.1; bin 3: 2/5 * |0.5 - 0.65| = 0.06; bin 4: 2/5 * |0.5 - 0.9| = 0.16
    assert expected_calibration_error(proba, target, n_bins=5) == pytest.approx(0.32)


def test_ece_of_a_perfectly_calibrated_and_a_certain_model():
    proba = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(proba, np.array([0, 1, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(proba, np.array([1, 0, 1])) == pytest.approx(1.0)


def test_classification_metrics_keys():
    proba, target = random_case(20, 3, 0)
    assert list(classification_metrics(proba, target)) == [
        "accuracy", "macro_f1", "auroc", "ece", "balanced_accuracy", "log_loss", "brier",
    ]  # fmt: skip


def test_regression_metrics_by_hand():
    out = regression_metrics(np.array([1.0, 2.0, 5.0, 0.0]), np.array([1.0, 4.0, 4.0, 3.0]))
    # errors 0, -2, 1, -3
    assert out["mae"] == pytest.approx(6 / 4)
    assert out["rmse"] == pytest.approx(math.sqrt(14 / 4))
    # targets' mean 3, SST = 4 + 1 + 1 + 0 = 6; SSE = 14
    assert out["r2"] == pytest.approx(1 - 14 / 6)
    assert set(out) == {"mae", "rmse", "r2", "ccc"}
    assert math.isnan(regression_metrics(np.array([1.0, 2.0]), np.array([3.0, 3.0]))["r2"])


def test_log_loss_does_not_renormalise_rows_that_do_not_sum_to_one():
    # scikit-learn before 1.5 divided each row by its sum (-log 0.6 here): mlmm's value must
    # not depend on the installed scikit-learn
    assert log_loss(np.array([[0.2, 0.3]]), np.array([1])) == pytest.approx(-math.log(0.3))
    # a probability above 1 by rounding is clipped to 1 - eps, not an error
    above = log_loss(np.array([[1.0 + 1e-9, 0.0]]), np.array([0]))
    assert above == pytest.approx(-math.log1p(-np.finfo(float).eps))


def test_balanced_accuracy_averages_only_the_classes_in_the_target():
    # class 2 is only predicted: its prediction is a miss for class 0, and it is no third
    # recall (that would be 0/0)
    pred, target = np.array([2, 0, 1, 1]), np.array([0, 0, 1, 1])
    assert balanced_accuracy(pred, target) == pytest.approx((1 / 2 + 1) / 2)
    proba = np.eye(3)[pred] * 0.8 + 0.2 / 3  # [N, K], argmax = pred
    assert classification_metrics(proba, target)["balanced_accuracy"] == pytest.approx(0.75)
    assert balanced_accuracy(np.array([1]), np.array([1])) == 1.0  # one sample
    assert math.isnan(balanced_accuracy(np.array([], dtype=int), np.array([], dtype=int)))


@pytest.mark.parametrize("metric", [accuracy, log_loss, brier_score])
def test_probability_metrics_refuse_labels_outside_the_columns(metric):
    # a label -1 indexed the last column (brier scored it as class 1)
    with pytest.raises(MlmmError, match="class indices 0..1"):
        metric(np.array([[0.9, 0.1]]), np.array([-1]))
