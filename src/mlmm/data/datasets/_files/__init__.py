"""Compact data files shipped with mlmm (sources and licences in ``ATTRIBUTION.md``).

The ``.npz`` archives are written by ``tools/build_builtin_data.py``; the loaders in
``mlmm.data.datasets`` read them only through :func:`read_npz`.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from mlmm.errors import MlmmError

__all__ = ["read_npz"]


def read_npz(filename: str) -> dict[str, np.ndarray]:
    """The arrays of the shipped archive ``filename`` (read-only, cached per process).

    Parameters
    ----------
    filename : str
        Name of a file in this folder, e.g. ``"handwritten.npz"``.

    Returns
    -------
    dict of str to ndarray
        Read-only arrays; copy before changing them (``MultimodalDataset`` copies anyway).
    """
    return dict(_read_cached(filename))


@functools.cache
def _read_cached(filename: str) -> tuple[tuple[str, np.ndarray], ...]:
    resource = resources.files(__name__).joinpath(filename)
    if not resource.is_file():
        raise MlmmError(
            f"built-in data file {filename!r} is missing from the installed mlmm package; "
            "reinstall mlmm (or, in a source checkout, run tools/build_builtin_data.py)"
        )
    with resources.as_file(resource) as path, np.load(path, allow_pickle=False) as archive:
        arrays = []
        for key in archive.files:
            value = archive[key]
            value.setflags(write=False)
            arrays.append((key, value))
    return tuple(arrays)
