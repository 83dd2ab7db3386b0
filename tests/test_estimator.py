"""The scikit-learn style estimators: fit/predict with NaN rows, clone, cross_val_score."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SkNotFitted
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import mlmm
from mlmm.errors import MlmmError
from mlmm.estimator import expected_failed_checks


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
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=30, random_state=0).fit(
        X, y
    )
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
        mlmm.MissingModalityClassifier(method="hemis", max_epochs=3, random_state=1)
        .fit(X, y)
        .predict_proba(X)
    )
    p2 = (
        mlmm.MissingModalityClassifier(method="hemis", max_epochs=3, random_state=1)
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


@pytest.mark.parametrize("cut", [True, False], ids=["modalities", "one-modality"])
def test_a_model_fitted_on_a_dataframe_predicts_from_its_columns_once_saved(cut, tmp_path):
    # was: the saved model read only columns a.0, a.1, ... and refused the frame of fit
    X, y = make_data(n=60)
    frame = pd.DataFrame(np.hstack([X["a"], X["b"]]), columns=[f"c{i}" for i in range(9)])
    if not cut:
        frame = frame.fillna(0.0)
    modalities = {"a": [f"c{i}" for i in range(5)], "b": [f"c{i}" for i in range(5, 9)]}
    clf = mlmm.MissingModalityClassifier(
        method="late-fusion", max_epochs=2, random_state=0, modalities=modalities if cut else None
    ).fit(frame, y)
    clf.trained_.save(tmp_path / "model")
    model = mlmm.TrainedModel.load(tmp_path / "model")
    expected = modalities if cut else {"x": list(frame.columns)}
    assert model.table_columns == expected
    np.testing.assert_allclose(model.predict_proba(frame), clf.predict_proba(frame), atol=1e-6)
    assert list(model.predict(frame)) == list(clf.predict(frame))


def test_a_dataframe_with_repeated_column_names_keeps_the_generic_ones(tmp_path):
    # was: the saved model stored ['c0', 'c0', 'c1'] and refused every table ('appear more
    # than once', or missing/extra columns): it could no longer predict from a DataFrame
    X, y = make_data(n=60)
    frame = pd.DataFrame(X["a"][:, :3], columns=["c0", "c0", "c1"]).fillna(0.0)
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=1, random_state=0)
    clf.fit(frame, y)
    clf.trained_.save(tmp_path / "model")
    model = mlmm.TrainedModel.load(tmp_path / "model")
    assert model.table_columns == {"x": ["x.0", "x.1", "x.2"]}
    generic = frame.set_axis(["x.0", "x.1", "x.2"], axis=1)
    np.testing.assert_allclose(model.predict_proba(generic), clf.predict_proba(frame), atol=1e-6)


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
    with pytest.raises(MlmmError, match=r"unknown modality 'c'\. Choose from: a, b"):
        clf.predict({"a": X["a"], "c": X["b"]})


# ------------------------------------------------------------ scikit-learn conventions
@parametrize_with_checks(
    [
        mlmm.MissingModalityClassifier(method="logistic-mean-impute", max_epochs=2),
        # a method that takes a 0/1 label matrix: scikit-learn's multilabel checks too
        mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=2),
        mlmm.MissingModalityRegressor(method="logistic-mean-impute", max_epochs=2),
        mlmm.MissingModalityRegressor(method="hemis", max_epochs=2),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_scikit_learn_check_estimator(estimator, check):
    check(estimator)


def tiny(n=60, seed=0):
    """Two informative modalities of a binary label, no NaN."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    a = y[:, None] * 2.0 + rng.normal(size=(n, 3))
    b = y[:, None] * 2.0 + rng.normal(size=(n, 2))
    return {"a": a, "b": b}, y


def fast(**kw):
    return mlmm.MissingModalityClassifier(method="logistic-mean-impute", max_epochs=2, **kw)


def test_random_state_names_the_seed_and_seed_is_a_deprecated_alias():
    X, y = tiny()
    a = mlmm.MissingModalityClassifier(max_epochs=2, random_state=3).fit(X, y).predict_proba(X)
    with pytest.warns(FutureWarning, match="seed is deprecated.*use random_state"):
        b = mlmm.MissingModalityClassifier(max_epochs=2, seed=3).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    c = mlmm.MissingModalityClassifier(max_epochs=2, random_state=4).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, c)


def test_dict_keys_in_any_order_and_an_omitted_key_is_an_absent_modality():
    X, y = tiny()
    clf = fast().fit(X, y)
    np.testing.assert_array_equal(
        clf.predict_proba({"b": X["b"], "a": X["a"]}), clf.predict_proba(X)
    )
    only_a = {"a": X["a"], "b": np.full_like(X["b"], np.nan)}
    np.testing.assert_array_equal(clf.predict_proba({"a": X["a"]}), clf.predict_proba(only_a))
    with pytest.raises(MlmmError, match=r"modality 'b' has shape \(60, 3\), expected \(60, 2\)"):
        clf.predict({"a": X["a"], "b": X["a"]})


def test_on_empty_prior_answers_rows_with_nothing_present():
    X, y = tiny()
    X["a"][0] = X["b"][0] = np.nan
    with pytest.raises(MlmmError, match=r"1 sample\(s\) have no modality .*on_empty='prior'"):
        fast().fit(X, y)
    clf = fast(on_empty="prior").fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba[0], [0.5, 0.5], atol=0.02)  # training frequencies
    with pytest.raises(MlmmError, match="no modality present .*on_empty='prior'"):
        fast().fit(tiny()[0], y).predict({k: v[:1] for k, v in X.items()})
    with pytest.raises(MlmmError, match=r"on_empty must be one of \['error', 'prior'\]"):
        fast(on_empty="skip").fit(X, y)


def test_partial_nan_rows_name_the_estimator_options():
    X, y = tiny()
    X["a"][3, 0] = np.nan
    with pytest.raises(MlmmError, match="set partial='missing'") as err:
        fast().fit(X, y)
    assert "allow_empty" not in str(err.value) and "impute'" not in str(err.value)
    clf = fast(partial="missing").fit(X, y)
    assert clf.predict({k: v[3:4] for k, v in X.items()}).shape == (1,)
    with pytest.raises(MlmmError, match=r"partial must be one of .*impute before calling fit"):
        fast(partial="impute").fit(X, y)


def test_a_plain_table_is_one_modality_and_a_mapping_cuts_it():
    X, y = tiny()
    table = np.hstack([X["a"], X["b"]])
    assert fast().fit(table, y).modality_names_ == ("x",)
    mapped = fast(modalities={"a": [0, 1, 2], "b": [3, 4]}).fit(table, y)
    assert mapped.modality_names_ == ("a", "b") and mapped.n_features_in_ == 5
    with pytest.raises(MlmmError, match=r"X has 6 features, but MissingModalityClassifier is "):
        mapped.predict(np.hstack([table, table[:, :1]]))  # an extra column is refused
    with pytest.raises(MlmmError, match=r"uses column 7, but X has 5 columns"):
        fast(modalities={"a": [0, 7]}).fit(table, y)
    with pytest.raises(MlmmError, match="X has 0 samples"):
        mapped.predict(table[:0])


def test_a_frame_with_other_column_names_at_predict_is_refused():
    X, y = tiny()
    frame = pd.DataFrame(np.hstack([X["a"], X["b"]]), columns=list("abcde"))
    clf = fast().fit(frame, y)
    assert clf.feature_names_in_.tolist() == list("abcde")
    with pytest.raises(MlmmError, match="feature names should match those .* during fit"):
        clf.predict(frame[list("edcba")])


def test_a_frame_with_columns_no_modality_uses_predicts_as_at_fit(tmp_path):
    # was: clf.predict accepted the frame of fit, but clf.trained_ (and the saved model, mlmm
    # predict, mlmm serve) refused that very frame: "extra 2 column(s) ('id', 'note')"
    X, y = tiny()
    frame = pd.DataFrame(np.hstack([X["a"], X["b"]]), columns=list("abcde"))
    frame.insert(2, "id", np.arange(len(frame)))  # numbers no modality uses
    frame["note"] = "text"  # not even numbers
    clf = fast(modalities={"a": ["a", "b", "c"], "b": ["d", "e"]}).fit(frame, y)
    # scikit-learn's convention: the columns seen at fit, all of them, in their order
    assert clf.n_features_in_ == 7
    assert clf.feature_names_in_.tolist() == ["a", "b", "id", "c", "d", "e", "note"]
    expected = clf.predict_proba(frame)
    assert clf.predict(frame).shape == (len(frame),) and clf.score(frame, y) > 0.8
    clf.trained_.save(tmp_path / "model")
    for model in (clf.trained_, mlmm.TrainedModel.load(tmp_path / "model")):
        assert model.info["ignored_columns"] == ["id", "note"]
        np.testing.assert_allclose(model.predict_proba(frame), expected, atol=1e-6)
        # the ignored columns may also be left out, as a target column may
        np.testing.assert_allclose(
            model.predict_proba(frame.drop(columns=["id", "note"])), expected, atol=1e-6
        )
        with pytest.raises(MlmmError, match=r"extra 1 column\(s\) \('other'\)"):
            model.predict(frame.assign(other=1.0))  # a column fit never saw is still refused
    # the estimator itself keeps scikit-learn's rule: other columns than at fit are refused
    with pytest.raises(MlmmError, match=r"yet now missing: 2 column\(s\) \('id', 'note'\)"):
        clf.predict(frame.drop(columns=["id", "note"]))
    with pytest.raises(MlmmError, match="feature names should match") as err:
        clf.predict(frame.rename(columns={"note": "comment"}))
    assert "\n" not in str(err.value)
    refit = fast(modalities={"a": ["a", "b", "c"], "b": ["d", "e"]}).fit(frame[list("abcde")], y)
    assert "ignored_columns" not in refit.trained_.info  # none to ignore: none recorded


def test_pipeline_with_a_scaler_needs_positions_and_says_so():
    X, y = tiny()
    frame = pd.DataFrame(np.hstack([X["a"], X["b"]]), columns=list("abcde"))
    names = fast(modalities={"a": ["a", "b", "c"], "b": ["d", "e"]})
    with pytest.raises(MlmmError, match=r"X is a plain array .*StandardScaler.*positions"):
        make_pipeline(StandardScaler(), names).fit(frame, y)
    pipe = make_pipeline(StandardScaler(), fast(modalities={"a": [0, 1, 2], "b": [3, 4]}))
    assert pipe.fit(frame, y).score(frame, y) > 0.8
    assert (
        make_pipeline(StandardScaler(), names)
        .set_output(transform="pandas")
        .fit(frame, y)
        .score(frame, y)
        > 0.8
    )


def test_grid_search_over_the_estimator():
    X, y = tiny(80)
    search = GridSearchCV(fast(), {"method_params": [{"C": 0.01}, {"C": 1.0}]}, cv=2)
    search.fit(mlmm.MultimodalArray(X), y)
    assert search.best_params_["method_params"]["C"] in (0.01, 1.0)
    assert search.best_estimator_.n_features_in_ == 5


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.where(np.arange(60) % 2, 1.0, np.nan), r"y has 30 NaN or infinite label\(s\)"),
        (np.linspace(0, 1, 60), "y holds continuous values .*MissingModalityRegressor"),
        (np.ones(60), r"single class \[1.0\]"),
        (np.array([None, "a"] * 30, dtype=object), r"y has 30 missing label\(s\) \(None"),
        (np.array(["a", 1] * 30, dtype=object), "y mixes strings and other labels"),
        # pandas' NA in nullable columns: was "mixes strings", or "Unknown label type"
        (pd.array(["a", None] * 30, dtype="string"), r"y has 30 missing label\(s\)"),
        (pd.array([True, None] * 30, dtype="boolean"), r"y has 30 missing label\(s\)"),
        (np.array([1, pd.NA] * 30, dtype=object), r"y has 30 missing label\(s\)"),
    ],
)
def test_classifier_refuses_labels_that_are_not_classes(labels, message):
    X, _ = tiny()
    with pytest.raises(MlmmError, match=message):
        fast().fit(X, labels)


def test_large_label_values_are_classes_not_indices():
    X, y = tiny()
    labels = np.where(y == 1, 1e8, 0.0)
    clf = fast().fit(X, labels)
    assert clf.classes_.tolist() == [0.0, 1e8] and clf.predict_proba(X).shape == (60, 2)
    assert set(clf.predict(X)) <= {0.0, 1e8}


def test_complex_features_are_refused():
    X, y = tiny()
    with pytest.raises(MlmmError, match="Complex data not supported"):
        fast().fit({"a": X["a"] + 1j, "b": X["b"]}, y)


def test_regressor_with_targets_near_1e20_predicts_finite_values():
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(120, 3)), "b": rng.normal(size=(120, 2))}
    y = (X["a"].sum(1) + 10.0) * 1e20
    reg = mlmm.MissingModalityRegressor(method="logistic-mean-impute", max_epochs=2).fit(X, y)
    pred = reg.predict(X)
    assert np.isfinite(pred).all() and reg.score(X, y) > 0.9


def test_precision_is_a_parameter_passed_to_the_trainer_and_checked_at_fit():
    X, y = make_data(120)
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=3, precision="bf16-mixed")
    assert clf.get_params()["precision"] == "bf16-mixed"
    assert clone(clf).precision == "bf16-mixed"
    clf.fit(X, y)
    assert clf.trained_.precision == "bf16-mixed"
    assert np.isfinite(clf.predict_proba(X)).all()
    bad = mlmm.MissingModalityClassifier(method="late-fusion", precision="half")
    assert bad.precision == "half"  # stored unchanged, refused at fit
    with pytest.raises(MlmmError, match=r"precision must be one of \['32', 'bf16-mixed'"):
        bad.fit(X, y)
    with pytest.raises(MlmmError, match="'16-mixed' needs a CUDA GPU"):
        mlmm.MissingModalityClassifier(method="late-fusion", precision="16-mixed").fit(X, y)


def test_fit_records_the_validation_score_of_each_subset_for_the_trust_column():
    # was: trained_.validation stayed empty, so mlmm predict's validation_accuracy column (and
    # the model card's table) was blank for every model trained through the estimators
    from mlmm.data.datasets.frames import from_arrays
    from mlmm.data.specs import TaskSpec
    from mlmm.data.split import split_indices
    from mlmm.serve.predict import predict_table

    X, y = make_data()
    clf = mlmm.MissingModalityClassifier(method="late-fusion", max_epochs=3, random_state=0)
    scores = clf.fit(X, y).trained_.validation_scores()
    assert set(scores) == {"a", "b", "a+b"}
    # "a+b" keeps each row's own modalities: the accuracy on the held-out tenth of fit
    codes = np.searchsorted(clf.classes_, y)
    data = from_arrays(X, codes, task=TaskSpec("classification", 3))
    val = split_indices(data, test_size=0.1, val_size=0.0, seed=0)["test"]
    held_out = clf.predict({k: v[val] for k, v in X.items()})
    assert scores["a+b"]["accuracy"] == pytest.approx((held_out == y[val]).mean())
    table = predict_table(clf.trained_, X)
    only_b = ~np.isfinite(X["a"][:, 0])
    assert (table.validation_accuracy[only_b] == scores["b"]["accuracy"]).all()
    assert table.validation_accuracy.notna().all()

    reg = mlmm.MissingModalityRegressor(method="late-fusion", max_epochs=3, random_state=0)
    assert "rmse" in reg.fit(X, codes.astype(float)).trained_.validation_scores()["a+b"]
    # no validation part: nothing to report
    assert fast(val_size=0.0).fit(*tiny()).trained_.validation == {}


def test_a_class_with_one_sample_names_its_label_and_the_fix():
    """The stratified validation split said "classes with too few members: [2]" (an index)."""
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(60, 3)), "b": rng.normal(size=(60, 2))}
    y = np.repeat(["u", "v", "w"], [29, 30, 1])
    clf = mlmm.MissingModalityClassifier(method="logistic-mean-impute", random_state=0)
    with pytest.raises(MlmmError) as err:
        clf.fit(X, y)
    message = str(err.value)
    assert "\n" not in message and "class 'w' has 1 sample(s)" in message
    assert "val_size=0" in message
    clf.set_params(val_size=0.0).fit(X, y)  # the fix it names works
    assert list(clf.classes_) == ["u", "v", "w"]


def test_rows_whose_answer_overflows_to_nan_are_refused_as_mlmm_predict_refuses_them():
    """predict gave classes_[0] (the argmax of NaN) for inputs overflowing float32 (3e38)."""
    X, y = tiny()
    clf = mlmm.MissingModalityClassifier(method="hemis", max_epochs=2).fit(X, y)
    big = {k: v[:4].copy() for k, v in X.items()}
    big["a"][[1, 3]] = 3e38  # finite, far beyond anything seen in training
    assert np.isnan(clf.trained_.predict_raw({k: v[1:2] for k, v in big.items()})).all()
    want = r"NaN or infinite in 2 row\(s\) \(first: \[1, 3\]\): the input values .* scale"
    for answer in (clf.predict, clf.predict_proba):
        with pytest.raises(MlmmError, match=want) as err:
            answer(big)
        assert "\n" not in str(err.value)
    assert clf.predict({k: v[:1] for k, v in big.items()}).shape == (1,)  # finite rows answer
    reg = mlmm.MissingModalityRegressor(method="hemis", max_epochs=2).fit(X, y.astype(float))
    with pytest.raises(MlmmError, match=want):
        reg.predict(big)
