"""Artifacts: atomic save, checked load, one-line errors that name the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import ArtifactError, MlmmError
from mlmm.train import checkpoint
from mlmm.train.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_artifact, save_artifact
from mlmm.train.trained import TrainedModel

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5, -2.0])}


def save(path: Path, scale: float = 1.0) -> Path:
    state = {k: v * scale for k, v in STATE.items()}
    return save_artifact(path, state, {"method": "toy", "scale": scale})


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def assert_one_line_error(err: pytest.ExceptionInfo, *phrases: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, ArtifactError) and isinstance(err.value, MlmmError)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


def test_round_trip(tmp_path):
    path = save(tmp_path / "model")
    assert path == tmp_path / "model"
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config, state = load_artifact(path)
    assert config["format"] == "mlmm-artifact" and config["format_version"] == 1
    assert config["method"] == "toy" and config["scale"] == 1.0
    assert len(config["weights_sha256"]) == 64
    assert set(state) == {"w", "b"}
    for k, v in STATE.items():
        assert torch.equal(state[k], v)
    assert leftovers(tmp_path) == []


def test_saving_again_replaces_the_artifact(tmp_path):
    save(tmp_path / "model", 1.0)
    save(tmp_path / "model", 3.0)
    config, state = load_artifact(tmp_path / "model")
    assert config["scale"] == 3.0 and torch.equal(state["b"], STATE["b"] * 3)
    assert leftovers(tmp_path) == []


def test_save_onto_a_file_or_a_foreign_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MlmmError, match="exists and is not a directory"):
        save(tmp_path / "file")
    results = tmp_path / "results"
    results.mkdir()
    (results / "table.csv").write_text("precious")
    with pytest.raises(MlmmError, match="is not an mlmm model directory"):
        save(results)
    assert (results / "table.csv").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    save(tmp_path / "empty")  # an empty directory is fine
    load_artifact(tmp_path / "empty")


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError) as err:
        load_artifact(tmp_path / "nope")
    assert_one_line_error(err, "no model artifact at", "train one first")


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
    assert_one_line_error(err, "is not valid JSON", "retrain or restore")


@pytest.mark.parametrize("content", ['{"format": "other"}', "[1, 2]"])
def test_wrong_format(tmp_path, content):
    path = save(tmp_path / "model")
    (path / CONFIG_FILE).write_text(content)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "is not an mlmm artifact config")


@pytest.mark.parametrize("version", [2, "1", None])
def test_newer_or_garbled_format_version(tmp_path, version):
    path = save(tmp_path / "model")
    config = json.loads((path / CONFIG_FILE).read_text())
    config["format_version"] = version
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, f"uses artifact format {version!r}", "upgrade mlmm")


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
    config["weights_sha256"] = checkpoint._sha256(path / WEIGHTS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert_one_line_error(err, "cannot be read", "retrain or restore")


def test_a_save_dying_while_writing_weights_keeps_the_previous_artifact(tmp_path, monkeypatch):
    save(tmp_path / "model", 1.0)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "model", 5.0)
    assert leftovers(tmp_path) == []
    config, state = load_artifact(tmp_path / "model")
    assert config["scale"] == 1.0 and torch.equal(state["w"], STATE["w"])


def test_a_save_dying_between_the_two_renames_puts_the_previous_artifact_back(
    tmp_path, monkeypatch
):
    save(tmp_path / "model", 1.0)
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):  # the swap-in of the new artifact fails
            raise OSError("killed")
        real_rename(src, dst)

    monkeypatch.setattr(checkpoint.os, "rename", rename)
    with pytest.raises(OSError, match="killed"):
        save(tmp_path / "model", 5.0)
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    config, _ = load_artifact(tmp_path / "model")
    assert config["scale"] == 1.0


def test_recover_restores_an_old_directory_when_the_target_is_missing(tmp_path):
    """What a process killed between the renames leaves: only ``.model.old-*``."""
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


def test_trained_model_round_trip(tmp_path):
    trained, ds = tiny_trained()
    loaded = TrainedModel.load(trained.save(tmp_path / "model"))
    np.testing.assert_allclose(loaded.predict_raw(ds), trained.predict_raw(ds), atol=1e-6)
    assert loaded.prior == trained.prior and loaded.specs == trained.specs
    assert loaded.histories[0].best_epoch == trained.histories[0].best_epoch


def test_trained_model_with_incompatible_weights(tmp_path):
    trained, _ = tiny_trained()
    path = trained.save(tmp_path / "model")
    config = json.loads((path / CONFIG_FILE).read_text())
    config["hyperparameters"]["embed_dim"] = 5  # the saved weights were made with 4
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(path)
    assert_one_line_error(err, "weights do not fit the 'late-fusion' model", "retrain it")


def test_trained_model_with_an_unknown_method_or_bad_hyperparameter(tmp_path):
    trained, _ = tiny_trained()
    path = trained.save(tmp_path / "model")
    config = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**config, "method": "no-such-method"}))
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(path)
    assert_one_line_error(err, "'no-such-method' model", "upgrade mlmm")
    config["hyperparameters"]["embed_dim"] = -1
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(path)
    assert_one_line_error(err, "config.json is incompatible", "embed_dim")
    del config["modalities"]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(path)
    assert_one_line_error(err, "lacks or garbles", "retrain")
