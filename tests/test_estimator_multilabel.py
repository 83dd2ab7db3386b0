"""The scikit-learn classifier with a label-indicator ``y``: a multilabel fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlmm import MissingModalityClassifier
from mlmm.errors import MlmmError
from mlmm.train import TrainedModel


def test_a_label_indicator_y_fits_a_multilabel_classifier(tmp_path):
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 3)) < 0.4).astype(int)
    X = {
        "a": Y @ rng.normal(0, 2, (3, 4)) + rng.normal(size=(300, 4)),
        "b": rng.normal(size=(300, 2)),
    }
    X["b"][:60] = np.nan  # b missing in 60 samples
    frame = pd.DataFrame(Y, columns=["drama", "comedy", "war"])
    clf = MissingModalityClassifier(method="zero-impute", max_epochs=15).fit(X, frame)
    assert clf.classes_.tolist() == ["drama", "comedy", "war"]
    pred, proba = clf.predict(X), clf.predict_proba(X)
    assert pred.shape == proba.shape == (300, 3) and set(np.unique(pred)) <= {0, 1}
    assert (pred == Y).mean() > 0.7  # all-zero answers score about 0.6
    assert 0 <= clf.score(X, Y) <= 1  # subset accuracy, as scikit-learn scores multilabel
    clf.trained_.save(tmp_path / "m")
    loaded = TrainedModel.load(tmp_path / "m")
    assert loaded.task.label_names == ("drama", "comedy", "war")
    np.testing.assert_allclose(loaded.predict_proba(X), proba, atol=1e-6)
    plain = MissingModalityClassifier(method="zero-impute", max_epochs=1).fit(X, Y)
    assert plain.classes_.tolist() == [0, 1, 2]
    with pytest.raises(MlmmError, match="0/1 label-indicator matrix"):
        MissingModalityClassifier().fit(X, rng.normal(size=(300, 2)))


def test_label_sets_of_different_lengths_are_refused_in_one_line():
    X = {"a": np.random.default_rng(0).normal(size=(20, 3))}
    with pytest.raises(MlmmError, match="MultiLabelBinarizer") as err:
        MissingModalityClassifier(max_epochs=1).fit(X, [["x"], ["x", "y"]] * 10)
    assert "\n" not in str(err.value)
