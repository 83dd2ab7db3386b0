"""The scikit-learn style estimators: fit/predict with NaN rows, clone, cross_val_score."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFitted
from sklearn.model_selection import cross_val_score

import mlmm
from mlmm.errors import MlmmError


def make_data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = np.array(["cat", "dog", "eel"])[np.arange(n) % 3]
    code = np.searchsorted(["cat", "dog", "eel"], y)
    a = 2.0 * np.eye(3)[code] @ rng.normal(size=(3, 5)) + rng.normal(size=(n, 5))
    b = 2.0 * np.eye(3)[code] @ rng.normal(size=(3, 4)) + rng.normal(size=(n, 4))
    a[rng.random(n) < 0.3] = np.nan  # whole rows missing
    b[np.isfinite(a[:, 0]) & (rng.random(n) < 0.3)] = np.nan  # never both
    return {"a": a, "b": b}, y


def test_fits_and_predicts_string_labels_with_missing_rows():
    X, y = make_data()
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=30, seed=0).fit(X, y)
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert clf.score(X, y) > 0.6  # chance is 1/3
    only_b = {"a": np.full_like(X["a"], np.nan), "b": X["b"]}
    rows = np.isfinite(X["b"][:, 0])
    pred = clf.predict({k: v[rows] for k, v in only_b.items()})
    assert (pred == y[rows]).mean() > 0.5


def test_same_seed_same_predictions():
    X, y = make_data()
    p1 = (
        mlmm.MissingModalityClassifier(method="hemis", max_epochs=3, seed=1)
        .fit(X, y)
        .predict_proba(X)
    )
    p2 = (
        mlmm.MissingModalityClassifier(method="hemis", max_epochs=3, seed=1)
        .fit(X, y)
        .predict_proba(X)
    )
    np.testing.assert_array_equal(p1, p2)


def test_clone_gives_an_unfitted_copy_and_predict_before_fit_raises():
    X, y = make_data()
    clf = mlmm.MissingModalityClassifier(
        method="hemis", method_params={"hidden": 32}, max_epochs=2
    ).fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "trained_")
    with pytest.raises(SkNotFitted, match="not fitted"):
        copy.predict(X)


def test_cross_val_score_with_a_multimodal_array_and_a_dataframe():
    X, y = make_data()
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=20)
    scores = cross_val_score(clf, mlmm.MultimodalArray(X), y, cv=2)
    assert scores.shape == (2,) and scores.min() > 0.5
    frame = pd.DataFrame(np.hstack([X["a"], X["b"]]), columns=[f"c{i}" for i in range(9)])
    clf = mlmm.MissingModalityClassifier(
        method="late-fusion",
        max_epochs=20,
        modalities={"a": [f"c{i}" for i in range(5)], "b": [f"c{i}" for i in range(5, 9)]},
    )
    scores = cross_val_score(clf, frame, y, cv=2)
    assert scores.min() > 0.5


def test_regressor_learns_a_linear_target():
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(300, 3)), "b": rng.normal(size=(300, 2))}
    y = 3.0 * X["a"].sum(1) + 10.0
    reg = mlmm.MissingModalityRegressor(method="hemis", max_epochs=40).fit(X, y)
    assert reg.score(X, y) > 0.8  # R^2, in target units (10 + ...)


def test_bad_inputs_are_rejected_clearly():
    X, y = make_data()
    with pytest.raises(MlmmError, match="modalities="):
        mlmm.MissingModalityClassifier().fit(np.hstack([X["a"], X["b"]]), y)
    with pytest.raises(MlmmError, match="single class"):
        mlmm.MissingModalityClassifier().fit(X, np.zeros(len(y)))
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=1).fit(X, y)
    with pytest.raises(MlmmError, match="fitted on"):
        clf.predict({"b": X["b"], "a": X["a"]})
