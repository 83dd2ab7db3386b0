"""Per-subset evaluation: one tidy table of (condition, subset, metric, value).

Three scopes are scored:

* ``overall`` — the whole test set under a test missingness condition (``mcar:0.5``...);
* ``pattern`` — the same predictions grouped by the presence pattern each sample ended with;
* ``subset`` — every non-empty modality subset forced on every test sample (the others
  hidden); condition ``subset:<names>``. On fully observed test data each subset is scored on
  the same samples; on data with missing modalities, on the samples that have at least one of
  its modalities (each with those of the subset it has; ``n`` says how many).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import MaskResult, parse_missingness, simulate, split_specs
from mlmm.errors import MlmmError
from mlmm.eval.metrics import classification_metrics, multilabel_metrics, regression_metrics
from mlmm.train.trained import TrainedModel
from mlmm.utils import rng_for

COLUMNS = [
    "scope",
    "condition",
    "rate_unit",
    "slot_rate",
    "sample_rate",
    "subset",
    "n",
    "metric",
    "value",
]
#: Above this many modalities, forced subsets are limited to singletons, leave-one-out and full.
MAX_FULL_SUBSET_MODALITIES = 10


def subset_name(names: Sequence[str]) -> str:
    """Canonical name of a modality subset: names joined by ``+`` in modality order."""
    return "+".join(names)


def modality_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset (in modality order), or a reduced list for many modalities."""
    m = len(modalities)
    if m <= MAX_FULL_SUBSET_MODALITIES:
        return [c for r in range(1, m + 1) for c in itertools.combinations(modalities, r)]
    singles = [(x,) for x in modalities]
    leave_one = [tuple(y for y in modalities if y != x) for x in modalities]
    return singles + leave_one + [tuple(modalities)]


def score(
    trained: TrainedModel, dataset: MultimodalDataset, on_empty: str = "error"
) -> dict[str, float]:
    """All metrics of ``trained`` on ``dataset`` as it is (its own presence mask)."""
    out = trained.predict_raw(dataset, on_empty=on_empty)
    if trained.task.is_classification:
        return classification_metrics(out, dataset.targets)
    if trained.task.is_multilabel:
        return multilabel_metrics(out, dataset.targets, trained.task.labels)
    return regression_metrics(out, dataset.targets)


def _rows(scope, condition, unit, slot, sample, subset, n, metrics):
    return [
        {
            "scope": scope,
            "condition": condition,
            "rate_unit": unit,
            "slot_rate": slot,
            "sample_rate": sample,
            "subset": subset,
            "n": n,
            "metric": k,
            "value": v,
        }
        for k, v in metrics.items()
    ]


def evaluate(
    trained: TrainedModel,
    dataset: MultimodalDataset,
    missing: str | Sequence[str] = "none",
    seed: int = 0,
    subsets: bool = True,
    patterns: bool = True,
    errors: str = "raise",
) -> pd.DataFrame:
    """Score a trained model under test missingness conditions and for every modality subset.

    Parameters
    ----------
    trained : TrainedModel
    dataset : MultimodalDataset
        Raw (unstandardised) test data.
    missing : str or list of str
        Test missingness specs (``"mcar:0,mcar:0.3,mcar:0.5"`` or a list): a robustness curve.
        Masks are seeded from ``seed`` and the spec, so they do not depend on the list order.
    seed : int
    subsets : bool
        Also score every non-empty modality subset forced on all test samples.
    patterns : bool
        Also score each presence pattern within each condition.
    errors : {"raise", "record"}
        What a test condition that cannot be simulated on ``dataset`` does (a rate above what
        the dataset's modalities allow, a modality it lacks): raise its ``MlmmError``, or be
        left out while the other conditions are scored, its error recorded in
        ``table.attrs["failed_conditions"]`` (``{condition: message}``).

    Returns
    -------
    pandas.DataFrame
        Columns ``scope, condition, rate_unit, slot_rate, sample_rate, subset, n, metric, value``.
        Samples left with no modality count as answered by the training prior when the spec
        allows empty samples, and are refused otherwise. ``attrs["failed_conditions"]`` holds
        the conditions left out (empty unless ``errors="record"``).
    """
    specs = split_specs(missing) if isinstance(missing, str) else list(missing)
    if not specs:
        raise MlmmError(
            "evaluate needs at least one test missingness spec, e.g. 'none' or 'mcar:0.5'"
        )
    if errors not in ("raise", "record"):
        raise MlmmError(f"errors must be 'raise' or 'record', got {errors!r}")
    rows: list[dict] = []
    failed: dict[str, str] = {}
    names = dataset.modality_names
    for spec in specs:
        model = parse_missingness(spec)
        try:
            masked, result = simulate(dataset, model, rng_for(seed, "test-mask", model.to_string()))
        except MlmmError as err:
            if errors == "raise":
                raise
            failed[model.to_string()] = str(err)  # the other conditions are still scored
            continue
        rows += _condition_rows(trained, masked, result, names, patterns)
    if subsets:
        for subset in modality_subsets(names):
            keep = np.array([m in subset for m in names])
            present = dataset.observed & keep
            rows_ok = present.any(axis=1)
            if not rows_ok.any():
                continue
            forced = dataset.with_presence(present, allow_empty=True).subset(
                np.flatnonzero(rows_ok)
            )
            metrics = score(trained, forced)
            name = subset_name(subset)
            rows += _rows(
                "subset",
                f"subset:{name}",
                "slots",
                float(1 - forced.observed.mean()),
                float((~forced.observed.all(axis=1)).mean()),
                name,
                forced.n_samples,
                metrics,
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.attrs["failed_conditions"] = failed
    return table


def _condition_rows(trained, masked, result: MaskResult, names, patterns: bool) -> list[dict]:
    cond, unit = result.spec, result.unit
    slot, sample = float(result.slot_rate), float(result.sample_rate)
    out = _rows(
        "overall",
        cond,
        unit,
        slot,
        sample,
        "all",
        masked.n_samples,
        score(trained, masked, on_empty="prior"),
    )
    if patterns:
        obs = masked.observed
        for pattern in np.unique(obs, axis=0):
            sel = (obs == pattern).all(axis=1)
            name = subset_name([n for n, p in zip(names, pattern, strict=True) if p]) or "(none)"
            out += _rows(
                "pattern",
                cond,
                unit,
                slot,
                sample,
                name,
                int(sel.sum()),
                score(trained, masked.subset(np.flatnonzero(sel)), on_empty="prior"),
            )
    return out
