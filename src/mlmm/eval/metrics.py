"""Metrics: accuracy, macro-F1, AUROC and expected calibration error (shown by default),
balanced accuracy, log loss and the Brier score; RMSE, MAE and R² (shown by default) and Lin's
concordance correlation coefficient; micro/macro/samples F1 and per-label AUROC for multi-label
tasks."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from mlmm.errors import MlmmError

#: The classification metrics tables and reports show by default (accuracy is the primary one).
CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "auroc", "ece")
#: The regression metrics tables and reports show by default (RMSE is the primary one).
REGRESSION_METRICS = ("rmse", "mae", "r2")
#: Further classification metrics: computed and stored with the default ones (``mlmm.evaluate``,
#: ``mlmm evaluate``, benchmark stores), shown in benchmark tables and reports only when a
#: spec's ``metrics:`` names them, so the default tables keep their columns.
CLASSIFICATION_EXTRA_METRICS = ("balanced_accuracy", "log_loss", "brier")
#: Further regression metrics (Lin's concordance correlation coefficient), as above.
REGRESSION_EXTRA_METRICS = ("ccc",)
#: Multi-label metrics (the first, micro-F1, is the primary one); :func:`multilabel_metrics`
#: adds one ``auroc[LABEL]`` per label besides these.
MULTILABEL_METRICS = ("micro_f1", "macro_f1", "samples_f1", "macro_auroc")
#: The metrics a multi-label leaderboard may rank by (threshold-based and ranking-based).
MULTILABEL_PRIMARY = ("micro_f1", "macro_auroc")
#: Metrics where a smaller value is better (errors); the others are better when higher.
LOWER_IS_BETTER = frozenset({"ece", "mae", "rmse", "log_loss", "brier"})
#: Metrics that are a proportion of the test samples (shown in percent).
PERCENT_METRICS = frozenset(
    {
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "auroc",
        "micro_f1",
        "samples_f1",
        "macro_auroc",
    }
)


def base_metric(metric: str) -> str:
    """The metric a per-label name stands for: ``"auroc[Drama]"`` -> ``"auroc"``."""
    return metric.split("[", 1)[0]


def is_percent(metric: str) -> bool:
    """Whether ``metric`` (per-label names included) is a proportion shown in percent."""
    return base_metric(metric) in PERCENT_METRICS


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (``False`` for errors and ECE)."""
    return metric not in LOWER_IS_BETTER


def task_metrics(metrics: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The default metric list of the task whose metrics appear in ``metrics``: the
    classification metrics when accuracy is there, the multi-label metrics when micro-F1 is,
    else the regression metrics; the first is the primary metric (accuracy, micro-F1, or
    RMSE)."""
    metrics = set(metrics)
    if "accuracy" in metrics:
        return CLASSIFICATION_METRICS
    return MULTILABEL_METRICS if "micro_f1" in metrics else REGRESSION_METRICS


def primary_metric(
    available: set[str] | list[str] | tuple[str, ...], wanted: list[str] | tuple[str, ...] = ()
) -> str:
    """The metric to rank by: the first of ``wanted`` present in ``available``, else the task's
    default (accuracy for classification, micro-F1 for multilabel, RMSE for regression).
    A multi-label table ranks only by micro-F1 or macro AUROC (:data:`MULTILABEL_PRIMARY`):
    other wanted metrics are skipped for it."""
    available = set(available)
    if task_metrics(available) is MULTILABEL_METRICS:
        wanted = [m for m in wanted if m in MULTILABEL_PRIMARY]
    for metric in (*wanted, *task_metrics(available)):
        if metric in available:
            return metric
    return sorted(available)[0] if available else "accuracy"


def _undefined(keys: tuple[str, ...] | list[str]) -> dict[str, float]:
    return {key: float("nan") for key in keys}


def _scorable(proba: np.ndarray) -> bool:
    """Whether metrics exist for these predictions: at least one sample, every value finite.

    A non-finite prediction (a diverged model's NaN) leaves every metric undefined (NaN): an
    ``argmax`` over NaN picks class 0, which would score a broken model as a majority-class one.
    """
    return len(proba) > 0 and bool(np.isfinite(proba).all())


def _class_indices(proba: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``proba`` as floats ``[N, K]`` and ``target`` as class indices ``[N]`` in ``0..K-1``;
    another shape or an index outside the columns is refused in one line (a negative index
    would otherwise pick a column from the end)."""
    proba = np.asarray(proba, dtype=float)
    target = np.asarray(target).astype(np.int64)
    if proba.ndim != 2 or target.shape != (len(proba),):
        raise MlmmError(
            f"classification metrics need probabilities [N, K] and class indices [N], got "
            f"{proba.shape} and {target.shape}"
        )
    if len(target) and (target.min() < 0 or target.max() >= proba.shape[1]):
        raise MlmmError(
            f"classification targets must be class indices 0..{proba.shape[1] - 1} (one per "
            f"probability column), got values {target.min()}..{target.max()}; map labels to "
            f"indices first"
        )
    return proba, target


def accuracy(proba: np.ndarray, target: np.ndarray) -> float:
    """Share of samples whose most probable class (``argmax`` of ``proba`` ``[N, K]``) is the
    label ``target`` ``[N]``; NaN with no sample or a non-finite score (a diverged model's NaN
    row is not read as class 0). The trainer's ``val_accuracy`` and ``auto``'s ``cv_accuracy``
    use it too, so the three treat NaN predictions alike (the ``scheduler`` method's choice
    of expert and the stream engine score accuracy their own way)."""
    proba, target = _class_indices(proba, target)
    if not _scorable(proba):
        return float("nan")
    return float((proba.argmax(axis=1) == target).mean())


def log_loss(proba: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy ``-log p[y]`` (natural log) of probabilities ``[N, K]`` for labels
    ``[N]``, as scikit-learn's ``log_loss`` over all ``K`` classes (>= 1.5): the probability of
    the label is clipped to ``[eps, 1 - eps]`` (``eps`` the float64 machine epsilon, so a
    confident wrong answer costs about 36, not infinity) and rows are not renormalised
    (scikit-learn before 1.5 renormalised them, so it is written out here and gives the same
    value whatever scikit-learn is installed). NaN with no sample, fewer than two classes or a
    non-finite probability."""
    proba, target = _class_indices(proba, target)
    if not _scorable(proba) or proba.shape[1] < 2:
        return float("nan")
    eps = np.finfo(float).eps
    true_class = np.clip(proba[np.arange(len(target)), target], eps, 1.0 - eps)  # [N]
    return float(-np.log(true_class).mean())


def brier_score(proba: np.ndarray, target: np.ndarray) -> float:
    """Multiclass Brier score (Brier, 1950): the mean over samples of the squared Euclidean
    distance between the probabilities ``[N, K]`` and the one-hot label, in ``[0, 2]`` (0 is
    perfect). For two classes it is twice scikit-learn's default binary Brier score; it equals
    scikit-learn's ``brier_score_loss(..., scale_by_half=False)`` (scikit-learn >= 1.7; written
    out here since mlmm supports scikit-learn 1.3). NaN with no sample or a non-finite
    probability."""
    proba, target = _class_indices(proba, target)
    if not _scorable(proba):
        return float("nan")
    one_hot = np.eye(proba.shape[1])[target]  # [N, K]
    return float(((proba - one_hot) ** 2).sum(axis=1).mean())


def balanced_accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean recall over the classes present in ``target`` (scikit-learn's
    ``balanced_accuracy_score``; a class only predicted is not averaged in, its predictions
    count as wrong for their true classes): chance level is ``1 / n_present`` whatever the
    class balance, so a majority-class answer no longer scores high on imbalanced data. NaN
    with no sample. Computed by counting, fast enough to score every subset."""
    pred, target = np.asarray(pred), np.asarray(target)
    if len(target) == 0:
        return float("nan")
    classes, index = np.unique(target, return_inverse=True)  # index: [N], position in classes
    hits = np.bincount(index, weights=pred == target, minlength=len(classes))  # [C]
    return float((hits / np.bincount(index, minlength=len(classes))).mean())


def concordance_correlation(pred: np.ndarray, target: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin, Biometrics 1989):
    ``2 cov(pred, target) / (var(pred) + var(target) + (mean(pred) - mean(target))**2)`` with
    population (1/N) moments, in ``[-1, 1]``: 1 only when every prediction equals its target,
    so unlike the Pearson correlation it also penalises shift and scale. NaN with fewer than
    two samples, a non-finite prediction, or when predictions and targets are one and the same
    constant (0 / 0). scikit-learn has no CCC."""
    pred = np.asarray(pred, dtype=float)
    target = np.asarray(target, dtype=float)
    if len(pred) < 2 or not _scorable(pred):
        return float("nan")
    pred_mean, target_mean = pred.mean(), target.mean()
    covariance = ((pred - pred_mean) * (target - target_mean)).mean()
    denominator = pred.var() + target.var() + (pred_mean - target_mean) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else float("nan")


def expected_calibration_error(proba: np.ndarray, target: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with ``n_bins`` equal-width confidence bins (Guo et al., ICML 2017).

    ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over the bins
    ``[b / n_bins, (b + 1) / n_bins)`` (the last also holds 1.0); NaN with no sample or a
    non-finite probability (undefined, not 0).
    """
    proba = np.asarray(proba, dtype=float)
    if not _scorable(proba):
        return float("nan")
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

    The default ones (:data:`CLASSIFICATION_METRICS`: accuracy, macro-F1, AUROC, ECE), then
    :data:`CLASSIFICATION_EXTRA_METRICS` (balanced accuracy, log loss, Brier score). Macro-F1,
    AUROC and balanced accuracy average over the classes present in ``target``; AUROC is NaN
    when fewer than two classes are present (undefined, not zero). Every metric is NaN with no
    sample or with a non-finite probability (a diverged model is not scored as class 0).
    """
    proba, target = _class_indices(proba, target)
    if not _scorable(proba):
        return _undefined([*CLASSIFICATION_METRICS, *CLASSIFICATION_EXTRA_METRICS])
    pred = proba.argmax(axis=1)
    return {
        "accuracy": accuracy(proba, target),
        "macro_f1": macro_f1(pred, target, proba.shape[1]),
        "auroc": auroc_ovr(proba, target),
        "ece": expected_calibration_error(proba, target),
        "balanced_accuracy": balanced_accuracy(pred, target),
        "log_loss": log_loss(proba, target),
        "brier": brier_score(proba, target),
    }


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Root mean squared error and mean absolute error (target units), and the coefficient of
    determination R² = 1 - SSE / SST (NaN when the targets do not vary: one sample, or a
    constant target), then Lin's concordance correlation coefficient ``ccc``
    (:func:`concordance_correlation`). Every metric is NaN with no sample or a non-finite prediction (a
    diverged model's infinity is not an RMSE of inf that means and standard deviations carry).
    ``pred`` may be a column ``[N, 1]``; other shapes than the target's ``[N]`` are refused."""
    target = np.asarray(target, dtype=float)
    pred = np.asarray(pred, dtype=float)
    if pred.ndim == 2 and pred.shape[1] == 1 and target.ndim == 1:
        pred = pred[:, 0]  # a column [N, 1] would broadcast against [N] into [N, N]
    if pred.shape != target.shape:
        raise MlmmError(
            f"regression metrics need predictions of the targets' shape {target.shape}, got "
            f"{pred.shape}; pass one value per sample"
        )
    if not _scorable(pred):
        return _undefined([*REGRESSION_METRICS, *REGRESSION_EXTRA_METRICS])
    err = pred - target
    sst = float(((target - target.mean()) ** 2).sum())
    sse = float((err**2).sum())
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else float("nan"),
        "ccc": concordance_correlation(pred, target),
    }


def multilabel_metrics(
    proba: np.ndarray, target: np.ndarray, labels: tuple[str, ...] | list[str] | None = None
) -> dict[str, float]:
    """Multi-label metrics for label probabilities ``[N, L]`` and 0/1 targets ``[N, L]``.

    A label is predicted on at probability >= 0.5. ``micro_f1`` pools every (sample, label)
    decision; ``macro_f1`` averages the per-label F1 (every label, a label never present
    nor predicted counting 0); ``samples_f1`` averages the per-sample F1 (scikit-learn's
    ``average="samples"``, an empty row predicted empty counting 0). ``auroc[NAME]`` is each
    label's AUROC from its probability, NaN when the label is always or never present in
    ``target`` (undefined, not zero), and ``macro_auroc`` the mean over the labels where it
    is defined (NaN when none is). ``labels`` names the columns (default ``"0", "1", ...``).
    Every metric is NaN with no sample or with a non-finite probability.
    """
    from sklearn.metrics import f1_score, roc_auc_score

    proba = np.asarray(proba, dtype=float)
    target = np.asarray(target).astype(np.int64)
    if proba.shape != target.shape or proba.ndim != 2:
        raise ValueError(
            f"multilabel metrics need probabilities and targets of one shape [N, L], got "
            f"{proba.shape} and {target.shape}"
        )
    names = [str(i) for i in range(target.shape[1])] if labels is None else list(labels)
    if not _scorable(proba):
        return _undefined([*MULTILABEL_METRICS, *(f"auroc[{name}]" for name in names)])
    pred = (proba >= 0.5).astype(np.int64)  # [N, L]
    out = {
        average + "_f1": float(f1_score(target, pred, average=average, zero_division=0.0))
        for average in ("micro", "macro", "samples")
    }
    per_label = {}
    for j, name in enumerate(names):
        column = target[:, j]
        defined = 0 < column.sum() < len(column)
        per_label[f"auroc[{name}]"] = (
            float(roc_auc_score(column, proba[:, j])) if defined else float("nan")
        )
    values = np.array(list(per_label.values()))
    finite = values[np.isfinite(values)]
    out["macro_auroc"] = float(finite.mean()) if len(finite) else float("nan")
    out.update(per_label)
    return out
