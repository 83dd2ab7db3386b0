"""MM-IMDb: movie posters and plots with their genres, from ``multimodal_imdb.hdf5``.

The Fuel-format file of Arevalo et al. holds, for N = 25,959 movies in the order train, dev,
test: ``features`` [N, 300] (mean word2vec of the plot), ``vgg_features`` [N, 4096] (VGG-16 on
the poster), ``images`` [N, 3, 256, 160] (int32, BGR, VGG-mean-subtracted), ``genres`` [N, 23]
(multi-hot), ``imdb_ids`` [N] (7-digit byte strings), and the split table in the root
attribute ``split``. The raw release (``split.json`` + ``dataset/<id>.jpeg`` and
``dataset/<id>.json``), which missing-aware prompts and RAGPT start from, is read too.

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
from mlmm.data.formats._common import (
    check_disjoint,
    check_image_text_options,
    check_split,
    decode_image,
    encode_texts,
    locate,
    plain_name,
    require,
    verify,
    zero_blocks_absent,
)
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


def _task_of(params: dict) -> str:
    """The task a spec's ``mmimdb`` parameters give: one genre is binary, all are multilabel."""
    return "multilabel" if params.get("genre") is None else "classification"


@register_dataset(
    "mmimdb",
    description="MM-IMDb: poster + plot of 25,959 movies, 23 genres (multilabel; genre=NAME "
    "for one genre against the rest) (needs files at ROOT: --dataset-param root=ROOT)",
    source="J. Arevalo et al., Gated Multimodal Units for Information Fusion, "
    "arXiv:1702.01992 (multimodal_imdb.hdf5)",
    license="IMDb data: non-commercial research use (see the MM-IMDb page)",
    needs_files=True,
    modalities="text, image",
    task=_task_of,
)
def load_mmimdb(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    genre: str | None = None,
    image: str = "vgg",
    checksums: dict[str, str] | None = None,
    layout: str = "auto",
    image_size: int = 64,
    text: str = "hashing",
    text_dim: int = 256,
    text_length: int = 32,
    bad_images: str = "skip",
) -> MultimodalDataset:
    """Load MM-IMDb from ``ROOT/multimodal_imdb.hdf5`` or from the raw files.

    The task is multi-label: the targets are the multi-hot genre matrix ``[N, 23]`` (a movie
    has one genre or several; ``TaskSpec("multilabel", n_labels=23)`` with the genre names).
    ``genre="Drama"`` instead gives one genre against the rest (binary classification). The
    matrix is in ``meta["genres"]`` (``[N, 23]`` int8, columns ``meta["genre_names"]``) either way.

    Parameters
    ----------
    root : path
        Folder holding ``multimodal_imdb.hdf5``, or the raw release (``split.json`` and
        ``dataset/<id>.jpeg``, ``dataset/<id>.json``; MAP's ``images/`` and ``labels/``
        folders are accepted too).
    split : {"train", "dev", "test"}, optional
        The official split: the hdf5 file's ``split`` attribute (rows 0-15,551,
        15,552-18,159 and 18,160-25,958 in the published file) or ``split.json``. None: all,
        with ``meta["official_split"]``.
    genre : str, optional
        None (default): every genre, a multilabel task. A genre's name: that genre alone,
        binary (class 1 = the movie has it).
    image : {"vgg", "pixels"}
        ``vgg``: the 4,096 VGG-16 features as a vector; ``pixels``: the poster as a
        ``(3, 256, 160)`` image as stored (BGR, mean-subtracted), 0.5 MB per movie in memory.
    checksums : dict of str to str, optional
        File name -> SHA-256 to check the file against.
    layout : {"auto", "hdf5", "raw"}
        Which files to read; ``auto`` prefers the hdf5 file.
    image_size, text, text_dim, text_length, bad_images
        Raw layout only: the poster decoded with Pillow to ``(3, image_size, image_size)``;
        the text (the longest plot, else the plot outline) encoded as in
        :func:`~mlmm.data.formats.load_food101`; ``bad_images`` for posters that fail to
        decode (``skip`` and count, or ``error``).

    Returns
    -------
    MultimodalDataset
        ``text`` ``(300,)`` and ``image``; a block that is all zeros (a plot with no known
        word, a missing poster) is absent. ``meta`` holds ``imdb_ids`` (strings, leading
        zeros kept), ``genres``, ``genre_names`` and ``official_split``.
    """
    check_split(split, SPLITS, "MM-IMDb")
    if layout not in ("auto", "hdf5", "raw"):
        raise unknown_name_error("MM-IMDb layout", str(layout), ("auto", "hdf5", "raw"))
    raw_found = root is not None and (Path(root) / "split.json").is_file()
    hdf5_found = root is not None and (Path(root) / MMIMDB_FILE).is_file()
    if root is not None and (
        layout == "raw" or (layout == "auto" and raw_found and not hdf5_found)
    ):
        return _load_raw(
            Path(root).expanduser(),
            split,
            genre,
            image_size,
            text,
            text_dim,
            text_length,
            bad_images,
        )
    h5py = require("h5py", "reading MM-IMDb's multimodal_imdb.hdf5")
    if image not in _IMAGE_SOURCES:
        raise unknown_name_error("MM-IMDb image source", str(image), _IMAGE_SOURCES)
    folder = locate(
        root,
        [MMIMDB_FILE],
        "MM-IMDb",
        where="get it from the MM-IMDb page of Arevalo et al. (gmu-mmimdb), or point root= at "
        "the raw release (split.json, dataset/)",
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
        names = _genre_names(handle["genres"], path)
        if genre is not None and genre not in names:
            raise unknown_name_error("MM-IMDb genre", str(genre), names)
        ranges = _split_rows(handle, path, n)
        chosen = [s for s in SPLITS if split in (None, s)]
        rows = [np.arange(*ranges[s]) for s in chosen]
        index = np.concatenate(rows)
        if not len(index):
            raise MlmmError(
                f"{path}: the 'split' attribute gives split {split!r} no rows ({ranges}); "
                "expected at least one movie: choose another split"
            )
        # contiguous slices: h5py reads only those rows, never the whole file
        text = np.concatenate([handle["features"][slice(*ranges[s])] for s in chosen])
        picture = np.concatenate([handle[image_key][slice(*ranges[s])] for s in chosen])
        genres = np.concatenate([handle["genres"][slice(*ranges[s])] for s in chosen])
        ids = np.concatenate([handle["imdb_ids"][slice(*ranges[s])] for s in chosen])
    official = np.concatenate([np.full(len(r), s) for r, s in zip(rows, chosen, strict=True)])
    if not np.isin(genres, (0, 1)).all():
        raise MlmmError(f"{path}: 'genres' holds values other than 0/1; expected multi-hot rows")
    inputs = {"text": text.astype(np.float32), "image": picture.astype(np.float32)}
    for modality, key in (("text", "features"), ("image", image_key)):
        bad = ~np.isfinite(inputs[modality].reshape(len(index), -1)).all(axis=1)
        if bad.any():
            raise MlmmError(
                f"{path}: dataset {key!r} holds NaN or inf in {int(bad.sum())} row(s) (first: "
                f"{index[bad][:3].tolist()}); expected finite features: is the file complete?"
            )
    observed = zero_blocks_absent(inputs)
    keep = observed.any(axis=1)
    kind = "vector" if image == "vgg" else "image"
    task, targets = _genre_task(genres[keep], names, genre)
    return MultimodalDataset(
        specs=[
            ModalitySpec("text", "vector", inputs["text"].shape[1:]),
            ModalitySpec("image", kind, inputs["image"].shape[1:]),
        ],
        task=task,
        inputs={k: v[keep] for k, v in inputs.items()},
        targets=targets,
        observed=observed[keep],
        name="mmimdb",
        meta={
            "source": str(path),
            "imdb_ids": np.array([_movie_id(v) for v in ids[keep]]),
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


def _genre_task(
    genres: np.ndarray, names: tuple[str, ...], genre: str | None
) -> tuple[TaskSpec, np.ndarray]:
    """The task and targets: every genre (multilabel, ``[N, G]``) or one genre (binary)."""
    if genre is None:
        multilabel = TaskSpec("multilabel", n_labels=len(names), label_names=names)
        return multilabel, genres.astype(np.float32)
    column = names.index(genre)
    binary = TaskSpec("classification", 2, (f"not {genre}", genre))
    return binary, genres[:, column].astype(np.int64)


def _genre_names(dataset, path: Path) -> tuple[str, ...]:
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
            f"{path}: 'genres' has {dataset.shape[1]} columns but {len(names)} genre names; expected "
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
    fields = getattr(getattr(table, "dtype", None), "names", None) or ()
    if not {"split", "start", "stop"} <= set(fields):
        raise MlmmError(
            f"{path}: the root attribute 'split' is {type(table).__name__} with fields "
            f"{list(fields)}, expected Fuel's split table (fields split, source, start, stop, ...)"
        )
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
    # an empty split (start == stop) holds no movie, so it overlaps nothing
    ordered = sorted(((k, r) for k, r in out.items() if r[0] < r[1]), key=lambda item: item[1])
    for (first, (_, stop)), (second, (start, _)) in zip(ordered, ordered[1:], strict=False):
        if start < stop:
            raise MlmmError(
                f"{path}: the 'split' attribute gives {first} rows {out[first]} and {second} "
                f"rows {out[second]}, which overlap; expected disjoint rows (the published file: "
                f"{_OFFICIAL_ROWS}), or the scores count samples the model trained on"
            )
    return out


def _text(value) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _movie_id(value) -> str:
    """An IMDb id as the release spells it: 7 digits, leading zeros kept (also from a number)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{int(value):07d}"
    return _text(value)


# ---------------------------------------------------------------------- raw release
def _load_raw(folder, split, genre, image_size, text, text_dim, text_length, bad_images):
    """The raw release: ``split.json`` + one ``<id>.jpeg`` and ``<id>.json`` per movie."""
    pil = require("PIL.Image", "decoding MM-IMDb posters")
    if genre is not None and genre not in MMIMDB_GENRES:
        raise unknown_name_error("MM-IMDb genre", str(genre), MMIMDB_GENRES)
    check_image_text_options("MM-IMDb", text, bad_images, image_size, text_dim, text_length)
    if (folder / "dataset").is_dir():
        image_dir = label_dir = folder / "dataset"
    elif (folder / "images").is_dir() and (folder / "labels").is_dir():  # MAP's rearrangement
        image_dir, label_dir = folder / "images", folder / "labels"
    else:
        locate(folder, ["split.json", "dataset/"], "MM-IMDb (raw)")
    split_path = folder / "split.json"
    try:
        splits = json.loads(split_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MlmmError(f"{split_path} is not readable JSON ({err})") from None
    if not isinstance(splits, dict) or not set(SPLITS) <= set(splits):
        found = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
        raise MlmmError(f"{split_path} should map {list(SPLITS)} to lists of ids, got {found}")
    for s in SPLITS:
        if not isinstance(splits[s], list):
            raise MlmmError(
                f"{split_path}: {s!r} should be a list of 7-digit id strings, got "
                f"{type(splits[s]).__name__}"
            )
    # ids as the files name them: a number written for an id gets its leading zeros back
    splits = {s: [_movie_id(v) for v in splits[s]] for s in SPLITS}
    for s in SPLITS:
        for movie in splits[s]:
            if not plain_name(movie):  # the id names <id>.json and <id>.jpeg under the root
                raise MlmmError(
                    f"{split_path}: {s!r} lists id {movie!r}, which is not a plain name; "
                    "expected ids such as '0000008' (no folder, '..' or drive: it would read "
                    "outside the data set's folder): fix that entry"
                )
    check_disjoint(splits, str(split_path))
    ids, texts, images, present_image, genres, official = [], [], [], [], [], []
    skipped = 0
    for s in SPLITS:
        if split not in (None, s):
            continue
        for movie in splits[s]:
            record = _movie_record(label_dir / f"{movie}.json")
            poster = image_dir / f"{movie}.jpeg"
            pixels = decode_image(pil, poster, image_size, bad_images) if poster.is_file() else None
            if pixels is None and poster.is_file():
                skipped += 1
                continue
            ids.append(movie)
            texts.append(_plot(record))
            images.append(pixels)
            present_image.append(pixels is not None)
            genres.append([int(g in record.get("genres", ())) for g in MMIMDB_GENRES])
            official.append(s)
    if not ids:
        raise MlmmError(f"MM-IMDb: {folder} gave no readable movie for split {split!r}")
    blank = np.zeros((3, image_size, image_size), dtype=np.float32)
    image_array = np.stack([p if p is not None else blank for p in images])  # [N, 3, H, W]
    text_array, text_spec = encode_texts(texts, text, text_dim, text_length)
    observed = np.stack([np.array([bool(t.strip()) for t in texts]), np.array(present_image)], 1)
    genre_matrix = np.array(genres, dtype=np.int8)  # [N, 23]
    task, targets = _genre_task(genre_matrix, MMIMDB_GENRES, genre)
    return MultimodalDataset(
        specs=[text_spec, ModalitySpec("image", "image", (3, image_size, image_size))],
        task=task,
        inputs={"text": text_array, "image": image_array},
        targets=targets,
        observed=observed,
        name="mmimdb",
        meta={
            "source": str(folder),
            "imdb_ids": np.array(ids),
            "genres": genre_matrix,
            "genre_names": MMIMDB_GENRES,
            "official_split": np.array(official),
            "texts": texts,
            "bad_images": skipped,
            "missing_images": int(len(ids) - sum(present_image)),
        },
    )


def _movie_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlmmError(
            f"{path} is missing; split.json lists the movie, so its metadata (genres) must exist"
        ) from None
    except ValueError as err:
        raise MlmmError(f"{path} is not readable JSON ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("genres", []), list):
        raise MlmmError(f"{path} should be an object with a 'genres' list (IMDbPY dump)")
    return record


def _plot(record: dict) -> str:
    """The longest plot (as Arevalo et al. chose), else the plot outline, else ''."""
    plots = record.get("plot") or []
    if isinstance(plots, str):  # one plot as a string, not IMDbPY's list: not its characters
        plots = [plots]
    plots = [p for p in plots if isinstance(p, str) and p.strip()]
    if plots:
        return max(plots, key=len)
    outline = record.get("plot outline")
    return outline if isinstance(outline, str) else ""
