"""A trained multilabel model: 0/1 predictions, label probabilities, artifacts, model card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.datasets import load_dataset
from mlmm.data.split import train_val_test_split
from mlmm.errors import ArtifactError
from mlmm.methods.registry import create_method
from mlmm.train import TrainedModel, Trainer


@pytest.fixture(scope="module")
def fitted():
    data = load_dataset("synthetic-multilabel", n_samples=400, n_labels=3)
    split = train_val_test_split(data, seed=0)
    model = create_method("zero-impute", data.specs, data.task, hidden=32)
    trained = Trainer(max_epochs=15, seed=0, progress=False).fit(model, split.train, split.val)
    return trained, split


def test_predict_is_a_label_matrix_at_one_half_and_proba_the_sigmoids(fitted):
    trained, split = fitted
    proba = trained.predict_proba(split.test)
    pred = trained.predict(split.test)
    assert proba.shape == pred.shape == (split.test.n_samples, 3)
    np.testing.assert_array_equal(pred, (proba >= 0.5).astype(int))
    assert not np.allclose(proba.sum(1), 1)  # one sigmoid per label, not a softmax
    assert (pred == split.test.targets).mean() > 0.75
    assert trained.classes_.tolist() == ["label0", "label1", "label2"]
    assert "multilabel (3 labels: label0, label1, label2)" in repr(trained)


def test_samples_with_nothing_get_the_training_label_frequencies(fitted):
    trained, split = fitted
    np.testing.assert_allclose(trained.prior, split.train.targets.mean(0), atol=1e-6)
    empty = {"m0": np.full((2, 8), np.nan)}
    proba = trained.predict_proba(empty, on_empty="prior")
    np.testing.assert_allclose(proba, np.tile(trained.prior, (2, 1)))


def test_the_artifact_round_trips_the_task_and_predictions(fitted, tmp_path):
    trained, split = fitted
    trained.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")
    assert loaded.task == trained.task and loaded.task.label_names == ("label0", "label1", "label2")
    np.testing.assert_allclose(loaded.predict_proba(split.test), trained.predict_proba(split.test))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "Task: multilabel, 3 labels" in card


@pytest.mark.parametrize(
    "edit, phrase",
    [
        (lambda c: c.update(prior=[0.5, 0.5]), "prior has 2 values for a multilabel task"),
        (lambda c: c.update(prior=[0.5, 1.5, 0.1]), r"label frequencies in \[0, 1\]"),
        (lambda c: c["task"].update(n_labels=1), "n_labels >= 2"),
    ],
)
def test_an_edited_multilabel_config_is_refused(fitted, tmp_path, edit, phrase):
    from mlmm.train.checkpoint import load_artifact, save_artifact

    trained, _ = fitted
    trained.save(tmp_path / "run")
    config, state = load_artifact(tmp_path / "run")
    for key in ("format", "format_version", "weights_sha256"):
        config.pop(key)
    edit(config)
    save_artifact(tmp_path / "bad", state, json.loads(json.dumps(config)))
    with pytest.raises(ArtifactError, match=phrase):
        TrainedModel.load(tmp_path / "bad")


def test_the_prediction_table_lists_the_labels_on_and_each_probability(fitted):
    from mlmm.serve.predict import predict_table, score_metric

    trained, split = fitted
    table = predict_table(trained, split.test)
    assert [c for c in table.columns if c.startswith("proba_")] == [
        "proba_label0",
        "proba_label1",
        "proba_label2",
    ]
    on = trained.predict(split.test)
    first = "|".join(f"label{j}" for j in np.flatnonzero(on[0]))
    assert table.prediction.iloc[0] == first and score_metric(trained) == "micro_f1"


def test_serving_a_multilabel_model_is_refused_in_one_line(fitted):
    pytest.importorskip("fastapi")
    from mlmm.errors import MlmmError
    from mlmm.serve.app import create_app

    with pytest.raises(MlmmError, match="multilabel, which mlmm serve does not answer"):
        create_app({"genres": fitted[0]})


def test_the_tuning_loss_is_the_mean_binary_cross_entropy(fitted):
    from sklearn.metrics import log_loss

    from mlmm.tune.study import validation_loss

    trained, split = fitted
    proba = trained.predict_proba(split.test)
    expected = log_loss(split.test.targets.ravel(), proba.ravel())
    assert validation_loss(trained, split.test) == pytest.approx(expected, rel=1e-6)


def test_the_onnx_export_answers_each_labels_probability(fitted, tmp_path):
    pytest.importorskip("onnxruntime")
    from mlmm.serve.export import export_onnx, onnx_session

    trained, split = fitted
    report = export_onnx(trained, tmp_path / "m.onnx")
    assert report["max_abs_diff"] <= 1e-5
    test = split.test
    feed = {m: test.inputs[m][:6].astype(np.float32) for m in test.modality_names}
    present = test.observed[:6].copy()
    present[0, 1] = False  # a sample with m1 absent
    got = onnx_session(tmp_path / "m.onnx").run(["probabilities"], {**feed, "present": present})
    expected = trained.predict_proba(test.subset(np.arange(6)).with_presence(present))
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
