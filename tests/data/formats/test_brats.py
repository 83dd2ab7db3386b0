"""BraTS loader on tiny NIfTI volumes in the 2018/2019 and 2020 release layouts."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.formats import load_brats
from mlmm.errors import MlmmError

nib = pytest.importorskip("nibabel")

SHAPE = (8, 8, 4)  # a tiny (x, y, z) grid standing in for 240 x 240 x 155
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])  # BraTS volumes read as LPS in nibabel


def _volume(path, value, shape=SHAPE, affine=AFFINE, dtype=np.int16):
    data = np.zeros(shape, dtype=dtype)
    data[2:6, 2:6, 1:3] = value  # a brain on a zero background
    nib.save(nib.Nifti1Image(data, affine), path)


def _case(folder, name, missing=(), ext=".nii.gz", value=100):
    case = folder / name
    case.mkdir(parents=True)
    for k, sequence in enumerate(("t1", "t1ce", "t2", "flair", "seg")):
        if sequence not in missing:
            _volume(case / f"{name}_{sequence}{ext}", value + k)
    return case


def test_grade_folders_missing_sequences_and_pooling(tmp_path):
    _case(tmp_path / "HGG", "Brats18_CBICA_AAA_1")
    _case(tmp_path / "LGG", "Brats18_TCIA09_1_1", missing=("flair",), ext=".nii")
    ds = load_brats(tmp_path, downsample=2, expected_shape=SHAPE, orientation="LPS")
    assert ds.modality_names == ("t1", "t1ce", "t2", "flair")
    assert ds.meta["cases"].tolist() == ["Brats18_TCIA09_1_1", "Brats18_CBICA_AAA_1"]
    assert ds.targets.tolist() == [0, 1] and ds.task.class_names == ("LGG", "HGG")
    assert ds.observed.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert ds.spec("t1").shape == (2, 4, 4)  # (z, x, y) after 2x pooling
    t1 = ds.inputs["t1"][1]  # HGG case: value 100 in x, y 2-5 and z 1-2
    assert t1[0, 1, 1] == pytest.approx(100 / 2)  # the 2x2x2 cube holds 4 brain voxels of 8
    assert t1[0, 0, 0] == 0
    order = load_dataset(
        "brats",
        root=str(tmp_path),
        sequences=["flair", "t2"],
        downsample=4,
        expected_shape=list(SHAPE),
    )
    assert order.modality_names == ("flair", "t2") and order.spec("t2").shape == (1, 2, 2)


def test_the_2020_layout_reads_grades_from_name_mapping(tmp_path):
    _case(tmp_path, "BraTS20_Training_001")
    _case(tmp_path, "BraTS20_Training_002", missing=("t1", "t1ce", "t2", "flair"))
    (tmp_path / "name_mapping.csv").write_text(
        "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
        "BraTS_2019_subject_ID,BraTS_2020_subject_ID\n"
        "LGG,NA,NA,NA,NA,BraTS20_Training_001\nHGG,NA,NA,NA,NA,BraTS20_Training_002\n"
    )
    ds = load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    assert ds.n_samples == 1 and ds.meta["dropped_empty"] == 1 and ds.targets.tolist() == [0]
    assert ds.spec("flair").shape == (4, 8, 8)
    (tmp_path / "name_mapping.csv").write_text(
        "Grade,BraTS_2020_subject_ID\nGBM,BraTS20_Training_001\nHGG,BraTS20_Training_002\n"
    )
    with pytest.raises(MlmmError, match=r"line 2: grade 'GBM' is not one of \['LGG', 'HGG'\]"):
        load_brats(tmp_path, expected_shape=SHAPE, downsample=1)


def test_bad_volumes_get_one_line_errors(tmp_path):
    with pytest.raises(MlmmError, match="does not hold HGG/ and LGG/ case folders"):
        load_brats(tmp_path)
    case = _case(tmp_path / "HGG", "Brats19_A_1")
    with pytest.raises(MlmmError, match=r"has shape \(8, 8, 4\), expected \(240, 240, 155\)"):
        load_brats(tmp_path)
    with pytest.raises(MlmmError, match="has orientation LPS, expected RAS"):
        load_brats(tmp_path, expected_shape=SHAPE, orientation="RAS", downsample=1)
    _volume(case / "Brats19_A_1_t2.nii.gz", 5, affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(MlmmError, match="Brats19_A_1_t2.nii.gz has another affine"):
        load_brats(tmp_path, expected_shape=SHAPE, downsample=1)
    _volume(case / "Brats19_A_1_t2.nii.gz", 5)
    path = case / "Brats19_A_1_t1.nii.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(MlmmError, match="Brats19_A_1_t1.nii.gz is not a readable NIfTI") as err:
        load_brats(tmp_path, expected_shape=SHAPE, downsample=1)
    assert "\n" not in str(err.value)
    with pytest.raises(MlmmError, match="no official split"):
        load_brats(tmp_path, split="train")


def test_a_name_mapping_csv_with_a_byte_order_mark_is_read(tmp_path):
    # a BOM made the first column '\ufeffGrade', refused as a missing Grade column
    _case(tmp_path, "BraTS20_Training_001")
    (tmp_path / "name_mapping.csv").write_bytes(
        b"\xef\xbb\xbfGrade,BraTS_2020_subject_ID\r\nHGG,BraTS20_Training_001\r\n"
    )
    ds = load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    assert ds.targets.tolist() == [1]


def test_cases_with_no_volume_of_the_expected_names_are_one_line(tmp_path):
    # the 2023 naming (or files renamed away from their case) gave "the dataset is empty"
    case = tmp_path / "HGG" / "Brats18_A_1"
    case.mkdir(parents=True)
    for sequence in ("t1n", "t1c", "t2w", "t2f", "seg"):
        _volume(case / f"Brats18_A_1-{sequence}.nii.gz", 3)
    with pytest.raises(MlmmError, match=r"no case under .* holds a volume named") as err:
        load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    message = str(err.value)
    assert "Brats18_A_1_t1.nii.gz" in message and "Brats18_A_1-t1c.nii.gz" in message
    assert "\n" not in message
    (tmp_path / "HGG").rename(tmp_path / "BraTS2021_00000")
    with pytest.raises(MlmmError, match="2021 and later releases carry no grade"):
        load_brats(tmp_path, downsample=1, expected_shape=SHAPE)


def test_big_endian_scaled_integer_volumes_load_as_their_float_values(tmp_path):
    # BraTS volumes are int16 or float; the stored integers times scl_slope plus scl_inter
    case = _case(tmp_path / "LGG", "Brats18_B_1")
    data = np.zeros(SHAPE, dtype=">i2")
    data[2:6, 2:6, 1:3] = 7
    image = nib.Nifti1Image(data, AFFINE)
    image.header.set_slope_inter(2.0, 1.0)
    nib.save(image, case / "Brats18_B_1_t2.nii.gz")
    ds = load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    t2 = ds.inputs["t2"][0]  # (z, x, y)
    assert t2.dtype == np.float32 and t2[1, 2, 2] == 15.0 and t2[0, 0, 0] == 1.0


def test_bad_name_mapping_rows_and_a_case_under_both_grades_are_one_line(tmp_path):
    _case(tmp_path, "BraTS20_Training_001")
    mapping = tmp_path / "name_mapping.csv"
    header = "Grade,BraTS_2020_subject_ID\n"
    for body, message in (
        ("LGG\n", "line 2 has no BraTS_2020_subject_ID"),  # AttributeError on None before
        (
            "LGG,BraTS20_Training_001\nHGG,BraTS20_Training_001\n",  # the last row won before
            "line 3 gives BraTS20_Training_001 grade HGG, an earlier row LGG",
        ),
    ):
        mapping.write_text(header + body)
        with pytest.raises(MlmmError, match=message):
            load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    mapping.write_bytes(header.encode("utf-16"))  # UnicodeDecodeError before
    with pytest.raises(MlmmError, match=r"name_mapping\.csv is not a UTF-8 CSV") as err:
        load_brats(tmp_path, downsample=1, expected_shape=SHAPE)
    assert "\n" not in str(err.value)
    _case(tmp_path / "grades" / "HGG", "Brats18_A_1")
    _case(tmp_path / "grades" / "LGG", "Brats18_A_1")  # loaded twice, with both labels, before
    with pytest.raises(MlmmError, match="case Brats18_A_1 is in both .*LGG and .*HGG"):
        load_brats(tmp_path / "grades", downsample=1, expected_shape=SHAPE)


def test_hidden_and_macos_zip_folders_are_not_cases(tmp_path):
    # 2020: '.ipynb_checkpoints' was "not in name_mapping.csv" (an error); 2018/2019: a hidden
    # folder was an empty case, counted in dropped_empty
    _case(tmp_path / "2020", "BraTS20_Training_001")
    (tmp_path / "2020" / "name_mapping.csv").write_text(
        "Grade,BraTS_2020_subject_ID\nLGG,BraTS20_Training_001\n"
    )
    (tmp_path / "2020" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "2020" / "__MACOSX" / "BraTS20_Training_001").mkdir(parents=True)
    ds = load_brats(tmp_path / "2020", downsample=1, expected_shape=SHAPE)
    assert ds.meta["cases"].tolist() == ["BraTS20_Training_001"]
    _case(tmp_path / "2019" / "HGG", "BraTS19_CBICA_AAA_1")
    (tmp_path / "2019" / "HGG" / ".cache").mkdir()
    ds = load_brats(tmp_path / "2019", downsample=1, expected_shape=SHAPE)
    assert ds.meta["cases"].tolist() == ["BraTS19_CBICA_AAA_1"] and ds.meta["dropped_empty"] == 0


def test_a_4d_file_holding_one_volume_reads_as_that_volume(tmp_path):
    # (x, y, z, 1), as some converters write: refused before, with advice (expected_shape=)
    # that could not help; a 4-D file of two volumes is still refused
    case = _case(tmp_path / "HGG", "Brats19_A_1")
    flat = load_brats(tmp_path, expected_shape=SHAPE, downsample=1)
    _volume(case / "Brats19_A_1_t2.nii.gz", 102, shape=(*SHAPE, 1))
    ds = load_brats(tmp_path, expected_shape=SHAPE, downsample=1)
    np.testing.assert_array_equal(ds.inputs["t2"], flat.inputs["t2"])
    _volume(case / "Brats19_A_1_t2.nii.gz", 102, shape=(*SHAPE, 2))
    with pytest.raises(MlmmError, match=r"has shape \(8, 8, 4, 2\).*must hold one volume"):
        load_brats(tmp_path, expected_shape=SHAPE, downsample=1)


def test_a_root_one_folder_above_the_release_names_the_release_folder(tmp_path):
    # Kaggle's 2020 copy unpacks as BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/
    inner = tmp_path / "BraTS2020_TrainingData" / "MICCAI_BraTS2020_TrainingData"
    _case(inner, "BraTS20_Training_001")
    (inner / "name_mapping.csv").write_text(
        "Grade,BraTS_2020_subject_ID\nLGG,BraTS20_Training_001\n"
    )
    with pytest.raises(MlmmError, match=rf"pass root='{inner}'") as err:
        load_brats(tmp_path / "BraTS2020_TrainingData", expected_shape=SHAPE, downsample=1)
    assert "\n" not in str(err.value)
    with pytest.raises(MlmmError, match="does not hold HGG/ and LGG/"):  # no such folder at all
        load_brats(tmp_path / "nowhere")
