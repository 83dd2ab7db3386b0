"""Where the files of an external data set are, whether they are the right ones, and the cache.

Every loader in :mod:`mlmm.data.formats` goes through these helpers, so the path, download,
checksum, optional-dependency and cache logic lives in one place:

- :func:`require` imports an optional reader (h5py, nibabel, Pillow) or fails with one line
  naming ``pip install 'mlmm[formats]'``.
- :func:`locate` checks that ``root`` holds the expected files and fails with one line naming
  them (and, where the data set has a public address, how to fetch it).
- :func:`download` fetches a file atomically into ``root``.
- :func:`verify` compares a file's SHA-256 with the table :data:`CHECKSUMS`.
- :func:`cache_path` is the one place a loader may write next to the user's data:
  ``ROOT/.mlmm-cache/``, written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import tempfile
import tokenize
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PureWindowsPath
from types import ModuleType

import numpy as np

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError, unknown_name_error

__all__ = [
    "BAD_IMAGE_POLICIES",
    "CACHE_DIR",
    "CHECKSUMS",
    "cache_path",
    "check_disjoint",
    "check_image_text_options",
    "check_split",
    "decode_image",
    "download",
    "encode_texts",
    "locate",
    "NUMPY_FILE_ERRORS",
    "numpy_file_reason",
    "official_split",
    "plain_name",
    "require",
    "save_npz",
    "TEXT_ENCODINGS",
    "verify",
    "zero_blocks_absent",
]

CACHE_DIR = ".mlmm-cache"
"""Folder under a data set's root where loaders keep their converted copies (npz)."""

CHECKSUMS: dict[str, dict[str, str | None]] = {
    "mosi": {
        "CMU_MOSI_TimestampedWordVectors.csd": None,
        "CMU_MOSI_COVAREP.csd": None,
        "CMU_MOSI_Visual_Facet_41.csd": None,
        "CMU_MOSI_Opinion_Labels.csd": None,
        "mosi_data.pkl": None,
        "mosi_data_noalign.pkl": None,
    },
    "mosei": {
        "CMU_MOSEI_TimestampedWordVectors.csd": None,
        "CMU_MOSEI_COVAREP.csd": None,
        "CMU_MOSEI_VisualFacet42.csd": None,
        "CMU_MOSEI_Labels.csd": None,
        "mosei_senti_data.pkl": None,
        "mosei_senti_data_noalign.pkl": None,
    },
    "avmnist": {},
    "mmimdb": {"multimodal_imdb.hdf5": None},
    "brats": {},
    "food101": {},
}
"""Data set -> file name -> SHA-256 (hex) of the published file, None where not recorded.

No file of these data sets could be downloaded where mlmm was built, so no digest is recorded
yet: a loader verifies a file against this table when a digest is known, and against the
``checksums=`` a caller passes (the way to pin the copy you have). Add a digest here only
after hashing a copy obtained from the official address.
"""

NUMPY_FILE_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
)
"""What ``np.load`` raises for a damaged ``.npy``/``.npz``: an empty or truncated file
(EOFError, ValueError), a corrupt header (numpy parses it with :mod:`tokenize`: TokenError,
SyntaxError), a truncated or corrupt zip (BadZipFile, zlib.error)."""


def numpy_file_reason(err: BaseException) -> str:
    """A short reason for one of :data:`NUMPY_FILE_ERRORS` (numpy's own text can span lines or
    be a tokenizer tuple)."""
    if isinstance(err, (tokenize.TokenError, SyntaxError)):
        return "its header is corrupt"
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__


_EXTRA_HINT = "pip install 'mlmm[formats]'"
_CHUNK_ROWS = 1024


def require(module: str, purpose: str) -> ModuleType:
    """Import the optional package ``module`` or raise one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MlmmError(
            f"{purpose} needs the optional package {module!r}, which is not installed; "
            f"run: {_EXTRA_HINT}"
        ) from None


def locate(
    root: str | os.PathLike,
    expected: Sequence[str],
    dataset: str,
    where: str = "",
) -> Path:
    """``root`` as a Path after checking that it holds every file or folder in ``expected``.

    Parameters
    ----------
    root : path
        The folder the user pointed at.
    expected : sequence of str
        Paths relative to ``root`` that must exist.
    dataset : str
        Data set name for the message.
    where : str
        Where to get the files (appended to the message).
    """
    if root is None or str(root) == "":
        raise MlmmError(
            f"{dataset} needs root=FOLDER holding {', '.join(expected)}; pass root= "
            f"(on the CLI: --dataset-param root=FOLDER)"
        )
    path = Path(root).expanduser()
    missing = [name for name in expected if not (path / name).exists()]
    if missing:
        hint = f"; {where}" if where else ""
        raise MlmmError(
            f"{dataset}: {path} does not hold {', '.join(missing)} (expected "
            f"{', '.join(expected)} under root){hint}"
        )
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, dataset: str, checksums: Mapping[str, str] | None = None) -> None:
    """Compare ``path``'s SHA-256 with ``checksums`` (caller) or :data:`CHECKSUMS` (known).

    Nothing is hashed when neither holds a digest for the file name.
    """
    expected = (checksums or {}).get(path.name) or CHECKSUMS.get(dataset, {}).get(path.name)
    if not expected:
        return
    actual = _sha256(path)
    if actual != expected.lower():
        raise MlmmError(
            f"{path} has SHA-256 {actual[:16]}..., expected {expected[:16]}...; the file is "
            "corrupt, truncated or another version: fetch it again"
        )


def download(
    url: str, dest: Path, dataset: str, checksums: Mapping[str, str] | None = None
) -> Path:
    """Fetch ``url`` to ``dest`` atomically (a temporary file, verified, then renamed).

    The temporary file (``.NAME.p<pid>-h<host>.<random>.tmp``) names its writer: one left by
    a download killed mid-transfer is removed by the next download of ``dest`` on this host
    once that process is gone (:func:`mlmm.utils.remove_stale_temporaries`)."""
    from mlmm.utils import remove_stale_temporaries, temporary_prefix

    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)  # first: a large file's space comes back before this one
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(dest), suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
            except OSError as err:
                raise MlmmError(
                    f"{dataset}: could not download {url} ({err}); fetch it by hand into "
                    f"{dest.parent}"
                ) from None
        expected = (checksums or {}).get(dest.name) or CHECKSUMS.get(dataset, {}).get(dest.name)
        if expected and _sha256(Path(tmp)) != expected.lower():
            raise MlmmError(
                f"{url} downloaded with the wrong SHA-256 (expected {expected[:16]}...); "
                "the server holds another version or the transfer broke: try again"
            )
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return dest


def cache_path(root: Path, name: str) -> Path:
    """``ROOT/.mlmm-cache/name``: the only place a loader writes beside the user's data."""
    return root / CACHE_DIR / name


def zero_blocks_absent(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """``observed`` ``[N, M]``: a modality whose whole block is zero in a row is absent there.

    The convention of the feature releases (MulT, MultiBench, MMIN): a missing modality was
    written as zeros, with no mask.
    """
    columns = []
    for arr in inputs.values():
        flat = arr.reshape(len(arr), int(np.prod(arr.shape[1:])))  # -1 fails with no row
        present = np.zeros(len(arr), dtype=bool)
        for start in range(0, len(arr), _CHUNK_ROWS):  # no full-size temporary for big images
            present[start : start + _CHUNK_ROWS] = np.any(flat[start : start + _CHUNK_ROWS], axis=1)
        columns.append(present)
    return np.stack(columns, axis=1)  # [N, M]


def check_split(split: str | None, names: Sequence[str], dataset: str) -> None:
    """Raise unless ``split`` is None (all rows) or one of the official split ``names``."""
    if split is not None and split not in names:
        raise MlmmError(
            f"{dataset}: split must be one of {list(names)} or None (all rows, with "
            f"meta['official_split']), got {split!r}"
        )


def check_disjoint(members: Mapping[str, Iterable[str]], source: str) -> None:
    """Raise when one sample id is listed in two splits: training would see test samples.

    Parameters
    ----------
    members : mapping of str to iterable of str
        Split name -> the ids (video, utterance, movie, file name) it lists, as the file does.
    source : str
        The file (or argument) the lists come from, named in the message.
    """
    seen: dict[str, str] = {}
    shared: list[tuple[str, str, str]] = []
    for split, ids in members.items():
        for item in dict.fromkeys(str(v) for v in ids):  # a repeat inside one split is no leak
            first = seen.setdefault(item, split)
            if first != split:
                shared.append((item, first, split))
    if shared:
        item, first, second = shared[0]
        raise MlmmError(
            f"{source} lists {item!r} in both {first!r} and {second!r} ({len(shared)} id(s) in "
            "two splits); expected disjoint splits, as the published ones are: remove each from "
            "all but one split, or the scores count samples the model trained on"
        )


def plain_name(name: str) -> bool:
    """True for one file or folder name. Loaders join names read from a data set's own lists
    (CSV rows, ``split.json`` ids) onto its root, so a separator, ``..`` or a drive would
    reach outside the data set's folder."""
    return (
        name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and not PureWindowsPath(name).drive
    )


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (numeric and fixed-width string arrays only)."""
    from mlmm.utils import atomic_write

    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)


TEXT_ENCODINGS = ("hashing", "minilm")
"""How an image+text loader encodes its text: hashed word counts, or MiniLM token ids."""
BAD_IMAGE_POLICIES = ("skip", "error")
"""What an image+text loader does with an image file that fails to decode."""


def check_image_text_options(
    dataset: str, text: str, bad_images: str, image_size: int, text_dim: int, text_length: int
) -> None:
    """One-line errors for the options the image + text loaders share (before any file is read)."""
    if text not in TEXT_ENCODINGS:
        raise unknown_name_error(f"{dataset} text encoding", str(text), TEXT_ENCODINGS)
    if bad_images not in BAD_IMAGE_POLICIES:
        raise unknown_name_error("bad_images policy", str(bad_images), BAD_IMAGE_POLICIES)
    for name, value in (
        ("image_size", image_size),
        ("text_dim", text_dim),
        ("text_length", text_length),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MlmmError(f"{dataset}: {name} must be a positive integer, got {value!r}")


_WORD = re.compile(r"\w+", re.UNICODE)


def decode_image(pil: ModuleType, path: Path, size: int, policy: str) -> np.ndarray | None:
    """``[3, size, size]`` RGB in [0, 1] (bilinear resize), or None if undecodable and
    ``policy == "skip"``; ``"error"`` raises naming the file."""
    try:
        with pil.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), pil.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.float32) / 255.0  # [H, W, 3]
    except (OSError, ValueError, pil.DecompressionBombError) as err:
        if policy == "error":
            raise MlmmError(
                f"{path} could not be decoded as an image ({type(err).__name__}); fix or remove "
                "it, or pass bad_images='skip' to drop such samples"
            ) from None
        return None
    return pixels.transpose(2, 0, 1)  # [3, H, W]


def encode_texts(
    texts: list[str], encoding: str, dim: int, length: int
) -> tuple[np.ndarray, ModalitySpec]:
    """The ``text`` modality: ``hashing`` counts lower-cased words hashed (CRC-32, the same in
    every process) into ``dim`` bins; ``minilm`` gives ``length`` token ids for the registered
    backbone ``all-minilm-l6-v2`` (kept unstandardised)."""
    if encoding == "hashing":
        out = np.zeros((len(texts), dim), dtype=np.float32)  # [N, D]
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[i, zlib.crc32(word.encode("utf-8")) % dim] += 1.0
        return out, ModalitySpec("text", "vector", (dim,))
    from mlmm.nn.backbones import minilm_token_ids

    ids = np.asarray(minilm_token_ids([t if t.strip() else "" for t in texts], length))
    return ids.astype(np.float32), ModalitySpec("text", "vector", (length,), standardize=False)


_VALIDATION_NAMES = ("valid", "val", "dev")


def official_split(dataset):
    """The data set's own train / validation / test parts, from ``meta["official_split"]``.

    Parameters
    ----------
    dataset : MultimodalDataset
        Loaded with ``split=None`` by a loader that records the official split (``valid``,
        ``val`` or ``dev`` name the validation part).

    Returns
    -------
    mlmm.data.split.Split
        ``train``, ``val`` (None when the data set has none), ``test`` and the row
        ``indices`` of each, to train and score as the papers do.
    """
    from mlmm.data.split import Split

    names = dataset.meta.get("official_split")
    if names is None:
        raise MlmmError(
            f"{dataset.name} records no official split (meta['official_split']); load it with "
            "split=None from a loader that keeps one, or split with mlmm.train_val_test_split"
        )
    names = np.asarray(names)
    found = sorted(set(names.tolist()))
    validation = [v for v in _VALIDATION_NAMES if v in found]
    known = {"train", "test", *validation}
    if "train" not in found or "test" not in found or set(found) - known:
        raise MlmmError(
            f"{dataset.name}'s official split holds {found}, expected train, test and at most "
            f"one of {list(_VALIDATION_NAMES)}; split with mlmm.train_val_test_split instead"
        )
    indices = {"train": np.flatnonzero(names == "train"), "test": np.flatnonzero(names == "test")}
    if validation:
        indices["val"] = np.flatnonzero(names == validation[0])
    return Split(
        train=dataset.subset(indices["train"]),
        val=dataset.subset(indices["val"]) if "val" in indices else None,
        test=dataset.subset(indices["test"]),
        indices=indices,
    )
