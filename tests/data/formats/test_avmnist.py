"""AV-MNIST (MultiBench layout) on tiny ``.npy`` files written as MultiBench ships them."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.formats import avmnist as avmnist_module
from mlmm.data.formats import load_avmnist
from mlmm.errors import MlmmError


def _write(root, n_train=8, n_test=4, image_dir="image"):
    """float64 PCA-faded images [N, 784], float32 spectrograms [N, 112, 112], uint8 labels."""
    rng = np.random.default_rng(0)
    for sub in (image_dir, "audio"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test)):
        np.save(root / image_dir / f"{part}_data.npy", rng.uniform(0, 255, size=(n, 784)))
        audio = rng.uniform(0, 255, size=(n, 112, 112)).astype(np.float32)
        np.save(root / "audio" / f"{part}_data.npy", audio)
        np.save(root / f"{part}_labels.npy", (np.arange(n) % 10).astype(np.uint8))
    return root


def test_multibench_split_shapes_and_scaling(tmp_path):
    _write(tmp_path)
    ds = load_avmnist(tmp_path, n_valid=2)
    assert ds.n_samples == 12 and ds.task.n_classes == 10
    assert ds.spec("image").shape == (1, 28, 28) and ds.spec("audio").shape == (1, 112, 112)
    assert ds.meta["official_split"].tolist() == ["train"] * 6 + ["valid"] * 2 + ["test"] * 4
    raw = np.load(tmp_path / "image" / "train_data.npy")
    np.testing.assert_allclose(ds.inputs["image"][0].ravel(), raw[0] / 255.0, rtol=1e-6)
    assert ds.observed.all()
    valid = load_avmnist(tmp_path, split="valid", n_valid=2, flatten_image=True)
    assert valid.targets.tolist() == [6, 7] and valid.spec("image").shape == (784,)
    np.testing.assert_allclose(valid.inputs["image"][0], raw[6] / 255.0, rtol=1e-6)
    test = load_dataset("avmnist", root=str(tmp_path), split="test", n_valid=2)
    assert test.targets.tolist() == [0, 1, 2, 3]


def test_the_mfas_folder_name_is_accepted(tmp_path):
    _write(tmp_path, image_dir="images")
    assert load_avmnist(tmp_path, split="train", n_valid=3).n_samples == 5


def test_bad_files_get_one_line_errors(tmp_path):
    with pytest.raises(MlmmError, match="does not hold image/train_data.npy") as err:
        load_avmnist(tmp_path)
    assert "\n" not in str(err.value)
    _write(tmp_path)
    with pytest.raises(MlmmError, match=r"n_valid must be an integer in \[0, 8\)"):
        load_avmnist(tmp_path)  # 5,000 validation rows do not fit in 8
    np.save(tmp_path / "audio" / "test_data.npy", np.zeros((4, 112, 100), np.float32))
    with pytest.raises(MlmmError, match=r"audio/test_data\.npy holds float32 \(4, 112, 100\)"):
        load_avmnist(tmp_path, n_valid=2)
    _write(tmp_path)
    np.save(tmp_path / "test_labels.npy", np.array([0, 1, 10, 3]))
    with pytest.raises(MlmmError, match="outside the digits 0-9"):
        load_avmnist(tmp_path, n_valid=2)
    np.save(tmp_path / "test_labels.npy", np.array([0, 1, 2, 3], dtype=object))
    with pytest.raises(MlmmError, match=r"test_labels\.npy is not a plain \.npy array"):
        load_avmnist(tmp_path, n_valid=2)


@pytest.mark.parametrize("dtype", [np.uint8, ">f8"])
def test_integer_and_big_endian_images_are_scaled_as_floats(tmp_path, dtype):
    # MultiBench divides in place (`/= 255.0`), which raises on an int array; here uint8 and
    # big-endian images load and scale like the float64 release
    _write(tmp_path)
    raw = np.load(tmp_path / "image" / "train_data.npy").astype(dtype)
    np.save(tmp_path / "image" / "train_data.npy", raw)
    ds = load_avmnist(tmp_path, split="train", n_valid=2, flatten_image=True)
    assert ds.inputs["image"].dtype == np.float32
    np.testing.assert_allclose(ds.inputs["image"][0], raw[0].astype(np.float64) / 255.0, rtol=1e-6)


def test_an_empty_npy_file_is_one_line_naming_it(tmp_path):
    # numpy raised EOFError ("No data left in file") from deep inside np.load
    _write(tmp_path)
    (tmp_path / "train_labels.npy").write_bytes(b"")
    with pytest.raises(MlmmError, match=r"train_labels\.npy is not a plain \.npy array") as err:
        load_avmnist(tmp_path, n_valid=2)
    assert "\n" not in str(err.value)


def _corrupt_header(path):
    """Drop the ``)`` closing the header's shape (same length): numpy's header parser then
    raised tokenize.TokenError ('EOF in multi-line statement') from deep inside np.load."""
    raw = path.read_bytes()
    assert b"), }" in raw[:128]
    path.write_bytes(raw.replace(b"), }", b",  }", 1))


@pytest.mark.parametrize("damage", ["header", "data"])
def test_a_corrupt_header_or_truncated_data_is_one_line_naming_the_file(tmp_path, damage):
    _write(tmp_path)
    path = tmp_path / "audio" / "train_data.npy"
    if damage == "header":
        _corrupt_header(path)
    else:  # the header is whole, the rows are not (a broken download)
        path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MlmmError, match=r"audio/train_data\.npy is not a plain \.npy") as err:
        load_avmnist(tmp_path, n_valid=2)
    assert "fetch or write it again" in str(err.value) and "\n" not in str(err.value)
    if damage == "header":
        assert "its header is corrupt" in str(err.value)


@pytest.mark.parametrize(("split", "bad_row"), [("valid", 7), (None, 7), ("test", 2)])
def test_nan_or_inf_is_one_line_naming_the_file_and_its_row(tmp_path, split, bad_row):
    # the data set's own check named row 1 of the loaded split, not the file or its row
    _write(tmp_path)
    part = "test" if split == "test" else "train"
    path = tmp_path / "audio" / f"{part}_data.npy"
    audio = np.load(path)
    audio[bad_row, 5, 5] = np.nan
    audio[bad_row - 1, 0, 0] = np.inf
    np.save(path, audio)
    with pytest.raises(MlmmError, match=rf"audio/{part}_data\.npy holds NaN or inf in 2 row") as e:
        load_avmnist(tmp_path, split=split, n_valid=2)
    assert f"[{bad_row - 1}, {bad_row}]" in str(e.value) and "\n" not in str(e.value)


def test_n_valid_true_is_refused_not_read_as_one_row(tmp_path):
    _write(tmp_path)
    with pytest.raises(MlmmError, match=r"n_valid must be an integer in \[0, 8\).*got True"):
        load_avmnist(tmp_path, n_valid=True)


def test_n_valid_zero_loads_every_training_row_as_train(tmp_path):
    # the finiteness check reshaped the empty validation rows with -1: a ValueError traceback
    _write(tmp_path)
    ds = load_avmnist(tmp_path, n_valid=0)
    assert ds.meta["official_split"].tolist() == ["train"] * 8 + ["test"] * 4
    assert load_avmnist(tmp_path, split="train", n_valid=0).n_samples == 8


def _reference(raw, rows):
    """The conversion before the preallocated load (and MultiBench's): the float32 rows,
    divided by 255 in float32."""
    values = np.array(raw[rows], dtype=np.float32)
    values /= np.float32(255.0)
    return values


@pytest.mark.parametrize("audio_dtype", [np.float32, np.uint8])
def test_the_block_wise_load_gives_the_same_bits_as_converting_whole_arrays(tmp_path, audio_dtype):
    _write(tmp_path, n_train=9, n_test=5)
    for part in ("train", "test"):
        path = tmp_path / "audio" / f"{part}_data.npy"
        np.save(path, np.load(path).astype(audio_dtype))
    ds = load_avmnist(tmp_path, n_valid=3, flatten_image=True)
    image = [np.load(tmp_path / "image" / f"{p}_data.npy") for p in ("train", "test")]
    audio = [np.load(tmp_path / "audio" / f"{p}_data.npy") for p in ("train", "test")]
    expected_image = np.concatenate([_reference(image[0], slice(0, 9)), _reference(image[1], ...)])
    expected_audio = np.concatenate([_reference(audio[0], slice(0, 9)), _reference(audio[1], ...)])
    assert ds.inputs["image"].dtype == ds.inputs["audio"].dtype == np.float32
    assert ds.inputs["image"].tobytes() == expected_image.tobytes()
    assert ds.inputs["audio"].tobytes() == expected_audio.reshape(-1, 1, 112, 112).tobytes()
    valid = load_avmnist(tmp_path, split="valid", n_valid=3)
    assert valid.inputs["audio"].tobytes() == _reference(audio[0], slice(6, 9)).tobytes()
    # blocks smaller than the rows (the real files' 60,000 rows cross many 1,024-row blocks)
    out = np.empty((9, 112 * 112), np.float32)
    avmnist_module._fill(out, audio[0].reshape(9, -1), block=2)
    assert out.tobytes() == _reference(audio[0], slice(None)).reshape(9, -1).tobytes()


def test_loading_holds_about_two_copies_of_the_audio_not_four(tmp_path):
    # the parts, their concatenation and the dataset's checks (boolean indexing copied the
    # whole array twice) peaked at 4.4 copies of the float32 audio; now the loader's array
    # and the dataset's own copy, plus the image and one block of rows
    _write(tmp_path, n_train=300, n_test=60)
    tracemalloc.start()
    try:
        ds = load_avmnist(tmp_path, n_valid=30)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    audio_bytes = ds.inputs["audio"].nbytes
    assert peak < 2.6 * audio_bytes, peak / audio_bytes
