"""IEMOCAP (and MSP-IMPROV) utterance features in the layout MMIN distributes.

Layout (``ROOT`` holds MMIN's feature folders and its ``target`` folder)::

    ROOT/A/comparE.h5        one dataset per utterance id: float [T, 130] (ComParE LLDs)
    ROOT/V/denseface.h5      per utterance [T, 342] (DenseNet face features)
    ROOT/L/bert_large.h5     per utterance [T, 1024] (BERT-large token features)
    ROOT/target/<cv>/{trn,val,tst}_label.npy      IEMOCAP: one-hot [N, 4]; MSP: ints [N]
    ROOT/target/<cv>/{trn,val,tst}_int2name.npy   utterance ids [N, 1] (bytes) or [N]

Reference: J. Zhao, R. Li, Q. Jin, "Missing Modality Imagination Network for Emotion
Recognition with Uncertain Missing Modalities", ACL 2021 (github.com/AIM3-RUC/MMIN);
C. Busso et al., "IEMOCAP: interactive emotional dyadic motion capture database", Language
Resources and Evaluation 42(4), 2008.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.formats._common import (
    NUMPY_FILE_ERRORS,
    check_disjoint,
    check_split,
    locate,
    numpy_file_reason,
    plain_name,
    require,
    zero_blocks_absent,
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

__all__ = ["MMIN_FEATURES", "load_iemocap"]

MMIN_FEATURES = {"audio": "A/comparE.h5", "vision": "V/denseface.h5", "text": "L/bert_large.h5"}
"""Modality -> feature file under ``root`` (audio: see ``audio_features``)."""
SPLITS = ("train", "valid", "test")
_SET_NAMES = {"train": "trn", "valid": "val", "test": "tst"}


@register_dataset(
    "iemocap",
    description="IEMOCAP 4-class emotion, MMIN features: ComParE audio, DenseFace vision, "
    "BERT text; 10 folds (needs files at ROOT: --dataset-param root=ROOT)",
    source="C. Busso et al., IEMOCAP, LRE 42(4), 2008; features from MMIN (J. Zhao et al., "
    "ACL 2021)",
    license="IEMOCAP licence agreement (USC SAIL), research use",
    needs_files=True,
    modalities="audio, vision, text",
    task="classification",
)
def load_iemocap(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    cv: int = 1,
    seq_len: int = 50,
    trust_pickle: bool = False,
    audio_features: str = "comparE",
) -> MultimodalDataset:
    """Load IEMOCAP utterance features in MMIN's layout, one cross-validation fold.

    Parameters
    ----------
    root : path
        Folder holding ``A/comparE.h5``, ``V/denseface.h5``, ``L/bert_large.h5`` and
        ``target/<cv>/``.
    split : {"train", "valid", "test"}, optional
        MMIN's ``trn``/``val``/``tst`` sets of fold ``cv``; None: all three, with
        ``meta["official_split"]``. An utterance listed in two sets is an error.
    cv : int
        The fold (1-10 for IEMOCAP, 1-12 for MSP-IMPROV, whose files share the layout).
    seq_len : int
        Steps kept per utterance and modality: the first ``seq_len``, zero-padded at the end
        as MMIN's collate function pads.
    trust_pickle : bool
        Allow reading an ``int2name`` file saved as Python objects (a pickle inside the
        ``.npy``, which can run code); plain byte or string arrays need no trust.
    audio_features : str
        MMIN's ``A_type``: the audio file is ``A/<audio_features>.h5`` (``comparE`` for
        IEMOCAP; MSP-IMPROV's scripts use ``comparE_raw``).

    Returns
    -------
    MultimodalDataset
        Sequence modalities ``audio`` ``(seq_len, 130)``, ``vision`` ``(seq_len, 342)``,
        ``text`` ``(seq_len, 1024)``. An utterance with no entry in a feature file, or an
        all-zero one, has that modality absent. Labels: argmax of the one-hot rows (IEMOCAP)
        or the integers (MSP); classes are named ``"0"``.. because MMIN does not document
        their order, and counted over all three sets (a split loaded alone has them all). ``meta`` holds ``names`` (utterance ids) and ``official_split``.
    """
    h5py = require("h5py", "reading MMIN's .h5 feature files")
    check_split(split, SPLITS, "IEMOCAP (MMIN)")
    if not isinstance(cv, int) or isinstance(cv, bool) or cv < 1:
        raise MlmmError(f"IEMOCAP (MMIN): cv must be a fold number >= 1, got {cv!r}")
    if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
        raise MlmmError(f"IEMOCAP (MMIN): seq_len must be a positive integer, got {seq_len!r}")
    if not isinstance(audio_features, str) or not plain_name(audio_features):
        raise MlmmError(
            f"IEMOCAP (MMIN): audio_features is the stem of a file in A/ (comparE or "
            f"comparE_raw), got {audio_features!r}"
        )
    features = {**MMIN_FEATURES, "audio": f"A/{audio_features}.h5"}
    target = f"target/{cv}"
    expected = [*features.values()] + [
        f"{target}/{_SET_NAMES[s]}_{kind}.npy" for s in SPLITS for kind in ("label", "int2name")
    ]
    folder = locate(root, expected, "IEMOCAP (MMIN)", where="see github.com/AIM3-RUC/MMIN")
    chosen = [s for s in SPLITS if split in (None, s)]
    # the classes come from all three sets, so a split loaded alone has the same task
    all_labels, widths = {}, [2]
    for s in SPLITS:
        label_path = folder / target / f"{_SET_NAMES[s]}_label.npy"
        raw = _load_npy(label_path, False, may_hold_objects=False)
        all_labels[s] = _labels(raw, label_path)
        widths.append(raw.shape[1] if raw.ndim == 2 and raw.shape[1] > 1 else 0)  # one-hot
        widths.append(int(all_labels[s].max()) + 1 if len(all_labels[s]) else 0)
    n_classes = max(widths)
    # every set's ids, so an utterance in two sets of the fold is caught whatever split loads
    all_names = {}
    for s in SPLITS:
        name_path = folder / target / f"{_SET_NAMES[s]}_int2name.npy"
        all_names[s] = _names(_load_npy(name_path, trust_pickle), name_path)
    check_disjoint(
        {_SET_NAMES[s]: v for s, v in all_names.items()},
        f"{folder / target}/{{trn,val,tst}}_int2name.npy",
    )
    names, labels, official = [], [], []
    for s in chosen:
        label_path = folder / target / f"{_SET_NAMES[s]}_label.npy"
        name_path = folder / target / f"{_SET_NAMES[s]}_int2name.npy"
        set_labels = all_labels[s]
        set_names = all_names[s]
        if len(set_names) != len(set_labels):
            raise MlmmError(
                f"{name_path} has {len(set_names)} utterances but {label_path.name} has "
                f"{len(set_labels)} labels; expected one label per utterance"
            )
        names += set_names
        labels.append(set_labels)
        official += [s] * len(set_names)
    targets = np.concatenate(labels)
    inputs = {}
    for modality, relative in features.items():
        inputs[modality] = _features(h5py, folder / relative, names, seq_len)
    observed = zero_blocks_absent(inputs)
    keep = observed.any(axis=1)
    return MultimodalDataset(
        specs=[ModalitySpec(m, "sequence", v.shape[1:]) for m, v in inputs.items()],
        task=TaskSpec("classification", n_classes, tuple(str(k) for k in range(n_classes))),
        inputs={m: v[keep] for m, v in inputs.items()},
        targets=targets[keep],
        observed=observed[keep],
        name="iemocap",
        meta={
            "source": str(folder),
            "cv": cv,
            "names": np.array(names)[keep],
            "official_split": np.array(official)[keep],
            "dropped_empty": int((~keep).sum()),
        },
    )


_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path, trust_pickle: bool, may_hold_objects: bool = True) -> np.ndarray:
    """A ``.npy`` array; an object array (a pickle inside) only with ``trust_pickle``."""
    with open(path, "rb") as fh:
        magic = fh.read(len(_NPY_MAGIC))
    if magic != _NPY_MAGIC:  # np.load would take any other file for a pickle
        found = "an empty file" if not magic else f"a file starting {magic!r}"
        raise MlmmError(
            f"{path} is not a .npy file ({found}); expected an array saved with numpy.save: "
            "fetch MMIN's target files again"
        )
    try:
        return np.load(path, allow_pickle=False)
    except NUMPY_FILE_ERRORS as err:  # a corrupt header: TokenError
        if "allow_pickle" not in str(err):
            raise MlmmError(
                f"{path} is not a readable .npy array ({numpy_file_reason(err)}); it may be "
                "truncated or corrupt: fetch it again"
            ) from None
    if not may_hold_objects:
        raise MlmmError(
            f"{path} holds Python objects, expected numeric labels (one-hot rows or integers); "
            "is it the right file?"
        )
    if not trust_pickle:
        raise MlmmError(
            f"{path} holds Python objects (a pickle, which can run code when read); pass "
            "trust_pickle=True if you trust its source"
        )
    warnings.warn(f"reading pickled objects from {path} (trust_pickle=True)", stacklevel=4)
    try:
        return np.load(path, allow_pickle=True)
    except Exception as err:  # unpickling raises many types for a broken file
        raise MlmmError(
            f"{path} holds objects that could not be read ({type(err).__name__}); it may be "
            "truncated or from another Python: fetch it again"
        ) from None


def _labels(raw: np.ndarray, path: Path) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] > 1:  # one-hot rows (IEMOCAP)
        if not (np.isin(raw, (0, 1)).all() and (raw.sum(axis=1) == 1).all()):
            raise MlmmError(f"{path} holds rows that are not one-hot; expected [N, classes] 0/1")
        return raw.argmax(axis=1).astype(np.int64)
    values = raw.reshape(-1)
    if (
        not np.issubdtype(values.dtype, np.number)
        or (values < 0).any()
        or (values != np.round(values)).any()
    ):
        raise MlmmError(
            f"{path} holds {values.dtype} labels {values[:3].tolist()}...; expected one-hot rows "
            "or class integers >= 0"
        )
    return values.astype(np.int64)


def _names(raw: np.ndarray, path: Path) -> list[str]:
    if raw.ndim not in (1, 2) or (raw.ndim == 2 and raw.shape[1] != 1):
        raise MlmmError(f"{path} has shape {raw.shape}, expected utterance ids [N] or [N, 1]")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in raw.reshape(-1)]


def _features(h5py, path: Path, names: list[str], seq_len: int) -> np.ndarray:
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise MlmmError(
            f"{path} is not a readable HDF5 file ({str(err).split(';')[0]}); it may be truncated "
            "or corrupt: fetch it again"
        ) from None
    with handle:
        width = None
        out = None
        for i, name in enumerate(names):
            if name not in handle:
                continue  # no features for this utterance: the modality is absent
            entry = handle[name]
            if not hasattr(entry, "shape") or len(entry.shape) != 2:
                raise MlmmError(
                    f"{path}: entry {name!r} is not a [T, D] array; expected one dataset per "
                    "utterance id"
                )
            if width is None:
                width = entry.shape[1]
                out = np.zeros((len(names), seq_len, width), dtype=np.float32)  # [N, T, D]
            elif entry.shape[1] != width:
                raise MlmmError(
                    f"{path}: entry {name!r} has {entry.shape[1]} features per step, the others "
                    f"{width}; expected one width per file"
                )
            steps = np.asarray(entry[:seq_len], dtype=np.float32)
            if not np.isfinite(steps).all():
                raise MlmmError(
                    f"{path}: entry {name!r} holds NaN or inf; expected finite features"
                )
            out[i, : len(steps)] = steps
    if out is None:
        raise MlmmError(f"{path} has no entry for any utterance of the chosen split(s)")
    return out
