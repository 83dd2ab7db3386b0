"""MM-IMDb: movie posters and plots with their genres, from ``multimodal_imdb.hdf5``.

The Fuel-format file of Arevalo et al. holds, for N = 25,959 movies in the order train, dev,
test: ``features`` [N, 300] (mean word2vec of the plot), ``vgg_features`` [N, 4096] (VGG-16 on
the poster), ``images`` [N, 3, 256, 160] (int32, BGR, VGG-mean-subtracted), ``genres`` [N, 23]
(multi-hot), ``imdb_ids`` [N] (7-digit byte strings), and the split table in the root
attribute ``split``.

Reference: J. Arevalo, T. Solorio, M. Montes-y-Gómez, F. A. González, "Gated Multimodal Units
for Information Fusion", ICLR 2017 workshop (arXiv:1702.01992).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.formats._common import check_split, locate, require, verify, zero_blocks_absent
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error

__all__ = ["MMIMDB_FILE", "MMIMDB_GENRES", "load_mmimdb"]

MMIMDB_FILE = "multimodal_imdb.hdf5"
MMIMDB_GENRES = (
    "Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
    "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War", "History",
    "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir",
)  # fmt: skip
"""The 23 genres in column order (most frequent first), used when the file has no
``target_names`` attribute."""

SPLITS = ("train", "dev", "test")
_OFFICIAL_ROWS = {"train": (0, 15552), "dev": (15552, 18160), "test": (18160, 25959)}
_IMAGE_SOURCES = {"vgg": "vgg_features", "pixels": "images"}


@register_dataset(
    "mmimdb",
    description="MM-IMDb: poster + plot of 25,959 movies, 23 genres (multi-hot; one genre as "
    "the target) (needs files at ROOT: --dataset-param root=ROOT)",
    source="J. Arevalo et al., Gated Multimodal Units for Information Fusion, "
    "arXiv:1702.01992 (multimodal_imdb.hdf5)",
    license="IMDb data: non-commercial research use (see the MM-IMDb page)",
    needs_files=True,
    modalities="text, image",
    task="classification",
)
def load_mmimdb(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    genre: str = "Drama",
    image: str = "vgg",
    checksums: dict[str, str] | None = None,
) -> MultimodalDataset:
    """Load MM-IMDb from ``ROOT/multimodal_imdb.hdf5``.

    mlmm has no multi-label task yet, so the target is one genre against the rest (binary);
    the full multi-hot genre matrix is in ``meta["genres"]`` (``[N, 23]`` int8, columns
    ``meta["genre_names"]``) for your own multi-label training.

    Parameters
    ----------
    root : path
        Folder holding ``multimodal_imdb.hdf5``.
    split : {"train", "dev", "test"}, optional
        The official split, from the file's ``split`` attribute (rows 0-15,551, 15,552-18,159
        and 18,160-25,958 in the published file). None: all, with ``meta["official_split"]``.
    genre : str
        The genre predicted (class 1 = the movie has it).
    image : {"vgg", "pixels"}
        ``vgg``: the 4,096 VGG-16 features as a vector; ``pixels``: the poster as a
        ``(3, 256, 160)`` image as stored (BGR, mean-subtracted), 0.5 MB per movie in memory.
    checksums : dict of str to str, optional
        File name -> SHA-256 to check the file against.

    Returns
    -------
    MultimodalDataset
        ``text`` ``(300,)`` and ``image``; a block that is all zeros (a plot with no known
        word, a missing poster) is absent. ``meta`` holds ``imdb_ids`` (strings, leading
        zeros kept), ``genres``, ``genre_names`` and ``official_split``.
    """
    h5py = require("h5py", "reading MM-IMDb's multimodal_imdb.hdf5")
    check_split(split, SPLITS, "MM-IMDb")
    if image not in _IMAGE_SOURCES:
        raise unknown_name_error("MM-IMDb image source", str(image), _IMAGE_SOURCES)
    folder = locate(
        root,
        [MMIMDB_FILE],
        "MM-IMDb",
        where="get it from the MM-IMDb page of Arevalo et al. (gmu-mmimdb)",
    )
    path = folder / MMIMDB_FILE
    verify(path, "mmimdb", checksums)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise MlmmError(
            f"{path} is not a readable HDF5 file ({str(err).split(';')[0]}); it may be truncated "
            "or corrupt: fetch it again"
        ) from None
    with handle:
        image_key = _IMAGE_SOURCES[image]
        n = _check_layout(handle, path, image_key)
        names = _genre_names(handle["genres"])
        if genre not in names:
            raise unknown_name_error("MM-IMDb genre", str(genre), names)
        ranges = _split_rows(handle, path, n)
        chosen = [s for s in SPLITS if split in (None, s)]
        rows = [np.arange(*ranges[s]) for s in chosen]
        index = np.concatenate(rows)
        # contiguous slices: h5py reads only those rows, never the whole file
        text = np.concatenate([handle["features"][slice(*ranges[s])] for s in chosen])
        picture = np.concatenate([handle[image_key][slice(*ranges[s])] for s in chosen])
        genres = np.concatenate([handle["genres"][slice(*ranges[s])] for s in chosen])
        ids = np.concatenate([handle["imdb_ids"][slice(*ranges[s])] for s in chosen])
    official = np.concatenate([np.full(len(r), s) for r, s in zip(rows, chosen, strict=True)])
    if not np.isin(genres, (0, 1)).all():
        raise MlmmError(f"{path}: 'genres' holds values other than 0/1; expected multi-hot rows")
    inputs = {"text": text.astype(np.float32), "image": picture.astype(np.float32)}
    observed = zero_blocks_absent(inputs)
    keep = observed.any(axis=1)
    kind = "vector" if image == "vgg" else "image"
    column = names.index(genre)
    return MultimodalDataset(
        specs=[
            ModalitySpec("text", "vector", inputs["text"].shape[1:]),
            ModalitySpec("image", kind, inputs["image"].shape[1:]),
        ],
        task=TaskSpec("classification", 2, (f"not {genre}", genre)),
        inputs={k: v[keep] for k, v in inputs.items()},
        targets=genres[keep, column].astype(np.int64),
        observed=observed[keep],
        name="mmimdb",
        meta={
            "source": str(path),
            "imdb_ids": np.array([_text(v) for v in ids[keep]]),
            "genres": genres[keep].astype(np.int8),
            "genre_names": names,
            "official_split": official[keep],
            "rows": index[keep],
            "dropped_empty": int((~keep).sum()),
        },
    )


_EXPECTED = {
    "features": (2, (300,)),
    "vgg_features": (2, (4096,)),
    "images": (4, (3, 256, 160)),
    "genres": (2, None),
    "imdb_ids": (1, ()),
}


def _check_layout(handle, path: Path, image_key: str) -> int:
    missing = [k for k in ("features", image_key, "genres", "imdb_ids") if k not in handle]
    if missing:
        raise MlmmError(
            f"{path} has no dataset {', '.join(missing)}; expected the Fuel layout with "
            f"features, vgg_features, images, genres, imdb_ids (found {sorted(handle.keys())[:8]})"
        )
    n = handle["genres"].shape[0]
    for key in ("features", image_key, "genres", "imdb_ids"):
        ndim, tail = _EXPECTED[key]
        shape = handle[key].shape
        if len(shape) != ndim or shape[0] != n or (tail is not None and shape[1:] != tail):
            want = f"({n}, {', '.join(map(str, tail))})" if tail else f"{ndim}-D with {n} rows"
            raise MlmmError(f"{path}: dataset {key!r} has shape {shape}, expected {want}")
    return n


def _genre_names(dataset) -> tuple[str, ...]:
    raw = dataset.attrs.get("target_names")
    if raw is None:
        names = MMIMDB_GENRES
    else:
        raw = _text(raw)
        try:
            names = tuple(json.loads(raw))
        except ValueError:
            names = tuple(raw.split())
    if len(names) != dataset.shape[1]:
        raise MlmmError(
            f"'genres' has {dataset.shape[1]} columns but {len(names)} genre names; expected "
            "one name per column in attrs['target_names']"
        )
    return tuple(str(v) for v in names)


def _split_rows(handle, path: Path, n: int) -> dict[str, tuple[int, int]]:
    """Split -> (start, stop) from Fuel's ``split`` attribute, else the published rows."""
    table = handle.attrs.get("split")
    if table is None:
        if n != _OFFICIAL_ROWS["test"][1]:
            raise MlmmError(
                f"{path} has no 'split' attribute and {n} rows, not the published 25,959; "
                "expected Fuel's split table in the root attributes"
            )
        return dict(_OFFICIAL_ROWS)
    out: dict[str, tuple[int, int]] = {}
    for row in table:
        name, start, stop = _text(row["split"]), int(row["start"]), int(row["stop"])
        if name in SPLITS:
            previous = out.get(name)
            if previous is not None and previous != (start, stop):
                raise MlmmError(f"{path}: split {name!r} has sources with different rows")
            out[name] = (start, stop)
    if set(out) != set(SPLITS) or any(not 0 <= a <= b <= n for a, b in out.values()):
        raise MlmmError(
            f"{path}: the 'split' attribute gives {out}, expected rows of train, dev and test "
            f"within 0..{n}"
        )
    return out


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
