"""IEMOCAP features in MMIN's layout, on tiny .h5 files and .npy targets."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.formats import load_iemocap
from mlmm.errors import MlmmError

h5py = pytest.importorskip("h5py")

SETS = {"trn": 6, "val": 2, "tst": 3}
WIDTHS = {"A/comparE.h5": 130, "V/denseface.h5": 342, "L/bert_large.h5": 1024}


def _names(prefix, n):
    return [f"Ses0{prefix}F_impro0{i}_F00{i}" for i in range(n)]


def _write(root, cv=1, one_hot=True, names_dtype="S"):
    rng = np.random.default_rng(0)
    everyone = []
    target = root / "target" / str(cv)
    target.mkdir(parents=True)
    for k, (set_name, n) in enumerate(SETS.items()):
        names = _names(k + 1, n)
        everyone += names
        classes = np.arange(n) % 4
        labels = np.eye(4, dtype=np.float32)[classes] if one_hot else classes
        np.save(target / f"{set_name}_label.npy", labels)
        ids = np.array([[v.encode()] for v in names], dtype=names_dtype)
        np.save(target / f"{set_name}_int2name.npy", ids, allow_pickle=True)
    for relative, width in WIDTHS.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(root / relative, "w") as f:
            for i, name in enumerate(everyone):
                if relative.startswith("V/") and i == 1:
                    continue  # no face found in this utterance
                f[name] = rng.normal(size=(3 + i, width)).astype(np.float32)
    return root


def test_folds_labels_padding_and_missing_entries(tmp_path):
    _write(tmp_path)
    ds = load_iemocap(tmp_path, seq_len=4)
    assert ds.modality_names == ("audio", "vision", "text")
    assert [s.shape for s in ds.specs] == [(4, 130), (4, 342), (4, 1024)]
    assert ds.meta["official_split"].tolist() == ["train"] * 6 + ["valid"] * 2 + ["test"] * 3
    assert ds.targets.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 0, 1, 2]
    assert ds.observed[:, 1].tolist() == [True, False] + [True] * 9
    with h5py.File(tmp_path / "A/comparE.h5") as f:
        first = f[ds.meta["names"][0]][()]  # 3 steps, zero-padded at the end to 4
    np.testing.assert_array_equal(ds.inputs["audio"][0, :3], first)
    assert (ds.inputs["audio"][0, 3] == 0).all()
    test = load_dataset("iemocap", root=str(tmp_path), split="test", seq_len=2)
    assert test.n_samples == 3 and test.meta["names"][0] == "Ses03F_impro00_F000"


def test_msp_style_integer_labels_and_pickled_names(tmp_path):
    _write(tmp_path, cv=3, one_hot=False, names_dtype=object)
    with pytest.raises(MlmmError, match="holds Python objects .* trust_pickle=True"):
        load_iemocap(tmp_path, cv=3)
    with pytest.warns(UserWarning, match="reading pickled objects"):
        ds = load_iemocap(tmp_path, cv=3, split="valid", trust_pickle=True)
    assert ds.targets.tolist() == [0, 1]
    assert ds.task.n_classes == 4  # the classes of all three sets, not of 'valid' alone
    (tmp_path / "A/comparE.h5").rename(tmp_path / "A/comparE_raw.h5")  # MSP's A_type
    with pytest.raises(MlmmError, match="does not hold A/comparE.h5"):
        load_iemocap(tmp_path, cv=3, trust_pickle=True)
    with pytest.warns(UserWarning, match="reading pickled objects"):
        msp = load_iemocap(tmp_path, cv=3, trust_pickle=True, audio_features="comparE_raw")
    assert msp.spec("audio").shape == (50, 130) and msp.n_samples == 11


def test_a_split_alone_has_every_class_of_the_one_hot_labels(tmp_path):
    _write(tmp_path)
    full = load_iemocap(tmp_path)
    valid = load_iemocap(tmp_path, split="valid")  # labels 0 and 1 only
    assert valid.targets.tolist() == [0, 1]
    assert valid.task.n_classes == full.task.n_classes == 4
    assert valid.task.class_names == full.task.class_names


def test_bad_files_get_one_line_errors(tmp_path):
    with pytest.raises(MlmmError, match="does not hold A/comparE.h5"):
        load_iemocap(tmp_path)
    _write(tmp_path)
    with pytest.raises(MlmmError, match=r"does not hold target/2/trn_label\.npy"):
        load_iemocap(tmp_path, cv=2)
    np.save(tmp_path / "target/1/val_label.npy", np.array([[1, 1, 0, 0], [0, 1, 0, 0]]))
    with pytest.raises(MlmmError, match=r"val_label\.npy holds rows that are not one-hot"):
        load_iemocap(tmp_path)
    np.save(tmp_path / "target/1/val_label.npy", np.eye(4)[:3])
    with pytest.raises(MlmmError, match="has 2 utterances but val_label.npy has 3 labels"):
        load_iemocap(tmp_path)


def test_a_truncated_h5_file_is_one_line_naming_it(tmp_path):
    _write(tmp_path)
    path = tmp_path / "V/denseface.h5"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MlmmError, match="denseface.h5") as info:
        load_iemocap(tmp_path)
    assert "\n" not in str(info.value)


def test_an_utterance_in_two_sets_of_a_fold_is_refused(tmp_path):
    # trn and tst sharing utterances loaded silently before: the test scores saw training data
    _write(tmp_path)
    target = tmp_path / "target" / "1"
    np.save(target / "tst_int2name.npy", np.load(target / "trn_int2name.npy")[:3])
    with pytest.raises(MlmmError, match="lists 'Ses01F_impro00_F000' in both 'trn' and 'tst'"):
        load_iemocap(tmp_path, split="train")  # caught whichever split is loaded


@pytest.mark.parametrize("content", [b"", b"label,utterance\n0,Ses01F\n"])
def test_an_empty_or_foreign_target_file_is_one_line_naming_it(tmp_path, content):
    # an empty file raised EOFError; a CSV was called "a pickle" and asked for trust_pickle
    _write(tmp_path)
    for name in ("trn_label.npy", "val_int2name.npy"):
        path = tmp_path / "target" / "1" / name
        saved = path.read_bytes()
        path.write_bytes(content)
        with pytest.raises(MlmmError, match=rf"{name} is not a \.npy file") as err:
            load_iemocap(tmp_path, trust_pickle=True)
        assert "numpy.save" in str(err.value) and "\n" not in str(err.value)
        path.write_bytes(saved)


def test_a_truncated_target_file_is_one_line_naming_it(tmp_path):
    _write(tmp_path)
    path = tmp_path / "target" / "1" / "trn_label.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(MlmmError, match=r"trn_label\.npy is not a readable \.npy array"):
        load_iemocap(tmp_path)
    np.save(path, np.array(["0", "1"], dtype=object), allow_pickle=True)
    with pytest.raises(MlmmError, match=r"trn_label\.npy holds Python objects, expected numeric"):
        load_iemocap(tmp_path, trust_pickle=True)  # labels are never unpickled


def test_a_target_file_with_a_corrupt_header_is_one_line_naming_it(tmp_path):
    # numpy's header parser raised tokenize.TokenError, a traceback through np.load
    _write(tmp_path)
    path = tmp_path / "target" / "1" / "val_label.npy"
    raw = path.read_bytes()
    path.write_bytes(raw.replace(b"), }", b",  }", 1))
    with pytest.raises(MlmmError, match=r"val_label\.npy is not a readable \.npy array") as err:
        load_iemocap(tmp_path)
    assert "its header is corrupt" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("stem", ["../A/comparE", r"..\comparE", "", "C:comparE"])
def test_an_audio_features_stem_that_leaves_a_is_refused(tmp_path, stem):
    # only '/' was refused: a backslash or drive reached outside A/ on Windows
    _write(tmp_path)
    with pytest.raises(MlmmError, match="audio_features is the stem of a file in A/"):
        load_iemocap(tmp_path, audio_features=stem)
