"""The helpers every format loader shares: presence from zero blocks, paths, checksums."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mlmm.data.formats import _common
from mlmm.errors import MlmmError


def test_zero_blocks_are_absent_across_chunk_boundaries():
    a = np.ones((2050, 2, 3), dtype=np.float32)
    a[[0, 1023, 1024, 2049]] = 0.0
    b = np.ones((2050, 4))
    b[5, 1] = np.nan  # not a zero block: present (NaN is checked by the dataset)
    observed = _common.zero_blocks_absent({"a": a, "b": b})
    assert observed.shape == (2050, 2)
    assert np.flatnonzero(~observed[:, 0]).tolist() == [0, 1023, 1024, 2049]
    assert observed[:, 1].all()


def test_zero_blocks_of_no_row_give_an_empty_mask():
    # a split with no sample: reshape(0, -1) raised a ValueError, not the dataset's own error
    observed = _common.zero_blocks_absent({"a": np.zeros((0, 3, 2)), "b": np.zeros((0, 4))})
    assert observed.shape == (0, 2) and observed.dtype == bool


def test_verify_uses_the_callers_digest_then_the_table(tmp_path, monkeypatch):
    path = tmp_path / "multimodal_imdb.hdf5"
    path.write_bytes(b"some bytes")
    digest = hashlib.sha256(b"some bytes").hexdigest()
    _common.verify(path, "mmimdb")  # no digest recorded: nothing to check
    _common.verify(path, "mmimdb", {path.name: digest.upper()})
    monkeypatch.setitem(_common.CHECKSUMS["mmimdb"], path.name, "f" * 64)
    with pytest.raises(MlmmError, match=r"multimodal_imdb\.hdf5 has SHA-256 .* expected ffff"):
        _common.verify(path, "mmimdb")


def test_locate_names_the_missing_files_and_the_source(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    assert _common.locate(tmp_path, ["a.npy"], "X") == tmp_path
    with pytest.raises(
        MlmmError, match=r"does not hold b\.npy \(expected a\.npy, b\.npy under root\); get"
    ):
        _common.locate(tmp_path, ["a.npy", "b.npy"], "X", where="get them there")


def test_the_cache_is_written_atomically(tmp_path):
    path = _common.cache_path(tmp_path, "x.npz")
    _common.save_npz(path, {"a": np.arange(3)})
    assert path.parent.name == ".mlmm-cache"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.npz"]  # no temporary left
    with np.load(path, allow_pickle=False) as archive:
        assert archive["a"].tolist() == [0, 1, 2]


def test_a_failed_download_leaves_nothing_behind(tmp_path):
    dest = tmp_path / "data" / "f.csd"
    with pytest.raises(MlmmError, match="could not download"):
        _common.download((tmp_path / "absent.csd").as_uri(), dest, "mosi")
    assert list(dest.parent.iterdir()) == []


def _dataset(official=None):
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.data.specs import ModalitySpec, TaskSpec

    meta = {} if official is None else {"official_split": np.array(official)}
    return MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (2,))],
        task=TaskSpec("classification", 2),
        inputs={"a": np.arange(12.0).reshape(6, 2)},
        targets=np.array([0, 1, 0, 1, 0, 1]),
        name="toy",
        meta=meta,
    )


def test_official_split_gives_the_papers_parts():
    from mlmm.data.formats import official_split

    ds = _dataset(["train", "train", "dev", "test", "train", "test"])
    split = official_split(ds)
    assert split.indices["train"].tolist() == [0, 1, 4]
    assert split.indices["val"].tolist() == [2] and split.indices["test"].tolist() == [3, 5]
    np.testing.assert_array_equal(split.test.inputs["a"], ds.inputs["a"][[3, 5]])
    no_val = official_split(_dataset(["train"] * 4 + ["test"] * 2))
    assert no_val.val is None and no_val.test.n_samples == 2
    with pytest.raises(MlmmError, match="records no official split"):
        official_split(_dataset())
    with pytest.raises(MlmmError, match=r"holds \['train'\], expected train, test"):
        official_split(_dataset(["train"] * 6))  # BraTS: training data only
    with pytest.raises(MlmmError, match=r"holds \['test', 'train', 'unknown'\]"):
        official_split(_dataset(["train"] * 4 + ["test", "unknown"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"text": "bert"}, "unknown MM-IMDb text encoding 'bert'"),
        ({"bad_images": "ignore"}, "unknown bad_images policy 'ignore'"),
        ({"image_size": 0}, "MM-IMDb: image_size must be a positive integer, got 0"),
        ({"text_dim": True}, "MM-IMDb: text_dim must be a positive integer, got True"),
        ({"text_length": 2.5}, "MM-IMDb: text_length must be a positive integer, got 2.5"),
    ],
)
def test_image_text_options_are_checked_with_one_line_errors(options, message):
    good = {"text": "hashing", "bad_images": "skip", "image_size": 8, "text_dim": 4}
    _common.check_image_text_options("MM-IMDb", **good, text_length=3)  # passes
    with pytest.raises(MlmmError, match=message):
        _common.check_image_text_options("MM-IMDb", **{**good, "text_length": 3, **options})
