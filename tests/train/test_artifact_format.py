"""The artifact format version: an mlmm that reads an older format says "upgrade mlmm" for
today's artifacts (never "unknown key ...; retrain"), and today's mlmm reads the older one."""

import json

import numpy as np
import pytest

import mlmm
from mlmm.errors import ArtifactError
from mlmm.train import checkpoint
from mlmm.train.artifact_schema import ArtifactConfig
from mlmm.train.trained import TrainedModel

#: Every key a format-2 config.json may carry (top level, and inside its nested records).
#: A test failure here means config.json gained (or lost) a key: bump FORMAT_VERSION in
#: mlmm/train/checkpoint.py, say why in its comment and in docs/deploy.md, keep reading the
#: previous version, and record the new keys here and in checkpoint.ADDED_KEYS. Without the
#: bump, an mlmm of the current version refuses the new artifacts as "unknown key (this mlmm
#: does not write it); retrain".
FORMAT_2_KEYS = {
    "class", "classes", "columns", "created_utc", "format", "format_version", "histories",
    "hyperparameters", "info", "library_version", "method", "modalities", "preprocessing",
    "prior", "resolved_hyperparameters", "revisions", "target_column", "task",
    "train_seconds", "trainer", "validation", "weights_sha256",
    "HistoryConfig.best_epoch", "HistoryConfig.best_val_loss", "HistoryConfig.epochs",
    "HistoryConfig.part_best_epochs", "HistoryConfig.seconds", "HistoryConfig.stage",
    "HistoryConfig.stopped_early", "HistoryConfig.time_limited",
    "ModalityConfig.kind", "ModalityConfig.name", "ModalityConfig.shape",
    "ModalityConfig.standardize",
    "PreprocessingConfig.mean", "PreprocessingConfig.std", "PreprocessingConfig.target_mean",
    "PreprocessingConfig.target_std",
    "TaskConfig.class_names", "TaskConfig.kind", "TaskConfig.label_names",
    "TaskConfig.n_classes", "TaskConfig.n_labels",
}  # fmt: skip


@pytest.fixture(scope="module")
def trained_and_data():
    data = mlmm.load_dataset("synthetic", n_samples=40)
    model = mlmm.create_method("hemis", data.specs, data.task, embed_dim=4, hidden=8)
    return mlmm.Trainer(max_epochs=1, progress=False).fit(model, data), data


def test_the_keys_config_json_may_carry_are_those_of_this_format_version():
    schema = ArtifactConfig.model_json_schema(by_alias=True)
    keys = set()
    for name, part in [("", schema), *schema.get("$defs", {}).items()]:
        keys |= {f"{name}.{k}" if name else k for k in part.get("properties", {})}
    assert checkpoint.FORMAT_VERSION == 2 and keys == FORMAT_2_KEYS, (
        f"config.json keys changed ({sorted(keys ^ FORMAT_2_KEYS)}): bump FORMAT_VERSION"
    )


def test_an_mlmm_reading_only_format_1_is_told_to_upgrade(trained_and_data, tmp_path, monkeypatch):
    """Was: format 1 carried revisions, so the mlmm before them said "revisions: unknown key
    (this mlmm does not write it); retrain or restore the model" (the wrong fix)."""
    trained, _ = trained_and_data
    path = trained.save(tmp_path / "new")
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)  # an mlmm that reads format 1
    with pytest.raises(ArtifactError) as err:
        TrainedModel.load(path)
    message = str(err.value)
    assert "uses artifact format 2, newer than this mlmm reads (1); upgrade mlmm" in message
    assert "\n" not in message and "unknown key" not in message


@pytest.mark.parametrize("keys", ["with-revisions", "before-revisions"])
def test_a_format_1_artifact_still_loads_and_answers_as_before(
    trained_and_data, tmp_path, monkeypatch, keys
):
    from mlmm.train.card import model_card

    trained, data = trained_and_data
    config = trained.config()
    if keys == "before-revisions":  # as the first format-1 writers wrote it
        del config["revisions"], config["resolved_hyperparameters"]
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "FORMAT_VERSION", 1)  # the writer of format 1
        path = checkpoint.save_artifact(
            tmp_path / "old", trained.model.state_dict(), config, card=model_card(config)
        )
    assert '"format_version": 1' in (path / checkpoint.CONFIG_FILE).read_text()
    loaded = TrainedModel.load(path)
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
    again = loaded.save(tmp_path / "again")  # a re-save writes today's format
    assert '"format_version": 2' in (again / checkpoint.CONFIG_FILE).read_text()


def test_an_artifact_whose_format_2_keys_say_nothing_is_written_at_format_1(tmp_path, monkeypatch):
    """Was format 2 for every artifact, so an mlmm that reads only format 1 refused even a
    late-fusion model it loads and answers exactly (nothing resolved, every revision at 1):
    such an artifact is written without those keys, at the format every mlmm reads."""
    data = mlmm.load_dataset("synthetic", n_samples=40)
    model = mlmm.create_method("late-fusion", data.specs, data.task, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, data)
    assert trained.config()["revisions"] == {"late-fusion": 1}
    assert trained.config()["resolved_hyperparameters"] == {}
    path = trained.save(tmp_path / "plain")
    config = json.loads((path / checkpoint.CONFIG_FILE).read_text())
    manifest = json.loads((path / checkpoint.MANIFEST_FILE).read_text())
    assert config["format_version"] == manifest["format_version"] == 1
    # only the keys the first format-1 writers wrote (their schema forbade any other)
    format_1 = {k for k in FORMAT_2_KEYS if "." not in k} - set(checkpoint.ADDED_KEYS[2])
    assert set(config) <= format_1
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 1)  # an mlmm that reads format 1
    loaded = TrainedModel.load(path)
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))


@pytest.mark.parametrize(
    ("resolved", "revisions", "version"),
    [({}, {}, 1), ({}, {"m": 1, "n": 1}, 1), ({"k": 3}, {"m": 1}, 2), ({}, {"m": 1, "n": 2}, 2)],
)
def test_the_written_format_is_the_oldest_that_carries_the_config(resolved, revisions, version):
    config = {"method": "m", "resolved_hyperparameters": resolved, "revisions": revisions}
    written, kept = checkpoint.written_format(config)
    assert written == version
    assert kept == (config if version == 2 else {"method": "m"})
