"""Turn user input (a dict of arrays, a DataFrame, a 2-D array) into per-modality arrays.

Shared by the scikit-learn estimators (:mod:`mlmm.estimator`) and
:meth:`mlmm.TrainedModel.predict`, so both accept the same forms with the same errors: dict
keys in any order, an omitted modality absent in every sample, an entirely NaN row absent in
that sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from mlmm.errors import SHOWN_COLUMNS, MlmmError, unknown_name_error


class MultimodalArray:
    """A dict of per-modality arrays that scikit-learn can index along samples.

    ``MultimodalArray({"img": A, "txt": B})[idx]`` selects the same rows of every array, so
    ``cross_val_score`` and friends can split it.

    Examples
    --------
    >>> import numpy as np
    >>> X = MultimodalArray({"a": np.zeros((5, 2)), "b": np.ones((5, 3))})
    >>> X.shape, X[[0, 2]]["b"].shape
    ((5,), (2, 3))
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        arrays = {k: np.asarray(v) for k, v in data.items()}
        if not arrays:
            raise MlmmError("MultimodalArray needs at least one modality")
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise MlmmError(f"every modality needs the same number of samples, got {lengths}")
        self.data = arrays

    @property
    def shape(self) -> tuple[int]:
        return (len(next(iter(self.data.values()))),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.data[key]
        return MultimodalArray({k: v[key] for k, v in self.data.items()})

    def keys(self):
        return self.data.keys()

    def __repr__(self) -> str:
        return f"MultimodalArray({', '.join(f'{k}{list(v.shape)}' for k, v in self.data.items())})"


_PLAIN_MODALITY = "x"  # the one modality of a plain 2-D array or DataFrame without ``modalities``


@dataclass(frozen=True)
class _Layout:
    """How ``X`` was given: a dict of modalities, or a table cut into modalities."""

    kind: str  # "dict" or "table"
    n_features: int
    feature_names: np.ndarray | None = None


def as_sample_arrays(X: Any, modalities: Mapping[str, Any] | None) -> tuple[dict, _Layout]:
    """Per-modality numeric arrays from any accepted form of ``X``, and how it was given."""
    arrays, layout = _split_modalities(X, modalities)
    arrays = _as_numbers(arrays)
    _check_features(arrays)
    return arrays, layout


def _split_modalities(X: Any, modalities: Mapping[str, Any] | None) -> tuple[dict, _Layout]:
    """Per-modality arrays (dtype untouched) from any accepted form of ``X``."""
    if X is None:
        raise MlmmError("X is None; pass a dict of per-modality arrays, a DataFrame or a 2-D array")
    if sparse.issparse(X):
        raise MlmmError(
            f"X is a sparse {type(X).__name__}: sparse input is not supported; pass X.toarray()"
        )
    if isinstance(X, (MultimodalArray, Mapping)):
        data = X.data if isinstance(X, MultimodalArray) else X
        if not data:
            raise MlmmError("X is an empty dict; give one array per modality")
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
        n_features = sum(int(np.prod(v.shape[1:], dtype=np.int64)) for v in arrays.values())
        return arrays, _Layout("dict", n_features)
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # a pandas DataFrame
        columns = list(X.columns)
        names = (
            np.asarray(columns, dtype=object) if all(isinstance(c, str) for c in columns) else None
        )
        if modalities is None:
            return {_PLAIN_MODALITY: X.to_numpy()}, _Layout("table", len(columns), names)
        arrays = {}
        for name, cols in _check_mapping(modalities).items():
            unknown = [c for c in cols if c not in X.columns]
            if unknown:
                raise unknown_name_error(
                    f"column (in modalities[{name!r}])",
                    str(unknown[0]),
                    [str(c) for c in columns],
                    SHOWN_COLUMNS,
                )
            arrays[name] = X[list(cols)].to_numpy()
        return arrays, _Layout("table", len(columns), names)
    table = np.asarray(X)
    if table.ndim != 2:
        raise MlmmError(
            f"a plain array X must be 2-D (samples, features), got shape {table.shape}"
            + (
                "; Reshape your data with X.reshape(-1, 1) for one feature"
                if table.ndim == 1
                else ""
            )
            + "; or pass a dict of per-modality arrays"
        )
    if modalities is None:
        return {_PLAIN_MODALITY: table}, _Layout("table", table.shape[1])
    arrays = {}
    for name, cols in _check_mapping(modalities).items():
        positions = _column_positions(name, cols, table.shape[1])
        arrays[name] = table[:, positions]
    return arrays, _Layout("table", table.shape[1])


def _check_features(arrays: dict[str, np.ndarray]) -> None:
    """Every modality has at least one feature (scikit-learn's wording)."""
    for name, arr in arrays.items():
        if arr.ndim >= 2 and int(np.prod(arr.shape[1:])) == 0:
            raise MlmmError(
                f"modality {name!r} has 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                "is required; give every modality at least one column"
            )


def _check_mapping(modalities: Any) -> dict[str, list[Any]]:
    """``modalities``: a non-empty dict of modality name -> list of columns."""
    if not isinstance(modalities, Mapping) or not modalities:
        raise MlmmError(
            "modalities must be a dict of modality name -> list of columns, e.g. "
            f"{{'a': [0, 1], 'b': [2]}}, got {modalities!r}"
        )
    out = {}
    for name, cols in modalities.items():
        if isinstance(cols, (str, int, np.integer)) or not isinstance(
            cols, (list, tuple, range, np.ndarray)
        ):
            raise MlmmError(
                f"modalities[{name!r}] must be a list of columns, got {cols!r}; write [{cols!r}]"
            )
        if len(cols) == 0:
            raise MlmmError(f"modalities[{name!r}] has no columns; give it at least one")
        out[str(name)] = list(cols)
    return out


def _column_positions(name: str, cols: list[Any], n_columns: int) -> list[int]:
    """Integer column positions of a plain array; names or out-of-range positions raise."""
    if any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) for c in cols):
        raise MlmmError(
            f"modalities[{name!r}] names columns {cols[:3]!r}, but X is a plain array without "
            "column names (a StandardScaler or other transformer in a Pipeline returns one); "
            "give column positions instead (e.g. {'a': [0, 1, 2]}), or keep the names with "
            "pipeline.set_output(transform='pandas')"
        )
    outside = [int(c) for c in cols if not -n_columns <= int(c) < n_columns]
    if outside:
        raise MlmmError(
            f"modalities[{name!r}] uses column {outside[0]}, but X has {n_columns} columns "
            f"(positions 0..{n_columns - 1}); fix the mapping or pass all the columns"
        )
    return [int(c) for c in cols]


def _as_numbers(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """Object arrays of numbers become float; anything else that is not a number raises."""
    out = {}
    for name, arr in arrays.items():
        if arr.dtype == object:
            try:
                arr = arr.astype(np.float64)
            except TypeError as err:  # a TypeError, as scikit-learn's check_array raises
                raise _InputTypeError(
                    f"modality {name!r} must hold numbers ({err}); encode non-numeric features "
                    "first"
                ) from None
            except ValueError:
                pass  # strings that are not numbers: from_arrays names them
        out[name] = arr
    return out


class _InputTypeError(MlmmError, TypeError):
    """A feature of the wrong type (also a ``TypeError``, as in scikit-learn)."""


def align_modalities(
    arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]], where: str
) -> dict[str, np.ndarray]:
    """``arrays`` in the order of ``shapes``: unknown names raise, omitted ones are absent.

    Parameters
    ----------
    arrays : dict of str to ndarray
        Per-modality arrays ``(N, *shape)`` as given (keys in any order, some may be left out).
    shapes : dict of str to tuple of int
        Every modality's per-sample shape, in the model's order.
    where : str
        Where ``shapes`` come from, for the message (``"fit"``, ``"the model"``).

    Returns
    -------
    dict of str to ndarray
        One array per modality of ``shapes``; a modality left out is all NaN (absent).
    """
    unknown = [k for k in arrays if k not in shapes]
    if unknown:
        raise unknown_name_error("modality", unknown[0], list(shapes))
    n = len(next(iter(arrays.values())))
    out = {}
    for key, shape in shapes.items():
        arr = arrays.get(key)
        if arr is None:
            arr = np.full((n, *shape), np.nan)
        elif tuple(arr.shape[1:]) != tuple(shape) or len(arr) != n:
            one = tuple(arr.shape) == tuple(shape)  # one sample without its sample axis
            hint = "; for one sample, give it a leading axis (x[None])" if one else ""
            raise MlmmError(
                f"modality {key!r} has shape {arr.shape}, expected ({n}, "
                f"{', '.join(map(str, shape))}) as in {where}{hint}"
            )
        out[key] = arr
    return out


def default_columns(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, list[str]]:
    """Table columns of modalities given no names: ``NAME.0``, ``NAME.1``... (row-major)."""
    return {
        name: [f"{name}.{j}" for j in range(int(np.prod(shape, dtype=np.int64)))]
        for name, shape in shapes.items()
    }


def table_modalities(
    columns_in: list[str],
    take: Callable[[list[str]], np.ndarray],
    columns: Mapping[str, list[str]],
    shapes: Mapping[str, tuple[int, ...]],
    ignore: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Cut a table into modalities by column name; missing or extra columns raise in one line.

    A modality whose columns are all left out of the table is absent in every row (as an
    omitted dict key); a modality with only some of its columns is an error.

    Parameters
    ----------
    columns_in : list of str
        The table's column names.
    take : callable
        ``take(names)`` returns those columns as a float array ``(N, len(names))``.
    columns : dict of str to list of str
        Modality name -> its columns, row-major over the modality's shape.
    shapes : dict of str to tuple of int
        Per-sample shape of each modality.
    ignore : tuple of str
        Columns that may be present and are not features (the training target).
    """
    position = {c: i for i, c in enumerate(columns_in)}
    known = {c for cols in columns.values() for c in cols}
    extra = [c for c in columns_in if c not in known and c not in ignore]
    partly = {
        name: [c for c in cols if c not in position]
        for name, cols in columns.items()
        if any(c in position for c in cols) and not all(c in position for c in cols)
    }
    if extra or partly or not any(c in position for c in known):
        missing = [c for cols in partly.values() for c in cols]
        if not any(c in position for c in known):
            missing = sorted(known)
        raise MlmmError(
            "the columns do not match the model: "
            + "; ".join(
                part
                for part in (
                    f"missing {_shown(missing)}" if missing else "",
                    f"extra {_shown(extra)}" if extra else "",
                )
                if part
            )
            + "; give the model's columns (leave out every column of a modality to mark it "
            "absent)"
        )
    out = {}
    for name, cols in columns.items():
        if cols[0] in position:
            block = np.asarray(take(list(cols)), dtype=np.float64)  # [N, F]
            out[name] = block.reshape(len(block), *shapes[name])
    return out


def _shown(names: list[str], limit: int = 5) -> str:
    head = ", ".join(repr(n) for n in names[:limit])
    return f"{len(names)} column(s) ({head}{', ...' if len(names) > limit else ''})"
