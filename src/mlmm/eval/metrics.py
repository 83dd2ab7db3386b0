"""Metrics: accuracy, macro-F1, AUROC and expected calibration error; RMSE, MAE and R²."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "auroc", "ece")
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: Metrics where a smaller value is better (errors); the others are better when higher.
LOWER_IS_BETTER = frozenset({"ece", "mae", "rmse"})
#: Metrics that are a proportion of the test samples (shown in percent).
PERCENT_METRICS = frozenset({"accuracy", "macro_f1", "auroc"})


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (``False`` for errors and ECE)."""
    return metric not in LOWER_IS_BETTER


def task_metrics(metrics: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The default metric list of the task whose metrics appear in ``metrics``: the
    classification metrics when accuracy is there, else the regression metrics; the first is
    the primary metric (accuracy, or RMSE)."""
    return CLASSIFICATION_METRICS if "accuracy" in set(metrics) else REGRESSION_METRICS


def primary_metric(
    available: set[str] | list[str] | tuple[str, ...], wanted: list[str] | tuple[str, ...] = ()
) -> str:
    """The metric to rank by: the first of ``wanted`` present in ``available``, else the task's
    default (accuracy for classification, RMSE for regression)."""
    available = set(available)
    for metric in (*wanted, *task_metrics(available)):
        if metric in available:
            return metric
    return sorted(available)[0] if available else "accuracy"


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


def macro_f1(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Macro-averaged F1 over the classes present in ``target`` (scikit-learn's
    ``f1_score(average="macro", labels=np.unique(target))``, computed from a confusion matrix)."""
    cm = np.bincount(target * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)  # predicted + actual = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1[np.unique(target)].mean())


def auroc_ovr(proba: np.ndarray, target: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``target``, by the rank-sum
    (Mann-Whitney) identity with average ranks for ties; NaN with fewer than two classes.

    Matches scikit-learn's ``roc_auc_score`` (binary, or ``multi_class="ovr"`` on the present
    classes' renormalised probabilities) and is fast enough to score every subset.
    """
    classes = np.unique(target)
    if len(classes) < 2:
        return float("nan")
    sub = proba[:, classes]
    if len(classes) < proba.shape[1]:  # renormalise over the present classes only
        sub = sub / np.clip(sub.sum(1, keepdims=True), 1e-300, None)
    scores = {c: sub[:, i] for i, c in enumerate(classes)}
    if len(classes) == 2:
        scores = {classes[1]: scores[classes[1]]}
    aucs = []
    for c, s in scores.items():
        pos = target == c
        n_pos, n_neg = pos.sum(), (~pos).sum()
        ranks = rankdata(s)
        aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def classification_metrics(proba: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All classification metrics for probabilities ``[N, K]`` and labels ``[N]``.

    Macro-F1 and AUROC average over the classes present in ``target``; AUROC is NaN when
    fewer than two classes are present (undefined, not zero).
    """
    pred = proba.argmax(axis=1)
    return {
        "accuracy": float((pred == target).mean()),
        "macro_f1": macro_f1(pred, target, proba.shape[1]),
        "auroc": auroc_ovr(proba, target),
        "ece": expected_calibration_error(proba, target),
    }


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Root mean squared error and mean absolute error (target units), and the coefficient of
    determination R² = 1 - SSE / SST (NaN when the targets do not vary)."""
    target = np.asarray(target, dtype=float)
    err = np.asarray(pred, dtype=float) - target
    sst = float(((target - target.mean()) ** 2).sum())
    sse = float((err**2).sum())
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
    }
