"""Metrics: accuracy, macro-F1, AUROC and expected calibration error; MAE and RMSE."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "auroc", "ece")
REGRESSION_METRICS = ("mae", "rmse")


def expected_calibration_error(proba: np.ndarray, target: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width confidence bins (Guo et al., ICML 2017).

    ``sum_b (n_b / N) * |accuracy_b - confidence_b|``.
    """
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == target).astype(float)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        sel = bins == b
        ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def classification_metrics(proba: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All classification metrics for probabilities ``[N, K]`` and labels ``[N]``.

    AUROC is the macro one-vs-rest score over the classes present in ``target``; it is NaN
    when fewer than two classes are present (undefined, not zero).
    """
    pred = proba.argmax(axis=1)
    k = proba.shape[1]
    out = {
        "accuracy": float((pred == target).mean()),
        "macro_f1": float(f1_score(target, pred, average="macro", labels=np.unique(target), zero_division=0)),
        "ece": expected_calibration_error(proba, target),
    }
    classes = np.unique(target)
    if len(classes) < 2:
        out["auroc"] = float("nan")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if k == 2:
                out["auroc"] = float(roc_auc_score(target, proba[:, 1]))
            else:
                # restrict to the classes present and renormalise, as scikit-learn requires
                sub = proba[:, classes] / np.clip(proba[:, classes].sum(1, keepdims=True), 1e-12, None)
                if len(classes) == 2:
                    out["auroc"] = float(roc_auc_score(target == classes[1], sub[:, 1]))
                else:
                    out["auroc"] = float(roc_auc_score(target, sub, multi_class="ovr", labels=classes))
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean absolute error and root mean squared error, in target units."""
    err = np.asarray(pred, dtype=float) - np.asarray(target, dtype=float)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err**2).mean()))}
