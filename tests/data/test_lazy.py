"""Out-of-core datasets: formats, streamed statistics, DataLoader batches, writer, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.batch import iterate_batches
from mlmm.data.lazy import (
    MANIFEST,
    DatasetWriter,
    StreamedBatches,
    open_dataset,
    write_dataset,
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.testing import contract_dataset


def _mixed(n: int = 60, task: str = "classification") -> mlmm.MultimodalDataset:
    """Vector, sequence and image modalities, some rows absent."""
    rng = np.random.default_rng(0)
    specs = [
        ModalitySpec("v", "vector", (5,)),
        ModalitySpec("s", "sequence", (4, 3)),
        ModalitySpec("i", "image", (2, 3, 3)),
    ]
    inputs = {
        "v": rng.normal(3.0, 2.0, (n, 5)),
        "s": rng.normal(-1.0, 0.5, (n, 4, 3)),
        "i": rng.normal(10.0, 4.0, (n, 2, 3, 3)),
    }
    observed = rng.random((n, 3)) > 0.3
    observed[:, 0] |= ~observed.any(axis=1)
    if task == "classification":
        return mlmm.MultimodalDataset(
            specs, TaskSpec("classification", 3), inputs, np.arange(n) % 3, observed
        )
    return mlmm.MultimodalDataset(
        specs, TaskSpec("regression"), inputs, rng.normal(50, 10, n), observed
    )


def _metadata_json(ds) -> str:
    return json.dumps(
        {"specs": [s.to_dict() for s in ds.specs], "task": ds.task.to_dict(), "name": "x"}
    )


def _fields(ds, groups) -> dict:
    keys = ("specs", "task", "inputs", "targets", "observed")
    return {**{k: getattr(ds, k) for k in keys}, "groups": groups}


def _write_npz(ds, path, compressed: bool = False, groups=None) -> None:
    save = np.savez_compressed if compressed else np.savez
    save(
        path,
        mlmm=np.array(_metadata_json(ds)),
        observed=ds.observed,
        targets=ds.targets,
        **({} if groups is None else {"groups": groups}),
        **{f"input_{k}": v for k, v in ds.inputs.items()},
    )


def _write_hdf5(ds, path, groups=None) -> None:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        f.attrs["mlmm"] = _metadata_json(ds)
        f["observed"], f["targets"] = ds.observed, ds.targets
        if groups is not None:  # strings as h5py stores them: variable-length UTF-8
            f.create_dataset("groups", data=list(groups), dtype=h5py.string_dtype())
        for name, x in ds.inputs.items():
            f[f"inputs/{name}"] = x


def _write_parquet(ds, path, groups=None) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {}
    for j, spec in enumerate(ds.specs):
        flat = ds.inputs[spec.name].reshape(ds.n_samples, -1)
        rows = [list(map(float, r)) if ds.observed[i, j] else None for i, r in enumerate(flat)]
        columns[spec.name] = pa.array(rows, type=pa.list_(pa.float32()))
    columns["target"] = pa.array(ds.targets)
    if groups is not None:
        columns["group"] = pa.array(list(groups))
    table = pa.table(columns).replace_schema_metadata({"mlmm": _metadata_json(ds)})
    pq.write_table(table, path, row_group_size=16)  # several row groups


@pytest.mark.parametrize("fmt", ["folder", "npz", "hdf5", "parquet"])
def test_every_format_reads_the_same_rows(tmp_path, fmt):
    ds = _mixed()
    path = {
        "folder": tmp_path / "d",
        "npz": tmp_path / "d.npz",
        "hdf5": tmp_path / "d.h5",
        "parquet": tmp_path / "d.parquet",
    }[fmt]
    {"folder": write_dataset, "npz": _write_npz, "hdf5": _write_hdf5, "parquet": _write_parquet}[
        fmt
    ](ds, path)
    lazy = open_dataset(path)
    assert lazy.specs == ds.specs and lazy.task == ds.task and lazy.n_samples == ds.n_samples
    np.testing.assert_array_equal(lazy.observed, ds.observed)
    np.testing.assert_array_equal(lazy.targets, ds.targets)
    rows = [7, 3, 3, 59, 0]  # unsorted, repeated: answered in the order asked
    got = lazy.read(rows)
    for name in ds.modality_names:
        np.testing.assert_array_equal(got[name], ds.inputs[name][rows])
    back = lazy.subset(np.arange(10, 30)).to_memory()
    for name in ds.modality_names:
        np.testing.assert_array_equal(back.inputs[name], ds.inputs[name][10:30])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_streamed_standardizer_matches_the_in_memory_fit(tmp_path, task, monkeypatch):
    ds = _mixed(200, task)
    lazy = open_dataset(write_dataset(ds, tmp_path / "d"))
    monkeypatch.setattr("mlmm.data.lazy._CHUNK_BYTES", 4096)  # many chunks to merge
    assert len(list(lazy.chunks())) > 5
    memory, streamed = mlmm.Standardizer().fit(ds), mlmm.Standardizer().fit(lazy)
    for name in ds.modality_names:
        assert streamed.mean_[name].shape == memory.mean_[name].shape
        np.testing.assert_allclose(streamed.mean_[name], memory.mean_[name], rtol=1e-6)
        np.testing.assert_allclose(streamed.std_[name], memory.std_[name], rtol=1e-6)
    assert streamed.target_mean_ == pytest.approx(memory.target_mean_)
    view = streamed.transform(lazy)
    full = memory.transform(ds)
    got = view.read(np.arange(ds.n_samples))
    for name in ds.modality_names:
        np.testing.assert_allclose(got[name], full.inputs[name], atol=1e-5)
    np.testing.assert_allclose(view.targets, full.targets, atol=1e-6)


@pytest.mark.parametrize("fmt", ["folder", "hdf5"])
def test_streamed_batches_follow_the_in_memory_order_with_workers(tmp_path, fmt):
    ds = _mixed(50)
    if fmt == "hdf5":  # each worker process reopens the file
        _write_hdf5(ds, tmp_path / "d.h5")
        lazy = open_dataset(tmp_path / "d.h5", num_workers=2)
    else:
        lazy = open_dataset(write_dataset(ds, tmp_path / "d"), num_workers=2)
    whole = mlmm.MultimodalBatch.from_dataset(ds)
    streamed = StreamedBatches(lazy)
    a = list(iterate_batches(whole, 16, shuffle=True, generator=torch.Generator().manual_seed(5)))
    b = list(
        iterate_batches(streamed, 16, shuffle=True, generator=torch.Generator().manual_seed(5))
    )
    assert [len(x) for x in a] == [len(x) for x in b] == [16, 16, 16, 2]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.present, y.present)
        torch.testing.assert_close(x.target, y.target)
        for name in ds.modality_names:
            torch.testing.assert_close(x.inputs[name], y.inputs[name])


@pytest.mark.parametrize("method", ["hemis", "late-fusion"])
def test_training_out_of_core_gives_the_in_memory_model(tmp_path, method):
    data = contract_dataset(
        n_samples=120, task="regression" if method == "hemis" else "classification"
    )
    split = mlmm.train_val_test_split(data, seed=0)
    train, val, test = (
        open_dataset(write_dataset(getattr(split, p), tmp_path / p))
        for p in ("train", "val", "test")
    )
    a, b = (
        mlmm.Trainer(max_epochs=3, batch_size=16, seed=2, progress=False).fit(
            mlmm.create_method(method, data.specs, data.task), *parts
        )
        for parts in ((split.train, split.val), (train, val))
    )
    # the same batches in the same order give the same model bit for bit
    assert a.histories[0].best_val_loss == b.histories[0].best_val_loss
    np.testing.assert_array_equal(a.predict_raw(split.test), b.predict_raw(test))


def test_a_method_that_needs_memory_refuses_in_one_line(tmp_path):
    data = contract_dataset(n_samples=60)
    lazy = open_dataset(write_dataset(data, tmp_path / "d"))
    model = mlmm.create_method("lda-em", data.specs, data.task)
    with pytest.raises(MlmmError, match=r"lda-em.*to_memory\(\)"):
        mlmm.Trainer(max_epochs=1, progress=False).fit(model, lazy)


def test_evaluate_and_masks_ask_for_data_in_memory(tmp_path):
    data = contract_dataset(n_samples=60)
    lazy = open_dataset(write_dataset(data, tmp_path / "d"))
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(
        mlmm.create_method("hemis", data.specs, data.task), data
    )
    with pytest.raises(MlmmError, match=r"got OutOfCoreDataset; convert it first .*to_memory\(\)"):
        mlmm.evaluate(trained, lazy, "none")
    assert len(mlmm.evaluate(trained, lazy.to_memory(), "none", subsets=False))


def test_reading_releases_mapped_pages(tmp_path, monkeypatch):
    ds = _mixed(300)
    lazy = open_dataset(write_dataset(ds, tmp_path / "d"))
    released = []
    monkeypatch.setattr("mlmm.data.lazy._RELEASE_BYTES", 1000)
    monkeypatch.setattr(type(lazy.source), "release", lambda self: released.append(1))
    lazy.read(np.arange(100))
    assert released  # a read past the budget gives its pages back


def test_writer_is_atomic_and_checks_its_input(tmp_path):
    ds = _mixed(20)
    target = tmp_path / "out"
    writer = DatasetWriter(target, ds.specs, ds.task, n_samples=20)
    writer.append({k: v[:10] for k, v in ds.inputs.items()}, ds.targets[:10], ds.observed[:10])
    assert not target.exists()  # nothing at the final path until close
    with pytest.raises(MlmmError, match="10 of 20 rows"):
        writer.close()
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(MlmmError, match=r"modality 'v' has shape \(3, 4\), expected \(3, 5\)"):
        with DatasetWriter(target, ds.specs, ds.task, n_samples=3) as w:
            w.append(
                {"v": np.zeros((3, 4)), "s": np.zeros((3, 4, 3)), "i": np.zeros((3, 2, 3, 3))},
                [0, 1, 2],
            )
    assert list(tmp_path.iterdir()) == []
    write_dataset(ds, target)
    assert (target / MANIFEST).exists()
    with pytest.raises(MlmmError, match="exists; choose a new path or pass overwrite=True"):
        write_dataset(ds, target)
    write_dataset(ds.subset(np.arange(5)), target, overwrite=True)
    assert open_dataset(target).n_samples == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(os.name != "posix", reason="writers are judged alive by os.kill(pid, 0)")
def test_the_folder_of_a_writer_killed_mid_write_is_removed_by_the_next_writer(tmp_path):
    """kill -9 during a DatasetWriter left its hidden .NAME.tmp-* folder (rows of a data set
    that may be large) beside the output forever; the next writer of that path removes it,
    and never the folder of a writer still alive."""
    target = tmp_path / "out"
    code = (
        "import sys, time\n"
        "from mlmm.data.lazy import DatasetWriter\n"
        "from mlmm.data.specs import ModalitySpec, TaskSpec\n"
        "spec, task = ModalitySpec('v', 'vector', (5,)), TaskSpec('classification', n_classes=2)\n"
        f"writer = DatasetWriter({str(target)!r}, [spec], task, n_samples=20)\n"
        "print('writing', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    writer = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
    finally:
        writer.kill()
        writer.wait()
    [killed] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert killed.name.startswith(f".out.p{writer.pid}-h") and (killed / "inputs").is_dir()
    host = killed.name.split("-h")[1][:8]
    alive = subprocess.Popen(["sleep", "60"])  # a process still writing the data set
    live = tmp_path / f".out.p{alive.pid}-h{host}.abc123_x.tmp"
    try:
        live.mkdir()
        write_dataset(_mixed(20), target)
        assert open_dataset(target).n_samples == 20
        assert not killed.exists() and live.is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_a_folder_name_too_long_is_refused_before_the_rows_are_written(tmp_path):
    """A folder name over 255 bytes was found out at close(), by the rename after every row
    had been written."""
    ds = _mixed(20)
    with pytest.raises(MlmmError, match=r"its name is 256 bytes long.*shorter folder name"):
        DatasetWriter(tmp_path / ("d" * 256), ds.specs, ds.task, n_samples=20)
    assert list(tmp_path.iterdir()) == []
    target = tmp_path / ("d" * 255)  # fits: its temporary folder's name is shortened
    assert open_dataset(write_dataset(ds, target)).n_samples == 20


def test_bad_files_are_one_line_errors(tmp_path):
    ds = _mixed(20)
    _write_npz(ds, tmp_path / "c.npz", compressed=True)
    with pytest.raises(
        MlmmError, match="compressed and cannot be memory-mapped; save with np.savez"
    ):
        open_dataset(tmp_path / "c.npz")
    np.savez(tmp_path / "bare.npz", observed=ds.observed, targets=ds.targets)
    with pytest.raises(MlmmError, match="no mlmm metadata.*pass specs="):
        open_dataset(tmp_path / "bare.npz")
    _write_hdf5(ds, tmp_path / "d.h5")
    data = (tmp_path / "d.h5").read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(MlmmError, match="t.h5: not a readable HDF5 file"):
        open_dataset(tmp_path / "t.h5")
    folder = write_dataset(ds, tmp_path / "f")
    np.save(folder / "inputs" / "v.npy", np.zeros((20, 6), dtype=np.float32))
    with pytest.raises(MlmmError, match=r"input 'v' has shape \(20, 6\), expected \(20, 5\)"):
        open_dataset(folder)
    bad = ds.inputs["v"].copy()
    bad[ds.observed[:, 0].argmax(), 0] = np.nan  # in a present row
    np.save(folder / "inputs" / "v.npy", bad)
    with pytest.raises(MlmmError, match="'v' has NaN or inf in rows"):
        open_dataset(folder).read(np.arange(20))
    np.savez(  # 0/1 integers are fine; a 3 is refused, naming the file (it did not)
        tmp_path / "int.npz",
        mlmm=np.array(_metadata_json(ds)),
        observed=ds.observed.astype(np.uint8) * 3,
        targets=ds.targets,
        **{f"input_{k}": v for k, v in ds.inputs.items()},
    )
    with pytest.raises(MlmmError, match=r"int.npz: stored observed must be boolean"):
        open_dataset(tmp_path / "int.npz")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(MlmmError, match="not an out-of-core dataset"):
        open_dataset(tmp_path / "d.csv")


def test_specs_and_task_for_a_file_without_metadata_may_be_their_dicts(tmp_path):
    # the metadata's own form: specs=[s.to_dict() ...] was AttributeError: 'dict' ... 'name'
    ds = _mixed(20)
    np.savez(
        tmp_path / "bare.npz",
        observed=ds.observed,
        targets=ds.targets,
        **{f"input_{k}": v for k, v in ds.inputs.items()},
    )
    dicts = [s.to_dict() for s in ds.specs]
    lazy = open_dataset(tmp_path / "bare.npz", specs=dicts, task=ds.task.to_dict())
    assert lazy.specs == ds.specs and lazy.task == ds.task
    assert np.array_equal(lazy.to_memory().inputs["v"], ds.inputs["v"])
    for specs, task in [([{"name": "v"}], ds.task), (["v"], ds.task), (ds.specs, "classification")]:
        with pytest.raises(MlmmError, match="specs must be ModalitySpec objects"):
            open_dataset(tmp_path / "bare.npz", specs=specs, task=task)


def test_a_multilabel_or_variable_length_dataset_is_refused_before_writing(tmp_path):
    """The folder holds one target per row and no lengths: writing either lost data (lengths
    dropped silently, padding then trained on as data) or crashed with a ValueError."""
    from dataclasses import replace

    multilabel = mlmm.load_dataset("synthetic-multilabel", n_samples=40)
    with pytest.raises(MlmmError, match="multilabel task") as err:
        write_dataset(multilabel, tmp_path / "ml")
    assert "\n" not in str(err.value) and not (tmp_path / "ml").exists()
    data = _mixed()
    steps = np.where(data.observed[:, 1], 2, 0)
    padded = replace(data, lengths={"s": steps})
    with pytest.raises(MlmmError, match=r"got lengths for \['s'\]"):
        write_dataset(padded, tmp_path / "vl")
    assert not (tmp_path / "vl").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either


@pytest.mark.parametrize("ids", ["numbers", "strings"])
def test_groups_survive_the_round_trip_and_split_the_reopened_dataset_alike(tmp_path, ids):
    """write_dataset dropped groups: a grouped dataset reopened from disk split by rows, and
    a patient's samples landed on both sides of the split without a word."""
    from dataclasses import replace

    ds = _mixed(60)
    patients = np.arange(60) // 4  # 15 patients, 4 samples each
    groups = patients if ids == "numbers" else np.array([f"p{p:02d}" for p in patients])
    grouped = replace(ds, groups=groups)
    lazy = open_dataset(write_dataset(grouped, tmp_path / "g", chunk_rows=7))
    np.testing.assert_array_equal(lazy.groups, grouped.groups)
    in_memory = mlmm.train_val_test_split(grouped, seed=3)
    reopened = mlmm.train_val_test_split(lazy, seed=3)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(reopened.indices[part], in_memory.indices[part])
        np.testing.assert_array_equal(
            getattr(reopened, part).groups, getattr(in_memory, part).groups
        )
    assert not set(reopened.train.groups) & set(reopened.test.groups)
    np.testing.assert_array_equal(lazy.subset([5, 0]).to_memory().groups, groups[[5, 0]])
    # a second write of the reopened dataset keeps them too
    again = open_dataset(write_dataset(lazy, tmp_path / "g2"))
    np.testing.assert_array_equal(again.groups, grouped.groups)


def test_folders_and_archives_without_groups_still_open_ungrouped(tmp_path):
    ds = _mixed(20)
    folder = write_dataset(ds, tmp_path / "plain")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["groups"] is False and not (folder / "groups.npy").exists()
    del manifest["groups"]  # as written before groups were kept
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert open_dataset(folder).groups is None
    _write_npz(ds, tmp_path / "a.npz")
    assert open_dataset(tmp_path / "a.npz").groups is None
    np.savez(
        tmp_path / "g.npz",
        mlmm=np.array(_metadata_json(ds)),
        observed=ds.observed,
        targets=ds.targets,
        groups=np.arange(20) // 2,
        **{f"input_{k}": v for k, v in ds.inputs.items()},
    )
    np.testing.assert_array_equal(open_dataset(tmp_path / "g.npz").groups, np.arange(20) // 2)


def test_bad_groups_in_a_folder_or_writer_are_one_line_errors(tmp_path):
    from dataclasses import replace

    ds = replace(_mixed(20), groups=np.arange(20) // 5)
    folder = write_dataset(ds, tmp_path / "g")
    (folder / "groups.npy").unlink()
    with pytest.raises(MlmmError, match="grouped but groups.npy is missing"):
        open_dataset(folder)
    np.save(folder / "groups.npy", np.arange(7))
    with pytest.raises(
        MlmmError, match=r"stored groups must hold one id per sample \(shape \(20,\)\)"
    ):
        open_dataset(folder)
    np.save(folder / "groups.npy", np.array([object()] * 20), allow_pickle=True)
    with pytest.raises(MlmmError, match="groups.npy: not a readable .npy file"):
        open_dataset(folder)
    writer = DatasetWriter(tmp_path / "w", ds.specs, ds.task, n_samples=20)
    half = {k: v[:10] for k, v in ds.inputs.items()}
    writer.append(half, ds.targets[:10], ds.observed[:10], groups=ds.groups[:10])
    with pytest.raises(MlmmError, match="groups were given for the first 10 rows"):
        writer.append(half, ds.targets[:10], ds.observed[:10])
    writer.abort()


@pytest.mark.parametrize("fmt", ["npz", "hdf5", "parquet"])
def test_group_ids_in_an_npz_hdf5_or_parquet_file_are_read(tmp_path, fmt):
    """Only folders and .npz archives had groups: an HDF5 or Parquet file opened ungrouped,
    so its splits put one patient's samples on both sides."""
    ds = _mixed(40)
    patients = np.array([f"p{p:02d}" for p in np.arange(40) // 4])  # 10 patients
    path = tmp_path / {"npz": "d.npz", "hdf5": "d.h5", "parquet": "d.parquet"}[fmt]
    {"npz": _write_npz, "hdf5": _write_hdf5, "parquet": _write_parquet}[fmt](ds, path)
    assert open_dataset(path).groups is None  # without ids: ungrouped
    {"npz": _write_npz, "hdf5": _write_hdf5, "parquet": _write_parquet}[fmt](
        ds, path, groups=patients
    )
    lazy = open_dataset(path)
    np.testing.assert_array_equal(lazy.groups, patients)
    parts = mlmm.train_val_test_split(lazy, seed=0)
    in_memory = mlmm.train_val_test_split(mlmm.MultimodalDataset(**_fields(ds, patients)), seed=0)
    np.testing.assert_array_equal(parts.indices["test"], in_memory.indices["test"])
    assert not set(parts.train.groups) & set(parts.test.groups)
    if fmt == "parquet":  # a file of the folder without the column is refused
        folder = tmp_path / "many"
        folder.mkdir()
        _write_parquet(ds, folder / "a.parquet")
        _write_parquet(ds, folder / "b.parquet", groups=patients)
        with pytest.raises(MlmmError, match=r"a.parquet: no column\(s\) \['group'\]"):
            open_dataset(folder)


def _drop_shape_paren(raw: bytes) -> bytes:
    """The ``)`` closing a .npy header's shape dropped (same length): numpy's header parser
    raised tokenize.TokenError, a traceback from deep inside np.load."""
    assert b"), }" in raw
    return raw.replace(b"), }", b",  }", 1)


@pytest.mark.parametrize("member", ["observed.npy", "inputs/v.npy"])
def test_a_corrupt_npy_header_in_a_folder_is_one_line_naming_the_file(tmp_path, member):
    folder = write_dataset(_mixed(20), tmp_path / "f")
    (folder / member).write_bytes(_drop_shape_paren((folder / member).read_bytes()))
    with pytest.raises(MlmmError, match=rf"{member}: not a readable \.npy file \(its header"):
        open_dataset(folder)


@pytest.mark.parametrize("member", ["mlmm.npy", "observed.npy", "input_v.npy"])
def test_a_corrupt_npz_member_header_or_cut_archive_is_one_line(tmp_path, member):
    import zipfile

    _write_npz(_mixed(20), tmp_path / "d.npz")
    with zipfile.ZipFile(tmp_path / "d.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members[member] = _drop_shape_paren(members[member])
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:  # valid CRC-32s
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(MlmmError, match=r"bad\.npz: not a readable \.npz archive \(its header"):
        open_dataset(tmp_path / "bad.npz")
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) - 200])
    with pytest.raises(MlmmError, match=r"cut\.npz: not a readable \.npz archive"):
        open_dataset(tmp_path / "cut.npz")


def test_a_damaged_small_npz_member_is_not_called_python_objects(tmp_path):
    # every ValueError reading observed/targets/groups was "holds Python objects", also a
    # member cut short or with a corrupt dtype
    import zipfile

    _write_npz(_mixed(20), tmp_path / "d.npz")
    with zipfile.ZipFile(tmp_path / "d.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["targets.npy"] = members["targets.npy"][:-5]  # the rows cut short
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:  # valid CRC-32s
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(MlmmError, match=r"bad\.npz: not a readable \.npz archive") as err:
        open_dataset(tmp_path / "bad.npz")
    assert "Python objects" not in str(err.value) and "\n" not in str(err.value)
    ds = _mixed(20)
    _write_npz(ds, tmp_path / "objects.npz", groups=np.array(["a"] * 20, dtype=object))
    with pytest.raises(MlmmError, match=r"member 'groups' holds Python objects"):
        open_dataset(tmp_path / "objects.npz")


@pytest.mark.parametrize("fmt", ["folder", "hdf5"])
def test_absent_rows_are_never_read_and_batches_match_the_in_memory_ones(tmp_path, fmt):
    """A modality absent from a batch is not read at all, a partly absent one only at its
    present rows; the streamed, standardised batches stay those of the in-memory path."""
    ds = _mixed(50)
    observed = ds.observed.copy()
    observed[:, 0] = True  # "v" in every row, "s" in some
    ds = mlmm.MultimodalDataset(ds.specs, ds.task, ds.inputs, ds.targets, observed)
    present = observed.copy()
    present[:, 2] = False  # the image modality dropped from every row (a test condition)
    if fmt == "hdf5":
        _write_hdf5(ds, tmp_path / "d.h5")
        lazy = open_dataset(tmp_path / "d.h5")
    else:
        lazy = open_dataset(write_dataset(ds, tmp_path / "d"))
    reads: list[tuple[str, list[int]]] = []
    original = type(lazy.source).read

    def recording(self, name, rows):
        reads.append((name, rows.tolist()))
        return original(self, name, rows)

    lazy, memory = lazy.with_presence(present), ds.with_presence(present)
    scaler = mlmm.Standardizer().fit(ds)  # fitted with every modality, as in training
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(lazy.source), "read", recording)
        streamed = StreamedBatches(scaler.transform(lazy))
        got = list(iterate_batches(streamed, 16, True, torch.Generator().manual_seed(3)))
    whole = mlmm.MultimodalBatch.from_dataset(scaler.transform(memory))
    expected = list(iterate_batches(whole, 16, True, torch.Generator().manual_seed(3)))
    assert reads and all(name != "i" for name, _ in reads)  # never read
    for name, rows in reads:  # only present rows, each once per batch
        j = ds.modality_names.index(name)
        assert present[rows, j].all()
    for x, y in zip(expected, got, strict=True):
        assert torch.equal(x.present, y.present) and torch.equal(x.target, y.target)
        for name in ds.modality_names:
            assert torch.equal(x.inputs[name], y.inputs[name]), name  # bit-identical
