"""Evaluation: metrics, per-subset protocol, summaries from the tidy table."""

from mlmm.eval.imputation import imputation_scores
from mlmm.eval.metrics import (
    CLASSIFICATION_EXTRA_METRICS,
    CLASSIFICATION_METRICS,
    MULTILABEL_METRICS,
    REGRESSION_EXTRA_METRICS,
    REGRESSION_METRICS,
    accuracy,
    balanced_accuracy,
    brier_score,
    classification_metrics,
    concordance_correlation,
    expected_calibration_error,
    log_loss,
    multilabel_metrics,
    regression_metrics,
)
from mlmm.eval.protocol import evaluate, modality_subsets, score, subset_name
from mlmm.eval.summaries import (
    full_modality_score,
    mean_over_conditions,
    ratio_to_full,
    robustness_auc,
    summarize,
    worst_subset,
)

__all__ = [
    "CLASSIFICATION_EXTRA_METRICS",
    "CLASSIFICATION_METRICS",
    "MULTILABEL_METRICS",
    "REGRESSION_EXTRA_METRICS",
    "REGRESSION_METRICS",
    "accuracy",
    "balanced_accuracy",
    "brier_score",
    "classification_metrics",
    "concordance_correlation",
    "evaluate",
    "expected_calibration_error",
    "full_modality_score",
    "imputation_scores",
    "log_loss",
    "mean_over_conditions",
    "modality_subsets",
    "multilabel_metrics",
    "ratio_to_full",
    "regression_metrics",
    "robustness_auc",
    "score",
    "subset_name",
    "summarize",
    "worst_subset",
]
