"""A user's own table (CSV or Parquet) for the command line: ``mlmm train --data FILE``.

One row per sample; ``--modality NAME=COL1,COL2`` cuts the feature columns into modalities (a
column may be a shell-style pattern, ``audio=a_*``, :func:`resolve_modalities`) and
``--target COLUMN`` names the label or value. A modality whose columns are all empty (NaN) in a
row is absent in that row, as for any DataFrame given to the estimators (:mod:`mlmm.data.inputs`):
training goes through :class:`mlmm.MissingModalityClassifier` / :class:`mlmm.MissingModalityRegressor`,
and tuning through the same conversion (:func:`table_dataset`), so the table, the estimator and the
saved model read a row in one way. The model records the modalities' columns and the target column,
so ``mlmm evaluate --data`` and ``mlmm predict`` take a table laid out the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlmm.errors import SHOWN_COLUMNS, MlmmError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trained import TrainedModel

__all__ = [
    "TABLE_SUFFIXES",
    "fit_table",
    "infer_task",
    "parse_modalities",
    "read_table",
    "resolve_modalities",
    "table_dataset",
    "table_test_dataset",
]

#: File types ``--data`` reads.
TABLE_SUFFIXES = (".csv", ".parquet")
_TASKS = ("classification", "regression")


def read_table(path: str | Path, option: str = "--data") -> pd.DataFrame:
    """Read a ``.csv`` or ``.parquet`` table (the reader of ``mlmm predict``); one-line errors.

    Parameters
    ----------
    path : str or Path
        The table. Empty cells (CSV) or nulls (Parquet) are NaN.
    option : str
        The command-line option that named it, for the messages.

    Returns
    -------
    pandas.DataFrame
    """
    from mlmm.serve.predict import read_input

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise MlmmError(
            f"{option} {str(path)!r} has suffix {suffix or '(none)'!r}; give a .csv or .parquet "
            "table (one row per sample)"
        )
    if not path.is_file():
        raise MlmmError(f"{option} {str(path)!r} is not a file; give the path of your table")
    frame = read_input(path)
    if len(frame) == 0:
        raise MlmmError(f"{option} {str(path)!r} has no rows; give at least one sample per row")
    return frame


def parse_modalities(items: Sequence[str] | None) -> dict[str, list[str]]:
    """``["img=p1,p2", "txt=w_*"]`` (``--modality``, repeatable) → ``{"img": ["p1", "p2"],
    "txt": ["w_*"]}``: the syntax only; :func:`resolve_modalities` matches the columns.

    Parameters
    ----------
    items : list of str
        Each ``NAME=SPEC``, SPEC a comma-separated list of column names and shell-style
        patterns (``a_*``); spaces around names are dropped.

    Returns
    -------
    dict of str to list of str
        Modality name -> its column names and patterns, in the order given.
    """
    if not items:
        raise MlmmError(
            "--data needs the modalities: give --modality NAME=COLUMNS once per modality, "
            "COLUMNS a comma list of names or patterns (e.g. --modality vitals=hr,bp "
            "--modality audio='a_*')"
        )
    out: dict[str, list[str]] = {}
    for item in items:
        name, sep, columns = item.partition("=")
        name = name.strip()
        cols = [c.strip() for c in columns.split(",")]
        if not sep or not name or not any(cols):
            raise MlmmError(
                f"--modality is written NAME=COL1,COL2,..., got {item!r} "
                "(e.g. --modality vitals=hr,bp, or --modality audio='a_*' for a pattern)"
            )
        if "" in cols:
            raise MlmmError(
                f"--modality {item!r} has an empty column name; separate the columns with single "
                "commas"
            )
        if name in out:
            raise MlmmError(
                f"--modality {name} is given twice; list all of its columns in one --modality"
            )
        out[name] = cols
    return out


def _is_pattern(item: str, names: Sequence[str]) -> bool:
    """A shell-style pattern, unless the table has a column of exactly that name."""
    return any(c in item for c in "*?[") and item not in names


def _close_columns(pattern: str, names: Sequence[str], shown: int = 5) -> str:
    """`` (close: 'A_1', 'A_2')`` for a pattern that matched nothing: the columns it matches
    ignoring case, else those sharing the longest start with it, else those closest to its
    literal part; a few of the table's columns when none is close (a wide table's full list
    would not fit one line)."""
    import difflib
    import fnmatch

    close = [n for n in names if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
    start = re.split(r"[*?\[]", pattern, maxsplit=1)[0].lower()  # the part before a wildcard
    while not close and start:
        close = [n for n in names if n.lower().startswith(start)]
        start = start[:-1]
    if not close:
        literal = re.sub(r"[*?\[\]]", "", pattern)
        close = difflib.get_close_matches(literal, names, n=shown, cutoff=0.5)
    if close:
        more = f", ... {len(close) - shown} more" if len(close) > shown else ""
        return f" (close: {', '.join(map(repr, close[:shown]))}{more})"
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return f" (the table's columns: {', '.join(map(repr, names[:shown]))}{more})"


def resolve_modalities(
    frame: pd.DataFrame, specs: Mapping[str, Sequence[str]], target: str | None
) -> dict[str, list[str]]:
    """Expand the patterns of :func:`parse_modalities` against a table's columns.

    A column name stands for itself; an item holding ``*``, ``?`` or ``[...]`` is a
    case-sensitive shell-style pattern (:func:`fnmatch.fnmatchcase`; ``a_*``, ``x[0-9]``),
    replaced by the columns it matches in the table's order. A pattern that matches nothing,
    matches the target, or matches a column another item also gives, is one line naming the
    pattern. Plain names are checked by :func:`check_columns`.

    Parameters
    ----------
    frame : DataFrame
    specs : dict of str to list of str
        Modality name -> its column names and patterns.
    target : str or None

    Returns
    -------
    dict of str to list of str
        Modality name -> its columns: the items in the order given, a pattern's matches in
        the table's order. The model records these, so a later table is read by column name.
    """
    import fnmatch

    names = [str(c) for c in frame.columns]
    resolved: dict[str, list[str]] = {}
    given_by: dict[str, list[str]] = {}  # column -> the NAME=ITEM that gave it
    patterns: set[str] = set()  # the NAME=ITEM that are patterns
    for modality, items in specs.items():
        columns: list[str] = []
        for item in items:
            if not _is_pattern(item, names):
                columns.append(item)
                given_by.setdefault(item, []).append(f"{modality}={item}")
                continue
            patterns.add(f"{modality}={item}")
            # a duplicated column name is matched once: check_columns names the duplicate
            matches = list(dict.fromkeys(n for n in names if fnmatch.fnmatchcase(n, item)))
            if not matches:
                raise MlmmError(
                    f"--modality {modality}={item} matches no column of the table"
                    f"{_close_columns(item, names)}; patterns are case-sensitive (*, ?, [0-9])"
                )
            if target in matches:
                raise MlmmError(
                    f"--modality {modality}={item} matches the --target column {target!r}; "
                    "narrow the pattern so it leaves the target out"
                )
            columns += matches
            for column in matches:
                given_by.setdefault(column, []).append(f"{modality}={item}")
        resolved[modality] = columns
    for column, sources in given_by.items():
        named = [s for s in sources if s in patterns]
        if len(sources) > 1 and named:
            # two of them in the order given, one a pattern (the one to narrow)
            first, second = sources[:2] if set(sources[:2]) & patterns else (sources[0], named[0])
            raise MlmmError(
                f"column {column!r} is matched by --modality {first} and by --modality "
                f"{second}; give each column to one modality (narrow a pattern)"
            )
    return resolved


def check_columns(
    frame: pd.DataFrame, modalities: Mapping[str, Sequence[str]], target: str | None
) -> None:
    """One-line errors for a table's layout: unknown columns (with close matches), a column in
    two modalities, the target used as a feature (the checks of
    :func:`mlmm.data.from_dataframe`, in the options' words), a feature column that is not
    numeric.

    Parameters
    ----------
    frame : DataFrame
    modalities : dict of str to list of str
    target : str or None
        The target column; None when the table is read without one.
    """
    import pandas as pd

    from mlmm.data.datasets.frames import check_frame_columns

    check_frame_columns(
        frame,
        modalities,
        target,
        target_words="--target",
        modality_words=lambda modality: f"--modality {modality}",
    )
    owner = {column: modality for modality, columns in modalities.items() for column in columns}
    for column, modality in owner.items():
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype
        ):
            continue
        text = values[values.notna()]
        if not len(text):  # empty in every row (Parquet's null type): the modality is absent
            continue
        example = f" (e.g. {str(text.iloc[0])[:20]!r} in row {text.index[0]})"
        raise MlmmError(
            f"column {column!r} of --modality {modality} is not numeric{example}; encode it as "
            "numbers (e.g. one column per category) or leave it out of --modality"
        )


def infer_task(values: pd.Series, task: str | None = None) -> str:
    """``"classification"`` or ``"regression"`` for a target column.

    Parameters
    ----------
    values : Series
        The target column.
    task : {"classification", "regression"}, optional
        Given by the user (checked against the column); None infers it: numbers with a
        fractional part give regression, anything else (whole numbers, text, booleans)
        classification.

    Returns
    -------
    str
    """
    import pandas as pd

    name = values.name
    if task is not None and task not in _TASKS:
        raise MlmmError(f"--task must be classification or regression, got {task!r}")
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )
    known = values[values.notna()]
    whole = numeric and bool((known.to_numpy(dtype=np.float64) % 1 == 0).all())
    if task == "regression" and not numeric:
        example = f" (e.g. {str(known.iloc[0])[:20]!r})" if len(known) else ""
        kind = "booleans" if pd.api.types.is_bool_dtype(values.dtype) else "text"
        raise MlmmError(
            f"--task regression needs a numeric target, but column {name!r} holds {kind}"
            f"{example}; give --task classification, or encode the target as numbers"
        )
    if task == "classification" and numeric and not whole:
        raise MlmmError(
            f"--task classification needs class labels, but column {name!r} holds numbers with "
            "a fractional part; give --task regression, or bin the target into classes"
        )
    if task is None:
        task = "regression" if numeric and not whole else "classification"
    if task == "classification":
        labels = known.unique()
        if len(labels) < 2:
            shown = f" ({labels[0]!r})" if len(labels) else ""
            raise MlmmError(
                f"target column {name!r} holds {len(labels)} class{shown}; classification needs "
                "two or more (or give --task regression for a numeric target)"
            )
    return task


def check_partial(
    frame: pd.DataFrame, modalities: Mapping[str, Sequence[str]], partial: str, fix: str
) -> None:
    """Refuse, in the command line's words, a row where only some of a modality's columns are
    empty when ``partial`` is ``"error"``; the rule is the estimators' (:func:`_nan_rows`).

    Parameters
    ----------
    frame : DataFrame
    modalities : dict of str to list of str
    partial : {"error", "missing"}
    fix : str
        What the user can do about it, ending the message.
    """
    from mlmm.estimator import _nan_rows

    if partial not in ("error", "missing"):
        raise MlmmError(f"--partial must be error or missing, got {partial!r}")
    if partial != "error":
        return
    columns = {m: [c for c in cols if c in frame.columns] for m, cols in modalities.items()}
    # NaN where a cell is empty, whatever the column holds: a text cell is not converted here
    # (reading the features names it in one line), only counted as filled
    arrays = {
        m: np.where(frame[cols].isna().to_numpy(), np.nan, 0.0)  # [N, F]
        for m, cols in columns.items()
        if cols
    }
    for modality, (_, part_nan) in _nan_rows(arrays).items():
        rows = np.flatnonzero(part_nan)
        if len(rows):
            raise MlmmError(
                f"modality {modality!r} has {len(rows)} row(s) where only some of its columns "
                f"are empty (first rows: {frame.index[rows[:5]].tolist()}); {fix}"
            )


def _check_some_modality(
    frame: pd.DataFrame, modalities: Mapping[str, Sequence[str]], partial: str
) -> None:
    """Refuse, in the command line's words, a training row where no modality is present (the
    estimators' message names their ``on_empty``, which ``--data`` does not take)."""
    absent = np.ones(len(frame), dtype=bool)
    for columns in modalities.values():
        empty = frame[list(columns)].isna().to_numpy()  # [N, F]
        absent &= empty.any(axis=1) if partial == "missing" else empty.all(axis=1)
    rows = np.flatnonzero(absent)
    if len(rows):
        what = "some" if partial == "missing" else "every"
        raise MlmmError(
            f"{len(rows)} row(s) have no modality present ({what} column of every --modality "
            f"empty; first rows: {frame.index[rows[:5]].tolist()}); drop them, they hold "
            "nothing to learn from"
        )


_TRAIN_FIX = (
    "fill them, or give --partial missing to count the modality absent in those rows "
    "(a modality is absent where all of its columns are empty)"
)


def _estimator(task: str):
    from mlmm.estimator import MissingModalityClassifier, MissingModalityRegressor

    return MissingModalityClassifier if task == "classification" else MissingModalityRegressor


def fit_table(
    frame: pd.DataFrame,
    modalities: Mapping[str, Sequence[str]],
    target: str,
    method: str,
    *,
    task: str | None = None,
    method_params: dict[str, Any] | None = None,
    missing: str = "none",
    seed: int = 0,
    partial: str = "error",
    trainer: Mapping[str, Any] | None = None,
    source: str = "table",
) -> TrainedModel:
    """Train ``method`` on a table, as :class:`mlmm.MissingModalityClassifier` (or the regressor)
    trains on a DataFrame: a seeded validation part of ``val_size`` (0.1) for early stopping
    (``method="auto"``: its inner cross-validation instead), missingness ``missing`` simulated
    on top of the table's own.

    Parameters
    ----------
    frame : DataFrame
        The training table.
    modalities : dict of str to list of str
        Modality name -> its columns.
    target : str
        The target column.
    method : str
        A registered method, or ``"auto"``.
    task : {"classification", "regression"}, optional
        Inferred by :func:`infer_task` when None.
    method_params : dict, optional
        The method's hyperparameters (``auto``: its options).
    missing : str
        Training missingness on top of the table's (the train side of ``TRAIN=>TEST``).
    seed : int
        Seeds the validation split, the masks and the training.
    partial : {"error", "missing"}
        A row where only some of a modality's columns are empty: refused, or the modality
        counted absent in it.
    trainer : dict, optional
        ``max_epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``device``, ``precision``,
        ``progress``, ``checkpoint_dir`` (the estimator's: the training resumes from it).
    source : str
        Where the table came from (the file name), recorded in ``info["data"]``.

    Returns
    -------
    TrainedModel
        With ``columns`` and ``target_column`` set, and ``info["data"]`` (source, target,
        task, seed, partial) for ``mlmm evaluate --data``.
    """
    from mlmm.data.missingness import parse_condition

    check_columns(frame, modalities, target)
    check_partial(frame, modalities, partial, _TRAIN_FIX)
    _check_some_modality(frame, modalities, partial)
    _check_target(frame[target])
    task = infer_task(frame[target], task)
    condition = parse_condition(missing)
    kwargs = {"verbose" if k == "progress" else k: v for k, v in (trainer or {}).items()}
    estimator = _estimator(task)(
        method=method,
        method_params=method_params,
        modalities={m: list(c) for m, c in modalities.items()},
        train_missing=condition.train.to_string(),
        random_state=seed,
        partial=partial,
        **kwargs,
    )
    # the other columns stay in X: fit records them as ignored, so a table laid out like this
    # one (an id column...) predicts as it is
    try:
        estimator.fit(frame.drop(columns=[target]), frame[target])
    except MlmmError as err:  # the estimator's advice (val_size=0) is not a CLI option
        counts = frame[target].value_counts()
        single = [str(c) for c in counts.index[counts < 2]]
        if task != "classification" or not single or "is split by class" not in str(err):
            raise
        raise MlmmError(
            f"class(es) {single[:5]} of target column {target!r} have a single row, but the "
            "part held out for early stopping is stratified and needs two rows of each class; "
            "drop those rows, add rows of those classes, or give --method auto (it "
            "cross-validates instead)"
        ) from None
    trained = estimator.trained_
    trained.target_column = target
    trained.info.update(
        {
            "data": {
                "source": source,
                "target": target,
                "task": task,
                "seed": seed,
                "partial": partial,
            },
            "missing": condition.train.to_string(),
        }
    )
    return trained


def table_dataset(
    frame: pd.DataFrame,
    modalities: Mapping[str, Sequence[str]],
    target: str,
    task: str | None = None,
    partial: str = "error",
    name: str = "table",
) -> MultimodalDataset:
    """A dataset from a table, converted as the estimators convert a DataFrame (``mlmm tune
    --data`` tunes on what ``mlmm train --data`` trains on).

    Parameters
    ----------
    frame : DataFrame
    modalities : dict of str to list of str
    target : str
    task : {"classification", "regression"}, optional
        Inferred by :func:`infer_task` when None.
    partial : {"error", "missing"}
    name : str
        The dataset's name.

    Returns
    -------
    MultimodalDataset
        Classes encoded as the classifier encodes them (sorted unique labels).
    """
    from mlmm.data.datasets.frames import from_arrays
    from mlmm.data.inputs import as_sample_arrays
    from mlmm.data.specs import TaskSpec
    from mlmm.estimator import _check_rows, _encode_classes

    check_columns(frame, modalities, target)
    check_partial(frame, modalities, partial, _TRAIN_FIX)
    _check_some_modality(frame, modalities, partial)
    _check_target(frame[target])
    task = infer_task(frame[target], task)
    mapping = {m: list(c) for m, c in modalities.items()}
    arrays, _ = as_sample_arrays(frame, mapping)
    _check_rows(arrays, partial, "error", False, "fit")
    if task == "classification":
        classes, targets = _encode_classes(frame[target].to_numpy())
        spec = TaskSpec("classification", len(classes), tuple(str(c) for c in classes))
    else:
        targets = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)
        spec = TaskSpec("regression")
    return from_arrays(arrays, targets, task=spec, name=name, partial=partial)


def _check_target(values: pd.Series) -> None:
    """One line naming the target column and its first rows that are empty (or infinite)."""
    import pandas as pd

    bad = values.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values):
        bad = bad | np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan))
    rows = np.flatnonzero(bad)
    if len(rows):
        raise MlmmError(
            f"target column {values.name!r} has {len(rows)} empty or infinite value(s) (first "
            f"rows: {values.index[rows[:5]].tolist()}); drop those rows"
        )


def table_test_dataset(
    trained: TrainedModel, frame: pd.DataFrame, partial: str | None = None
) -> MultimodalDataset:
    """A labelled table as a dataset for :func:`mlmm.evaluate`: the features read as the model
    reads a table to predict (:meth:`TrainedModel.as_dataset`), the target column encoded with
    the model's classes.

    Parameters
    ----------
    trained : TrainedModel
        A model trained on a table (``mlmm train --data``): it records its columns and target.
    frame : DataFrame
        Laid out as the training table (extra columns that training ignored may be there).
    partial : {"error", "missing"}, optional
        Default: the policy the model trained with.

    Returns
    -------
    MultimodalDataset
    """
    from mlmm.serve.predict import check_numbers

    data_info = trained.info.get("data")
    target = trained.target_column
    if not isinstance(data_info, dict) or target is None:
        raise MlmmError(
            "this model was not trained on a table (mlmm train --data), so it records no target "
            "column; evaluate it without --data (on its own test split)"
        )
    names = [str(c) for c in frame.columns]
    if target not in names:
        raise MlmmError(
            f"the table has no target column {target!r} (the model was trained with --target "
            f"{target}).{did_you_mean(target, names, SHOWN_COLUMNS)}"
        )
    check_numbers(trained, frame)  # text or booleans: one line, as mlmm predict says it
    partial = partial or data_info.get("partial", "error")
    fix = (
        "fill them, or train with --partial missing to count the modality absent there (this "
        "model was trained with --partial error, which refuses such rows)"
    )
    check_partial(frame, trained.table_columns, partial, fix)
    features = trained.as_dataset(frame, partial=partial)
    values = frame[target]
    _check_target(values)
    if trained.task.is_classification:
        targets = _class_codes(values, trained.classes_.tolist())
    else:
        targets = values.to_numpy(dtype=np.float32, na_value=np.nan)
    return replace(features, targets=targets)


def _class_codes(values: pd.Series, classes: list[Any]) -> np.ndarray:
    """Each label's index in the model's classes (the labels are known); an unseen label is one
    line."""
    numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes)

    def key(value: Any) -> Any:
        if numeric:
            try:
                return float(value)
            except (TypeError, ValueError):
                return str(value)
        return str(value)

    index = {key(c): i for i, c in enumerate(classes)}
    codes = [index.get(key(v), -1) for v in values.tolist()]
    unseen = sorted({str(v) for v, c in zip(values.tolist(), codes, strict=True) if c < 0})
    if unseen:
        raise MlmmError(
            f"target column {values.name!r} holds label(s) {unseen[:5]} the model never saw "
            f"(it knows {[str(c) for c in classes][:10]}); drop those rows or train on them"
        )
    return np.asarray(codes, dtype=np.int64)
