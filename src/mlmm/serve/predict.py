"""Predictions for a file of samples: one row per sample with its answer and how far to trust it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlmm.errors import MlmmError
from mlmm.eval.protocol import subset_name
from mlmm.train.trained import MULTILABEL_THRESHOLD, TrainedModel
from mlmm.utils import atomic_write

#: File types ``mlmm predict`` reads and writes.
SUFFIXES = (".npz", ".parquet", ".csv")
#: What an existing file of each suffix must look like to be replaced (:func:`check_output_file`).
OUTPUT_KINDS = {".npz": "NPZ", ".parquet": "Parquet", ".csv": "CSV"}
#: Subset name of a sample with no modality present.
NO_MODALITY = "(none)"


def check_suffix(path: Path, what: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MlmmError(
            f"{what} {str(path)!r} has suffix {suffix or '(none)'!r}; use a .npz (one array per "
            f"modality), .parquet or .csv file"
        )
    return suffix


def read_input(path: str | Path) -> dict[str, np.ndarray] | pd.DataFrame:
    """Read samples to predict: ``.npz`` (one array per modality) or a ``.parquet``/``.csv`` table.

    Parameters
    ----------
    path : str or Path
        In a ``.npz`` each key is a modality name and holds ``(N, *shape)``; a row that is
        entirely NaN, or a modality left out, is absent. A table has the model's columns
        (:attr:`mlmm.TrainedModel.table_columns`).

    Returns
    -------
    dict of str to ndarray, or DataFrame
    """
    path = Path(path)
    suffix = check_suffix(path, "--input")
    if not path.is_file():
        raise MlmmError(f"--input {str(path)!r} is not a file; give the samples to predict")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:  # never unpickle user files
                return {key: data[key] for key in data.files}
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise MlmmError(f"cannot read {str(path)!r} as {suffix} ({err}); check the file") from None


def score_metric(trained: TrainedModel) -> str:
    """The validation metric that says how far to trust an answer: accuracy, micro-F1
    (multilabel), or RMSE."""
    if trained.task.is_multilabel:
        return "micro_f1"
    return "accuracy" if trained.task.is_classification else "rmse"


def predict_table(trained: TrainedModel, X: Any, on_empty: str = "error") -> pd.DataFrame:
    """One row per sample: prediction, probabilities, modalities used, validation score.

    Parameters
    ----------
    trained : TrainedModel
    X : dict of arrays, DataFrame or MultimodalDataset
        As :meth:`mlmm.TrainedModel.as_dataset` takes it.
    on_empty : {"error", "prior"}
        Samples with no modality present: refused, or answered with the training prior.

    Returns
    -------
    DataFrame
        ``prediction``; ``proba_LABEL`` per class (classification); for multilabel,
        ``prediction`` lists the labels on (probability >= 0.5) joined by ``|`` and
        ``proba_LABEL`` gives each label's probability; ``modalities`` (the
        present ones joined by ``+``, ``(none)`` for none); ``validation_accuracy`` (or
        ``validation_rmse``): the validation score of that presence pattern stored with the
        model, NaN when the model stores none for it.
    """
    data = trained.as_dataset(X)
    raw = trained.predict_raw(data, on_empty=on_empty)
    names = data.modality_names
    patterns = [
        subset_name([n for n, p in zip(names, row, strict=True) if p]) or NO_MODALITY
        for row in data.observed
    ]
    metric = score_metric(trained)
    scores = {s: m.get(metric, np.nan) for s, m in trained.validation_scores().items()}
    columns: dict[str, Any] = {}
    if trained.task.is_classification:
        labels = trained.classes_
        columns["prediction"] = labels[raw.argmax(axis=1)]
        for k, label in enumerate(labels.tolist()):
            columns[f"proba_{label}"] = raw[:, k]
    elif trained.task.is_multilabel:
        labels = trained.task.labels
        on = raw >= MULTILABEL_THRESHOLD  # [N, L]
        columns["prediction"] = ["|".join(np.asarray(labels)[row]) for row in on]
        for k, label in enumerate(labels):
            columns[f"proba_{label}"] = raw[:, k]
    else:
        columns["prediction"] = raw
    columns["modalities"] = patterns
    columns[f"validation_{metric}"] = np.array([scores.get(p, np.nan) for p in patterns])
    return pd.DataFrame(columns)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` atomically as ``.csv``, ``.parquet`` or ``.npz`` (one array per column)."""
    path = Path(path)
    suffix = check_suffix(path, "--output")
    try:
        if suffix == ".csv":
            with atomic_write(path) as fh:
                table.to_csv(fh, index=False)
        elif suffix == ".parquet":
            with atomic_write(path, "wb") as fh:
                table.to_parquet(fh, index=False)
        else:
            arrays = {c: _npz_column(table[c]) for c in table.columns}
            with atomic_write(path, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as err:
        raise MlmmError(
            f"cannot write {path} ({err.strerror or err}); free some disk space or choose "
            f"another --output, nothing was half-written"
        ) from None
    return path


def _npz_column(column: pd.Series) -> np.ndarray:
    """A column as a plain (never object) array, so the file loads without pickle."""
    values = column.to_numpy()
    return values.astype(str) if values.dtype == object else values
