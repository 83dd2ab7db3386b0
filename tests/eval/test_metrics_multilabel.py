"""Multilabel metrics: micro/macro/samples F1 and per-label AUROC, against sklearn and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from mlmm.eval.metrics import (
    MULTILABEL_METRICS,
    is_percent,
    multilabel_metrics,
    primary_metric,
    task_metrics,
)


def test_f1_by_hand():
    target = np.array([[1, 0], [1, 1], [0, 0]])
    proba = np.array([[0.9, 0.6], [0.2, 0.7], [0.1, 0.4]])  # predicted [[1,1],[0,1],[0,0]]
    out = multilabel_metrics(proba, target, ["a", "b"])
    # tp = 2 (row 0 a, row 1 b), fp = 1 (row 0 b), fn = 1 (row 1 a): 2*2 / (2*2 + 1 + 1)
    assert out["micro_f1"] == pytest.approx(4 / 6)
    # label a: tp 1 fn 1 -> 2/3; label b: tp 1 fp 1 -> 2/3
    assert out["macro_f1"] == pytest.approx(2 / 3)
    # rows: 2/3, 2/3, and an empty row predicted empty counting 0
    assert out["samples_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert out["auroc[a]"] == pytest.approx(1.0) and out["auroc[b]"] == pytest.approx(1.0)
    assert out["macro_auroc"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    target = (rng.random((200, 5)) < 0.3).astype(np.float32)
    proba = np.clip(0.6 * target + 0.5 * rng.random((200, 5)), 0, 1)
    out = multilabel_metrics(proba, target)
    pred = (proba >= 0.5).astype(int)
    for average in ("micro", "macro", "samples"):
        expected = f1_score(target, pred, average=average, zero_division=0.0)
        assert out[f"{average}_f1"] == pytest.approx(expected)
    aurocs = [roc_auc_score(target[:, j], proba[:, j]) for j in range(5)]
    assert [out[f"auroc[{j}]"] for j in range(5)] == pytest.approx(aurocs)
    assert out["macro_auroc"] == pytest.approx(np.mean(aurocs))
    assert list(out)[:4] == list(MULTILABEL_METRICS)


def test_a_label_always_or_never_present_has_no_auroc():
    target = np.array([[1, 0, 1], [1, 0, 0], [1, 0, 1]])
    out = multilabel_metrics(np.full((3, 3), 0.5), target, ["x", "y", "z"])
    assert np.isnan(out["auroc[x]"]) and np.isnan(out["auroc[y]"])
    assert out["macro_auroc"] == pytest.approx(out["auroc[z]"])
    none = multilabel_metrics(np.full((2, 2), 0.5), np.ones((2, 2)))
    assert np.isnan(none["macro_auroc"])
    with pytest.raises(ValueError, match="one shape"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 3)))


def test_a_multilabel_table_ranks_by_micro_f1_or_macro_auroc():
    available = {*MULTILABEL_METRICS, "auroc[Drama]"}
    assert task_metrics(available) == MULTILABEL_METRICS
    assert primary_metric(available) == "micro_f1"
    assert primary_metric(available, ["macro_auroc"]) == "macro_auroc"
    assert primary_metric(available, ["macro_f1", "samples_f1"]) == "micro_f1"
    assert primary_metric({"accuracy", "macro_f1"}, ["macro_f1"]) == "macro_f1"  # unchanged
    assert is_percent("auroc[Drama]") and is_percent("micro_f1") and not is_percent("rmse")
