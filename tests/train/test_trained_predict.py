"""TrainedModel answers from plain data: dicts, DataFrames, labels, a short repr."""

import numpy as np
import pandas as pd
import pytest

from mlmm import MissingModalityClassifier
from mlmm.data.datasets.frames import from_dataframe
from mlmm.errors import ArtifactError, MlmmError
from mlmm.methods.registry import create_method
from mlmm.train import TrainedModel, Trainer


@pytest.fixture(scope="module")
def frame_model():
    rng = np.random.default_rng(0)
    n = 80
    y = np.where(rng.random(n) > 0.5, "sick", "well")
    df = pd.DataFrame(
        {
            "hr": (y == "sick") * 2.0 + rng.normal(size=n),
            "bp": rng.normal(size=n),
            "hb": (y == "sick") * 1.0 + rng.normal(size=n),
            "y": y,
        }
    )
    data = from_dataframe(df, {"vitals": ["hr", "bp"], "lab": ["hb"]}, target="y")
    model = create_method("late-fusion", data.specs, data.task)
    trained = Trainer(max_epochs=3, progress=False, seed=0).fit(model, data)
    return trained, df, data


def test_dict_keys_in_any_order_and_omitted_key_is_absent(frame_model):
    trained, df, data = frame_model
    vitals, lab = df[["hr", "bp"]].to_numpy(), df[["hb"]].to_numpy()
    both = trained.predict_proba({"vitals": vitals, "lab": lab})
    swapped = trained.predict_proba({"lab": lab, "vitals": vitals})
    np.testing.assert_array_equal(both, swapped)
    np.testing.assert_allclose(both, trained.predict_proba(data), atol=1e-6)
    only_lab = trained.predict_proba({"lab": lab})
    nan_vitals = trained.predict_proba({"lab": lab, "vitals": np.full_like(vitals, np.nan)})
    np.testing.assert_array_equal(only_lab, nan_vitals)
    assert not np.allclose(only_lab, both)  # vitals really were left out


def test_labels_come_back_as_the_training_labels(frame_model):
    trained, df, _ = frame_model
    pred = trained.predict(df)
    assert set(pred.tolist()) <= {"sick", "well"}
    assert list(trained.classes_) == ["sick", "well"]


def test_dataframe_layout_survives_save_and_load(frame_model, tmp_path):
    trained, df, _ = frame_model
    trained.save(tmp_path / "run")
    loaded = TrainedModel.load(tmp_path / "run")
    assert loaded.columns == {"vitals": ["hr", "bp"], "lab": ["hb"]}
    np.testing.assert_allclose(loaded.predict_proba(df), trained.predict_proba(df), atol=1e-6)
    # the target column may be there or not; leaving out all of lab's columns = lab absent
    np.testing.assert_allclose(
        loaded.predict_proba(df[["bp", "hr"]]),
        trained.predict_proba({"vitals": df[["hr", "bp"]].to_numpy()}),
        atol=1e-6,
    )


def test_columns_that_do_not_match_are_named(frame_model):
    trained, df, _ = frame_model
    with pytest.raises(
        MlmmError, match=r"missing 1 column\(s\) \('bp'\); extra 1 column\(s\) \('zz'\)"
    ):
        trained.predict(df.drop(columns=["bp"]).assign(zz=1.0))


def test_bad_dict_input_is_one_clear_error(frame_model):
    trained, df, _ = frame_model
    lab = df[["hb"]].to_numpy()
    with pytest.raises(MlmmError, match="unknown modality 'labs'"):
        trained.predict({"labs": lab})
    with pytest.raises(MlmmError, match=r"modality 'lab' has shape \(80, 2\)"):
        trained.predict({"lab": np.hstack([lab, lab])})
    with pytest.raises(MlmmError, match="must be a dict of per-modality arrays"):
        trained.predict([1, 2, 3])


def test_on_empty_refuses_or_answers_with_the_prior(frame_model):
    trained, df, _ = frame_model
    empty = {"lab": np.full((2, 1), np.nan)}
    with pytest.raises(MlmmError, match="no modality present"):
        trained.predict(empty)
    proba = trained.predict_proba(empty, on_empty="prior")
    np.testing.assert_allclose(proba, np.tile(trained.prior, (2, 1)))


def test_repr_is_short_and_says_what_the_model_is(frame_model):
    text = repr(frame_model[0])
    assert len(text) < 200
    for part in ("late-fusion", "vitals[2]", "lab[1]", "2 classes: sick, well", "parameters="):
        assert part in text


def test_estimator_labels_are_stored_in_the_artifact(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([10, 30] * 30)
    X = {"a": (y == 30)[:, None] * 3.0 + rng.normal(size=(60, 2)), "b": rng.normal(size=(60, 2))}
    clf = MissingModalityClassifier("late-fusion", max_epochs=3).fit(X, y)
    clf.trained_.save(tmp_path / "run")
    loaded = TrainedModel.load(tmp_path / "run")
    assert loaded.classes_.tolist() == [10, 30]
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))


def test_a_config_whose_classes_do_not_fit_the_task_is_refused(frame_model, tmp_path):
    import json

    from mlmm.train.checkpoint import CONFIG_FILE, load_artifact, save_artifact

    trained, _, _ = frame_model
    trained.save(tmp_path / "run")
    config, state = load_artifact(tmp_path / "run")
    for key in ("format", "format_version", "weights_sha256"):
        config.pop(key)
    config["classes"] = ["a", "b", "c"]
    save_artifact(tmp_path / "bad", state, json.loads(json.dumps(config)))
    with pytest.raises(ArtifactError, match=f"{CONFIG_FILE}.*classes has 3 labels"):
        TrainedModel.load(tmp_path / "bad")


def test_partial_rows_follow_the_policy_and_repeated_columns_are_refused(frame_model):
    trained, df, _ = frame_model
    vitals = df[["hr", "bp"]].to_numpy().copy()
    vitals[0, 1] = np.nan  # one of two values missing in sample 0
    with pytest.raises(MlmmError, match="partly NaN"):
        trained.as_dataset({"vitals": vitals})
    data = trained.as_dataset({"vitals": vitals, "lab": df[["hb"]].to_numpy()}, partial="missing")
    assert data.observed[0].tolist() == [False, True] and data.observed[1].all()
    with pytest.raises(MlmmError, match="partial must be"):
        trained.as_dataset({"vitals": vitals}, partial="impute")
    doubled = pd.concat([df[["hr", "bp", "hb"]], df[["hb"]]], axis=1)
    with pytest.raises(MlmmError, match=r"columns \['hb'\] appear more than once"):
        trained.predict(doubled)
