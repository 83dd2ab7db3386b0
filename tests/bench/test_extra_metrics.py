"""Balanced accuracy, log loss, Brier score and CCC in benchmarks: a spec may name them, the
tables show them only then, and the default tables keep their columns."""

from __future__ import annotations

import pandas as pd
import pytest

from mlmm.bench.spec import METRICS, parse_spec
from mlmm.bench.tables import comparison_table
from mlmm.errors import MlmmError
from mlmm.eval.metrics import classification_metrics, regression_metrics

BASE = {
    "datasets": {"synthetic": {"n_samples": 300}},
    "methods": {"hemis": {}},
    "missing": ["mcar:0.5"],
    "seeds": [0],
}


def rows(dataset: str, metrics: dict[str, float]) -> list[dict]:
    return [
        dict(dataset=dataset, method="hemis", seed=0, train_condition="none", condition="none",
             slot_rate=0.0, scope="overall", subset="all", metric=m, value=v, n_parameters=10,
             train_seconds=1.0)
        for m, v in metrics.items()
    ]  # fmt: skip


def test_every_computed_metric_can_be_named_in_a_spec():
    import numpy as np

    computed = set(classification_metrics(np.array([[0.6, 0.4]]), np.array([0])))
    computed |= set(regression_metrics(np.array([1.0, 2.0]), np.array([1.0, 3.0])))
    assert computed <= set(METRICS)
    spec = parse_spec({**BASE, "metrics": ["log_loss", "balanced_accuracy", "brier"]})
    assert spec.metrics == ["log_loss", "balanced_accuracy", "brier"]
    with pytest.raises(MlmmError, match="'ccc' scores regression tasks"):
        parse_spec({**BASE, "metrics": ["accuracy", "ccc"]})


def test_the_default_table_keeps_its_columns_and_a_spec_shows_the_new_ones():
    classification = {
        "accuracy": 0.9, "macro_f1": 0.85, "auroc": 0.95, "ece": 0.1,
        "balanced_accuracy": 0.8, "log_loss": 0.3, "brier": 0.15,
    }  # fmt: skip
    results = pd.DataFrame(
        rows("syn", classification)
        + rows("toy", {"rmse": 0.5, "mae": 0.4, "r2": 0.8, "ccc": 0.875})
    )
    default = comparison_table(results)
    for extra in ("balanced_accuracy", "log_loss", "brier", "ccc"):
        assert extra not in default.columns
    chosen = comparison_table(results, ["balanced_accuracy", "log_loss", "brier", "ccc"])
    by_dataset = chosen.set_index("dataset")
    syn, toy = by_dataset.loc["syn"], by_dataset.loc["toy"]
    assert (syn.balanced_accuracy, syn.log_loss, syn.brier) == ("80.0", "0.300", "0.150")
    assert toy.ccc == "0.875"
