"""BraTS brain MRI: one NIfTI volume per sequence (T1, T1ce, T2, FLAIR) and a tumour grade.

Layouts of the BraTS training releases (each case ``<case>/<case>_<sequence>.nii.gz`` or
``.nii``)::

    2018, 2019:  ROOT/{HGG,LGG}/<case>/<case>_t1.nii.gz ...      grade = the folder
    2020:        ROOT/<case>/<case>_t1.nii.gz ... + ROOT/name_mapping.csv (column Grade)

A sequence whose file is missing is absent (the missing-modality setting of HeMIS, mmFormer,
ShaSpec). Segmentation is out of scope: the label is the volume-level grade (LGG/HGG), and the
``_seg`` files (enhancing tumour written 4, no 3) are not read.

Reference: B. H. Menze et al., "The Multimodal Brain Tumor Image Segmentation Benchmark
(BRATS)", IEEE TMI 34(10), 2015; S. Bakas et al., "Advancing The Cancer Genome Atlas glioma
MRI collections with expert segmentation labels and radiomic features", Scientific Data 4,
2017.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.formats._common import require
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error

__all__ = ["BRATS_GRADES", "BRATS_SEQUENCES", "load_brats"]

BRATS_SEQUENCES = ("t1", "t1ce", "t2", "flair")
"""Sequence names, in the default modality order (nnU-Net's channel order)."""
BRATS_GRADES = ("LGG", "HGG")
"""Class names in label order: lower-grade glioma 0, high-grade glioma (glioblastoma) 1."""
BRATS_SHAPE = (240, 240, 155)
_EXTENSIONS = (".nii.gz", ".nii")


@register_dataset(
    "brats",
    description="BraTS 2018-2020 brain MRI: T1, T1ce, T2, FLAIR volumes, LGG vs HGG grade; a "
    "missing sequence file is absent (needs files at ROOT: --dataset-param root=ROOT)",
    source="B. H. Menze et al., IEEE TMI 34(10), 2015; S. Bakas et al., Sci. Data 4, 2017 "
    "(BraTS training data)",
    license="BraTS data-use terms (CBICA registration; cite the BraTS papers)",
    needs_files=True,
    modalities=", ".join(BRATS_SEQUENCES),
    task="classification",
)
def load_brats(
    root: str | os.PathLike | None = None,
    split: str | None = None,
    sequences: Sequence[str] | str = BRATS_SEQUENCES,
    downsample: int = 8,
    expected_shape: Sequence[int] = BRATS_SHAPE,
    orientation: str | None = None,
) -> MultimodalDataset:
    """Load BraTS training cases under ``root`` with their LGG/HGG grade.

    Parameters
    ----------
    root : path
        The release folder: ``HGG/`` and ``LGG/`` case folders (2018, 2019), or case folders
        and ``name_mapping.csv`` (2020).
    split : None
        The training releases have no official split: only None (all cases) is accepted;
        split with :mod:`mlmm.data.split`.
    sequences : sequence of str
        The sequences to read, in modality order (default ``t1, t1ce, t2, flair``).
    downsample : int
        Each volume is averaged over ``downsample``-voxel cubes (cropped to a multiple), so
        240 x 240 x 155 becomes 30 x 30 x 19 with 8; 1 keeps full resolution (35 MB per volume).
    expected_shape : tuple of int
        The voxel grid every volume must have, as nibabel reads it (x, y, z).
    orientation : str, optional
        Axis codes every volume must have (``nibabel.aff2axcodes``, e.g. ``"LPS"``). Always,
        the volumes of one case must share one affine.

    Returns
    -------
    MultimodalDataset
        One image modality per sequence, shape ``(z, x, y)``: the axial slices as channels.
        A missing sequence file is absent; a case with none of them is dropped
        (``meta["dropped_empty"]``). ``meta`` holds ``cases``, ``layout`` and ``official_split``.
    """
    nib = require("nibabel", "reading BraTS NIfTI volumes")
    if split is not None:
        raise MlmmError(
            f"BraTS: the training releases have no official split, got split={split!r}; pass "
            "split=None and split with mlmm.train_val_test_split"
        )
    chosen = _check_sequences(sequences)
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise MlmmError(f"BraTS: downsample must be a positive integer, got {downsample!r}")
    shape = tuple(int(s) for s in expected_shape)
    if len(shape) != 3 or any(s < downsample for s in shape):
        raise MlmmError(
            f"BraTS: expected_shape must be 3 sizes of at least downsample={downsample}, got "
            f"{tuple(expected_shape)}"
        )
    folder, cases, layout = _cases(root)
    out_shape = (shape[2] // downsample, shape[0] // downsample, shape[1] // downsample)
    n = len(cases)
    inputs = {s: np.zeros((n, *out_shape), dtype=np.float32) for s in chosen}  # [N, Z, X, Y]
    observed = np.zeros((n, len(chosen)), dtype=bool)
    for i, (case_dir, _) in enumerate(cases):
        affine = None
        for j, sequence in enumerate(chosen):
            path = _volume_path(case_dir, sequence)
            if path is None:
                continue
            volume, this_affine = _read_volume(nib, path, shape, orientation)
            if affine is not None and not np.allclose(affine, this_affine, atol=1e-3):
                raise MlmmError(
                    f"{path} has another affine than the case's other sequences; expected "
                    "co-registered volumes with one affine per case"
                )
            affine = this_affine
            inputs[sequence][i] = _pool(volume, downsample).transpose(2, 0, 1)
            observed[i, j] = True
    keep = observed.any(axis=1)
    if not keep.any():
        raise _no_volumes_error(folder, cases[0][0], chosen)
    grades = np.array([BRATS_GRADES.index(grade) for _, grade in cases], dtype=np.int64)
    return MultimodalDataset(
        specs=[ModalitySpec(s, "image", out_shape) for s in chosen],
        task=TaskSpec("classification", 2, BRATS_GRADES),
        inputs={s: v[keep] for s, v in inputs.items()},
        targets=grades[keep],
        observed=observed[keep],
        name="brats",
        meta={
            "source": str(folder),
            "layout": layout,
            "cases": np.array([d.name for d, _ in cases])[keep],
            "official_split": np.full(int(keep.sum()), "train"),
            "dropped_empty": int((~keep).sum()),
            "downsample": downsample,
        },
    )


def _check_sequences(sequences) -> tuple[str, ...]:
    chosen = (sequences,) if isinstance(sequences, str) else tuple(sequences)
    if not chosen:
        raise MlmmError(f"BraTS: sequences must name at least one of {list(BRATS_SEQUENCES)}")
    for s in chosen:
        if s not in BRATS_SEQUENCES:
            raise unknown_name_error("BraTS sequence", str(s), BRATS_SEQUENCES)
    if len(set(chosen)) != len(chosen):
        raise MlmmError(f"BraTS: sequences lists a sequence twice: {list(chosen)}")
    return chosen


def _cases(root) -> tuple[Path, list[tuple[Path, str]], str]:
    """The case folders with their grade, and which release layout was found."""
    expected = (
        "HGG/ and LGG/ case folders (2018, 2019) or case folders with name_mapping.csv (2020)"
    )
    if root is None:
        raise MlmmError(f"BraTS needs root=FOLDER holding {expected}; pass root=")
    folder = Path(root).expanduser()
    grade_dirs = [g for g in BRATS_GRADES if (folder / g).is_dir()]
    if grade_dirs:
        cases = [(case, grade) for grade in grade_dirs for case in _case_dirs(folder / grade)]
        layout = "grade folders (2018/2019)"
        grade_of: dict[str, str] = {}
        for case, grade in cases:
            if grade_of.setdefault(case.name, grade) != grade:
                raise MlmmError(
                    f"BraTS: case {case.name} is in both {folder / grade_of[case.name]} and "
                    f"{folder / grade}; expected each case under one grade: remove one copy"
                )
    elif (folder / "name_mapping.csv").is_file():
        grade_of = _name_mapping(folder / "name_mapping.csv")
        cases = []
        for case in _case_dirs(folder):
            if case.name not in grade_of:
                raise MlmmError(
                    f"BraTS: case {case.name} is not in {folder / 'name_mapping.csv'}; expected "
                    "one row per case (column BraTS_2020_subject_ID)"
                )
            cases.append((case, grade_of[case.name]))
        layout = "name_mapping.csv (2020)"
    else:
        inner = [  # an archive unpacked with its release folder inside (Kaggle's 2020 copy)
            p
            for p in (_case_dirs(folder) if folder.is_dir() else [])
            if (p / "name_mapping.csv").is_file() or any((p / g).is_dir() for g in BRATS_GRADES)
        ]
        hint = f": pass root={str(inner[0])!r}" if inner else ""
        raise MlmmError(
            f"BraTS: {folder} does not hold {expected}{hint}; the 2021 and later releases "
            "carry no grade and are not read"
        )
    if not cases:
        raise MlmmError(f"BraTS: {folder} holds no case folders; expected {expected}")
    return folder, cases, layout


def _case_dirs(parent: Path) -> list[Path]:
    """The case folders under ``parent``, sorted: hidden folders (``.ipynb_checkpoints``, a
    cache) and the ``__MACOSX`` folder a macOS zip adds are not cases."""
    return sorted(
        p
        for p in parent.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != "__MACOSX"
    )


def _name_mapping(path: Path) -> dict[str, str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a BOM is not part of "Grade"
            return _grades_of(csv.DictReader(fh), path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise MlmmError(
            f"{path} is not a UTF-8 CSV ({type(err).__name__}: {err}); expected the BraTS 2020 "
            "name_mapping.csv as published (re-save it as UTF-8 CSV)"
        ) from None


def _grades_of(reader: csv.DictReader, path: Path) -> dict[str, str]:
    """Case id -> grade from the rows of ``name_mapping.csv``."""
    needed = {"Grade", "BraTS_2020_subject_ID"}
    if not needed <= set(reader.fieldnames or ()):
        raise MlmmError(
            f"{path} has columns {reader.fieldnames}, expected {sorted(needed)} (the "
            "BraTS 2020 name_mapping.csv)"
        )
    out = {}
    for line, row in enumerate(reader, start=2):
        grade = (row["Grade"] or "").strip()  # a short row gives None for missing fields
        case = (row["BraTS_2020_subject_ID"] or "").strip()
        if grade not in BRATS_GRADES:
            raise MlmmError(
                f"{path} line {line}: grade {grade!r} is not one of {list(BRATS_GRADES)}"
            )
        if not case:
            raise MlmmError(
                f"{path} line {line} has no BraTS_2020_subject_ID; expected one case id per row"
            )
        if out.setdefault(case, grade) != grade:
            raise MlmmError(
                f"{path} line {line} gives {case} grade {grade}, an earlier row "
                f"{out[case]}; expected one grade per case: fix the file"
            )
    return out


def _no_volumes_error(folder: Path, case_dir: Path, chosen: tuple[str, ...]) -> MlmmError:
    """No case holds a volume: name the expected file names and what the first case holds."""
    held = sorted(p.name for p in case_dir.iterdir())[:5]
    return MlmmError(
        f"BraTS: no case under {folder} holds a volume named <case>_<sequence>.nii.gz or .nii "
        f"for sequences {list(chosen)} (e.g. {case_dir.name}_{chosen[0]}.nii.gz; that folder "
        f"holds {held}); rename the files to the 2018-2020 naming (the 2023 names -t1n, -t1c, "
        "-t2w, -t2f are not read)"
    )


def _volume_path(case_dir: Path, sequence: str) -> Path | None:
    for ext in _EXTENSIONS:
        path = case_dir / f"{case_dir.name}_{sequence}{ext}"
        if path.is_file():
            return path
    return None


def _read_volume(nib, path: Path, shape: tuple[int, ...], orientation: str | None):
    try:
        image = nib.load(path)
        found = tuple(image.shape)
        if len(found) > 3 and all(size == 1 for size in found[3:]):  # x, y, z, 1: one volume
            found = found[:3]
        if found != shape:
            raise MlmmError(
                f"{path} has shape {tuple(image.shape)}, expected {shape} (x, y, z); pass "
                "expected_shape= for another 3-D grid (a 4-D file must hold one volume)"
            )
        if orientation is not None:
            codes = "".join(nib.aff2axcodes(image.affine))
            if codes != orientation:
                raise MlmmError(
                    f"{path} has orientation {codes}, expected {orientation}; reorient it "
                    "(e.g. nibabel.as_closest_canonical) or pass orientation=None"
                )
        volume = np.asarray(image.dataobj, dtype=np.float32).reshape(found)  # [X, Y, Z]
    except MlmmError:
        raise
    except Exception as err:  # nibabel raises many types for a broken file
        raise MlmmError(
            f"{path} is not a readable NIfTI volume ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); it may be truncated"
        ) from None
    if not np.isfinite(volume).all():
        raise MlmmError(f"{path} holds NaN or inf voxels; expected finite intensities")
    return volume, image.affine


def _pool(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor``-voxel cubes, the volume cropped to a multiple of ``factor``."""
    if factor == 1:
        return volume
    x, y, z = (s // factor for s in volume.shape)
    cropped = volume[: x * factor, : y * factor, : z * factor]
    return cropped.reshape(x, factor, y, factor, z, factor).mean(axis=(1, 3, 5))
