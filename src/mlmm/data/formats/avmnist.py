"""AV-MNIST in the MultiBench layout: MNIST digits with most of their energy removed, paired
with spoken-digit spectrograms.

Layout (``.npy`` arrays, read with ``allow_pickle=False``)::

    ROOT/image/train_data.npy   [60000, 784]       flattened 28 x 28, 0-255
    ROOT/image/test_data.npy    [10000, 784]
    ROOT/audio/train_data.npy   [60000, 112, 112]  spectrograms, 0-255
    ROOT/audio/test_data.npy    [10000, 112, 112]
    ROOT/train_labels.npy       [60000]            digits 0-9
    ROOT/test_labels.npy        [10000]

References: J.-M. Pérez-Rúa et al., "MFAS: Multimodal Fusion Architecture Search", CVPR 2019
(the data set); P. P. Liang et al., "MultiBench: Multiscale Benchmarks for Multimodal
Representation Learning", NeurIPS 2021 Datasets and Benchmarks (the layout and the split).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mlmm.data.dataset import MultimodalDataset, _finite_rows
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.formats._common import (
    NUMPY_FILE_ERRORS,
    check_split,
    locate,
    numpy_file_reason,
    verify,
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

__all__ = ["AVMNIST_FILES", "load_avmnist"]

AVMNIST_FILES = (
    "image/train_data.npy",
    "image/test_data.npy",
    "audio/train_data.npy",
    "audio/test_data.npy",
    "train_labels.npy",
    "test_labels.npy",
)
"""The files under ``root`` (MultiBench's folder names; MFAS's ``images/`` is accepted too)."""

SPLITS = ("train", "valid", "test")
_N_VALID = 5000  # MultiBench: the last 5,000 rows of the training files are the validation set


@register_dataset(
    "avmnist",
    description="AV-MNIST (MultiBench layout): faded MNIST image + spoken-digit spectrogram, "
    "10 digits (needs files at ROOT: --dataset-param root=ROOT)",
    source="J.-M. Pérez-Rúa et al., MFAS, CVPR 2019; MultiBench (P. P. Liang et al., 2021) layout",
    license="MNIST: CC BY-SA 3.0; FSDD: CC BY-SA 4.0; ESC-50 noise: CC BY-NC 3.0",
    needs_files=True,
    modalities="image, audio",
    task="classification",
)
def load_avmnist(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    flatten_image: bool = False,
    n_valid: int = _N_VALID,
    checksums: dict[str, str] | None = None,
) -> MultimodalDataset:
    """Load AV-MNIST from the MultiBench ``.npy`` files under ``root``.

    Parameters
    ----------
    root : path
        Folder holding :data:`AVMNIST_FILES`.
    split : {"train", "valid", "test"}, optional
        MultiBench's split: ``valid`` is the last ``n_valid`` rows of the training files,
        ``train`` the rows before them, ``test`` the test files. None: all, with
        ``meta["official_split"]``.
    flatten_image : bool
        The image as a ``(784,)`` vector instead of a ``(1, 28, 28)`` image.
    n_valid : int
        Rows at the end of the training files held out for validation (5,000 in MultiBench).
    checksums : dict of str to str, optional
        File name -> SHA-256 to check the files against.

    Returns
    -------
    MultimodalDataset
        ``image`` ``(1, 28, 28)`` (or ``(784,)``) and ``audio`` ``(1, 112, 112)``, both divided
        by 255 as in MultiBench; 10 classes ``"0"``..``"9"``. Every modality is observed: the
        data set has no missingness of its own.
    """
    check_split(split, SPLITS, "AV-MNIST")
    folder = _root(root)
    image_dir = "image" if (folder / "image").is_dir() else "images"
    arrays = {}
    for part in ("train", "test"):
        image = _read(folder / image_dir / f"{part}_data.npy", checksums)
        audio = _read(folder / "audio" / f"{part}_data.npy", checksums)
        labels = _read(folder / f"{part}_labels.npy", checksums)
        arrays[part] = _check(folder, part, image_dir, image, audio, labels)
    n_train = len(arrays["train"][2])
    if not isinstance(n_valid, int) or isinstance(n_valid, bool) or not 0 <= n_valid < n_train:
        raise MlmmError(
            f"AV-MNIST: n_valid must be an integer in [0, {n_train}) (the training files hold "
            f"{n_train} rows), got {n_valid!r}"
        )
    ranges = {
        "train": ("train", slice(0, n_train - n_valid)),
        "valid": ("train", slice(n_train - n_valid, n_train)),
        "test": ("test", slice(None)),
    }
    chosen = [s for s in SPLITS if split in (None, s)]
    sizes = [len(arrays[ranges[s][0]][2][ranges[s][1]]) for s in chosen]
    total = sum(sizes)
    # one float32 array per modality, filled from the memory maps a block of rows at a time:
    # the whole load holds one copy of each array, and the dataset its own (it copies)
    image = np.empty((total, 784), dtype=np.float32)  # [N, 784]
    audio = np.empty((total, 112, 112), dtype=np.float32)  # [N, 112, 112]
    labels, official, at = [], [], 0
    for s, size in zip(chosen, sizes, strict=True):
        part, rows = ranges[s]
        source_image, source_audio, label = arrays[part]
        for name, source, out in (
            (f"{image_dir}/{part}_data.npy", source_image, image),
            (f"audio/{part}_data.npy", source_audio, audio),
        ):
            width = int(np.prod(out.shape[1:]))  # -1 fails for an empty validation part
            _fill(out[at : at + size].reshape(size, width), source[rows].reshape(size, width))
            _finite(out[at : at + size], folder / name, rows)
        labels.append(np.asarray(label[rows]))
        official.append(np.full(size, s))
        at += size
    image = image if flatten_image else image.reshape(-1, 1, 28, 28)
    audio = audio.reshape(-1, 1, 112, 112)
    targets = np.concatenate(labels).astype(np.int64)
    image_spec = (
        ModalitySpec("image", "vector", (784,))
        if flatten_image
        else ModalitySpec("image", "image", (1, 28, 28))
    )
    return MultimodalDataset(
        specs=[image_spec, ModalitySpec("audio", "image", (1, 112, 112))],
        task=TaskSpec("classification", 10, tuple(str(d) for d in range(10))),
        inputs={"image": image, "audio": audio},
        targets=targets,
        name="avmnist",
        meta={"source": str(folder), "official_split": np.concatenate(official)},
    )


def _root(root) -> Path:
    expected = list(AVMNIST_FILES)
    if root is not None and not (Path(root) / "image").is_dir():
        if (Path(root) / "images").is_dir():  # MFAS's folder name
            expected = [f.replace("image/", "images/") for f in expected]
    return locate(root, expected, "AV-MNIST")


def _read(path: Path, checksums) -> np.ndarray:
    verify(path, "avmnist", checksums)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except NUMPY_FILE_ERRORS as err:  # empty: EOFError; a corrupt header: TokenError
        raise MlmmError(
            f"{path} is not a plain .npy array ({numpy_file_reason(err)}); expected a numeric "
            "array saved with numpy.save, not truncated: fetch or write it again"
        ) from None


def _fill(out: np.ndarray, source: np.ndarray, block: int = 1024) -> None:
    """``out[:] = float32(source) / 255`` a block of rows at a time (no full-size temporary);
    the same float32 operations as converting the whole array at once, so the same bits."""
    for start in range(0, len(out), block):
        chunk = out[start : start + block]
        chunk[...] = source[start : start + block]  # cast to float32 on assignment
        chunk /= np.float32(255.0)


def _finite(values: np.ndarray, path: Path, rows: slice) -> np.ndarray:
    """``values`` (rows ``rows`` of ``path``) unless one holds NaN or inf: named by its row in
    the file, not in the loaded data set, whose rows are shifted by the split."""
    flat = values.reshape(len(values), int(np.prod(values.shape[1:])))  # -1 fails for 0 rows
    bad = ~_finite_rows(flat)  # block by block: no full-size boolean temporary
    if bad.any():
        first = (rows.start or 0) + np.flatnonzero(bad)[:3]
        raise MlmmError(
            f"{path} holds NaN or inf in {int(bad.sum())} row(s) (first rows of the file: "
            f"{first.tolist()}); expected finite values (0-255): fetch or regenerate it"
        )
    return values


def _check(folder, part, image_dir, image, audio, labels):
    n = len(labels)
    expected = {
        f"{image_dir}/{part}_data.npy": (image, ((n, 784), (n, 28, 28))),
        f"audio/{part}_data.npy": (audio, ((n, 112, 112),)),
        f"{part}_labels.npy": (labels, ((n,),)),
    }
    for name, (array, shapes) in expected.items():
        if array.shape not in shapes or not np.issubdtype(array.dtype, np.number):
            raise MlmmError(
                f"{folder / name} holds {array.dtype} {array.shape}, expected numbers of shape "
                f"{' or '.join(map(str, shapes))} ({n} rows, as {part}_labels.npy)"
            )
    values = np.asarray(labels)
    bad = (values < 0) | (values > 9) | (values != np.round(values))
    if bad.any():
        raise MlmmError(
            f"{folder / f'{part}_labels.npy'} holds labels outside the digits 0-9 (first: "
            f"{values[bad][:3].tolist()})"
        )
    return image, audio, labels
