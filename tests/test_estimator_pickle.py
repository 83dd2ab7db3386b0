"""Pickling the estimators (what joblib's ``n_jobs`` does): the fitted model travels as the
bytes of its artifact (JSON + safetensors), never as pickled torch objects."""

import io
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

import mlmm
from mlmm.errors import ArtifactError
from mlmm.train.checkpoint import CONFIG_FILE, WEIGHTS_FILE


def tiny(n=60, seed=0):
    """Two informative modalities of a 3-class string label; ``b`` missing in some rows."""
    rng = np.random.default_rng(seed)
    y = np.array(["cat", "dog", "eel"])[np.arange(n) % 3]
    code = np.searchsorted(["cat", "dog", "eel"], y)
    a = 2.0 * np.eye(3)[code] @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4))
    b = 2.0 * np.eye(3)[code] @ rng.normal(size=(3, 3)) + rng.normal(size=(n, 3))
    b[rng.random(n) < 0.3] = np.nan
    return mlmm.MultimodalArray({"a": a, "b": b}), y


def pickled_modules(data: bytes) -> set[str]:
    """The top-level modules of every class or function a pickle loads (it is loaded)."""
    names = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            names.add(module.split(".")[0])
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return names


@pytest.mark.parametrize("method", ["logistic-mean-impute", "late-fusion"])
def test_a_pickled_classifier_predicts_the_same_and_holds_no_torch_object(method):
    X, y = tiny()
    clf = mlmm.MissingModalityClassifier(method=method, max_epochs=2).fit(X, y)
    data = pickle.dumps(clf)
    assert "torch" not in pickled_modules(data)  # the old pickle held torch modules and tensors
    copy = pickle.loads(data)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    assert copy.classes_.tolist() == clf.classes_.tolist()
    assert copy.get_params() == clf.get_params()
    assert copy.trained_.info == clf.trained_.info
    state = clf.__getstate__()
    assert set(state["trained_"]["artifact"]) >= {CONFIG_FILE, WEIGHTS_FILE}
    assert isinstance(clf.__dict__.get("trained_"), mlmm.TrainedModel)  # the estimator keeps it


def test_a_pickled_regressor_and_an_unfitted_estimator_round_trip():
    X, _ = tiny()
    y = np.nan_to_num(X.data["a"]).sum(1)
    reg = mlmm.MissingModalityRegressor(method="lda-em").fit(X, y)
    data = pickle.dumps(reg)
    assert "torch" not in pickled_modules(data)
    np.testing.assert_array_equal(pickle.loads(data).predict(X), reg.predict(X))
    unfitted = pickle.loads(pickle.dumps(mlmm.MissingModalityRegressor(method="hemis", lr=0.01)))
    assert unfitted.get_params()["lr"] == 0.01 and not hasattr(unfitted, "trained_")


def test_a_tampered_pickle_is_refused_as_a_corrupt_artifact_is():
    X, y = tiny()
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute").fit(X, y)
    state = clf.__getstate__()
    weights = bytearray(state["trained_"]["artifact"][WEIGHTS_FILE])
    weights[-1] ^= 1
    state["trained_"]["artifact"][WEIGHTS_FILE] = bytes(weights)
    copy = mlmm.MissingModalityClassifier.__new__(mlmm.MissingModalityClassifier)
    with pytest.raises(ArtifactError, match="pickled MissingModalityClassifier.*does not match"):
        copy.__setstate__(state)


def test_cross_val_score_and_grid_search_run_in_two_worker_processes():
    X, y = tiny(90)
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute")
    serial = cross_val_score(clf, X, y, cv=3)
    parallel = cross_val_score(clf, X, y, cv=3, n_jobs=2)
    np.testing.assert_array_equal(parallel, serial)
    search = GridSearchCV(clf, {"method_params": [{"C": 0.01}, {"C": 1.0}]}, cv=2, n_jobs=2)
    search.fit(X, y)
    assert search.best_params_["method_params"]["C"] in (0.01, 1.0)
    # the refit best model predicts; its copy made by pickle predicts the same
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(search)).predict_proba(X), search.predict_proba(X)
    )


def test_an_estimator_pickled_with_its_model_object_still_unpickles():
    """Pickles written before the model travelled as artifact bytes held the model itself."""
    X, y = tiny()
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute").fit(X, y)
    old_state = {**clf.__dict__}  # what BaseEstimator's own __getstate__ gave
    copy = mlmm.MissingModalityClassifier.__new__(mlmm.MissingModalityClassifier)
    copy.__setstate__(old_state)
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_an_estimator_pickled_before_checkpoint_dir_and_modalities_still_works():
    # was: predict worked, but get_params, repr and clone raised AttributeError on the
    # parameter the pickle lacked (checkpoint_dir)
    X, y = tiny()
    table = np.hstack([X["a"], np.nan_to_num(X["b"])])
    cut = {"a": [0, 1, 2, 3], "b": [4, 5, 6]}
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute", modalities=cut)
    clf.fit(table, y)
    state = clf.__getstate__()
    del state["checkpoint_dir"], state["modalities_"]  # neither existed then
    old = mlmm.MissingModalityClassifier.__new__(mlmm.MissingModalityClassifier)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.predict_proba(table), clf.predict_proba(table))
    assert old.get_params() == clf.get_params() and "checkpoint_dir" not in repr(old)
    assert clone(old).fit(table, y).predict(table).shape == y.shape


@pytest.mark.parametrize(("gpus", "device"), [(0, "cuda:0"), (0, "cuda"), (1, "cuda:1")])
def test_a_model_pickled_on_a_gpu_this_machine_lacks_unpickles_on_the_cpu(
    gpus, device, monkeypatch
):
    """A GPU-trained estimator unpickled where there is no GPU, or not that one (cuda:1 on
    a machine with one GPU), predicts on the CPU rather than failing to move there."""
    import torch

    X, y = tiny()
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute").fit(X, y)
    state = clf.__getstate__()
    state["trained_"]["device"] = device  # as __getstate__ writes it on that GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    copy = mlmm.MissingModalityClassifier.__new__(mlmm.MissingModalityClassifier)
    copy.__setstate__(state)
    assert next(copy.trained_.model.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_a_pickled_auto_ensemble_predicts_the_same_and_holds_no_torch_object():
    X, y = tiny()
    options = {"budget": "fast", "folds": 2, "portfolio": ["logistic-mean-impute", "lda-em"]}
    clf = mlmm.MissingModalityClassifier(method="auto", method_params=options).fit(X, y)
    data = pickle.dumps(clf)
    assert "torch" not in pickled_modules(data)
    copy = pickle.loads(data)
    assert copy.trained_.method == clf.trained_.method == "auto-ensemble"
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
