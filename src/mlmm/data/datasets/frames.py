"""Bring your own data: build a ``MultimodalDataset`` from arrays or a pandas DataFrame.

Missing modalities are written as NaN: a row of a modality that is entirely NaN is absent.
A row that is only partly NaN is ambiguous (a broken sensor reading? one missing lab value?),
so it needs an explicit ``partial`` policy: ``"error"`` (default), ``"missing"`` or
``"impute"``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlmm.data.dataset import MultimodalDataset, as_observed
from mlmm.data.specs import TASK_KINDS, ModalitySpec, TaskSpec
from mlmm.errors import SHOWN_COLUMNS, MlmmError, did_you_mean, unknown_name_error

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["from_arrays", "from_dataframe"]

PartialPolicy = Literal["error", "missing", "impute"]
_PARTIAL_POLICIES = ("error", "missing", "impute")
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # regression targets are float32 tensors
_MAX_UNSEEN_CLASSES = 10  # integer labels beyond this, and > 2x the labels seen, are not indices
_KIND_BY_RANK = {1: "vector", 2: "sequence", 3: "image"}  # per-sample rank -> kind


def from_arrays(
    inputs: Mapping[str, Any],
    targets: Any,
    observed: Any = None,
    task: TaskSpec | str | None = None,
    kinds: Mapping[str, str] | None = None,
    name: str = "custom",
    allow_empty: bool = False,
    partial: PartialPolicy = "error",
    standardize: Mapping[str, bool] | None = None,
    time_ordered: bool = False,
) -> MultimodalDataset:
    """Build a dataset from one array per modality.

    Parameters
    ----------
    inputs : dict of str to array-like
        ``inputs[name]`` has one row per sample. Its rank chooses the kind unless ``kinds``
        says otherwise: ``(N, D)`` vector, ``(N, T, C)`` sequence (time, channels),
        ``(N, C, H, W)`` image. The dict order is the modality order.
    targets : array-like, shape (N,)
        Labels or values. Integer-like numbers give classification with
        ``n_classes = max + 1`` (labels must be >= 0); strings (or other non-numeric labels)
        give classification with the sorted unique labels as ``class_names``; other floats give
        regression. ``task`` overrides the inference.
    observed : array-like of bool, shape (N, M), optional
        True where a modality was recorded, columns in ``inputs`` order. None: a row of a
        modality that is entirely NaN is absent, every other row present. When given, it is
        the truth: a row it marks present may not be entirely NaN.
    task : TaskSpec or {"classification", "regression", "multilabel"}, optional
        Force the task. A ``TaskSpec`` with ``class_names`` also fixes the label order of
        string targets. ``"multilabel"`` takes ``targets`` as a 0/1 matrix ``(N, L)``.
    kinds : dict of str to {"vector", "sequence", "image"}, optional
        Kind per modality, for the modalities whose kind should not be inferred from rank.
    name : str
        Dataset name shown in reports.
    allow_empty : bool
        Accept samples with no modality present.
    partial : {"error", "missing", "impute"}
        What to do with a present row that is partly NaN. ``"error"`` raises, naming the
        modality and the count. ``"missing"`` marks the modality absent in that row.
        ``"impute"`` fills each NaN entry with the mean of that entry over the present rows
        where it is not NaN. The mean is computed on the data passed here, so imputing a
        whole dataset before splitting leaks test statistics into training: prefer
        ``"missing"``, or impute the training split only.
    standardize : dict of str to bool, optional
        False for the modalities whose values the trainer must keep as they are (token ids
        for a pretrained text backbone, codes); every other modality is z-scored on the
        training split (``ModalitySpec.standardize``).
    time_ordered : bool
        True when the rows are consecutive readings of one stream (``meta["time_ordered"]``):
        ``burst`` missingness then runs along the row order instead of a seeded permutation.

    Returns
    -------
    MultimodalDataset
        ``meta["partial_rows"]`` counts, per modality, the partly-NaN rows handled by the
        ``partial`` policy; for string labels ``task.class_names`` holds the labels.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]])
    >>> ds = from_arrays({"a": x, "b": np.ones((3, 5, 2))}, ["cat", "dog", "cat"])
    >>> ds.observed[:, 0].tolist(), ds.spec("b").kind, ds.task.class_names
    ([True, False, True], 'sequence', ('cat', 'dog'))
    """
    meta = {"time_ordered": _check_flag(time_ordered, "time_ordered")}
    return _build(
        inputs, targets, observed, task, kinds, name, allow_empty, partial, None, meta, standardize
    )


def from_dataframe(
    df: pd.DataFrame,
    modalities: Mapping[str, Sequence[Any]],
    target: Any,
    task: TaskSpec | str | None = None,
    partial: PartialPolicy = "error",
    name: str = "custom",
    allow_empty: bool = False,
    time_ordered: bool = False,
    text: Mapping[str, str] | None = None,
    text_length: int = 32,
) -> MultimodalDataset:
    """Build a dataset of vector modalities from the columns of a DataFrame.

    A modality whose columns are all NaN (or ``pd.NA``) in a row is missing in that row. A row
    where only some of them are NaN follows the ``partial`` policy. A text modality (``text``)
    is one column of strings, turned into token ids by a named tokenizer; a row whose text is
    missing (None, NaN) or blank is absent.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per sample, numeric feature columns.
    modalities : dict of str to list of column names
        Modality name -> its columns, in order, e.g. ``{"lab": ["hb", "crp"], "vitals":
        ["hr", "bp"]}``. Each column may belong to one modality only.
    target : column name
        The label or value column. A categorical column keeps its category order as the class
        order; otherwise see :func:`from_arrays` for how the task is inferred.
    task : TaskSpec or {"classification", "regression"}, optional
        Force the task instead of inferring it.
    partial : {"error", "missing", "impute"}
        Policy for partly-NaN modality rows, as in :func:`from_arrays`: ``"error"`` (default)
        raises, ``"missing"`` marks the modality absent in that row, ``"impute"`` fills the
        NaN with the column mean over the rows where that column is present. The mean is
        computed on this frame, so imputing before splitting leaks information from the test
        rows into training: prefer ``"missing"``.
    name : str
        Dataset name shown in reports.
    allow_empty : bool
        Accept rows in which every modality is missing.
    time_ordered : bool
        True when the rows are consecutive readings in time, as in :func:`from_arrays`.
    text : dict of str to str, optional
        Text modalities: modality name -> tokenizer name (one of
        :data:`mlmm.nn.backbones.TEXT_TOKENIZERS`). ``"minilm"``: the WordPiece tokenizer of
        the pretrained text backbone ``all-minilm-l6-v2`` (needs the extra ``mlmm[text]``),
        ``text_length`` ids per row, ``[CLS] ... [SEP]`` then padding id 0. The modality is a
        vector of ids that the trainer does not standardise; train it through a method with
        that backbone, e.g. ``frozen-backbone-prompting`` with
        ``backbones={"review": "all-minilm-l6-v2"}`` (LoRA on its attention with
        ``adapter="lora"``).
    text_length : int
        Token ids per row of a text modality (longer texts are cut).

    Returns
    -------
    MultimodalDataset
        ``meta`` holds ``time_ordered``, ``columns`` (the ``modalities`` mapping), ``target_column``,
        ``row_index`` (the frame's index, to map rows back), ``partial_rows`` and ``text``
        (per text modality: its tokenizer, backbone and length).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"hr": [60, None, 80], "bp": [120, None, 130],
    ...                    "hb": [13.5, 12.0, None], "y": ["sick", "well", "well"]})
    >>> ds = from_dataframe(df, {"vitals": ["hr", "bp"], "lab": ["hb"]}, target="y")
    >>> ds.observed.tolist()
    [[True, True], [False, True], [True, False]]
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise MlmmError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if not isinstance(modalities, Mapping) or not modalities:
        raise MlmmError(
            "modalities must be a non-empty dict of modality name -> list of columns, "
            f"got {modalities!r}"
        )
    if target is None or not isinstance(target, Hashable):  # a list: TypeError in `in df`
        raise MlmmError(
            f"target must name one column, got {target!r}; for several 0/1 label columns "
            "(multilabel) pass their values to from_arrays(inputs, df[columns].to_numpy(), "
            "task='multilabel')"
        )
    check_frame_columns(df, modalities, target)

    text = _check_text(text, text_length, modalities)
    arrays: dict[str, np.ndarray] = {}
    for modality, columns in modalities.items():
        block = df[list(columns)]
        if modality in text:
            arrays[str(modality)] = _token_ids(block, modality, text[modality], text_length)
            continue
        not_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(block[c].dtype)]
        if not_numeric:
            raise MlmmError(
                f"modality {modality!r} has non-numeric column(s) {not_numeric}; encode them as "
                "numbers (e.g. one-hot), leave them out, or for one column of text declare it "
                f"text={{{str(modality)!r}: 'minilm'}} (needs mlmm[text])"
            )
        arrays[str(modality)] = block.to_numpy(dtype=np.float64, na_value=np.nan)

    series = df[target]
    if isinstance(series.dtype, pd.CategoricalDtype) and task is None:
        categories = tuple(str(c) for c in series.cat.categories)
        if len(categories) < 2:
            raise MlmmError(
                f"target column {target!r} is categorical with {len(categories)} category; "
                "classification needs at least 2"
            )
        task = TaskSpec("classification", len(categories), categories)
        values: np.ndarray = series.astype(object).to_numpy()
        values = np.array([None if v is None or v is pd.NA or v != v else str(v) for v in values])
    elif pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if pd.api.types.is_bool_dtype(series.dtype):
            values = values.astype(np.int64)
    else:
        values = series.astype(object).to_numpy()
        values = np.array(
            [
                None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v
                for v in values
            ],
            dtype=object,
        )
    meta = {
        "columns": {str(m): list(c) for m, c in modalities.items()},
        "target_column": target,
        "row_index": df.index.to_numpy(),
        "time_ordered": _check_flag(time_ordered, "time_ordered"),
    }
    if text:
        from mlmm.nn.backbones import TEXT_TOKENIZERS

        meta["text"] = {
            str(m): {"tokenizer": t, "backbone": TEXT_TOKENIZERS[t][0], "length": text_length}
            for m, t in text.items()
        }
    keep_ids = {str(m): False for m in text}
    return _build(
        arrays,
        values,
        None,
        task,
        None,
        name,
        allow_empty,
        partial,
        df.index.to_numpy(),
        meta,
        keep_ids,
    )


def _modality_words(modality: Any) -> str:
    return f"modality {modality!r}"


def check_frame_columns(
    df: pd.DataFrame,
    modalities: Mapping[Any, Sequence[Any]],
    target: Any,
    *,
    target_words: str = "target",
    modality_words: Callable[[Any], str] = _modality_words,
) -> None:
    """One-line errors for a DataFrame's layout: an unknown target or feature column (with the
    closest names), a duplicated column name, a column given twice or to two modalities, the
    target also a feature. Shared by :func:`from_dataframe` and the command line's ``--data``
    (:mod:`mlmm.data.table`), which words them after its options.

    Parameters
    ----------
    df : DataFrame
    modalities : dict of modality name to list of column names
    target : column name or None
        None when the frame is read without a target.
    target_words : str
        How the messages name the target (``"target"``, ``"--target"``).
    modality_words : callable
        Modality name -> how the messages name it (``"modality 'lab'"``, ``"--modality lab"``).
    """
    column_names = [str(c) for c in df.columns]
    duplicated = set(df.columns[df.columns.duplicated()])
    if target is not None and target not in df.columns:
        close = did_you_mean(str(target), column_names, SHOWN_COLUMNS)
        raise MlmmError(f"unknown {target_words} column {target!r}.{close}")
    if target in duplicated:
        raise MlmmError(
            f"{target_words} column {target!r} appears {int((df.columns == target).sum())} times "
            "in the DataFrame; rename or drop the duplicates so the target is one column"
        )
    owner: dict[Any, Any] = {}
    for modality, columns in modalities.items():
        if isinstance(columns, str) or not isinstance(columns, Sequence):
            raise MlmmError(
                f"the columns of {modality_words(modality)} must be a list of column names, got "
                f"{columns!r}; write [{columns!r}] for a single column"
            )
        if not columns:
            raise MlmmError(f"{modality_words(modality)} has no columns; give it at least one")
        for column in columns:
            if column not in df.columns:
                raise MlmmError(
                    f"unknown column {column!r} in {modality_words(modality)}."
                    f"{did_you_mean(str(column), column_names, SHOWN_COLUMNS)}"
                )
            if column in duplicated:
                raise MlmmError(
                    f"column name {column!r} ({modality_words(modality)}) appears more than once "
                    "in the DataFrame; rename the duplicates"
                )
            if column == target:
                raise MlmmError(
                    f"column {column!r} is the {target_words} and also a feature of "
                    f"{modality_words(modality)}; leave it out of the modality"
                )
            if column in owner:
                where = (
                    f"twice in {modality_words(modality)}"
                    if owner[column] == modality
                    else f"in {modality_words(owner[column])} and in {modality_words(modality)}"
                )
                raise MlmmError(
                    f"column {column!r} is listed {where}; give each column to one modality"
                )
            owner[column] = modality


def _check_text(
    text: Mapping[str, str] | None, length: int, modalities: Mapping[str, Sequence[Any]]
) -> dict[str, str]:
    """``text`` checked: modality -> a known tokenizer name, one column each."""
    from mlmm.nn.backbones import TEXT_TOKENIZERS

    if text is None:
        return {}
    if not isinstance(text, Mapping):
        raise MlmmError(
            f"text must be a dict of modality name -> tokenizer name, got {text!r}; "
            "e.g. text={'review': 'minilm'}"
        )
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise MlmmError(
            f"text_length must be an integer >= 2 (room for [CLS] and [SEP]), got {length!r}"
        )
    for modality, tokenizer in text.items():
        if modality not in modalities:
            raise unknown_name_error("text modality", modality, modalities)
        if tokenizer not in TEXT_TOKENIZERS:
            raise unknown_name_error("text tokenizer", tokenizer, TEXT_TOKENIZERS)
        if len(modalities[modality]) != 1:
            raise MlmmError(
                f"text modality {modality!r} must be one column of text, got "
                f"{list(modalities[modality])}; give each text column its own modality"
            )
    return dict(text)


def _token_ids(block: pd.DataFrame, modality: str, tokenizer: str, length: int) -> np.ndarray:
    """Token ids ``[N, length]`` (float64) of one text column; NaN rows where it is missing."""
    import pandas as pd

    from mlmm.nn.backbones import TEXT_TOKENIZERS

    column = block.columns[0]
    values = block.iloc[:, 0].astype(object).to_numpy()
    bad = [v for v in values if not isinstance(v, str) and not pd.isna(v)]
    if bad:
        raise MlmmError(
            f"text column {column!r} (modality {modality!r}) holds {len(bad)} non-text value(s) "
            f"such as {bad[0]!r}; give strings, and None or NaN where the text is missing"
        )
    present = np.array([isinstance(v, str) and bool(v.strip()) for v in values], dtype=bool)
    out = np.full((len(values), length), np.nan)
    if present.any():
        ids = TEXT_TOKENIZERS[tokenizer][1]([str(v) for v in values[present]], length)
        out[present] = np.asarray(ids, dtype=np.float64)
    return out


def _build(
    inputs: Mapping[str, Any],
    targets: Any,
    observed: Any,
    task: TaskSpec | str | None,
    kinds: Mapping[str, str] | None,
    name: str,
    allow_empty: bool,
    partial: str,
    row_labels: np.ndarray | None,
    meta: dict[str, Any],
    standardize: Mapping[str, bool] | None = None,
) -> MultimodalDataset:
    if partial not in _PARTIAL_POLICIES:
        raise MlmmError(f"partial must be one of {list(_PARTIAL_POLICIES)}, got {partial!r}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise MlmmError(
            "inputs must be a non-empty dict of modality name -> array, "
            f"got {type(inputs).__name__}"
        )
    arrays = {str(k): _as_numeric(str(k), v) for k, v in inputs.items()}
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise MlmmError(f"every modality needs the same number of rows (samples), got {sizes}")
    n = next(iter(sizes.values()))
    if n == 0:
        raise MlmmError(
            f"the inputs have 0 rows (shapes { ({k: v.shape for k, v in arrays.items()}) }); "
            "pass at least one sample"
        )

    for option, value, example in (
        ("kinds", kinds, "{'signal': 'sequence'}"),
        ("standardize", standardize, "{'text': False}"),
    ):  # standardize=False was read as {} and every modality standardised silently
        if value is not None and not isinstance(value, Mapping):
            raise MlmmError(
                f"{option} must be a dict of modality name -> value, e.g. {example}, got {value!r}"
            )
    kinds, standardize = dict(kinds or {}), dict(standardize or {})
    for key in kinds:
        if key not in arrays:
            raise unknown_name_error("modality in kinds", key, arrays)
    for key in standardize:
        if key not in arrays:
            raise unknown_name_error("modality in standardize", key, arrays)
    specs = []
    for modality, arr in arrays.items():
        if modality in kinds:
            kind = kinds[modality]
        elif arr.ndim - 1 in _KIND_BY_RANK:
            kind = _KIND_BY_RANK[arr.ndim - 1]
        else:
            raise MlmmError(
                f"modality {modality!r} has shape {arr.shape}; expected (N, D) for a vector, "
                "(N, T, C) for a sequence or (N, C, H, W) for an image"
                + (" (reshape a 1-D array to (N, 1))" if arr.ndim == 1 else "")
            )
        specs.append(ModalitySpec(modality, kind, arr.shape[1:], standardize.get(modality, True)))

    encoded, task_spec = _encode_targets(targets, task)
    if len(encoded) != n:
        raise MlmmError(f"targets has {len(encoded)} values but the inputs have {n} rows")

    names = list(arrays)
    present = as_observed(observed, n, names)

    def label(rows: np.ndarray) -> list[Any]:
        first = rows[:5]
        return (row_labels[first] if row_labels is not None else first).tolist()

    partial_rows: dict[str, int] = {}
    for j, modality in enumerate(names):
        arr = arrays[modality]
        if not np.issubdtype(arr.dtype, np.floating):
            continue  # integers cannot hold NaN
        nan = np.isnan(arr.reshape(n, -1))  # [N, F]
        all_nan, any_nan = nan.all(axis=1), nan.any(axis=1)
        if observed is None:
            present[:, j] &= ~all_nan
        else:
            contradiction = np.flatnonzero(present[:, j] & all_nan)
            if len(contradiction):
                raise MlmmError(
                    f"observed marks modality {modality!r} present in {len(contradiction)} row(s) "
                    f"that are entirely NaN (first: {label(contradiction)}); mark them absent in "
                    "observed, or pass observed=None to infer presence from NaN"
                )
        rows = np.flatnonzero(present[:, j] & any_nan & ~all_nan)
        if not len(rows):
            continue
        partial_rows[modality] = len(rows)
        if partial == "error":
            raise MlmmError(
                f"modality {modality!r} has {len(rows)} row(s) that are partly NaN (first: "
                f"{label(rows)}); choose partial='missing' to treat the modality as absent in "
                "those rows, or partial='impute' to fill the NaN with column means (computed on "
                "this data: impute after splitting or it leaks), or clean the data first"
            )
        if partial == "missing":
            present[rows, j] = False
        else:
            arrays[modality] = _impute(modality, arr, present[:, j])
    meta = {**meta, "partial": partial, "partial_rows": partial_rows}
    return MultimodalDataset(
        specs=specs,
        task=task_spec,
        inputs=arrays,
        targets=encoded,
        observed=present,
        name=name,
        allow_empty=allow_empty,
        meta=meta,
    )


def _check_flag(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise MlmmError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _as_numeric(modality: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise MlmmError(
            f"Complex data not supported: modality {modality!r} holds complex numbers, which "
            f"would lose their imaginary part (dtype {arr.dtype}); pass real features, e.g. "
            "np.stack([x.real, x.imag], -1)"
        )
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        return arr
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        try:
            return arr.astype(np.float64)
        except np.exceptions.ComplexWarning:
            complex_objects = True
        except (TypeError, ValueError):
            complex_objects = arr.dtype == object and any(isinstance(v, complex) for v in arr.flat)
    if complex_objects:
        raise MlmmError(
            f"Complex data not supported: modality {modality!r} holds complex numbers, which "
            "would lose their imaginary part; pass real features, e.g. "
            "np.stack([x.real, x.imag], -1)"
        )
    raise MlmmError(
        f"modality {modality!r} must hold numbers (NaN for missing), got dtype {arr.dtype}; "
        "encode non-numeric features first"
    )


def _impute(modality: str, arr: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Fill NaN entries of present rows with the per-entry mean over present rows."""
    arr = arr.astype(np.float64, copy=True)
    flat = arr.reshape(len(arr), -1)  # [N, F], a view of arr
    rows = flat[present]  # [N_present, F]
    observed_count = (~np.isnan(rows)).sum(axis=0)  # [F]
    empty = np.flatnonzero(observed_count == 0)
    if len(empty):
        raise MlmmError(
            f"cannot impute modality {modality!r}: feature(s) {empty[:5].tolist()} are NaN in "
            "every present row; use partial='missing' or drop those features"
        )
    means = np.nansum(rows, axis=0) / observed_count  # [F]
    filled = np.where(np.isnan(rows), means, rows)
    flat[present] = filled
    return arr


def _encode_targets(targets: Any, task: TaskSpec | str | None) -> tuple[np.ndarray, TaskSpec]:
    """Encode ``targets`` and return them with the (inferred or given) ``TaskSpec``."""
    if isinstance(task, str):
        if task not in TASK_KINDS:
            raise MlmmError(
                f"task must be 'classification' or 'regression' (or 'multilabel' with a 0/1 "
                f"label matrix), got {task!r}"
            )
    elif task is not None and not isinstance(task, TaskSpec):
        raise MlmmError(f"task must be a TaskSpec or one of {list(TASK_KINDS)}, got {task!r}")
    kind = task if isinstance(task, str) else (task.kind if task is not None else None)
    if kind == "multilabel":  # a multi-hot [N, L] matrix, checked by MultimodalDataset
        y = np.asarray(targets)
        if isinstance(task, TaskSpec):
            return y, task
        if y.ndim != 2 or y.shape[1] < 2:
            raise MlmmError(
                f"multilabel targets must be a 0/1 matrix [n_samples, n_labels >= 2], got shape "
                f"{y.shape}"
            )
        return y, TaskSpec("multilabel", n_labels=y.shape[1])

    y = np.asarray(targets)
    if y.ndim != 1:
        raise MlmmError(f"targets must be 1-D with one value per sample, got shape {y.shape}")
    if y.dtype == bool:
        y = y.astype(np.int64)

    if y.dtype.kind in "OUS":
        missing = np.array([v is None or (isinstance(v, float) and v != v) for v in y], dtype=bool)
        if missing.any():
            rows = np.flatnonzero(missing)
            raise MlmmError(
                f"targets has {len(rows)} missing value(s) (first rows: {rows[:5].tolist()}); "
                "drop those samples"
            )
        if all(isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in y):
            return _encode_labels(y, task, kind)
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise MlmmError(
                "targets mix numbers and other objects; pass all labels as strings or all as "
                "numbers"
            ) from None

    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise MlmmError(f"targets must be numbers or strings, got dtype {y.dtype}")
    values = y.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise MlmmError(
            f"targets has {len(bad)} missing or infinite value(s) (first rows: "
            f"{bad[:5].tolist()}); drop those samples"
        )
    integral = bool((values == np.round(values)).all())
    regression = kind == "regression" or (kind is None and not integral)
    if regression and np.abs(values).max() > _FLOAT32_MAX:
        raise MlmmError(
            f"regression targets reach {np.abs(values).max():.3g}, too large for float32 "
            "(+-3.4e38); rescale them, e.g. fit on y / 1e30 and multiply the predictions back"
        )
    if kind == "regression":
        return values.astype(np.float32), TaskSpec("regression")
    if kind is None and not integral:
        return values.astype(np.float32), TaskSpec("regression")
    if not integral:
        raise MlmmError(
            "classification targets must be integer labels or strings, got non-integer numbers; "
            "pass task='regression' for a numeric target"
        )
    labels = values.astype(np.int64)
    if isinstance(task, TaskSpec):
        return labels, task  # range checked by MultimodalDataset against task.n_classes
    if labels.min() < 0:
        raise MlmmError(
            f"integer class labels must be >= 0, got {labels.min()}; shift them or pass them "
            "as strings to have them encoded"
        )
    n_classes = int(labels.max()) + 1
    n_seen = len(np.unique(labels))
    if n_classes > max(2 * n_seen, _MAX_UNSEEN_CLASSES):  # labels used as indices: allocation
        raise MlmmError(
            f"integer labels are class indices 0..K-1, so the largest label {labels.max()} "
            f"implies {n_classes} classes but only {n_seen} are seen; remap them with "
            "np.unique(y, return_inverse=True) or pass them as strings"
        )
    if n_seen < 2:  # labels all 1 are one class, not a 2-class task with class 0 unseen
        raise MlmmError(
            f"every target is {labels[0]}, so there is only one class; classification needs at "
            "least 2 (pass task='regression' for a numeric target)"
        )
    return labels, TaskSpec("classification", n_classes)


def _encode_labels(
    y: np.ndarray, task: TaskSpec | str | None, kind: str | None
) -> tuple[np.ndarray, TaskSpec]:
    """Encode string labels as ``0..K-1`` in sorted order (or ``task.class_names`` order)."""
    if kind == "regression":
        raise MlmmError("regression targets must be numbers, got string labels")
    labels = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in y])
    found = np.unique(labels)
    if isinstance(task, TaskSpec) and task.class_names:
        classes = np.asarray(task.class_names)
        unknown = sorted(str(label) for label in set(found) - set(classes))
        if unknown:
            raise MlmmError(
                f"targets contain label(s) {unknown[:5]} not in task.class_names "
                f"{list(task.class_names)}"
            )
        order = np.argsort(classes)
        codes = order[np.searchsorted(classes[order], labels)]
        return codes.astype(np.int64), task
    if len(found) < 2:
        raise MlmmError(
            f"targets hold a single label {found.tolist()}; classification needs at least 2"
        )
    if isinstance(task, TaskSpec) and task.n_classes != len(found):
        raise MlmmError(
            f"task has n_classes={task.n_classes} but the targets hold {len(found)} labels "
            f"{found[:10].tolist()}; fix n_classes or give class_names"
        )
    codes = np.searchsorted(found, labels)
    return codes.astype(np.int64), TaskSpec("classification", len(found), tuple(found))
