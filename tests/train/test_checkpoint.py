"""Artifacts: atomic save, checked load, one-line errors that name the fix."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import ArtifactError, MlmmError
from mlmm.train import checkpoint
from mlmm.train.checkpoint import (
    CARD_FILE,
    CARD_MARKER,
    CONFIG_FILE,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    check_artifact_path,
    is_artifact,
    load_artifact,
    save_artifact,
)
from mlmm.train.trained import TrainedModel

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5, -2.0])}


def save(path: Path, scale: float = 1.0, overwrite: bool = False) -> Path:
    state = {k: v * scale for k, v in STATE.items()}
    return save_artifact(path, state, {"method": "toy", "scale": scale}, overwrite=overwrite)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def rehash(path: Path) -> None:
    """Make the manifest agree with the files again: an edit the hashes cannot catch."""
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        manifest["sha256"][name] = hashlib.sha256((path / name).read_bytes()).hexdigest()
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def write_config(path: Path, config: dict) -> None:
    (path / CONFIG_FILE).write_text(json.dumps(config))
    rehash(path)


def assert_one_line_error(
    err: pytest.ExceptionInfo, *phrases: str, kind: type = ArtifactError
) -> None:
    message = str(err.value)
    assert isinstance(err.value, kind) and isinstance(err.value, MlmmError)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


def test_round_trip(tmp_path):
    path = save(tmp_path / "model")
    assert path == tmp_path / "model"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [CARD_FILE, CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE]
    )
    config, state = load_artifact(path)
    # no key of a later format: written at the first, which every mlmm reads
    assert config["format"] == "mlmm-artifact" and config["format_version"] == 1
    assert config["method"] == "toy" and config["scale"] == 1.0
    assert len(config["weights_sha256"]) == 64
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert manifest["format"] == "mlmm-artifact" and manifest["format_version"] == 1
    assert (
        manifest["sha256"][CONFIG_FILE]
        == hashlib.sha256((path / CONFIG_FILE).read_bytes()).hexdigest()
    )
    assert manifest["sha256"][WEIGHTS_FILE] == config["weights_sha256"]
    assert set(state) == {"w", "b"}
    for k, v in STATE.items():
        assert torch.equal(state[k], v)
    assert leftovers(tmp_path) == [] and is_artifact(path)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_users_umask(tmp_path, umask, mode):
    """Issue 11 item 20: the weights were written 0600 and the config 0644."""
    old = os.umask(umask)
    try:
        path = save(tmp_path / "model")
        save(path, 2.0, overwrite=True)  # in place too
    finally:
        os.umask(old)
    for name in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
        assert (path / name).stat().st_mode & 0o777 == mode, name


def test_saving_again_needs_overwrite_and_replaces_the_artifact(tmp_path):
    save(tmp_path / "model", 1.0)
    with pytest.raises(MlmmError) as err:
        save(tmp_path / "model", 3.0)
    assert_one_line_error(err, "already holds an mlmm model", "--overwrite", kind=MlmmError)
    assert load_artifact(tmp_path / "model")[0]["scale"] == 1.0
    save(tmp_path / "model", 3.0, overwrite=True)
    config, state = load_artifact(tmp_path / "model")
    assert config["scale"] == 3.0 and torch.equal(state["b"], STATE["b"] * 3)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "model") == []


def test_overwrite_keeps_the_files_a_user_added(tmp_path):
    """Issue 11 item 1: retraining into an artifact deleted the user's CSV and notes."""
    path = save(tmp_path / "model", 1.0)
    (path / "notes.md").write_text("my notes")
    (path / "eval").mkdir()
    (path / "eval" / "table.csv").write_text("a,b\n1,2\n")
    inode = path.stat().st_ino
    save(path, 4.0, overwrite=True)
    assert (path / "notes.md").read_text() == "my notes"
    assert (path / "eval" / "table.csv").read_text() == "a,b\n1,2\n"
    assert path.stat().st_ino == inode  # written in place, not swapped for a new directory
    assert load_artifact(path)[0]["scale"] == 4.0


def test_a_directory_with_some_config_json_is_not_replaced(tmp_path):
    """Issue 11 item 1: --out myproject left only config.json and model.safetensors."""
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "config.json").write_text('{"lr": 0.1}')
    (project / "thesis.tex").write_text("\\documentclass{article}")
    (project / "src" / "main.py").write_text("print(1)")
    before = sorted(str(p.relative_to(project)) for p in project.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(MlmmError) as err:
            save(project, overwrite=overwrite)
        assert_one_line_error(err, "is not an mlmm model directory", "thesis.tex", kind=MlmmError)
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*")) == before
    assert (project / "config.json").read_text() == '{"lr": 0.1}'
    assert leftovers(tmp_path) == [] and not is_artifact(project)


def test_save_onto_a_file_or_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MlmmError, match="exists and is a file"):
        save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    with pytest.raises(MlmmError, match="file is a file"):
        save(tmp_path / "file" / "model")
    results = tmp_path / "results"
    results.mkdir()
    (results / "table.csv").write_text("precious")
    with pytest.raises(MlmmError, match="is not an mlmm model directory"):
        save(results, overwrite=True)
    assert (results / "table.csv").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty")  # an empty directory is fine, without overwrite
    load_artifact(tmp_path / "empty")
    save(tmp_path / "a" / "b" / "model")  # missing parents are created
    load_artifact(tmp_path / "a" / "b" / "model")


def test_a_location_that_is_not_writable_is_refused_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(checkpoint.os, "access", lambda path, mode: False)
    with pytest.raises(MlmmError) as err:
        check_artifact_path(tmp_path / "ro" / "model")
    assert_one_line_error(err, "is not writable", "choose another --out", kind=MlmmError)
    with pytest.raises(MlmmError, match="is not writable"):
        check_artifact_path(tmp_path / "ro")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_refused(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(MlmmError, match="is not writable"):
            save(tmp_path / "ro" / "model")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_disk_full_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    """Issue 11 item 13: ENOSPC while saving gave a traceback."""
    save(tmp_path / "model", 1.0)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_file", full)
    for target, overwrite in ((tmp_path / "model", True), (tmp_path / "new", False)):
        with pytest.raises(MlmmError) as err:
            save(target, 5.0, overwrite=overwrite)
        assert_one_line_error(
            err, "No space left on device", "free some disk space", kind=MlmmError
        )
    monkeypatch.undo()
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "model") == []
    assert not (tmp_path / "new").exists()
    config, state = load_artifact(tmp_path / "model")
    assert config["scale"] == 1.0 and torch.equal(state["w"], STATE["w"])


def test_a_save_dying_before_its_commit_keeps_the_previous_artifact(tmp_path, monkeypatch):
    save(tmp_path / "model", 1.0)
    real = checkpoint._write_file

    def killed_at_the_manifest(path, data):
        if MANIFEST_FILE in path.name:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", killed_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path / "model", 5.0, overwrite=True)
    monkeypatch.undo()
    assert leftovers(tmp_path / "model") == []
    assert load_artifact(tmp_path / "model")[0]["scale"] == 1.0


def test_staged_files_of_a_killed_save_are_dropped_on_load(tmp_path):
    """What kill -9 before the commit leaves: staged files, but no staged manifest."""
    path = save(tmp_path / "model", 1.0)
    (path / ".model.safetensors.new-0badc0de").write_bytes(b"half a tensor")
    (path / ".mlmm-artifact.json.part-0badc0de").write_text('{"form')
    config, _ = load_artifact(path)
    assert config["scale"] == 1.0 and leftovers(path) == []


def test_uncommitted_staged_files_in_a_read_only_artifact_do_not_stop_a_load(tmp_path, monkeypatch):
    """A killed save's staging, then the directory made read-only (a copy on a read-only
    mount): the old artifact is whole, so it loads, with the staged files left where they are."""
    path = save(tmp_path / "model", 1.0)
    staged = path / ".model.safetensors.new-0badc0de"
    staged.write_bytes(b"half a tensor")

    def read_only(self, missing_ok=False):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", read_only)
    config, state = load_artifact(path)
    assert config["scale"] == 1.0 and torch.equal(state["w"], STATE["w"])
    assert staged.exists()


def test_a_committed_save_in_a_read_only_artifact_is_refused_on_load(tmp_path, monkeypatch):
    save(tmp_path / "model", 1.0)
    monkeypatch.setattr(checkpoint.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError()))
    with pytest.raises(MlmmError, match="cannot write the model"):
        save(tmp_path / "model", 5.0, overwrite=True)
    with pytest.raises(ArtifactError, match="holds an unfinished save that cannot be completed"):
        load_artifact(tmp_path / "model")  # os.replace still fails: cannot roll it forward


def test_a_save_dying_after_its_commit_is_completed_by_the_next_load(tmp_path, monkeypatch):
    save(tmp_path / "model", 1.0)
    monkeypatch.setattr(checkpoint.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError()))
    with pytest.raises(MlmmError, match="cannot write the model"):
        save(tmp_path / "model", 5.0, overwrite=True)
    monkeypatch.undo()
    assert any(".new-" in name for name in leftovers(tmp_path / "model"))
    config, state = load_artifact(tmp_path / "model")  # rolls the committed save forward
    assert config["scale"] == 5.0 and torch.equal(state["w"], STATE["w"] * 5)
    assert leftovers(tmp_path / "model") == []


KILLED_SAVE = r"""
import os, signal, sys
from pathlib import Path
import torch
from mlmm.train import checkpoint

where, path = sys.argv[1], Path(sys.argv[2])
write_file, replace = checkpoint._write_file, os.replace

def half_then_kill(file, data):
    if where in file.name:
        with open(file, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    write_file(file, data)

def kill_at_rename(src, dst):
    if where == "rename":
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

checkpoint._write_file, os.replace = half_then_kill, kill_at_rename
state = {"w": torch.full((1000,), 5.0)}
checkpoint.save_artifact(path, state, {"method": "toy", "scale": 5.0}, overwrite=True)
"""


@pytest.mark.parametrize(
    "where, survivor",
    [
        (CONFIG_FILE, None),  # a new artifact: killed while writing it
        (MANIFEST_FILE, 1.0),  # an overwrite killed before its commit: the old one stays
        ("rename", 5.0),  # an overwrite killed after its commit: the new one is completed
    ],
)
def test_kill_9_during_a_save_leaves_a_whole_artifact_and_no_leftovers(tmp_path, where, survivor):
    """Issue 11 item 16, with a real SIGKILL at each stage of a save."""
    path = tmp_path / "model"
    if survivor is not None:
        save(path, 1.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, where, str(path)], env=env, timeout=300
    )
    assert proc.returncode == -signal.SIGKILL
    if survivor is None:
        assert not path.exists() and [n[:11] for n in leftovers(tmp_path)] == [".model.tmp-"]
        save(path, 2.0)  # the next save removes the killed one's directory
        assert leftovers(tmp_path) == [] and load_artifact(path)[0]["scale"] == 2.0
        return
    assert leftovers(path) != []  # staged files of the killed save
    config, state = load_artifact(path)
    expected = STATE["w"] if survivor == 1.0 else torch.full((1000,), 5.0)
    assert config["scale"] == survivor and torch.equal(state["w"], expected)
    assert leftovers(path) == [] and leftovers(tmp_path) == []


def test_stale_leftovers_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    """Issue 11 item 16: kill -9 left a full-size .DIR.tmp-* (and .DIR.old-*) forever."""
    save(tmp_path / "model", 1.0)
    shutil.copytree(tmp_path / "model", tmp_path / ".model.tmp-1234abcd")
    shutil.copytree(tmp_path / "model", tmp_path / ".model.old-1234abcd")
    (tmp_path / ".model.old-5678abcd").symlink_to(tmp_path / "model")  # an old .link.old-*
    foreign = tmp_path / ".model.tmp-99999999"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("not mlmm's")
    busy = tmp_path / ".model.tmp-77777777"  # a save running in another process right now
    busy.mkdir()
    with checkpoint._locked(busy, exclusive=True):
        save(tmp_path / "model", 2.0, overwrite=True)
    assert leftovers(tmp_path) == [".model.tmp-77777777", ".model.tmp-99999999"]
    assert (foreign / "thesis.tex").read_text() == "not mlmm's"
    save(tmp_path / "model", 3.0, overwrite=True)  # no longer locked: removed
    assert leftovers(tmp_path) == [".model.tmp-99999999"]
    assert load_artifact(tmp_path / "model")[0]["scale"] == 3.0


def test_an_out_symlink_is_followed_and_kept(tmp_path):
    """Issue 11 item 16: the link was replaced by a directory, leaving a dangling .link.old-*."""
    (tmp_path / "store").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "store")
    save(link, 1.0)
    save(link, 2.0, overwrite=True)
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "store")
    assert load_artifact(tmp_path / "store")[0]["scale"] == 2.0
    assert load_artifact(link)[0]["scale"] == 2.0
    assert leftovers(tmp_path) == []
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(MlmmError) as err:
        save(dangling)
    assert_one_line_error(err, "which does not exist", kind=MlmmError)
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "nope")
    assert_one_line_error(err, "no model artifact at", "train one first")


def test_a_file_of_the_artifact_names_its_directory(tmp_path):
    path = save(tmp_path / "model")
    with pytest.raises(ArtifactError) as err:  # was "train one first (... --out config.json)"
        load_artifact(path / "config.json")
    assert_one_line_error(err, "is one file of a model artifact; give its directory", str(path))


def test_no_config(tmp_path):
    path = save(tmp_path / "model")
    (path / CONFIG_FILE).unlink()
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "has no config.json", "not an mlmm model directory")


def test_truncated_config(tmp_path):
    path = save(tmp_path / "model")
    text = (path / CONFIG_FILE).read_text()
    (path / CONFIG_FILE).write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "config.json does not match the hash", "retrain or restore")
    rehash(path)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "is not valid JSON", "retrain or restore")


def test_an_edited_config_fails_the_manifest_hash(tmp_path):
    """Issue 11 item 15: config.json was not hashed."""
    path = save(tmp_path / "model")
    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, "scale": 9.0}))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "does not match the hash in mlmm-artifact.json", "retrain")


def test_an_artifact_without_manifest_still_loads_and_counts_as_one(tmp_path):
    """Artifacts written before the manifest existed."""
    path = save(tmp_path / "model", 2.0)
    (path / MANIFEST_FILE).unlink()
    assert is_artifact(path)
    assert load_artifact(path)[0]["scale"] == 2.0
    with pytest.raises(MlmmError, match="already holds an mlmm model"):
        save(path, 3.0)
    save(path, 3.0, overwrite=True)
    assert (path / MANIFEST_FILE).is_file() and load_artifact(path)[0]["scale"] == 3.0


def test_a_deeply_nested_config_is_one_line(tmp_path):
    """Issue 11 item 15: a 200k-deep JSON array gave a RecursionError traceback."""
    path = save(tmp_path / "model")
    (path / CONFIG_FILE).write_text("[" * 200_000 + "]" * 200_000)
    rehash(path)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "is not valid JSON")


@pytest.mark.parametrize("content", ['{"format": "other"}', "[1, 2]"])
def test_wrong_format(tmp_path, content):
    path = save(tmp_path / "model")
    (path / CONFIG_FILE).write_text(content)
    rehash(path)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "is not an mlmm artifact config")


@pytest.mark.parametrize("where", [CONFIG_FILE, MANIFEST_FILE])
def test_a_newer_format_version(tmp_path, where):
    path = save(tmp_path / "model")
    data = json.loads((path / where).read_text())
    (path / where).write_text(json.dumps({**data, "format_version": 3}))
    rehash(path)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "uses artifact format 3", "upgrade mlmm")


@pytest.mark.parametrize("version", ["1", None, 0, 1.0, True, [1]])
@pytest.mark.parametrize("where", [CONFIG_FILE, MANIFEST_FILE])
def test_a_garbled_format_version_is_not_called_newer(tmp_path, version, where):
    """Issue 11 item 14: format_version "1" was called newer."""
    path = save(tmp_path / "model")
    data = json.loads((path / where).read_text())
    (path / where).write_text(json.dumps({**data, "format_version": version}))
    rehash(path)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "is not a valid mlmm artifact", "must be a positive integer")
    assert "newer" not in str(err.value)


def test_missing_weights(tmp_path):
    path = save(tmp_path / "model")
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "has no model.safetensors", "retrain")


def test_modified_weights_fail_the_hash(tmp_path):
    path = save(tmp_path / "model")
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF  # flip the last byte of the tensor data
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "does not match the hash", "retrain or restore")


def test_truncated_weights(tmp_path):
    path = save(tmp_path / "model")
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) - 7])
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "does not match the hash")


def test_truncated_weights_with_a_matching_hash_cannot_be_read(tmp_path):
    path = save(tmp_path / "model")
    data = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(data[: len(data) - 7])
    config = json.loads((path / CONFIG_FILE).read_text())
    config["weights_sha256"] = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    write_config(path, config)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "cannot be read", "retrain or restore")


def test_weights_that_are_a_device_a_fifo_or_a_directory_do_not_hang(tmp_path):
    """Issue 11 item 15: a symlink to /dev/zero or a FIFO hung the hash."""
    path = save(tmp_path / "model")
    weights = path / WEIGHTS_FILE
    for make, phrase in (
        (lambda: weights.symlink_to("/dev/zero"), "is not a regular file"),
        (lambda: os.mkfifo(weights), "is not a regular file"),
        (lambda: weights.mkdir(), "is a directory"),
    ):
        if weights.is_dir() and not weights.is_symlink():
            weights.rmdir()
        else:
            weights.unlink()
        make()
        with pytest.raises(ArtifactError) as err:
            load_artifact(path)
        assert_one_line_error(err, phrase, "regular files only")


def test_files_past_the_size_bound_are_refused_unread(tmp_path, monkeypatch):
    path = save(tmp_path / "model")
    monkeypatch.setattr(checkpoint, "MAX_WEIGHTS_BYTES", 16)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "model.safetensors is", "more than the 16")


def test_recover_restores_an_old_directory_when_the_target_is_missing(tmp_path):
    """What an older mlmm killed between its renames leaves: only ``.model.old-*``."""
    save(tmp_path / "model", 2.0)
    os.rename(tmp_path / "model", tmp_path / ".model.old-deadbeef")
    config, state = load_artifact(tmp_path / "model")
    assert config["scale"] == 2.0 and torch.equal(state["b"], STATE["b"] * 2)
    assert (tmp_path / "model").is_dir() and leftovers(tmp_path) == []


def test_recover_leaves_an_existing_target_alone(tmp_path):
    save(tmp_path / "model", 2.0)
    save(tmp_path / "other", 7.0)
    os.rename(tmp_path / "other", tmp_path / ".model.old-deadbeef")
    config, _ = load_artifact(tmp_path / "model")
    assert config["scale"] == 2.0
    assert leftovers(tmp_path) == [".model.old-deadbeef"]


# ------------------------------------------------------------- TrainedModel.load
def tiny_trained() -> tuple[TrainedModel, MultimodalDataset]:
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    ds = MultimodalDataset(
        [ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))],
        TaskSpec("classification", 2),
        {"a": rng.normal(size=(24, 3)) + y[:, None], "b": rng.normal(size=(24, 2))},
        y,
    )
    model = mlmm.create_method("late-fusion", ds.specs, ds.task, embed_dim=4, hidden=8)
    return mlmm.Trainer(max_epochs=1, batch_size=8, progress=False).fit(model, ds), ds


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory) -> Path:
    trained, _ = tiny_trained()
    return trained.save(tmp_path_factory.mktemp("trained") / "model")


@pytest.fixture
def artifact(trained_artifact, tmp_path) -> Path:
    """A fresh copy of one trained artifact, to edit."""
    return Path(shutil.copytree(trained_artifact, tmp_path / "model"))


def test_trained_model_round_trip(tmp_path):
    trained, ds = tiny_trained()
    loaded = TrainedModel.load(trained.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_raw(ds), trained.predict_raw(ds), atol=1e-6)
    assert loaded.prior == trained.prior and loaded.specs == trained.specs
    assert loaded.histories[0].best_epoch == trained.histories[0].best_epoch
    with pytest.raises(MlmmError, match="already holds an mlmm model"):
        trained.save(tmp_path / "model")
    trained.save(tmp_path / "model", overwrite=True)


def test_trained_model_with_incompatible_weights(artifact):
    config = json.loads((artifact / CONFIG_FILE).read_text())
    config["hyperparameters"]["embed_dim"] = 3  # the saved weights were made with 4
    write_config(artifact, config)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "weights do not fit the 'late-fusion' model", "retrain it")


def test_trained_model_with_an_unknown_method_or_bad_hyperparameter(artifact):
    config = json.loads((artifact / CONFIG_FILE).read_text())
    write_config(artifact, {**config, "method": "no-such-method"})
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "'no-such-method' model", "upgrade mlmm")
    config["hyperparameters"]["embed_dim"] = -1
    write_config(artifact, config)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "config.json is incompatible", "embed_dim")
    del config["modalities"]
    write_config(artifact, config)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "not a valid mlmm artifact config", "modalities", "missing")


def edit(config: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(
    "dotted, value, phrases",
    [
        # issue 11 item 15: a prior of the wrong length gave probabilities summing to 4
        ("prior", [0.25, 0.25, 0.25, 0.25], ["prior has 4 values", "needs 2"]),
        ("prior", [0.5, float("nan")], ["prior[1] must be a finite number"]),
        ("prior", [0.9, 0.9], ["summing to 1"]),
        # ... and a 1-element preprocessing mean was broadcast silently
        ("preprocessing.mean.a", [0.0], ["preprocessing.mean.a has shape [1]", "needs [3]"]),
        ("preprocessing.std.b", [1.0, 0.0], ["preprocessing.std.b must hold positive"]),
        ("preprocessing.mean.a", [0.0, float("inf"), 0.0], ["must hold finite"]),
        ("preprocessing.target_std", -1.0, ["preprocessing.target_std"]),
        # issue 11 item 10: NaN in an artifact's config
        ("hyperparameters.dropout", float("nan"), ["hyperparameters.dropout must be a finite"]),
        # issue 11 item 15: unexpected histories keys gave a TypeError traceback
        ("histories.0.surprise", 1, ["histories.0.surprise", "unknown key"]),
        ("histories.0.best_epoch", "one", ["histories.0.best_epoch"]),
        ("surprise", {}, ["surprise: unknown key"]),
        ("task.n_classes", 3, ["prior has 2 values", "needs 3"]),
        ("format_version", "1", ["format_version must be a positive integer"]),
        # issue 11 item 15: allocation before the weights were checked
        ("modalities.0.shape", [10**12], ["modalities.0", "sizes in [1, 2147483647]"]),
        ("modalities.1.shape", [2**30, 2**30], ["modalities.1", "needs 1 sizes"]),
        ("hyperparameters.hidden", 10**9, ["hyperparameters.hidden is 1000000000", "allow"]),
        # the sizes a method resolved are bounded as hyperparameters, and name only those
        ("resolved_hyperparameters", {"hidden": 10**9}, ["resolved_hyperparameters.hidden is"]),
        ("resolved_hyperparameters", {"width": 8}, ["names ['width'], which hyperparameters"]),
    ],
)
def test_an_invalid_config_is_refused_before_the_model_is_built(
    artifact, monkeypatch, dotted, value, phrases
):
    config = edit(json.loads((artifact / CONFIG_FILE).read_text()), dotted, value)
    write_config(artifact, config)
    built = []
    monkeypatch.setattr(mlmm.train.trained, "create_method", lambda *a, **k: built.append(a))
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, *phrases)
    assert built == []


def test_a_model_larger_than_its_weights_is_refused_without_allocating(artifact, monkeypatch):
    """hidden within the schema's bound, but far more values than model.safetensors holds."""
    config = json.loads((artifact / CONFIG_FILE).read_text())
    config["hyperparameters"]["hidden"] = 60_000
    config["hyperparameters"]["embed_dim"] = 60_000
    write_config(artifact, config)
    real = mlmm.train.trained.create_method

    def on_meta_only(*args, **kwargs):
        assert torch.empty(0).device.type == "meta", "built for real before the size check"
        return real(*args, **kwargs)

    monkeypatch.setattr(mlmm.train.trained, "create_method", on_meta_only)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "describes a 'late-fusion' model of", "values but", "holds")


def test_weights_file_that_is_a_directory_is_one_line(artifact):
    (artifact / WEIGHTS_FILE).unlink()
    (artifact / WEIGHTS_FILE).mkdir()
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "is a directory")


def test_a_hyperparameter_of_the_wrong_type_is_one_line(artifact):
    config = json.loads((artifact / CONFIG_FILE).read_text())
    config["hyperparameters"]["rule"] = {"not": "a rule"}
    write_config(artifact, config)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "config.json is incompatible")


def test_a_regression_artifact_round_trips_through_the_schema(tmp_path):
    """Statistics of every modality kind have the shapes the schema expects."""
    rng = np.random.default_rng(0)
    ds = MultimodalDataset(
        [
            ModalitySpec("a", "vector", (3,)),
            ModalitySpec("s", "sequence", (4, 2)),
            ModalitySpec("i", "image", (2, 4, 4)),
        ],
        TaskSpec("regression"),
        {
            "a": rng.normal(size=(24, 3)),
            "s": rng.normal(size=(24, 4, 2)),
            "i": rng.normal(size=(24, 2, 4, 4)),
        },
        rng.normal(size=24) * 5 + 100,
    )
    model = mlmm.create_method("zero-impute", ds.specs, ds.task, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, batch_size=8, progress=False).fit(model, ds)
    loaded = TrainedModel.load(trained.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict(ds), trained.predict(ds), rtol=1e-6)
    assert len(loaded.prior) == 1


def test_save_writes_a_model_card_that_loading_does_not_need(tmp_path):
    from mlmm.train import Trainer
    from mlmm.train.card import model_card

    rng = np.random.default_rng(0)
    data = MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))],
        task=TaskSpec("classification", 2, ("no", "yes")),
        inputs={"a": rng.normal(size=(20, 2)), "b": rng.normal(size=(20, 3))},
        targets=np.array([0, 1] * 10),
    )
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    trained = Trainer(max_epochs=1, progress=False).fit(model, data)
    trained.validation = {"a+b/accuracy": 0.75, "a/accuracy": 0.5, "b/accuracy": 0.625}
    trained.info = {"missing": "mcar:0.3"}
    path = trained.save(tmp_path / "model")
    card = (path / CARD_FILE).read_text()
    assert card == f"{CARD_MARKER}\n" + model_card(json.loads((path / CONFIG_FILE).read_text()))
    for part in ("# late-fusion model", "Paper:", "classification, 2 classes: no, yes", "mcar:0.3"):
        assert part in card
    assert "| a+b | 0.7500 |" in card and "| b | 0.6250 |" in card
    assert "Intended use and limits" in card
    (path / CARD_FILE).write_text(f"{CARD_MARKER}\nedited by hand")  # documentation: still loads
    TrainedModel.load(path)
    trained.save(path, overwrite=True)  # and the next save writes it again
    assert (path / CARD_FILE).read_text().startswith(f"{CARD_MARKER}\n# late-fusion model")


def test_model_card_copes_with_records_it_does_not_know():
    from mlmm.train.card import model_card

    config = {
        "method": "not-registered",
        "modalities": [{"name": "a", "kind": "vector", "shape": [2]}],
        "task": {"kind": "regression", "n_classes": 0},
        "info": {"train_mask": {"slot_rate": "half", "per_modality": [1, 2]}, "missing": "x"},
        "validation": {"a/rmse": float("nan"), "weird": 3},
    }
    card = model_card(config)
    assert "a plugin" in card and "Realised: half" in card and "| a | – |" in card


def test_a_readme_of_the_users_survives_an_overwrite(tmp_path):
    # a README.md without mlmm's marker (notes added to an artifact older than cards) is kept
    path = tmp_path / "run"
    save_artifact(path, {"w": torch.ones(2)}, {"method": "x"})
    assert (path / CARD_FILE).read_text().startswith(CARD_MARKER)
    (path / CARD_FILE).write_text("my notes on this model\n")
    save_artifact(path, {"w": torch.zeros(2)}, {"method": "x"}, overwrite=True)
    assert (path / CARD_FILE).read_text() == "my notes on this model\n"
    # mlmm's own card is rewritten by the next save
    (path / CARD_FILE).write_text(f"{CARD_MARKER}\nold card\n")
    save_artifact(path, {"w": torch.ones(2)}, {"method": "x"}, card="new card\n", overwrite=True)
    assert (path / CARD_FILE).read_text() == f"{CARD_MARKER}\nnew card\n"


def test_an_out_name_too_long_for_the_temporary_folder_is_refused_before_training(tmp_path):
    """`mlmm train --out` with a 250-byte name (the file system takes 255) trained, then failed
    to save: the artifact is first written as .NAME.tmp-XXXXXXXX, 14 bytes longer."""
    with pytest.raises(MlmmError) as info:
        check_artifact_path(tmp_path / ("m" * 250))
    assert "its name is 250 bytes long" in str(info.value)
    assert str(info.value).endswith("choose a shorter --out name (at most 241 bytes)")
    assert list(tmp_path.iterdir()) == []
    longest = tmp_path / ("m" * 241)
    assert check_artifact_path(longest) == longest
    save(longest, 1.0)
    assert load_artifact(longest)[0]["scale"] == 1.0


@pytest.fixture(scope="module")
def hemis_artifact(tmp_path_factory) -> tuple[Path, MultimodalDataset]:
    _, ds = tiny_trained()
    model = mlmm.create_method("hemis", ds.specs, ds.task, embed_dim=4, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, batch_size=8, progress=False).fit(model, ds)
    return trained.save(tmp_path_factory.mktemp("hemis") / "model"), ds


def test_an_artifact_at_the_methods_revision_loads_without_a_warning(hemis_artifact):
    path, _ = hemis_artifact
    assert json.loads((path / CONFIG_FILE).read_text())["revisions"] == {"hemis": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainedModel.load(path)


def test_an_artifact_saved_before_a_revision_that_changed_answers_warns_in_one_line(
    hemis_artifact, tmp_path
):
    """hemis saved before its variance fix (e70a2f6) loaded silently and answered differently."""
    path = Path(shutil.copytree(hemis_artifact[0], tmp_path / "old"))
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["revisions"]  # as every mlmm before revisions wrote it
    write_config(path, config)
    with pytest.warns(UserWarning) as caught:
        loaded = TrainedModel.load(path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and caught[0].filename == __file__
    assert "hemis (saved at revision 1, now 2: the variance over present modalities" in message
    assert message.endswith("retrain it with this mlmm")
    np.testing.assert_array_equal(  # it loads, and predicts as the current hemis does
        loaded.predict_raw(hemis_artifact[1]),
        TrainedModel.load(hemis_artifact[0]).predict_raw(hemis_artifact[1]),
    )


def test_a_revision_below_one_is_refused_in_one_line(artifact):
    config = json.loads((artifact / CONFIG_FILE).read_text())
    config["revisions"] = {"late-fusion": 0}
    write_config(artifact, config)
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(artifact)
    assert_one_line_error(err, "revisions must be integers >= 1")


@pytest.mark.parametrize(("fusion", "warns"), [("mean_variance", True), ("concat", False)])
def test_a_moddrop_from_before_the_variance_fix_warns_only_with_its_mean_variance_fusion(
    fusion, warns, tmp_path
):
    """moddrop's mean_variance fusion is hemis's layer: e70a2f6 changed its answers too."""
    _, ds = tiny_trained()
    model = mlmm.create_method("moddrop", ds.specs, ds.task, fusion=fusion, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, batch_size=8, progress=False).fit(model, ds)
    path = trained.save(tmp_path / "model")
    config = json.loads((path / CONFIG_FILE).read_text())
    assert config.pop("revisions") == {"moddrop": 2}
    write_config(path, config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrainedModel.load(path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == int(warns)
    assert all(
        "moddrop (saved at revision 1, now 2: the mean_variance fusion" in m for m in messages
    )
