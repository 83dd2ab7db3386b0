"""scikit-learn conventions of the estimators beyond check_estimator: column names at predict,
tags that follow the method, and what a demanding scikit-learn user calls on them."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import BaggingClassifier
from sklearn.model_selection import cross_val_score
from sklearn.multioutput import MultiOutputClassifier, MultiOutputRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.estimator_checks import check_classifiers_multilabel_output_format_predict_proba

import mlmm
from mlmm.errors import MlmmError


def frame(n=60, seed=0):
    """Columns p, q, r (modality a) and s, t (modality b) of a binary label, no NaN."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    values = np.hstack([y[:, None] * 2.0 + rng.normal(size=(n, 3)), rng.normal(size=(n, 2))])
    return pd.DataFrame(values, columns=list("pqrst")), y


def fast(**kw):
    return mlmm.MissingModalityClassifier(method="per-modality-logistic", max_epochs=2, **kw)


def test_a_table_without_the_names_of_fit_warns_as_scikit_learn_does():
    # was: silent; a model fitted on named columns took any unnamed table of that width
    X, y = frame()
    named = fast().fit(X, y)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but Missing"):
        named.predict(X.to_numpy())
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        named.predict_proba(X.set_axis(range(5), axis=1))  # column names that are not text
    unnamed = fast().fit(X.to_numpy(), y)
    with pytest.warns(UserWarning, match="X has feature names, but .* fitted without feature"):
        unnamed.predict(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named.predict(X)  # the names of fit: no warning
        unnamed.predict(X.to_numpy())
        modal = fast().fit({"a": X.to_numpy()[:, :3], "b": X.to_numpy()[:, 3:]}, y)
        with pytest.raises(MlmmError, match="X is a table, but .* fitted on a dict"):
            modal.predict(X)  # the form of X is wrong: that error alone, no name warning


@pytest.mark.parametrize(
    "columns, says",
    [
        (list("tsrqp"), "Feature names must be in the same order as they were in fit"),
        (list("pqrsz"), r"unseen at fit time: 1 column\(s\) \('z'\); .* missing: 1 column\(s\) "),
        (list("pqr"), r"seen at fit time, yet now missing: 2 column\(s\) \('s', 't'\)"),
    ],
)
def test_other_column_names_at_predict_say_what_differs_in_one_line(columns, says):
    # was: one message listing both sets of names, and a narrower table was told only its width
    X, y = frame()
    clf = fast().fit(X, y)
    other = pd.DataFrame(X.to_numpy()[:, : len(columns)], columns=columns)
    with pytest.raises(MlmmError, match="feature names should match those .* during fit. ") as err:
        clf.predict(other)
    assert err.match(says) and "\n" not in str(err.value)


def test_the_multilabel_tag_follows_the_method():
    # was: always False, so scikit-learn's multilabel checks and meta-estimators skipped it
    assert get_tags(
        mlmm.MissingModalityClassifier(method="late-fusion")
    ).classifier_tags.multi_label
    for method in ("per-modality-logistic", "auto", "no-such-method"):
        tags = get_tags(mlmm.MissingModalityClassifier(method=method)).classifier_tags
        assert not tags.multi_label
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=2)
    check_classifiers_multilabel_output_format_predict_proba("clf", clf)


def test_a_pipeline_with_a_column_transformer_on_nan_rows_scores_by_probability():
    X, y = frame(90)
    X.iloc[:20, :3] = np.nan  # modality a absent in 20 samples
    X.iloc[30:45, 3:] = np.nan  # modality b absent in 15 others
    scale = ColumnTransformer(
        [("a", StandardScaler(), list("pqr")), ("b", StandardScaler(), list("st"))]
    )
    pipe = make_pipeline(
        scale, fast(modalities={"a": ["a__p", "a__q", "a__r"], "b": ["b__s", "b__t"]})
    )
    pipe.set_output(transform="pandas")
    for scoring in ("roc_auc", "neg_log_loss"):
        assert np.isfinite(cross_val_score(pipe, X, y, cv=3, scoring=scoring)).all()
    proba = CalibratedClassifierCV(pipe, cv=3).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)


def test_labels_keep_their_values_order_and_dtype():
    X, y = frame()
    for labels in (np.array([-5, 3]), np.array(["dog", "cat"]), np.array([3, -5], dtype=np.int8)):
        target = labels[y][::-1].copy()[::-1]  # a reversed view of a reversed copy: not contiguous
        clf = fast().fit(X, target)
        assert clf.classes_.tolist() == sorted(labels.tolist())
        assert clf.predict(X).dtype == labels.dtype and clf.score(X, target) > 0.8
        assert clf.predict(X.iloc[:1]).shape == (1,)


def test_set_params_then_refit_and_clone_of_a_fitted_estimator():
    X, y = frame()
    clf = fast().fit(X, y)
    copy = clone(clf)
    assert not hasattr(copy, "trained_") and copy.get_params() == clf.get_params()
    clf.set_params(method="late-fusion").fit(X, y)
    assert type(clf.trained_.model).__name__ == "LateFusion"


def test_sample_weight_is_refused_by_the_signature_so_meta_estimators_resample():
    X, y = frame()
    from sklearn.utils.validation import has_fit_parameter

    assert not has_fit_parameter(fast(), "sample_weight")  # Bagging and the like resample rows
    with pytest.raises(TypeError, match="sample_weight"):
        fast().fit(X, y, sample_weight=np.ones(len(y)))
    assert fast().fit(X, y).score(X, y, sample_weight=np.ones(len(y))) > 0.8  # scored, weighted
    bagged = BaggingClassifier(fast(), n_estimators=2, random_state=0).fit(X.to_numpy(), y)
    assert bagged.score(X.to_numpy(), y) > 0.8


def test_several_targets_are_refused_with_the_scikit_learn_wrapper_that_fits_them():
    # was: "y must be 1-D ..." with no way forward
    X, y = frame()
    regressor = mlmm.MissingModalityRegressor(method="per-modality-logistic", max_epochs=2)
    targets = np.c_[y, -2.0 * y]
    with pytest.raises(MlmmError, match=r"got shape \(60, 2\); .*MultiOutputRegressor$"):
        clone(regressor).fit(X, targets)
    assert MultiOutputRegressor(regressor).fit(X, targets).predict(X).shape == (60, 2)
    labels = np.c_[y, 2 * y]  # multiclass-multioutput: not a 0/1 label matrix
    with pytest.raises(MlmmError, match=r"as 1-D y, or wrap .*MultiOutputClassifier$"):
        fast().fit(X, labels)
    assert MultiOutputClassifier(fast()).fit(X, labels).score(X, labels) > 0.8


def test_set_params_on_a_fitted_estimator_takes_effect_at_the_next_fit_only():
    # was: predict cut the table with the new modalities, silently swapping the columns
    X, y = frame()
    table = X.to_numpy()[:, :4]
    clf = fast(modalities={"a": [0, 1], "b": [2, 3]}).fit(table, y)
    before = clf.predict_proba(table)
    clf.set_params(modalities={"a": [0, 2], "b": [1, 3]})  # the same shapes: no error
    np.testing.assert_array_equal(clf.predict_proba(table), before)
    assert clf.modalities_ == {"a": [0, 1], "b": [2, 3]}
    assert not np.allclose(clf.fit(table, y).predict_proba(table), before)  # refit: the new cut


def test_column_names_that_mix_text_and_numbers_are_refused_as_scikit_learn_refuses_them():
    # was: taken without feature_names_in_, so a reordered frame at predict went unnoticed
    X, y = frame()
    mixed = X.set_axis(["p", 1, "r", "s", "t"], axis=1)
    with pytest.raises(MlmmError, match=r"mix text and other types \(int, str\); .*astype\(str\)"):
        fast().fit(mixed, y)
    clf = fast().fit(mixed.set_axis(mixed.columns.astype(str), axis=1), y)
    assert clf.feature_names_in_.tolist() == ["p", "1", "r", "s", "t"]
    assert fast().fit(X.set_axis(range(5), axis=1), y).n_features_in_ == 5  # no text: no names


def test_the_column_name_warning_points_at_the_line_that_predicts():
    # was: the classifier's predict warned from inside mlmm/estimator.py, which Python's
    # default filter then showed once for every line of the user's code
    X, y = frame()
    classifier = fast().fit(X, y)
    regressor = mlmm.MissingModalityRegressor(method="per-modality-logistic", max_epochs=2)
    regressor.fit(X, y.astype(float))
    for predict in (classifier.predict, classifier.predict_proba, regressor.predict):
        with pytest.warns(UserWarning, match="X does not have valid feature names") as caught:
            predict(X.to_numpy())
        assert [w.filename for w in caught] == [__file__], predict


def test_other_column_names_of_a_wide_table_are_told_at_once():
    # was: the names of fit made into a set once per column: 7.7 s for 10,000 columns
    import time
    from types import SimpleNamespace

    from mlmm.estimator import _check_feature_names

    fitted = np.asarray([f"c{i}" for i in range(10_000)], dtype=object)
    shifted = SimpleNamespace(feature_names=np.asarray([f"c{i}" for i in range(1, 10_001)]))
    start = time.perf_counter()
    with pytest.raises(MlmmError, match=r"unseen at fit time: 1 column\(s\) \('c10000'\)"):
        _check_feature_names(fitted, shifted, "MissingModalityClassifier")
    assert time.perf_counter() - start < 1.0
