"""The estimators' ``checkpoint_dir``: a fit stopped after an epoch and called again resumes and
ends with the model of an uninterrupted fit; the clones of a cross-validation sharing the folder
each resume their own fit; ``method="auto"`` refuses it."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

import mlmm
from mlmm import estimator as estimator_module
from mlmm.errors import MlmmError
from mlmm.train.trainer import Trainer


class _Stop(Exception):
    """The failure injected after an epoch."""


def _data(n: int = 90):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    X = {"a": y[:, None] + rng.normal(size=(n, 3)), "b": y[:, None] + rng.normal(size=(n, 2))}
    X["b"][: n // 4] = np.nan  # modality b missing in a quarter of the samples
    return mlmm.MultimodalArray(X), y


def _classifier(**kwargs):
    options = {"method": "hemis", "max_epochs": 8, "batch_size": 16, "patience": 3, "lr": 1e-2}
    return mlmm.MissingModalityClassifier(**{**options, **kwargs})


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(n)``: every Trainer the estimators make writes a checkpoint after each
    epoch, and the n-th epoch trained from now on (over all fits) raises ``_Stop``."""
    seen = []

    def install(n: int | None) -> list:
        seen.clear()

        def on_epoch(stage, row):
            seen.append(row["epoch"])
            if n is not None and len(seen) == n:
                raise _Stop

        made = functools.partial(Trainer, checkpoint_every=0, on_epoch=on_epoch)
        monkeypatch.setattr(estimator_module, "Trainer", made)
        return seen

    return install


def _same_weights(a, b):
    state_a, state_b = a.trained_.model.state_dict(), b.trained_.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_checkpoint_dir_is_a_parameter_that_clone_keeps(tmp_path):
    clf = _classifier(checkpoint_dir=tmp_path)
    assert clf.get_params()["checkpoint_dir"] == tmp_path
    assert clone(clf).checkpoint_dir == tmp_path
    assert mlmm.MissingModalityRegressor().checkpoint_dir is None


def test_a_stopped_fit_resumes_and_ends_as_an_uninterrupted_one(tmp_path, stop_after, capsys):
    X, y = _data()
    reference = _classifier().fit(X, y)
    stop_after(4)
    with pytest.raises(_Stop):
        _classifier(checkpoint_dir=tmp_path).fit(X, y)
    [folder] = tmp_path.iterdir()  # the fit's own folder: fit-HASH
    assert folder.name.startswith("fit-") and (folder / "checkpoint.json").is_file()
    capsys.readouterr()

    epochs = stop_after(None)
    resumed = _classifier(checkpoint_dir=tmp_path).fit(X, y)
    # the 4th epoch stopped before its checkpoint was written: the 3rd is the last written
    assert "resuming from epoch 3 of 8" in capsys.readouterr().err
    assert epochs == [4, 5, 6, 7, 8]  # epochs 1-3 were not trained again
    _same_weights(resumed, reference)
    np.testing.assert_array_equal(resumed.predict_proba(X), reference.predict_proba(X))
    assert [tmp_path / folder.name] == list(tmp_path.iterdir())  # kept after fit

    estimator_module.remove_fit_checkpoints(tmp_path)
    assert not tmp_path.exists()


def test_another_seed_or_other_data_trains_in_its_own_folder(tmp_path, stop_after):
    X, y = _data()
    stop_after(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "ignoring the training checkpoint" warning
        _classifier(checkpoint_dir=tmp_path).fit(X, y)
        _classifier(checkpoint_dir=tmp_path, random_state=1).fit(X, y)
        _classifier(checkpoint_dir=tmp_path).fit(X[:80], y[:80])
    assert len(list(tmp_path.iterdir())) == 3


def test_cross_validation_clones_each_resume_their_own_fold(tmp_path, stop_after, capsys):
    X, y = _data()
    every = stop_after(None)
    reference = cross_val_score(_classifier(patience=20), X, y, cv=3)
    assert every == [*range(1, 9)] * 3  # no early stopping: every fold trains 8 epochs
    stop_after(8 + 3)  # stopped in the second fold's third epoch
    with pytest.raises(_Stop):
        cross_val_score(
            _classifier(patience=20, checkpoint_dir=tmp_path), X, y, cv=3, error_score="raise"
        )
    assert len(list(tmp_path.iterdir())) == 2  # the first fold's and the second's
    capsys.readouterr()

    epochs = stop_after(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fold ignores (and overwrites) another's checkpoint
        scores = cross_val_score(_classifier(patience=20, checkpoint_dir=tmp_path), X, y, cv=3)
    err = capsys.readouterr().err
    assert "training had finished" in err  # the first fold: its weights are loaded
    assert "resuming from epoch 2 of 8" in err  # the second fold
    assert epochs == [*range(3, 9), *range(1, 9)]  # the first fold was not trained again
    np.testing.assert_array_equal(scores, reference)
    assert len(list(tmp_path.iterdir())) == 3


def test_auto_refuses_checkpoint_dir_and_names_its_cache(tmp_path):
    X, y = _data(40)
    with pytest.raises(MlmmError, match=r"method='auto' does not take checkpoint_dir.*cache_dir"):
        _classifier(method="auto", checkpoint_dir=tmp_path).fit(X, y)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_dir_must_be_a_path(tmp_path):
    X, y = _data(40)
    with pytest.raises(MlmmError, match="checkpoint_dir must be a folder path"):
        _classifier(checkpoint_dir=3).fit(X, y)


def test_checkpoint_dir_refuses_a_seed_drawn_at_each_fit(tmp_path):
    X, y = _data(40)
    with pytest.raises(MlmmError, match="checkpoint_dir needs a fixed random_state, got None"):
        _classifier(random_state=None, checkpoint_dir=tmp_path).fit(X, y)
    assert list(tmp_path.iterdir()) == []


def test_remove_fit_checkpoints_leaves_other_files(tmp_path):
    (tmp_path / "fit-0123456789abcdef").mkdir()
    (tmp_path / "fit-0123456789abcdef" / "checkpoint.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("mine")
    estimator_module.remove_fit_checkpoints(tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]
    estimator_module.remove_fit_checkpoints(tmp_path / "absent")  # nothing to do


def test_remove_fit_checkpoints_leaves_a_checkpoint_it_did_not_write(tmp_path):
    # was: the folder's own checkpoint files went too (a Trainer's checkpoint_dir given the
    # same folder, or `mlmm train --dataset`'s .NAME.checkpoint beside the same --out)
    (tmp_path / "fit-0123456789abcdef").mkdir()
    (tmp_path / "checkpoint.json").write_text("{}")
    estimator_module.remove_fit_checkpoints(tmp_path)
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint.json"]


@pytest.mark.parametrize("refused", [{"random_state": None}, {"method": "auto"}])
def test_a_refused_checkpoint_dir_leaves_a_fitted_estimator_as_it_was(tmp_path, refused):
    # was: refused after fit had recorded the new X's layout (and the classifier the new
    # labels) beside the old model, so predicting on the data of the model failed or misread
    X, y = _data(40)
    clf = _classifier(max_epochs=1).fit(X, y)
    before = clf.predict_proba(X)
    other = mlmm.MultimodalArray({"a": X["a"][:, :2], "c": X["b"]})
    with pytest.raises(MlmmError, match="checkpoint_dir"):
        clf.set_params(checkpoint_dir=tmp_path, **refused).fit(other, np.where(y, "yes", "no"))
    assert clf.n_features_in_ == 5 and clf.classes_.tolist() == [0, 1]
    np.testing.assert_array_equal(clf.predict_proba(X), before)
