"""CMU-MOSI and CMU-MOSEI aligned features: SDK computational sequences or the MulT pickles.

Two on-disk forms of the same data:

- The CMU-MultimodalSDK computational sequences (``.csd``, HDF5): one file per feature set,
  ``/<root>/data/<id>/{features [n, d], intervals [n, 2]}``. Read entry by entry with h5py,
  so a 1 GB MOSEI file is never loaded whole.
- The pickled ``{'train'|'valid'|'test': {'text', 'audio', 'vision', 'labels', 'id'}}`` dicts
  that MulT distributes (``mosi_data.pkl``, ``mosei_senti_data.pkl``, and ``*_noalign.pkl``).
  Reading a pickle can run code, so it happens only with ``trust_pickle=True``, once: the
  arrays are converted to ``ROOT/.mlmm-cache/<name>.npz`` and later loads read that.

References: A. Zadeh et al., "MOSI: Multimodal Corpus of Sentiment Intensity and
Subjectivity Analysis in Online Opinion Videos", IEEE Intelligent Systems 31(6), 2016;
A. Zadeh et al., "Multimodal Language Analysis in the Wild: CMU-MOSEI Dataset and
Interpretable Dynamic Fusion Graph", ACL 2018; Y.-H. H. Tsai et al., "Multimodal Transformer
for Unaligned Multimodal Language Sequences", ACL 2019 (the pickles).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.formats._common import (
    NUMPY_FILE_ERRORS,
    cache_path,
    check_disjoint,
    check_split,
    download,
    locate,
    numpy_file_reason,
    require,
    save_npz,
    verify,
    zero_blocks_absent,
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error

__all__ = ["CSD_FILES", "MOSI_TASKS", "PICKLE_FILES", "load_mosei", "load_mosi"]

SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
MOSI_TASKS = ("binary", "7class", "regression")
"""``binary``: positive vs negative sentiment; ``7class``: the rounded score -3..3;
``regression``: the score itself, in [-3, 3]."""

CSD_FILES: dict[str, dict[str, str]] = {
    "mosi": {
        "text": "CMU_MOSI_TimestampedWordVectors.csd",
        "audio": "CMU_MOSI_COVAREP.csd",
        "vision": "CMU_MOSI_Visual_Facet_41.csd",
        "labels": "CMU_MOSI_Opinion_Labels.csd",
    },
    "mosei": {
        "text": "CMU_MOSEI_TimestampedWordVectors.csd",
        "audio": "CMU_MOSEI_COVAREP.csd",
        "vision": "CMU_MOSEI_VisualFacet42.csd",
        "labels": "CMU_MOSEI_Labels.csd",
    },
}
"""Data set -> modality (and ``labels``) -> the SDK's file name."""

_CSD_FOLDERS = {"text": "language", "audio": "acoustic", "vision": "visual", "labels": "labels"}
_CSD_BASE = {
    "mosi": "http://immortal.multicomp.cs.cmu.edu/CMU-MOSI",
    "mosei": "http://immortal.multicomp.cs.cmu.edu/CMU-MOSEI",
}
PICKLE_FILES: dict[str, dict[bool, str]] = {
    "mosi": {True: "mosi_data.pkl", False: "mosi_data_noalign.pkl"},
    "mosei": {True: "mosei_senti_data.pkl", False: "mosei_senti_data_noalign.pkl"},
}
"""Data set -> aligned? -> the MulT pickle's file name."""

_TITLES = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI"}
_CACHE_FORMAT = 1  # bump when the npz layout changes, so older caches are rebuilt
_SCORE_LIMIT = 3.0


def _csd_url(dataset: str, modality: str) -> str:
    return f"{_CSD_BASE[dataset]}/{_CSD_FOLDERS[modality]}/{CSD_FILES[dataset][modality]}"


# ---------------------------------------------------------------------- public loaders
_NEEDS_ROOT = " (needs files at ROOT: --dataset-param root=ROOT)"


@register_dataset(
    "mosi",
    description="CMU-MOSI sentiment: text, audio, vision features of 2,199 clips" + _NEEDS_ROOT,
    source="A. Zadeh et al., IEEE Intelligent Systems 31(6), 2016; files from the "
    "CMU-MultimodalSDK (.csd) or MulT (pickle)",
    license="research use (see the CMU-MultimodalSDK)",
    needs_files=True,
    modalities="text, audio, vision",
    task="classification or regression",
)
def load_mosi(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    task: str = "binary",
    source: Literal["auto", "csd", "pickle"] = "auto",
    aligned: bool = True,
    seq_len: int = 50,
    exclude_zero: bool = True,
    trust_pickle: bool = False,
    folds: Mapping[str, Any] | str | os.PathLike | None = None,
    download: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """Load CMU-MOSI (opinion videos, sentiment in [-3, 3]) from files under ``root``.

    Parameters
    ----------
    root : path
        Folder holding either the MulT pickle (``mosi_data.pkl``, or ``mosi_data_noalign.pkl``
        with ``aligned=False``) or the SDK files ``CMU_MOSI_TimestampedWordVectors.csd``,
        ``CMU_MOSI_COVAREP.csd``, ``CMU_MOSI_Visual_Facet_41.csd`` and
        ``CMU_MOSI_Opinion_Labels.csd``.
    split : {"train", "valid", "test"}, optional
        One official split; None loads all three with ``meta["official_split"]``.
    task : {"binary", "7class", "regression"}
        ``binary``: score > 0 is positive (class 1); with ``exclude_zero`` the samples scored
        exactly 0 are dropped (the "non-0" Acc-2 of MulT), else they count as negative.
        ``7class``: ``round(clip(score, -3, 3))`` as classes 0..6 named ``"-3"``..``"3"``
        (numpy's round-half-to-even, as MulT's ``mult_acc_7``). ``regression``: the score.
    source : {"auto", "csd", "pickle"}
        Which form to read; ``auto`` prefers the pickle (or its converted cache), then the
        ``.csd`` files.
    aligned : bool
        The word-aligned pickle (``True``) or the unaligned one.
    seq_len : int
        Steps kept per modality from ``.csd`` files: the first ``seq_len`` rows of a segment.
        The pickles keep their own padded length.
    exclude_zero : bool
        For ``task="binary"``: drop the samples whose score is exactly 0.
    trust_pickle : bool
        Allow reading the pickle (which can run code). Needed once: the arrays are then kept
        in ``ROOT/.mlmm-cache/`` as npz and read from there.
    folds : dict or path to a JSON file, optional
        For ``.csd`` files, the official folds ``{"train": [video ids], "valid": [...],
        "test": [...]}``. None takes them from the CMU-MultimodalSDK when it is installed
        (``mmsdk``); without either, only ``split=None`` works and ``official_split`` is
        ``"unknown"``. A video listed in two splits is an error (a leak between them).
    download : bool
        Fetch missing ``.csd`` files from the SDK's server into ``root`` (atomically).
    checksums : dict of str to str, optional
        File name -> SHA-256 to check the files against (see ``CHECKSUMS``).

    Returns
    -------
    MultimodalDataset
        Sequence modalities ``text`` ``(T, 300)``, ``audio`` ``(T, D_a)``, ``vision``
        ``(T, D_v)``, with each row's valid steps first and their number in
        ``lengths[modality]`` (the library's variable-length form: encoders skip the
        padding). The releases pad on the left; the valid steps are moved to the front.
        From ``.csd`` files a length is the segment's number of rows (at most ``seq_len``).
        From a pickle it is counted from the first step holding a non-zero value to the end;
        in the word-aligned pickle the three modalities share the word steps, so a row's
        length is the longest of its modalities' (a word whose audio or vision happens to be
        zero is still a step). A modality that is all zeros in a sample (the releases' mark
        for a missing one) or has no ``.csd`` entry is absent, with length 0; samples with
        none left are dropped (``meta["dropped_empty"]``). ``meta`` also holds ``ids``, ``scores``,
        ``official_split``, ``nonfinite_values`` (values set to 0: NaN, inf and float32
        overflow, as MulT sets ``-inf`` audio to 0) and ``source``.
    """
    return _load_cmu(
        "mosi",
        root,
        split,
        task,
        source,
        aligned,
        seq_len,
        exclude_zero,
        trust_pickle,
        folds,
        download,
        checksums,
    )


@register_dataset(
    "mosei",
    description="CMU-MOSEI sentiment: text, audio, vision features of 23k clips" + _NEEDS_ROOT,
    source="A. Zadeh et al., ACL 2018; files from the CMU-MultimodalSDK (.csd) or MulT (pickle)",
    license="research use (see the CMU-MultimodalSDK)",
    needs_files=True,
    modalities="text, audio, vision",
    task="classification or regression",
)
def load_mosei(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    task: str = "binary",
    source: Literal["auto", "csd", "pickle"] = "auto",
    aligned: bool = True,
    seq_len: int = 50,
    exclude_zero: bool = True,
    trust_pickle: bool = False,
    folds: Mapping[str, Any] | str | os.PathLike | None = None,
    download: bool = False,
    checksums: Mapping[str, str] | None = None,
) -> MultimodalDataset:
    """Load CMU-MOSEI from files under ``root``; parameters as :func:`load_mosi`.

    The files are ``mosei_senti_data.pkl`` (or ``mosei_senti_data_noalign.pkl``), or
    ``CMU_MOSEI_TimestampedWordVectors.csd``, ``CMU_MOSEI_COVAREP.csd``,
    ``CMU_MOSEI_VisualFacet42.csd`` and ``CMU_MOSEI_Labels.csd`` (whose first label column is
    the sentiment score).
    """
    return _load_cmu(
        "mosei",
        root,
        split,
        task,
        source,
        aligned,
        seq_len,
        exclude_zero,
        trust_pickle,
        folds,
        download,
        checksums,
    )


# ---------------------------------------------------------------------- shared body
def _load_cmu(
    dataset,
    root,
    split,
    task,
    source,
    aligned,
    seq_len,
    exclude_zero,
    trust_pickle,
    folds,
    fetch,
    checksums,
) -> MultimodalDataset:
    title = _TITLES[dataset]
    check_split(split, SPLITS, title)
    if task not in MOSI_TASKS:
        raise unknown_name_error(f"{title} task", str(task), MOSI_TASKS)
    if source not in ("auto", "csd", "pickle"):
        raise unknown_name_error(f"{title} source", str(source), ("auto", "csd", "pickle"))
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise MlmmError(f"{title}: seq_len must be a positive integer, got {seq_len!r}")
    pickle_name = PICKLE_FILES[dataset][bool(aligned)]
    csd_names = list(CSD_FILES[dataset].values())
    if root is None:
        raise MlmmError(
            f"{title} needs root=FOLDER holding {pickle_name} or {', '.join(csd_names)}; "
            "pass root= (on the CLI: --dataset-param root=FOLDER)"
        )
    folder = Path(root).expanduser()
    cache = cache_path(folder, Path(pickle_name).stem + ".npz")
    if source == "auto":
        has_pickle = (folder / pickle_name).is_file() or cache.is_file()
        source = "pickle" if has_pickle or not _all_exist(folder, csd_names) else "csd"
        if source == "pickle" and not has_pickle and not fetch:
            raise MlmmError(
                f"{title}: {folder} holds neither {pickle_name} (MulT) nor all of "
                f"{', '.join(csd_names)} (CMU-MultimodalSDK); point root= at one of them, or "
                "pass download=True to fetch the .csd files"
            )
        if fetch and not has_pickle:
            source = "csd"
    if source == "pickle":
        parts, origin = _read_pickle_cached(
            folder, pickle_name, cache, dataset, trust_pickle, checksums
        )
    else:
        parts, origin = _read_csd(folder, dataset, seq_len, folds, fetch, checksums)
    shared_steps = source == "pickle" and bool(aligned)
    return _assemble(dataset, parts, origin, split, task, exclude_zero, shared_steps)


def _all_exist(folder: Path, names: list[str]) -> bool:
    return all((folder / name).is_file() for name in names)


def _left_padded_lengths(x: np.ndarray) -> np.ndarray:
    """Steps from the first one holding a non-zero value to the end, per row of ``[N, T, D]``
    (0 for an all-zero row): the valid length of a left-padded sequence."""
    steps = x.shape[1]
    nonzero = (x != 0).reshape(len(x), steps, -1).any(axis=2)  # [N, T]
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), steps)  # [N]
    return (steps - first).astype(np.int64)


def _valid_steps_first(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[N, T, D]`` left-padded rows with their last ``lengths`` steps moved to the front."""
    steps = x.shape[1]
    shift = (np.arange(steps)[None, :] + (steps - lengths)[:, None]) % steps  # [N, T]
    moved = np.take_along_axis(x, shift[:, :, None], axis=1)  # [N, T, D]
    moved[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return moved


def _assemble(
    dataset, parts, origin, split, task, exclude_zero, shared_steps=False
) -> MultimodalDataset:
    """Arrays per split -> one dataset (all splits or one), labels turned into the task,
    left-padded sequences turned into valid-steps-first ones with ``lengths``."""
    title = _TITLES[dataset]
    chosen = [s for s in (*SPLITS, "unknown") if split in (None, s) and s in parts]
    if not chosen:
        if "unknown" in parts:
            raise MlmmError(
                f"{title}: the official folds are unknown, so split={split!r} cannot be read; "
                "pass folds= (a JSON file of video ids per split), install the "
                "CMU-MultimodalSDK (mmsdk), or use split=None"
            )
        raise MlmmError(f"{title}: {origin} holds no rows for split {split!r}")
    inputs = {m: np.concatenate([parts[s][m] for s in chosen]) for m in MODALITIES}
    scores = np.concatenate([parts[s]["scores"] for s in chosen]).astype(np.float64)
    ids = np.concatenate([parts[s]["ids"] for s in chosen])
    official = np.concatenate([parts[s]["official"] for s in chosen])
    nonfinite = {m: int(sum(int(parts[s]["nonfinite"][m]) for s in chosen)) for m in MODALITIES}
    if not len(scores):  # a split the file holds with no sample
        raise MlmmError(f"{title}: {origin} holds no rows for split {split!r}")
    bad = ~np.isfinite(scores) | (np.abs(scores) > _SCORE_LIMIT + 1e-6)
    if bad.any():
        raise MlmmError(
            f"{title}: {origin} has {int(bad.sum())} sentiment score(s) outside [-3, 3] (first: "
            f"{scores[bad][:3].tolist()}); expected the documented range, is this the right file?"
        )
    if all("lengths" in parts[s] for s in chosen):  # .csd: valid steps first already
        lengths = {m: np.concatenate([parts[s]["lengths"][m] for s in chosen]) for m in MODALITIES}
    else:  # a pickle: counted from the left padding, then the valid steps moved first
        lengths = {m: _left_padded_lengths(inputs[m]) for m in MODALITIES}
        if shared_steps and len({inputs[m].shape[1] for m in MODALITIES}) == 1:
            longest = np.max([lengths[m] for m in MODALITIES], axis=0)  # [N]
            lengths = {m: longest.copy() for m in MODALITIES}
        inputs = {m: _valid_steps_first(inputs[m], lengths[m]) for m in MODALITIES}
    observed = zero_blocks_absent(inputs)
    for j, m in enumerate(MODALITIES):  # an absent modality has no valid step
        lengths[m] = np.where(observed[:, j], lengths[m], 0)
    keep = observed.any(axis=1)
    dropped_empty = int((~keep).sum())
    dropped_zero = 0
    if task == "binary" and exclude_zero:
        nonzero = scores != 0
        dropped_zero = int((keep & ~nonzero).sum())
        keep &= nonzero
    if task == "regression":
        task_spec, targets = TaskSpec("regression"), scores.astype(np.float32)
    elif task == "binary":
        task_spec = TaskSpec("classification", 2, ("negative", "positive"))
        targets = (scores > 0).astype(np.int64)
    else:
        task_spec = TaskSpec("classification", 7, tuple(str(k) for k in range(-3, 4)))
        targets = (np.round(np.clip(scores, -3, 3)) + 3).astype(np.int64)
    rows = np.flatnonzero(keep)
    specs = [ModalitySpec(m, "sequence", inputs[m].shape[1:]) for m in MODALITIES]
    return MultimodalDataset(
        specs=specs,
        task=task_spec,
        inputs={m: inputs[m][rows] for m in MODALITIES},
        targets=targets[rows],
        observed=observed[rows],
        lengths={m: lengths[m][rows] for m in MODALITIES},
        name=dataset,
        meta={
            "source": origin,
            "ids": ids[rows],
            "scores": scores[rows],
            "official_split": official[rows],
            "dropped_empty": dropped_empty,
            "dropped_zero_score": dropped_zero,
            "nonfinite_values": nonfinite,
        },
    )


def _clean(array: np.ndarray) -> tuple[np.ndarray, int]:
    """float32 with NaN, +-inf and float32 overflow set to 0; how many values were set."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(array).astype(np.float32)
    bad = ~np.isfinite(out)
    count = int(bad.sum())
    if count:
        out[bad] = 0.0
    return out, count


# ---------------------------------------------------------------------- MulT pickles
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5 (Python 3.14's default) arrays
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but numpy's array reconstruction: a second fence, not a proof of
    safety (``trust_pickle=True`` is still required)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _read_pickle_cached(folder, pickle_name, cache, dataset, trust_pickle, checksums):
    title = _TITLES[dataset]
    path = folder / pickle_name
    stamp = _stamp(path) if path.is_file() else None
    if cache.is_file():
        parts, cached_stamp = _read_cache(cache, title)
        if stamp is None or stamp == cached_stamp:
            return parts, str(cache)
        if not trust_pickle:
            raise MlmmError(
                f"{title}: {path} changed since it was converted to {cache}; pass "
                "trust_pickle=True to convert it again (reading a pickle can run code)"
            )
    if stamp is None:
        raise MlmmError(
            f"{title}: {folder} does not hold {pickle_name} (the MulT pickle, "
            "{'train','valid','test'} dicts of text/audio/vision/labels arrays)"
        )
    if not trust_pickle:
        raise MlmmError(
            f"{title}: {path} is a pickle, and reading a pickle can run code; pass "
            f"trust_pickle=True if you trust its source (it is converted once to {cache})"
        )
    warnings.warn(
        f"reading the pickle {path} (trust_pickle=True); converting it once to {cache}",
        stacklevel=4,
    )
    verify(path, dataset, checksums)
    try:
        with open(path, "rb") as fh:
            raw = _ArraysOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise MlmmError(
            f"{title}: {path} is not a MulT pickle of numpy arrays ({err}); the file may be "
            "truncated or another format"
        ) from None
    parts = _parts_from_pickle(raw, path, title)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(_CACHE_FORMAT),
        "source_stamp": np.array(stamp, dtype=np.int64),
    }
    for s, part in parts.items():
        for key in (*MODALITIES, "scores", "ids", "official"):
            arrays[f"{s}/{key}"] = part[key]
        arrays[f"{s}/nonfinite"] = np.array([part["nonfinite"][m] for m in MODALITIES])
    save_npz(cache, arrays)
    return parts, str(path)


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return (info.st_size, info.st_mtime_ns)


def _read_cache(cache: Path, title: str):
    try:
        with np.load(cache, allow_pickle=False) as archive:
            data = {key: archive[key] for key in archive.files}
    except NUMPY_FILE_ERRORS as err:  # a corrupt member header: TokenError
        raise MlmmError(
            f"{title}: the cache {cache} is unreadable ({type(err).__name__}: "
            f"{numpy_file_reason(err)}); delete it to convert again"
        ) from None
    if "source_stamp" not in data:
        raise MlmmError(
            f"{title}: the cache {cache} holds no 'source_stamp' (not written by mlmm); delete "
            "it to convert again"
        )
    if int(data.get("format", -1)) != _CACHE_FORMAT:
        raise MlmmError(
            f"{title}: the cache {cache} was written by another mlmm version; delete it to "
            "convert again"
        )
    parts = {}
    for s in SPLITS:
        if f"{s}/scores" not in data:
            continue
        part = {key: data[f"{s}/{key}"] for key in (*MODALITIES, "scores", "ids", "official")}
        part["nonfinite"] = dict(zip(MODALITIES, data[f"{s}/nonfinite"].tolist(), strict=True))
        parts[s] = part
    return parts, tuple(int(v) for v in data["source_stamp"])


def _parts_from_pickle(raw: Any, path: Path, title: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not set(SPLITS) <= set(raw):
        found = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise MlmmError(f"{title}: {path} should be a dict with keys {list(SPLITS)}, got {found}")
    parts = {}
    for s in SPLITS:
        part = raw[s]
        needed = (*MODALITIES, "labels")
        if not isinstance(part, dict) or not set(needed) <= set(part):
            found = sorted(map(str, part)) if isinstance(part, dict) else type(part).__name__
            other = (
                "; this is an MMSA pickle (aligned_50.pkl, with regression_labels), another "
                "format: use MulT's pickle or the SDK's .csd files"
                if isinstance(part, dict) and "regression_labels" in part
                else ""
            )
            raise MlmmError(
                f"{title}: {path}['{s}'] should hold keys {list(needed)}, got {found}{other}"
            )
        labels = np.asarray(part["labels"])
        n = len(labels)
        if labels.ndim != 3 or labels.shape[1:] != (1, 1):
            raise MlmmError(
                f"{title}: {path}['{s}']['labels'] has shape {labels.shape}, expected "
                "(N, 1, 1) sentiment scores"
            )
        out: dict[str, Any] = {"nonfinite": {}}
        for m in MODALITIES:
            arr = np.asarray(part[m])
            if arr.ndim != 3 or len(arr) != n or not np.issubdtype(arr.dtype, np.number):
                raise MlmmError(
                    f"{title}: {path}['{s}']['{m}'] has shape {arr.shape} and dtype {arr.dtype}, "
                    f"expected numbers of shape ({n}, T, D)"
                )
            out[m], out["nonfinite"][m] = _clean(arr)
        with np.errstate(over="ignore", invalid="ignore"):
            out["scores"] = labels.reshape(n).astype(np.float64)
        out["ids"] = _ids(part.get("id"), n, f"{path}['{s}']['id']", title)
        out["official"] = np.full(n, s)
        parts[s] = out
    return parts


def _ids(raw: Any, n: int, where: str, title: str) -> np.ndarray:
    """``'video[start,end]'`` strings from the optional ``id`` array (bytes for MOSI)."""
    if raw is None:
        return np.array([""] * n)
    rows = np.asarray(raw)
    if rows.ndim == 0 or len(rows) != n:
        found = "a scalar" if rows.ndim == 0 else f"{len(rows)} rows"
        raise MlmmError(
            f"{title}: {where} has {found}, expected {n} (one id row per label); the ids do not "
            "belong to these samples: is the file complete?"
        )
    rows = rows.reshape(n, int(np.prod(rows.shape[1:])))  # -1 fails for an empty split
    text = [[v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in row] for row in rows]
    return np.array([r[0] if len(r) == 1 else f"{r[0]}[{','.join(r[1:])}]" for r in text])


# ---------------------------------------------------------------------- SDK .csd files
def _read_csd(folder, dataset, seq_len, folds, fetch, checksums):
    h5py = require("h5py", "reading CMU-MultimodalSDK .csd files")
    title = _TITLES[dataset]
    files = CSD_FILES[dataset]
    if fetch:
        for modality, name in files.items():
            if not (folder / name).is_file():
                download(_csd_url(dataset, modality), folder / name, dataset, checksums)
    locate(
        folder,
        list(files.values()),
        title,
        where="get them from the CMU-MultimodalSDK (or pass download=True)",
    )
    for name in files.values():
        verify(folder / name, dataset, checksums)
    fold_of = _folds(dataset, folds)
    with _CsdFile(h5py, folder / files["labels"]) as (label_path, label_data):
        segments = _segments(label_path, label_data, title)
    features, nonfinite, lengths = {}, {}, {}
    for m in MODALITIES:
        with _CsdFile(h5py, folder / files[m]) as (path, data):
            features[m], nonfinite[m], lengths[m] = _segment_features(
                path, data, segments, seq_len, title
            )
    official = np.array([fold_of.get(vid, "unknown") for _, vid, *_ in segments])
    ids = np.array([seg for seg, *_ in segments])
    scores = np.array([score for *_, score in segments], dtype=np.float64)
    parts = {}
    for s in (*SPLITS, "unknown"):
        rows = np.flatnonzero(official == s)
        if not len(rows):
            continue
        part = {m: features[m][rows] for m in MODALITIES}
        part.update(scores=scores[rows], ids=ids[rows], official=official[rows])
        part["lengths"] = {m: lengths[m][rows] for m in MODALITIES}
        part["nonfinite"] = {m: int(nonfinite[m][rows].sum()) for m in MODALITIES}
        parts[s] = part
    if "unknown" in parts and len(parts) > 1:
        raise MlmmError(
            f"{title}: {int((official == 'unknown').sum())} segment(s) belong to no fold "
            f"(first: {ids[official == 'unknown'][:3].tolist()}); the folds do not match "
            "these files"
        )
    return parts, str(folder)


class _CsdFile:
    """Open a ``.csd`` file and hand back its ``data`` group; one-line errors for bad files."""

    def __init__(self, h5py: Any, path: Path) -> None:
        self.h5py, self.path, self.handle = h5py, path, None

    def __enter__(self):
        try:
            self.handle = self.h5py.File(self.path, "r")
        except OSError as err:
            raise MlmmError(
                f"{self.path} is not a readable HDF5 file ({str(err).split(';')[0]}); it may be "
                "truncated or corrupt: fetch it again"
            ) from None
        roots = list(self.handle.keys())
        if (
            len(roots) != 1
            or not hasattr(self.handle[roots[0]], "keys")
            or "data" not in self.handle[roots[0]]
            or not hasattr(self.handle[roots[0]]["data"], "keys")
        ):
            self.handle.close()
            raise MlmmError(
                f"{self.path} is not a computational sequence: expected one top-level group "
                f"holding 'data' and 'metadata', got top-level keys {roots[:5]}"
            )
        return self.path, self.handle[roots[0]]["data"]

    def __exit__(self, *exc):
        self.handle.close()
        return False


def _entry(path: Path, data: Any, key: str) -> tuple[np.ndarray, np.ndarray]:
    group = data[key]
    if not hasattr(group, "keys"):  # a dataset where the format has a group
        raise MlmmError(
            f"{path}: entry {key!r} is an array {group.shape}, expected a group holding "
            "'features' and 'intervals' (the computational-sequence layout)"
        )
    if "features" not in group or "intervals" not in group:
        raise MlmmError(
            f"{path}: entry {key!r} should hold 'features' and 'intervals', got "
            f"{sorted(group.keys())}"
        )
    features, intervals = group["features"], group["intervals"]
    if (
        len(features.shape) < 2
        or len(intervals.shape) != 2
        or intervals.shape[1] != 2
        or features.shape[0] != intervals.shape[0]
    ):
        raise MlmmError(
            f"{path}: entry {key!r} has features {features.shape} and intervals "
            f"{intervals.shape}, expected features [n, d...] and intervals [n, 2]"
        )
    if not np.issubdtype(features.dtype, np.number):
        raise MlmmError(
            f"{path}: entry {key!r} holds {features.dtype} features, expected numbers (word "
            "strings are not features: use the word-vector file)"
        )
    return features[()], intervals[()].astype(np.float64)


def _segments(path: Path, data: Any, title: str) -> list[tuple[str, str, float, float, float]]:
    """``(segment id, video id, start, end, score)`` from a label file, aligned or not."""
    out = []
    for key in data:
        labels, intervals = _entry(path, data, key)
        if not len(labels):  # a video with no labelled segment gives no sample
            continue
        labels = labels.reshape(len(labels), int(np.prod(labels.shape[1:])))
        if labels.shape[1] == 0:  # [n, 0]: no score to read (labels[i, 0] was an IndexError)
            raise MlmmError(
                f"{path}: label entry {key!r} has features of shape {labels.shape}, no value per "
                "segment; expected [n, 1] sentiment scores (MOSEI: [n, 7]): fetch the label file "
                "again"
            )
        if "[" in key:  # aligned to the labels: one entry per segment, '<video>[<i>]'
            video = key[: key.index("[")]
            out.append((key, video, *intervals[0].tolist(), float(labels[0, 0])))
        else:  # one entry per video, one row per segment
            for i in range(len(labels)):
                out.append((f"{key}[{i}]", key, *intervals[i].tolist(), float(labels[i, 0])))
    if not out:
        raise MlmmError(f"{path} holds no label entries under data/; expected [n, 1] scores")
    return out


def _segment_features(path, data, segments, seq_len, title):
    """``[N, seq_len, D]`` features per segment, valid steps first (zero where the file has
    no entry), the values set to 0 per segment, and the rows kept per segment ``[N]``."""
    width = None
    rows: list[np.ndarray | None] = []
    current_video, video_rows = None, None
    nonfinite = np.zeros(len(segments), dtype=np.int64)  # values set to 0, per segment
    for seg, video, start, end, _ in segments:
        if seg in data:
            feats, _ = _entry(path, data, seg)
        elif video in data:
            if current_video != video:  # one video's entry at a time: the file never whole
                current_video, video_rows = video, _entry(path, data, video)
            feats, intervals = video_rows
            feats = feats[(intervals[:, 0] < end) & (intervals[:, 1] > start)]
        else:
            rows.append(None)
            continue
        # an explicit width: reshape(0, -1) fails for a segment no feature row overlaps
        feats = feats.reshape(len(feats), int(np.prod(feats.shape[1:])))
        if feats.shape[1] == 0:  # a modality of no features would train on nothing
            raise MlmmError(
                f"{path}: entry {seg if seg in data else video!r} has 0 features per step "
                "(shape [n, 0]); expected [n, d] with d > 0: fetch the file again"
            )
        if width is None:
            width = feats.shape[1]
        elif feats.shape[1] != width:
            raise MlmmError(
                f"{path}: entry {seg!r} has {feats.shape[1]} features per step, the others "
                f"{width}; expected one width per file"
            )
        feats, nonfinite[len(rows)] = _clean(feats[:seq_len])
        rows.append(feats)
    if width is None:
        raise MlmmError(f"{path} has no entry for any labelled segment; is it from {title}?")
    out = np.zeros((len(segments), seq_len, width), dtype=np.float32)  # [N, T, D]
    kept = np.zeros(len(segments), dtype=np.int64)  # [N]
    for i, feats in enumerate(rows):
        if feats is not None and len(feats):
            out[i, : len(feats)] = feats  # [T_i, D], the padding after it
            kept[i] = len(feats)
    return out, nonfinite, kept


def _folds(dataset: str, folds: Any) -> dict[str, str]:
    """Video id -> official split name, from ``folds`` or the installed SDK ({} if neither)."""
    source = "folds="
    if folds is None:
        source = "the CMU-MultimodalSDK's standard folds"
        try:
            from mmsdk import mmdatasdk  # type: ignore[import-not-found]
        except ImportError:
            return {}
        standard = getattr(mmdatasdk, f"cmu_{dataset}").standard_folds
        folds = {
            "train": standard.standard_train_fold,
            "valid": standard.standard_valid_fold,
            "test": standard.standard_test_fold,
        }
    elif not isinstance(folds, Mapping):
        source = str(folds)
        try:
            folds = json.loads(Path(folds).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise MlmmError(
                f"folds={folds!r} should be a JSON file of {{'train': [...], 'valid': [...], "
                f"'test': [...]}} video ids ({err})"
            ) from None
    if not isinstance(folds, Mapping) or set(folds) != set(SPLITS):
        raise MlmmError(
            f"folds should map exactly {list(SPLITS)} to lists of video ids, got "
            f"{sorted(folds) if isinstance(folds, Mapping) else type(folds).__name__}"
        )
    not_lists = [s for s in SPLITS if not isinstance(folds[s], (list, tuple))]
    if not_lists:
        raise MlmmError(
            f"{source}: {not_lists[0]!r} should be a list of video ids, got "
            f"{type(folds[not_lists[0]]).__name__}"
        )
    check_disjoint({s: folds[s] for s in SPLITS}, source)
    return {str(vid): s for s in SPLITS for vid in folds[s]}
