"""CMU-MOSI / MOSEI loaders on tiny files written in the exact published layouts."""

from __future__ import annotations

import json
import pickle
import sys
import warnings

import numpy as np
import pytest

import mlmm
from mlmm.data.datasets import DATASETS, load_dataset
from mlmm.data.formats import load_mosei, load_mosi
from mlmm.data.formats import mosi as mosi_module
from mlmm.data.formats._common import require
from mlmm.errors import MlmmError

h5py = pytest.importorskip("h5py")

T = 5
SIZES = {"train": 6, "valid": 3, "test": 4}
WIDTHS = {"text": 300, "audio": 5, "vision": 20}  # MulT's MOSI: COVAREP 5, FACET 20
SCORES = {
    "train": [2.4, -1.6, 0.0, 3.0, -3.0, 0.6],
    "valid": [1.2, -0.4, 2.6],
    "test": [-2.2, 0.8, 1.5, -1.0],
}


def _mult_dict(seed: int = 0) -> dict:
    """The MulT pickle: float arrays [N, T, D], labels [N, 1, 1], ids [N, 3] of bytes."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SIZES.items():
        part = {m: rng.normal(size=(n, T, d)).astype(np.float32) for m, d in WIDTHS.items()}
        part["labels"] = np.array(SCORES[split], dtype=np.float32).reshape(n, 1, 1)
        part["id"] = np.array(
            [[f"vid{split}{i}".encode(), b"1.5", b"4.25"] for i in range(n)], dtype=object
        )
        out[split] = part
    train = out["train"]
    train["audio"] = train["audio"].astype(np.float64)
    train["audio"][0, 0, 0] = -np.inf  # COVAREP -inf, as MulT sets to 0
    train["audio"][0, 1, 0] = 1e39  # overflows float32
    train["audio"][1, 0, 0] = np.nan
    train["text"][3] = 0.0  # text missing: an all-zero block
    for m in WIDTHS:  # one sample with nothing at all
        train[m][4] = 0.0
    return out


def _write_pickle(root, data=None, name="mosi_data.pkl", protocol=None):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "wb") as fh:
        pickle.dump(_mult_dict() if data is None else data, fh, protocol=protocol)
    return root / name


def test_a_pickle_needs_trust_then_converts_once_to_a_safe_cache(tmp_path):
    _write_pickle(tmp_path)
    with pytest.raises(MlmmError, match="trust_pickle=True") as err:
        load_mosi(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.warns(UserWarning, match="reading the pickle"):
        first = load_mosi(tmp_path, trust_pickle=True, task="regression")
    cache = tmp_path / ".mlmm-cache" / "mosi_data.npz"
    assert cache.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mlmm-cache", "mosi_data.pkl"]
    np.load(cache, allow_pickle=False).close()  # the cache is plain arrays
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pickle read, no warning
        second = load_mosi(tmp_path, task="regression")
    for m in ("text", "audio", "vision"):
        np.testing.assert_array_equal(first.inputs[m], second.inputs[m])
    np.testing.assert_array_equal(first.targets, second.targets)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_every_protocol_numpy_writes_are_read(tmp_path, protocol):
    # protocol 5 (the default from Python 3.14, and pickle.HIGHEST_PROTOCOL) rebuilds arrays
    # with numpy's _frombuffer, not _reconstruct
    _write_pickle(tmp_path, protocol=protocol)
    with pytest.warns(UserWarning, match="reading the pickle"):
        ds = load_mosi(tmp_path, trust_pickle=True, task="regression")
    expected = _mult_dict()["valid"]["vision"]
    valid = ds.meta["official_split"] == "valid"
    np.testing.assert_array_equal(ds.inputs["vision"][valid], expected)


def test_a_changed_pickle_is_not_read_from_the_stale_cache(tmp_path):
    _write_pickle(tmp_path)
    with pytest.warns(UserWarning):
        load_mosi(tmp_path, trust_pickle=True)
    _write_pickle(tmp_path, _mult_dict(seed=1))
    with pytest.raises(MlmmError, match="changed since it was converted"):
        load_mosi(tmp_path)


def test_pickle_arrays_shapes_missingness_and_nonfinite_values(tmp_path):
    _write_pickle(tmp_path)
    with pytest.warns(UserWarning):
        ds = load_mosi(tmp_path, trust_pickle=True, task="regression")
    # 13 samples, 1 with no modality dropped
    assert ds.n_samples == 12 and ds.meta["dropped_empty"] == 1
    assert [s.shape for s in ds.specs] == [(T, 300), (T, 5), (T, 20)]
    assert [s.kind for s in ds.specs] == ["sequence"] * 3
    ids = ds.meta["ids"].tolist()
    assert ids[0] == "vidtrain0[1.5,4.25]"
    row = ids.index("vidtrain3[1.5,4.25]")
    assert ds.observed[row].tolist() == [False, True, True]
    assert ds.observed.sum() == 3 * 12 - 1
    assert ds.meta["nonfinite_values"]["audio"] == 3
    assert ds.inputs["audio"][0, 0, 0] == 0 and ds.inputs["audio"][0, 1, 0] == 0
    assert ds.inputs["audio"][1, 0, 0] == 0 and np.isfinite(ds.inputs["audio"]).all()
    assert ds.meta["official_split"].tolist() == ["train"] * 5 + ["valid"] * 3 + ["test"] * 4
    np.testing.assert_allclose(ds.targets[:3], [2.4, -1.6, 0.0], rtol=1e-6)


def test_binary_and_seven_class_tasks_follow_mult(tmp_path):
    _write_pickle(tmp_path)
    with pytest.warns(UserWarning):
        load_mosi(tmp_path, trust_pickle=True)
    train = load_mosi(tmp_path, split="train", task="binary")
    # train scores 2.4 -1.6 0.0 3.0 (-3.0 dropped: empty) 0.6; the 0.0 is excluded
    assert train.targets.tolist() == [1, 0, 1, 1]
    assert train.meta["dropped_zero_score"] == 1
    assert train.task.class_names == ("negative", "positive")
    kept = load_mosi(tmp_path, split="train", task="binary", exclude_zero=False)
    assert kept.targets.tolist() == [1, 0, 0, 1, 1]
    seven = load_mosi(tmp_path, split="valid", task="7class")
    # round(1.2)=1, round(-0.4)=0, round(2.6)=3 -> classes shifted by 3
    assert seven.targets.tolist() == [4, 3, 6] and seven.task.n_classes == 7
    assert seven.task.class_names[0] == "-3"
    test = load_mosi(tmp_path, split="test", task="regression")
    assert test.n_samples == 4 and set(test.meta["official_split"]) == {"test"}


def _trusted(root):
    with pytest.warns(UserWarning, match="reading the pickle"):
        return load_mosi(root, trust_pickle=True)


def test_bad_pickles_get_one_line_errors_naming_the_file(tmp_path):
    data = _mult_dict()
    del data["valid"]["vision"]
    path = _write_pickle(tmp_path / "a", data)
    with pytest.raises(MlmmError, match=r"mosi_data\.pkl\['valid'\] should hold keys"):
        _trusted(tmp_path / "a")
    data = _mult_dict()
    data["test"]["labels"][1] = 3.5
    _write_pickle(tmp_path / "b", data)
    with pytest.raises(MlmmError, match=r"outside \[-3, 3\]"):
        _trusted(tmp_path / "b")
    data = _mult_dict()
    data["train"]["labels"] = data["train"]["labels"].reshape(-1)
    _write_pickle(tmp_path / "c", data)
    with pytest.raises(MlmmError, match=r"shape \(6,\), expected \(N, 1, 1\)"):
        _trusted(tmp_path / "c")
    assert path.is_file()


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused_even_when_trusted(tmp_path, capsys):
    _write_pickle(tmp_path, {"train": _Boom(), "valid": {}, "test": {}})
    with pytest.raises(MlmmError, match="refused global builtins.print"):
        _trusted(tmp_path)
    assert "must never run" not in capsys.readouterr().out
    assert not (tmp_path / ".mlmm-cache").exists()


def test_a_wrong_root_names_the_expected_files(tmp_path):
    with pytest.raises(MlmmError) as err:
        load_mosi(tmp_path)
    message = str(err.value)
    assert "mosi_data.pkl" in message and "CMU_MOSI_COVAREP.csd" in message
    assert "\n" not in message
    with pytest.raises(MlmmError, match="needs root=FOLDER"):
        load_mosi()
    with pytest.raises(MlmmError, match="split must be one of"):
        load_mosi(tmp_path, split="dev")


def test_mosei_reads_its_own_pickle_name(tmp_path):
    _write_pickle(tmp_path, name="mosei_senti_data_noalign.pkl")
    with pytest.warns(UserWarning):
        ds = load_mosei(tmp_path, aligned=False, trust_pickle=True, split="valid")
    assert ds.name == "mosei" and ds.n_samples == 3


def _left_padded(steps: dict[str, list[int]], padded: dict[str, int], seed: int = 0) -> dict:
    """A MulT pickle whose rows hold ``steps[m][i]`` valid steps, zero-padded on the left."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in SIZES:
        n = len(steps["text"])
        part = {}
        for m, d in WIDTHS.items():
            x = np.zeros((n, padded[m], d), dtype=np.float32)
            for i, k in enumerate(steps[m]):
                if k:
                    x[i, padded[m] - k :] = rng.normal(size=(k, d))
            part[m] = x
        part["labels"] = np.linspace(-2, 2, n, dtype=np.float32).reshape(n, 1, 1)
        out[split] = part
    return out


def test_pickle_lengths_come_from_the_left_padding_and_valid_steps_move_first(tmp_path):
    """The loader gave no lengths: the left padding of the MulT pickles was read as data."""
    steps = {"text": [6, 3, 1, 0], "audio": [6, 3, 1, 2], "vision": [6, 3, 1, 2]}
    data = _left_padded(steps, {"text": 6, "audio": 6, "vision": 6})
    first = data["train"]
    first["audio"][1, 3] = 0.0  # row 1's first word has zero audio: still a word step
    first["vision"][0, 4] = 0.0  # a zero step inside the valid part stays a step
    for split in SIZES:
        data[split]["audio"][1, 3], data[split]["vision"][0, 4] = 0.0, 0.0
    _write_pickle(tmp_path, data)
    with pytest.warns(UserWarning):
        ds = load_mosi(tmp_path, trust_pickle=True, task="regression", split="train")
    assert set(ds.lengths) == {"text", "audio", "vision"}
    # aligned: the modalities share the word steps, the longest of a row's modalities
    for m in ("audio", "vision"):
        assert ds.lengths[m].tolist() == [6, 3, 1, 2]
    assert ds.observed[3].tolist() == [False, True, True]
    assert ds.lengths["text"].tolist() == [6, 3, 1, 0]  # absent: no valid step
    for m in ("text", "audio", "vision"):
        for i, k in enumerate(ds.lengths[m]):
            np.testing.assert_array_equal(ds.inputs[m][i, :k], first[m][i, 6 - k :])
            assert (ds.inputs[m][i, k:] == 0).all()
    assert (ds.inputs["audio"][1, 0] == 0).all() and (ds.inputs["vision"][0, 4] == 0).all()
    batch = mlmm.MultimodalBatch.from_dataset(ds)
    assert batch.lengths["audio"].tolist() == [6, 3, 1, 2]

    unaligned = {"text": [6, 3, 1, 0], "audio": [8, 2, 5, 1], "vision": [4, 0, 1, 4]}
    data = _left_padded(unaligned, {"text": 6, "audio": 8, "vision": 4}, seed=1)
    _write_pickle(tmp_path / "u", data, name="mosi_data_noalign.pkl")
    with pytest.warns(UserWarning):
        ds = load_mosi(tmp_path / "u", aligned=False, trust_pickle=True, split="valid")
    assert [s.shape[0] for s in ds.specs] == [6, 8, 4]
    for m, k in unaligned.items():  # each modality its own length; an absent row counts 0
        assert ds.lengths[m].tolist() == k
        np.testing.assert_array_equal(ds.inputs[m][2, : k[2]], data["valid"][m][2, -k[2] :])


# ---------------------------------------------------------------------- .csd files
VIDEOS = {"vidA": [(0.0, 2.0, 1.8), (2.0, 4.0, -0.6)], "vidB": [(0.0, 3.0, 2.2)]}
FOLDS = {"train": ["vidA"], "valid": [], "test": ["vidB"]}


def _write_csd(path, root_name, entries, compression="gzip"):
    """A computational sequence: /<root>/data/<id>/{features, intervals} and metadata."""
    with h5py.File(path, "w") as f:
        data = f.create_group(f"{root_name}/data")
        for key, (features, intervals) in entries.items():
            group = data.create_group(key)
            group.create_dataset("features", data=features, compression=compression)
            group.create_dataset("intervals", data=intervals, compression=compression)
        meta = f.create_group(f"{root_name}/metadata")
        text = h5py.special_dtype(vlen=str)
        for key, value in {"root name": root_name, "dimension names": None}.items():
            meta.create_dataset(key, (1,), dtype=text, data=[json.dumps(value)])


def _steps(start, end, width, rng, step=0.5):
    times = np.arange(start, end, step)
    intervals = np.stack([times, times + step], axis=1)
    return rng.normal(size=(len(times), width)).astype("<f4"), intervals


def _write_mosi_csd(root, widths=None, skip_vision=("vidB",)):
    rng = np.random.default_rng(0)
    widths = widths or WIDTHS
    root.mkdir(parents=True, exist_ok=True)
    files = mosi_module.CSD_FILES["mosi"]
    for m, name in (("text", "glove_vectors"), ("audio", "COVAREP"), ("vision", "FACET_4.1")):
        entries = {}
        for video in VIDEOS:
            if m == "vision" and video in skip_vision:
                continue
            entries[video] = _steps(0.0, 4.0, widths[m], rng)
        _write_csd(root / files[m], name, entries)
    labels = {
        video: (
            np.array([[s] for *_, s in segs], dtype="<f4"),
            np.array([[a, b] for a, b, _ in segs]),
        )
        for video, segs in VIDEOS.items()
    }
    _write_csd(root / files["labels"], "Opinion Segment Labels", labels)


def test_csd_files_segment_by_interval_with_a_missing_video_absent(tmp_path):
    _write_mosi_csd(tmp_path)
    ds = load_mosi(tmp_path, source="csd", task="regression", seq_len=6, folds=FOLDS)
    assert ds.meta["ids"].tolist() == ["vidA[0]", "vidA[1]", "vidB[0]"]
    assert ds.meta["official_split"].tolist() == ["train", "train", "test"]
    np.testing.assert_allclose(ds.targets, [1.8, -0.6, 2.2], rtol=1e-6)
    assert ds.observed.tolist() == [[True, True, True], [True, True, True], [True, True, False]]
    # vidA[0] spans 0-2 s: 4 half-second steps, valid steps first, then 2 of padding
    assert ds.lengths["audio"].tolist() == [4, 4, 6]
    assert ds.lengths["vision"].tolist() == [4, 4, 0]  # vidB has no vision entry
    assert (ds.inputs["audio"][0, 4:] == 0).all() and (ds.inputs["audio"][0, :4] != 0).all()
    with h5py.File(tmp_path / "CMU_MOSI_COVAREP.csd") as f:
        first_steps = f["COVAREP/data/vidA/features"][:4]
    np.testing.assert_array_equal(ds.inputs["audio"][0, :4], first_steps)
    short = load_mosi(tmp_path, source="csd", task="regression", seq_len=3, folds=FOLDS)
    assert short.lengths["audio"].tolist() == [3, 3, 3]  # the first seq_len rows of each
    np.testing.assert_array_equal(short.inputs["audio"][0], first_steps[:3])
    test = load_mosi(tmp_path, source="csd", split="test", folds=FOLDS)
    assert test.n_samples == 1 and test.targets.tolist() == [1]


def test_csd_aligned_entries_and_folds_from_a_json_file(tmp_path):
    rng = np.random.default_rng(1)
    files = mosi_module.CSD_FILES["mosi"]
    segments = {"vidA[0]": 1.0, "vidA[1]": -2.0, "vidB[0]": 0.4}
    for m in ("text", "audio", "vision"):
        entries = {key: _steps(0.0, 1.0, WIDTHS[m], rng) for key in segments}
        if m == "audio":
            entries["vidB[0]"][0][0, :2] = [-np.inf, np.nan]  # COVAREP's -inf, a NaN
        _write_csd(tmp_path / files[m], m, entries)
    labels = {k: (np.array([[v]], "<f4"), np.array([[0.0, 1.0]])) for k, v in segments.items()}
    _write_csd(tmp_path / files["labels"], "labels", labels)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps(FOLDS))
    ds = load_mosi(tmp_path, task="7class", seq_len=2, folds=folds)
    assert ds.meta["ids"].tolist() == list(segments) and ds.targets.tolist() == [4, 1, 3]
    assert ds.spec("text").shape == (2, 300)
    assert ds.meta["nonfinite_values"] == {"text": 0, "audio": 2, "vision": 0}
    assert np.isfinite(ds.inputs["audio"]).all()
    train = load_mosi(tmp_path, task="7class", seq_len=2, folds=folds, split="train")
    assert train.meta["nonfinite_values"]["audio"] == 0  # counted where they are: in test


def test_csd_without_folds_loads_all_rows_only(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mmsdk", None)  # the SDK is not installed
    _write_mosi_csd(tmp_path)
    ds = load_mosi(tmp_path, source="csd", task="regression")
    assert set(ds.meta["official_split"]) == {"unknown"}
    with pytest.raises(MlmmError, match="official folds are unknown"):
        load_mosi(tmp_path, source="csd", split="train")


def test_csd_bad_files_get_one_line_errors(tmp_path):
    _write_mosi_csd(tmp_path)
    path = tmp_path / "CMU_MOSI_COVAREP.csd"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MlmmError, match=r"CMU_MOSI_COVAREP\.csd is not a readable HDF5 file"):
        load_mosi(tmp_path, source="csd", folds=FOLDS)
    with h5py.File(path, "w") as f:
        f.create_dataset("COVAREP/data/vidA/features", data=np.zeros((3, 5)))
        f.create_dataset("COVAREP/data/vidA/intervals", data=np.zeros((4, 2)))
    with pytest.raises(MlmmError, match=r"entry 'vidA' has features \(3, 5\) and intervals"):
        load_mosi(tmp_path, source="csd", folds=FOLDS)
    (tmp_path / "CMU_MOSI_Opinion_Labels.csd").unlink()
    with pytest.raises(MlmmError, match="does not hold CMU_MOSI_Opinion_Labels.csd"):
        load_mosi(tmp_path, source="csd")


def test_checksum_mismatch_is_one_line(tmp_path):
    _write_mosi_csd(tmp_path)
    with pytest.raises(MlmmError, match="has SHA-256 .* expected 00000000") as err:
        load_mosi(tmp_path, source="csd", folds=FOLDS, checksums={"CMU_MOSI_COVAREP.csd": "0" * 64})
    assert "\n" not in str(err.value)


def test_download_fetches_missing_csd_files_atomically(tmp_path, monkeypatch):
    server = tmp_path / "server"
    _write_mosi_csd(server)
    for modality, folder in mosi_module._CSD_FOLDERS.items():
        (server / folder).mkdir()
        name = mosi_module.CSD_FILES["mosi"][modality]
        (server / name).rename(server / folder / name)
    monkeypatch.setitem(mosi_module._CSD_BASE, "mosi", server.as_uri())
    root = tmp_path / "data"
    ds = load_mosi(root, download=True, folds=FOLDS)
    assert ds.n_samples == 3
    assert sorted(p.name for p in root.iterdir()) == sorted(mosi_module.CSD_FILES["mosi"].values())


def test_registered_and_listed_as_needing_files(tmp_path):
    for name in ("mosi", "mosei"):
        info = DATASETS.get(name).info
        assert info["needs_files"] and "needs files at ROOT" in info["description"]
    _write_pickle(tmp_path)
    with pytest.warns(UserWarning):
        ds = load_dataset("mosi", root=str(tmp_path), trust_pickle=True, split="test")
    assert ds.n_samples == 4 and ds.task.n_classes == 2  # no test score is 0
    assert load_dataset("mosi", root=str(tmp_path), split="test", task="7class").n_samples == 4


def test_a_missing_extra_names_the_pip_command():
    with pytest.raises(MlmmError, match=r"pip install 'mlmm\[formats\]'"):
        require("mlmm_no_such_reader", "reading test files")


def test_a_large_csd_file_is_read_one_entry_at_a_time(tmp_path):
    """A 24 MB COVAREP-like file: the traced peak stays near one video's entry, not the file."""
    import tracemalloc

    rng = np.random.default_rng(0)
    videos = [f"v{i:02d}" for i in range(40)]
    files = mosi_module.CSD_FILES["mosei"]
    for m, width in (("text", 300), ("audio", 74), ("vision", 35)):
        rows = 2000 if m == "audio" else 4
        entries = {}
        for v in videos:
            times = np.linspace(0.0, 10.0, rows + 1)
            features = rng.normal(size=(rows, width)).astype("<f4")
            entries[v] = (features, np.stack([times[:-1], times[1:]], axis=1))
        _write_csd(tmp_path / files[m], m, entries, compression=None)
    labels = {
        v: (np.array([[0.5, 1, 0, 0, 0, 0, 0]], "<f4"), np.array([[0.0, 1.0]])) for v in videos
    }
    _write_csd(tmp_path / files["labels"], "All Labels", labels)
    assert (tmp_path / files["audio"]).stat().st_size > 20e6
    tracemalloc.start()
    try:
        ds = load_mosei(tmp_path, task="regression", seq_len=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.n_samples == 40 and ds.spec("audio").shape == (10, 74)
    assert peak < 6e6, f"peak {peak / 1e6:.1f} MB: the file was read whole"


def test_the_cli_trains_on_a_loader_given_its_root(tmp_path, monkeypatch, capsys):
    from mlmm import cli

    data = {}
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("valid", 8), ("test", 12)):
        scores = rng.choice([-2.0, -1.0, 1.0, 2.0], size=n)
        data[split] = {
            m: (rng.normal(size=(n, 3, d)) + scores[:, None, None]).astype(np.float32)
            for m, d in (("text", 4), ("audio", 2), ("vision", 3))
        }
        data[split]["labels"] = scores.reshape(n, 1, 1)
    _write_pickle(tmp_path / "mosi", data)
    monkeypatch.setattr(
        sys,
        "argv",
        ["mlmm", "train", "--dataset", "mosi", "--dataset-param", f"root={tmp_path / 'mosi'}",
         "--dataset-param", "trust_pickle=true", "--method", "late-fusion", "--epochs", "2",
         "--quiet", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    with pytest.warns(UserWarning, match="reading the pickle"), pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 0, capsys.readouterr()
    assert (tmp_path / "run").is_dir()


def test_importing_the_loaders_needs_none_of_the_optional_readers():
    import subprocess

    code = (
        "import sys, mlmm.data.formats; "
        "print(sorted(m for m in ('h5py', 'nibabel', 'PIL') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_truncated_csd_file_is_one_line_naming_it(tmp_path):
    _write_mosi_csd(tmp_path)
    path = tmp_path / mosi_module.CSD_FILES["mosi"]["audio"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(MlmmError, match=path.name) as info:
        load_mosi(tmp_path, source="csd", task="regression", seq_len=6, folds=FOLDS)
    assert "\n" not in str(info.value)


def test_ids_of_another_length_than_the_labels_are_an_error_not_a_reshape(tmp_path):
    # [4, 3] ids for 6 labels reshaped silently to [6, 2] before: every id named the wrong clip
    data = _mult_dict()
    data["train"]["id"] = data["train"]["id"][:4]
    _write_pickle(tmp_path, data)
    with pytest.raises(MlmmError, match=r"\['train'\]\['id'\] has 4 rows, expected 6") as err:
        _trusted(tmp_path)
    assert "mosi_data.pkl" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "member header"])
def test_a_damaged_cache_is_one_line_saying_to_delete_it(tmp_path, damage):
    _write_pickle(tmp_path)
    _trusted(tmp_path)
    cache = tmp_path / ".mlmm-cache" / "mosi_data.npz"
    if damage == "member header":  # numpy's header tokenizer: TokenError escaped the reader
        import zipfile

        with zipfile.ZipFile(cache) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        member = members["train/scores.npy"]
        assert b"), }" in member
        members["train/scores.npy"] = member.replace(b"), }", b",  }", 1)  # a valid CRC-32
        with zipfile.ZipFile(cache, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        cache.write_bytes(cache.read_bytes()[:1000] if damage == "truncated" else b"")
    with pytest.raises(MlmmError, match=r"the cache .*mosi_data\.npz is unreadable") as err:
        load_mosi(tmp_path)
    assert "delete it to convert again" in str(err.value) and "\n" not in str(err.value)
    if damage == "member header":
        assert "header is corrupt" in str(err.value)


def test_folds_listing_a_video_in_two_splits_are_refused(tmp_path):
    # the last split named a video silently won before: vidA's segments trained and validated
    _write_mosi_csd(tmp_path)
    leaky = {"train": ["vidA"], "valid": ["vidA"], "test": ["vidB"]}
    with pytest.raises(MlmmError, match="folds= lists 'vidA' in both 'train' and 'valid'"):
        load_mosi(tmp_path, source="csd", folds=leaky)
    path = tmp_path / "folds.json"
    path.write_text(json.dumps({"train": ["vidA", "vidB"], "valid": [], "test": ["vidB"]}))
    with pytest.raises(MlmmError, match=r"folds\.json lists 'vidB' in both 'train' and 'test'"):
        load_mosi(tmp_path, source="csd", folds=path)
    with pytest.raises(MlmmError, match="'valid' should be a list of video ids, got str"):
        load_mosi(tmp_path, source="csd", folds={"train": ["vidA"], "valid": "vidB", "test": []})


def test_a_csd_entry_that_is_an_array_not_a_group_is_one_line(tmp_path):
    _write_mosi_csd(tmp_path)
    path = tmp_path / mosi_module.CSD_FILES["mosi"]["audio"]
    with h5py.File(path, "a") as f:
        del f["COVAREP/data/vidA"]
        f["COVAREP/data/vidA"] = np.zeros((3, 5), dtype="<f4")
    with pytest.raises(MlmmError, match=r"entry 'vidA' is an array \(3, 5\), expected a group"):
        load_mosi(tmp_path, source="csd", folds=FOLDS)


def test_big_endian_csd_features_read_as_their_values(tmp_path):
    # feature files are commonly <f4; a >f4 (or >f8) file must give the same numbers
    _write_mosi_csd(tmp_path)
    path = tmp_path / mosi_module.CSD_FILES["mosi"]["audio"]
    with h5py.File(path, "a") as f:
        values = f["COVAREP/data/vidA/features"][()]
        del f["COVAREP/data/vidA/features"]
        f.create_dataset("COVAREP/data/vidA/features", data=values.astype(">f8"))
    ds = load_mosi(path.parent, source="csd", task="regression", seq_len=6, folds=FOLDS)
    np.testing.assert_array_equal(ds.inputs["audio"][0, :4], values[:4])
    assert ds.inputs["audio"].dtype == np.float32


def test_mosei_csd_labels_take_the_sentiment_column_of_seven(tmp_path):
    # MOSEI's All Labels are [n, 7]: sentiment, then six emotions in [0, 3]
    rng = np.random.default_rng(2)
    files = mosi_module.CSD_FILES["mosei"]
    for m in ("text", "audio", "vision"):
        _write_csd(tmp_path / files[m], m, {"vidA": _steps(0.0, 4.0, WIDTHS[m], rng)})
    labels = np.array([[-1.4, 3, 0, 0, 1, 2, 0], [2.0, 0, 3, 1, 0, 0, 0]], dtype="<f4")
    _write_csd(tmp_path / files["labels"], "All Labels", {"vidA": (labels, [[0, 2], [2, 4]])})
    ds = load_mosei(tmp_path, task="regression", folds=FOLDS | {"test": []})
    np.testing.assert_allclose(ds.targets, [-1.4, 2.0], rtol=1e-6)


def test_an_mmsa_pickle_is_named_as_another_format(tmp_path):
    # MMSA's aligned_50.pkl has the same splits and sample counts but other keys
    mmsa = {
        s: {
            "raw_text": np.array(["a clip"] * len(part["labels"]), dtype=object),
            "text": part["text"],
            "audio": part["audio"],
            "vision": part["vision"],
            "regression_labels": part["labels"].reshape(-1),
        }
        for s, part in _mult_dict().items()
    }
    _write_pickle(tmp_path, mmsa)
    with pytest.raises(MlmmError, match="this is an MMSA pickle .* another format") as err:
        _trusted(tmp_path)
    assert "\n" not in str(err.value)


def test_a_segment_no_feature_row_overlaps_is_absent_not_a_crash(tmp_path):
    # FACET rows cover 0-1 s of vidA only: vidA[1] (2-4 s) has no vision row; reshape(0, -1)
    # raised a ValueError before
    _write_mosi_csd(tmp_path)
    rng = np.random.default_rng(3)
    entries = {"vidA": _steps(0.0, 1.0, 20, rng), "vidB": _steps(0.0, 3.0, 20, rng)}
    _write_csd(tmp_path / mosi_module.CSD_FILES["mosi"]["vision"], "FACET_4.1", entries)
    ds = load_mosi(tmp_path, source="csd", task="regression", seq_len=6, folds=FOLDS)
    assert ds.observed[:, 2].tolist() == [True, False, True]
    assert ds.lengths["vision"].tolist() == [2, 0, 6]


def test_a_csd_whose_data_is_not_a_group_or_with_an_empty_label_entry(tmp_path):
    _write_mosi_csd(tmp_path)
    labels = tmp_path / mosi_module.CSD_FILES["mosi"]["labels"]
    with h5py.File(labels, "a") as f:
        root = next(iter(f.keys()))
        del f[f"{root}/data/vidB"]
        f[f"{root}/data/vidB/features"] = np.zeros((0, 1), "<f4")  # no labelled segment
        f[f"{root}/data/vidB/intervals"] = np.zeros((0, 2))
    ds = load_mosi(tmp_path, source="csd", task="regression", folds=FOLDS)
    assert ds.meta["ids"].tolist() == ["vidA[0]", "vidA[1]"]
    with h5py.File(labels, "a") as f:
        del f[f"{root}/data"]
        f[f"{root}/data"] = np.zeros(3)  # a TypeError from h5py before
    with pytest.raises(MlmmError, match="is not a computational sequence") as err:
        load_mosi(tmp_path, source="csd", folds=FOLDS)
    assert "Opinion_Labels.csd" in str(err.value)


def test_a_words_file_or_two_root_groups_are_one_line_naming_the_file(tmp_path):
    # TimestampedWords holds [n, 1] byte strings (b"sp" for silence), not vectors
    _write_mosi_csd(tmp_path)
    text = tmp_path / mosi_module.CSD_FILES["mosi"]["text"]
    words = {"vidA": (np.array([[b"hello"], [b"sp"]]), np.array([[0.0, 1.0], [1.0, 2.0]]))}
    _write_csd(text, "words", words, compression=None)
    with pytest.raises(MlmmError, match=r"entry 'vidA' holds \|S5 features, expected numbers"):
        load_mosi(tmp_path, source="csd", folds=FOLDS)
    _write_mosi_csd(tmp_path / "b")
    audio = tmp_path / "b" / mosi_module.CSD_FILES["mosi"]["audio"]
    with h5py.File(audio, "a") as f:
        f.create_group("another_root/data")  # the SDK reads keys()[0]: which one is meant?
    with pytest.raises(
        MlmmError, match=r"COVAREP\.csd is not a computational sequence: expected one"
    ):
        load_mosi(tmp_path / "b", source="csd", folds=FOLDS)


def test_an_empty_split_in_the_pickle_loads_the_others_and_alone_is_one_line(tmp_path):
    # a pickle whose 'valid' holds no sample (ids [0, 3]): reshape(0, -1) raised a ValueError
    data = _mult_dict()
    data["valid"] = {key: value[:0] for key, value in data["valid"].items()}
    _write_pickle(tmp_path, data)
    ds = _trusted(tmp_path)
    assert sorted(set(ds.meta["official_split"].tolist())) == ["test", "train"]
    with pytest.raises(MlmmError, match=r"mosi_data\.npz holds no rows for split 'valid'"):
        load_mosi(tmp_path, split="valid")  # from the cache, no trust needed


@pytest.mark.parametrize("file", ["labels", "audio"])
def test_a_csd_entry_of_width_zero_is_one_line_naming_it(tmp_path, file):
    # a label entry [n, 0] raised IndexError (labels[i, 0]); a feature entry [n, 0] made a
    # modality of no features
    _write_mosi_csd(tmp_path)
    path = tmp_path / mosi_module.CSD_FILES["mosi"][file]
    with h5py.File(path, "a") as f:
        group = f[next(iter(f.keys()))]["data"]["vidB"]
        n = group["features"].shape[0]
        del group["features"]
        group.create_dataset("features", data=np.zeros((n, 0), dtype="<f4"))
    message = rf"label entry 'vidB' has features of shape \({n}, 0\)"
    if file == "audio":
        message = r"entry 'vidB' has 0 features per step"
    with pytest.raises(MlmmError, match=message) as err:
        load_mosi(tmp_path, source="csd", folds=FOLDS)
    assert path.name in str(err.value) and "\n" not in str(err.value)
