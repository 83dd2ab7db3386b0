"""Predictions for a file of samples: one row per sample with its answer and how far to trust it."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlmm.data.formats._common import NUMPY_FILE_ERRORS, numpy_file_reason
from mlmm.errors import MlmmError
from mlmm.eval.protocol import subset_name
from mlmm.serve.request import (
    REQUEST_SUFFIXES,
    PredictRequest,
    RequestError,
    on_line,
    read_request,
    request_arrays,
)
from mlmm.train.trained import MULTILABEL_THRESHOLD, TrainedModel
from mlmm.utils import atomic_write

#: File types ``mlmm predict`` reads and writes.
SUFFIXES = (".npz", ".parquet", ".csv")
#: File types ``mlmm predict --input`` reads: those, and ``POST /predict`` bodies
#: (:data:`~mlmm.serve.request.REQUEST_SUFFIXES`).
INPUT_SUFFIXES = SUFFIXES + REQUEST_SUFFIXES
#: What an existing file of each suffix must look like to be replaced (:func:`check_output_file`).
OUTPUT_KINDS = {".npz": "NPZ", ".parquet": "Parquet", ".csv": "CSV"}
#: Subset name of a sample with no modality present.
NO_MODALITY = "(none)"
#: In an input file, ``lengths.NAME`` (an array in a .npz, a column in a table) holds the
#: valid steps per row of the variable-length sequence modality ``NAME``.
LENGTHS_PREFIX = "lengths."
#: Separators a ``.csv`` may use: a comma, or (spreadsheets in many locales) a semicolon or a tab.
CSV_SEPARATORS = (",", ";", "\t")


def check_suffix(path: Path, what: str, allowed: tuple[str, ...] = SUFFIXES) -> str:
    """``path``'s suffix, lower-cased, when it is one of ``allowed`` (``what`` names the
    option in the one-line refusal)."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        requests = (
            " or a .json/.jsonl request (as POST /predict takes)" if ".json" in allowed else ""
        )
        raise MlmmError(
            f"{what} {str(path)!r} has suffix {suffix or '(none)'!r}; use a .npz (one array per "
            f"modality), .parquet or .csv file{requests}"
        )
    return suffix


def _read_csv(path: Path) -> pd.DataFrame:
    """A ``.csv`` with the separator its header line uses most (``,``, ``;`` or a tab; with
    ``;``, decimal commas as spreadsheets of many locales write them: ``1,5``); a first column
    whose header cell is empty (``DataFrame.to_csv``'s index, R's row names) is the row index,
    not a column."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        header, start = f.readline(), f.read(1 << 16)
    sep = max(CSV_SEPARATORS, key=header.count)  # none of them (one column): a comma
    names = next(csv.reader([header], delimiter=sep), [])
    index = 0 if len(names) > 1 and not names[0].strip() else None
    decimal = "," if sep != "," and re.search(r"\d,\d", start) else "."
    try:
        # "a, b" (a space after each separator, as typed by hand) names columns a and b, not " b"
        return pd.read_csv(path, sep=sep, index_col=index, decimal=decimal, skipinitialspace=True)
    except UnicodeDecodeError:  # pandas names a position in one of its chunks: find the line
        raw = path.read_bytes()
        try:
            raw.decode("utf-8-sig")
            line = ""  # pandas failed where Python does not: name no line
        except UnicodeDecodeError as err:
            at = err.start
            line = f" (line {raw.count(bytes([10]), 0, at) + 1}, byte {raw[at : at + 1]!r})"
        raise MlmmError(
            f"{str(path)!r} is not UTF-8 text{line}; save it as UTF-8 (in Excel: CSV UTF-8) and "
            "read it again"
        ) from None


def read_input(path: str | Path) -> dict[str, np.ndarray] | pd.DataFrame | PredictRequest:
    """Read samples to predict: ``.npz`` (one array per modality), a ``.parquet``/``.csv``
    table, or a request as ``POST /predict`` takes it (``.json``, or ``.jsonl``: one instance
    per line; :func:`mlmm.serve.request.read_request`).

    Parameters
    ----------
    path : str or Path
        In a ``.npz`` each key is a modality name and holds ``(N, *shape)``; a row that is
        entirely NaN, or a modality left out, is absent. A table has the model's columns
        (:attr:`mlmm.TrainedModel.table_columns`). For a model trained on variable-length
        sequences, ``lengths.NAME`` (an array ``(N,)`` in a ``.npz``, a column in a table)
        holds each row's valid steps of sequence ``NAME`` (see :func:`split_lengths`).
        A request's instances are checked against the model by :func:`predict_table`.

    Returns
    -------
    dict of str to ndarray, DataFrame, or PredictRequest
    """
    path = Path(path)
    suffix = check_suffix(path, "--input", INPUT_SUFFIXES)
    if not path.is_file():
        raise MlmmError(f"--input {str(path)!r} is not a file; give the samples to predict")
    try:
        if suffix in REQUEST_SUFFIXES:
            return read_request(path)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:  # never unpickle user files
                return {key: data[key] for key in data.files}
        if suffix == ".parquet":
            try:
                return pd.read_parquet(path)
            except ImportError:  # pandas reads Parquet through pyarrow (an extra)
                raise MlmmError(
                    f"reading {str(path)!r} needs pyarrow, which is not installed; run: pip "
                    "install 'mlmm[parquet]' (or save the table as .csv)"
                ) from None
        return _read_csv(path)
    except MlmmError:
        raise
    except NUMPY_FILE_ERRORS as err:
        # an empty .npz is an EOFError (the CLI printed a bare "Aborted."), a truncated or
        # corrupt one a BadZipFile or zlib.error, a member's corrupt header numpy's TokenError
        reason = (
            numpy_file_reason(err)
            if str(err)
            else f"{type(err).__name__}: the file is empty or truncated"
        )
        raise MlmmError(
            f"cannot read {str(path)!r} as {suffix} ({reason}); check the file"
        ) from None


def score_metric(trained: TrainedModel) -> str:
    """The validation metric that says how far to trust an answer: accuracy, micro-F1
    (multilabel), or RMSE."""
    if trained.task.is_multilabel:
        return "micro_f1"
    return "accuracy" if trained.task.is_classification else "rmse"


def check_numbers(trained: TrainedModel, X: Any) -> None:
    """Refuse a modality entry of ``X`` (an array, or a table column) that holds strings or
    booleans (:func:`split_lengths` refuses them in ``lengths.NAME``).

    Converting to float would read ``"1.5"`` as 1.5 and ``True`` as 1.0 without a word: an
    ``.npz`` array of strings or booleans, a Parquet column of text or booleans, a DataFrame
    column of Python objects holding any. Integers are numbers. A CSV file is text by
    nature: its number cells arrive as numbers, and a cell that is not a number leaves its
    column as text, refused here. The training target column, ``lengths.NAME`` and unknown
    entries are left to the checks that follow.

    Parameters
    ----------
    trained : TrainedModel
    X : dict of arrays, DataFrame or MultimodalDataset
        A dataset (already numbers) is not checked.

    Raises
    ------
    MlmmError
        Naming the first such entry, an example value and its row.
    """
    is_table = hasattr(X, "iloc") and hasattr(X, "columns")
    if not is_table and not isinstance(X, dict):
        return
    shapes = trained.modality_shapes
    wanted = {c for cols in trained.table_columns.values() for c in cols} if is_table else shapes
    for key in X.columns if is_table else X:
        if str(key) not in wanted:
            continue
        where = f"column {str(key)!r}" if is_table else f"array {str(key)!r}"
        if is_table:
            values = X[key].to_numpy()
        else:
            try:
                values = np.asarray(X[key])
            except ValueError:  # nested lists of unequal lengths, or over numpy's 64 dims
                raise MlmmError(
                    f"{where} is not rectangular (nested lists of unequal lengths, or over 64 "
                    f"levels deep); give an array of shape "
                    f"(N, {', '.join(map(str, shapes[str(key)]))}), NaN where a row is absent"
                ) from None
        problem = _not_numbers(values)
        if problem:
            raise MlmmError(f"{where} holds {problem}; write numbers (floats or integers) there")


def _not_numbers(values: np.ndarray) -> str | None:
    """What in ``values`` is not a number (strings, booleans) with an example, or None."""
    if values.dtype.kind in "iuf":
        return None
    if values.dtype.kind == "b":
        return f"booleans (dtype {values.dtype}), read as 1/0 only if you write 1/0"
    if values.dtype.kind in "USO":
        flat = values.reshape(-1)
        kinds = (str, bytes, bool, np.bool_, np.str_, np.bytes_)
        found = [i for i, v in enumerate(flat.tolist()) if isinstance(v, kinds)]
        if not found:
            return None  # Python objects that are all numbers (or None/NaN)
        # a CSV column holding one word arrives as text throughout: show that word, not the
        # first cell (a number written as text) that happens to share its column
        first = next((i for i in found if not _reads_as_number(flat[i])), found[0])
        value = flat[first]
        kind = "booleans" if isinstance(value, bool | np.bool_) else "text"
        shown = str(value) if len(str(value)) <= 20 else str(value)[:17] + "..."
        # a 0-d array (one value, not one per row) has no row to name
        at = f" in row {int(np.unravel_index(first, values.shape)[0])}" if values.ndim else ""
        return f"{kind}, e.g. {shown!r}{at}"
    return f"values of dtype {values.dtype}"


def _reads_as_number(value: Any) -> bool:
    """Whether ``value`` (text, bytes or a boolean) is a number written as text."""
    if isinstance(value, bool | np.bool_):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def split_lengths(trained: TrainedModel, X: Any) -> tuple[Any, dict[str, np.ndarray] | None]:
    """``X`` without its ``lengths.NAME`` entries, and those entries as ``lengths=``.

    A file carries a variable-length model's per-row lengths beside the sequences: an array
    ``lengths.NAME`` ``(N,)`` in a ``.npz``, a column ``lengths.NAME`` in a table, for each
    sequence modality ``NAME`` of ``trained.info["variable_length"]`` that the file holds.
    Each row's first ``lengths.NAME`` steps are read, the rest is padding (any value, NaN
    included); a row that is NaN throughout is absent, and its length may be 0 or empty.

    Parameters
    ----------
    trained : TrainedModel
    X : dict of arrays, DataFrame or MultimodalDataset
        A dataset (which carries its own lengths) is returned as it is.

    Returns
    -------
    X : dict of arrays, DataFrame or MultimodalDataset
        Without the ``lengths.NAME`` entries.
    lengths : dict of str to ndarray, or None
        ``{NAME: steps per row}``; None when ``X`` holds no ``lengths.NAME`` and needs none.
    """
    is_table = hasattr(X, "iloc") and hasattr(X, "columns")
    if not is_table and not isinstance(X, dict):
        return X, None
    keys = [str(k) for k in (X.columns if is_table else X)]
    names = set(trained.modality_shapes)
    kept = set(keys) & {c for cols in trained.table_columns.values() for c in cols}
    found = {
        k[len(LENGTHS_PREFIX) :]: k
        for k in keys
        if k.startswith(LENGTHS_PREFIX) and k not in names and k not in kept
    }
    variable = list(trained.info.get("variable_length") or [])
    kind = "a column" if is_table else "an array"
    if found and not variable:
        raise MlmmError(
            f"the input holds {sorted(found.values())}, but this model was trained on "
            f"full-length sequences and reads no lengths; drop {kind} {LENGTHS_PREFIX}NAME"
        )
    unknown = sorted(set(found) - set(variable))
    if unknown:
        raise MlmmError(
            f"the input holds {[found[n] for n in unknown]}, but this model reads lengths "
            f"only for its variable-length sequences {variable}; rename or drop them"
        )
    if is_table:
        held = {m for m, cols in trained.table_columns.items() if set(cols) & set(keys)}
    else:
        held = set(keys) & names
    for name in variable:
        if name in held and name not in found:
            raise MlmmError(
                f"the input holds the variable-length sequence {name!r} but not its lengths; "
                f"add {kind} '{LENGTHS_PREFIX}{name}' with each row's valid steps (1 to "
                f"{trained.modality_shapes[name][0]}; 0 where {name!r} is absent)"
            )
    if not variable:
        return X, None
    lengths = {}
    for name, key in found.items():
        values = X[key]
        problem = _not_numbers(values.to_numpy() if is_table else np.asarray(values))
        if problem:  # "3" or True would pass the conversion below
            raise MlmmError(
                f"{key!r} holds {problem}; write each row's valid steps of {name!r} as integers"
            )
        try:
            steps = np.asarray(values.to_numpy() if is_table else values, dtype=np.float64)
        except (TypeError, ValueError):
            raise MlmmError(
                f"{key!r} must hold numbers (each row's valid steps of {name!r}), got "
                f"non-numeric values (dtype {np.asarray(values).dtype}); write them as integers"
            ) from None
        if steps.ndim != 1:
            raise MlmmError(
                f"{key!r} must hold one number per row, got shape {list(steps.shape)}; give "
                f"each row's valid steps of {name!r}"
            )
        empty = np.isnan(steps)  # a blank cell: allowed where the sequence is absent
        most = trained.modality_shapes[name][0]
        bad = ~empty & ((steps < 0) | (steps > most) | (steps != np.round(steps)))  # [N]
        if bad.any():
            raise MlmmError(
                f"{key!r} must hold whole numbers from 0 to {most} (each row's valid steps of "
                f"{name!r}), got {steps[bad][:3].tolist()} in {int(bad.sum())} row(s) (first: "
                f"{np.flatnonzero(bad)[:5].tolist()}); fix those rows' lengths"
            )
        lengths[name] = np.where(empty, 0.0, steps)
        if name in held:  # lengths for a sequence the input leaves out read nothing
            _check_present_rows(trained, X, name, key, lengths[name], is_table)
    if is_table:
        X = X.drop(columns=list(found.values()))
    else:
        X = {k: v for k, v in X.items() if k not in set(found.values())}
    return X, lengths


def _check_present_rows(
    trained: TrainedModel, X: Any, name: str, key: str, steps: np.ndarray, is_table: bool
) -> None:
    """A row where sequence ``name`` is present must have at least one valid step."""
    if is_table:
        cols = [c for c in trained.table_columns[name] if c in X.columns]
        values = X[cols].to_numpy(dtype=np.float64, na_value=np.nan)  # [N, T * C]
    else:
        values = np.asarray(X[name], dtype=np.float64)
    if values.shape[:1] != steps.shape:
        return  # a row count that differs is refused, naming both, by as_dataset
    present = ~np.isnan(values.reshape(len(values), -1)).all(axis=1)  # [N]
    short = np.flatnonzero(present & (steps < 1))
    if len(short):
        raise MlmmError(
            f"{key!r} is 0 or empty in {len(short)} row(s) where {name!r} is present (first: "
            f"{short[:5].tolist()}); give those rows' valid steps (1 to "
            f"{trained.modality_shapes[name][0]}), or make {name!r} NaN throughout to mark it absent"
        )


def not_finite_rows(raw: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``raw`` (``[N, K]`` or ``[N]``) holding NaN or inf.

    Finite inputs far outside the training range (``1e30``) overflow a model's float32
    arithmetic into NaN; left as they are, ``argmax`` would read such a row as the first class
    and JSON would carry ``null`` where the schema promises a number, so every deployed path
    refuses them (:data:`NOT_FINITE_FIX` says what to do).
    """
    return np.flatnonzero(~np.isfinite(raw).all(axis=tuple(range(1, raw.ndim))))  # any N


#: The end of the one-line error for an answer that is not finite (:func:`not_finite_rows`).
NOT_FINITE_FIX = (
    "the input values are too far outside the range the model was trained on for its float32 "
    "arithmetic; send values on the training data's scale (its units, before any scaling)"
)


def check_finite_answer(raw: np.ndarray) -> None:
    """Refuse, in one line, an answer ``raw`` (``[N, K]`` or ``[N]``) with a row that is not
    finite (:func:`not_finite_rows`), naming how many rows and the first ones."""
    bad = not_finite_rows(raw)
    if len(bad):
        raise MlmmError(
            f"the model's answer is NaN or infinite in {len(bad)} row(s) (first: "
            f"{bad[:5].tolist()}): {NOT_FINITE_FIX}"
        )


def request_input(
    trained: TrainedModel, request: PredictRequest, on_empty: str = "error"
) -> tuple[dict[str, np.ndarray], str]:
    """A ``POST /predict`` request's instances as :func:`predict_table` input, checked as the
    server checks them (:func:`mlmm.serve.request.request_arrays`, the same one-line errors,
    after its line for a ``.jsonl`` file's instance), and the ``on_empty`` that answers them (the request's, else ``on_empty``).

    Returns
    -------
    X : dict of str to ndarray
        ``[N, *shape]`` per modality (NaN rows absent) and ``lengths.NAME`` per
        variable-length sequence.
    on_empty : str
    """
    on_empty = request.on_empty or on_empty
    variable = tuple(trained.info.get("variable_length") or ())
    try:
        arrays, _, lengths = request_arrays(
            trained.modality_shapes, variable, request.instances, on_empty
        )
    except RequestError as err:  # a .jsonl's instance is named by its line too
        raise on_line(err, request.lines) from None
    return {**arrays, **{LENGTHS_PREFIX + m: steps for m, steps in lengths.items()}}, on_empty


def predict_table(trained: TrainedModel, X: Any, on_empty: str = "error") -> pd.DataFrame:
    """One row per sample: prediction, probabilities, modalities used, validation score.

    Parameters
    ----------
    trained : TrainedModel
    X : dict of arrays, DataFrame, MultimodalDataset or PredictRequest
        As :meth:`mlmm.TrainedModel.as_dataset` takes it; for a model trained on
        variable-length sequences, a dict or DataFrame carries each sequence's per-row
        lengths as ``lengths.NAME`` (:func:`split_lengths`). A request
        (:class:`mlmm.serve.request.PredictRequest`) is read by :func:`request_input`.
    on_empty : {"error", "prior"}
        Samples with no modality present: refused, or answered with the training prior (a
        request's own ``on_empty`` takes precedence, as in ``POST /predict``).

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
    if isinstance(X, PredictRequest):
        X, on_empty = request_input(trained, X, on_empty)
    check_numbers(trained, X)
    X, lengths = split_lengths(trained, X)
    table = trained.info.get("data")  # mlmm train --data --partial missing: its rule here too
    partial = table.get("partial", "error") if isinstance(table, dict) else "error"
    data = trained.as_dataset(X, lengths=lengths, partial=partial)
    raw = trained.predict_raw(data, on_empty=on_empty)
    check_finite_answer(raw)
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
    # a full disk is atomic_write's one line (OutputWriteError), the earlier file kept
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
    return path


def _npz_column(column: pd.Series) -> np.ndarray:
    """A column as a plain (never object) array, so the file loads without pickle."""
    values = column.to_numpy()
    return values.astype(str) if values.dtype == object else values
