"""A DatasetWriter killed while replacing a folder: the next write or open finishes or undoes
the replacement, never losing the newer complete folder, never touching a live writer's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlmm
from mlmm.data.lazy import DatasetWriter, open_dataset, write_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.utils import temporary_prefix


def _data(value: float, n: int = 12) -> mlmm.MultimodalDataset:
    specs = [ModalitySpec("v", "vector", (3,))]
    inputs = {"v": np.full((n, 3), value)}
    return mlmm.MultimodalDataset(specs, TaskSpec("regression"), inputs, np.full(n, value))


def _value(path) -> float:
    return float(open_dataset(path).to_memory().targets[0])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _named_for(path, pid: int) -> str:
    """``path``'s temporary prefix as process ``pid`` of this host writes it."""
    return temporary_prefix(path).replace(f".p{os.getpid()}-", f".p{pid}-", 1)


def _killed_between_renames(tmp_path, finished_new: bool, pid: int, legacy: bool = False):
    """The folders a writer ``pid`` leaves when killed after putting the old folder aside."""
    path = tmp_path / "data"
    write_dataset(_data(1.0), path)  # the old version
    aside = tmp_path / (f".data.old-{pid}" if legacy else _named_for(path, pid) + "replaced")
    os.replace(path, aside)
    new = tmp_path / (_named_for(path, pid) + "k3x9.tmp")
    write_dataset(_data(2.0), tmp_path / "staging")
    os.replace(tmp_path / "staging", new)
    if not finished_new:
        (new / "mlmm-dataset.json").unlink()  # killed before its manifest
    return path, aside, new


@pytest.mark.parametrize("legacy", [False, True])
def test_a_complete_new_folder_is_put_in_place_by_the_next_open(tmp_path, legacy):
    path, aside, new = _killed_between_renames(tmp_path, True, _dead_pid(), legacy)
    assert _value(path) == 2.0  # the newer complete data
    assert not aside.exists() and not new.exists()


def test_an_unfinished_new_folder_gives_the_old_one_back(tmp_path):
    path, aside, new = _killed_between_renames(tmp_path, False, _dead_pid())
    with DatasetWriter(path, _data(3.0).specs, _data(3.0).task, 12, overwrite=True) as writer:
        assert _value(path) == 1.0  # put back before this writer starts
        assert not aside.exists() and not new.exists()  # the unfinished one: litter, removed
        writer.append({"v": np.full((12, 3), 3.0)}, np.full(12, 3.0))
    assert _value(path) == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_folder_put_aside_once_the_new_one_is_in_place_is_removed(tmp_path):
    path, aside, new = _killed_between_renames(tmp_path, True, _dead_pid())
    os.replace(new, path)  # killed after the second rename, before removing the old one
    assert _value(path) == 2.0
    assert not aside.exists()


def test_a_live_writers_folders_are_left_alone(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path, aside, new = _killed_between_renames(tmp_path, True, live.pid)
        with pytest.raises(MlmmError, match="no such file"):
            open_dataset(path)  # it is about to rename its new folder into place
        assert aside.exists() and new.exists()
    finally:
        live.kill()
        live.wait()
    assert _value(path) == 2.0  # once it is gone


def test_a_writer_killed_between_its_two_renames_loses_nothing(tmp_path):
    path = tmp_path / "data"
    write_dataset(_data(1.0), path)
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        import mlmm
        from mlmm.data import lazy
        from mlmm.data.specs import ModalitySpec, TaskSpec

        renames = []
        real = os.replace
        def replace(src, dst):
            renames.append(dst)
            if len(renames) == 2:  # the new folder's rename: killed just before it
                os._exit(9)
            real(src, dst)
        lazy.os.replace = replace
        data = mlmm.MultimodalDataset(
            [ModalitySpec("v", "vector", (3,))], TaskSpec("regression"),
            {{"v": np.full((12, 3), 2.0)}}, np.full(12, 2.0),
        )
        lazy.write_dataset(data, {str(path)!r}, overwrite=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", script], env=env, timeout=120)
    assert killed.returncode == 9
    assert not path.exists()  # between the renames: the old folder aside, the new one beside
    assert _value(path) == 2.0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "data"]
    assert leftovers == []
    shutil.rmtree(path)


def test_a_replace_whose_new_folder_cannot_go_in_puts_the_old_one_back(tmp_path, monkeypatch):
    # the second rename fails (a folder held open on Windows): the old folder stayed aside, so
    # the path was gone while this process lived (its own aside is never resolved by it)
    from mlmm.data import lazy

    path = tmp_path / "data"
    write_dataset(_data(1.0), path)
    real, renames = os.replace, []

    def replace(src, dst):
        renames.append(dst)
        if len(renames) == 2:
            raise PermissionError(13, "Access is denied")
        real(src, dst)

    monkeypatch.setattr(lazy.os, "replace", replace)
    with pytest.raises(MlmmError, match="could not write the dataset"):
        write_dataset(_data(2.0), path, overwrite=True)
    monkeypatch.undo()
    assert _value(path) == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
