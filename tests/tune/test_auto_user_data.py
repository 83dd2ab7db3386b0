"""``method="auto"`` on a user's own data: wrong options and unusual data are one-line errors
before any member trains."""

import sys
import warnings

import numpy as np
import pytest

import mlmm
from mlmm import cli
from mlmm.errors import MlmmError
from mlmm.tune import auto as auto_module
from mlmm.tune.auto import check_auto_options, fit_auto

FAST = {"budget": "fast", "folds": 2, "max_epochs": 2, "rounds": 5, "progress": False}


def _arrays(n: int = 40, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    X = {"a": rng.normal(size=(n, 3)), "b": rng.normal(size=(n, 2))}
    return X, (X["a"][:, 0] > 0).astype(int)


def _no_member_may_train(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a member trained before the settings were checked")

    monkeypatch.setattr(auto_module, "_fit_fold", refuse)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": ["fast"]}, r"budget must be one of .*got \['fast'\]"),
        ({"portfolio": "hemis"}, r"portfolio must be a list .*\['hemis'\]"),
        ({"portfolio": {"method": "hemis"}}, "portfolio must be a list"),
        ({"cache_dir": 3}, "cache_dir must be a folder path"),
    ],
)
def test_options_of_the_wrong_type_are_one_line_errors(kwargs, match, monkeypatch):
    _no_member_may_train(monkeypatch)
    X, y = _arrays()
    with pytest.raises(MlmmError, match=match):
        fit_auto(mlmm.from_arrays(X, y), **{**FAST, **kwargs})


def test_a_modality_absent_from_every_training_row_is_one_error_before_training(monkeypatch):
    _no_member_may_train(monkeypatch)
    X, y = _arrays()
    X["b"][:] = np.nan
    for estimator, target in (
        (mlmm.MissingModalityClassifier, y),
        (mlmm.MissingModalityRegressor, X["a"].sum(axis=1)),
    ):
        model = estimator(method="auto", method_params={k: v for k, v in FAST.items()})
        with pytest.raises(MlmmError, match="^modality 'b' is absent from every training sample"):
            model.fit(X, target)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bugdet": "fast"}, "method 'auto' has no option 'bugdet'. Did you mean 'budget'"),
        ({"seed": 3}, "'auto' takes 'seed' from the caller's own setting"),
        ({"lr": 0.1}, "'auto' takes 'lr' from the caller's own setting"),
    ],
)
def test_estimator_method_params_that_auto_does_not_take_are_one_line_errors(
    params, match, monkeypatch
):
    _no_member_may_train(monkeypatch)
    X, y = _arrays()
    clf = mlmm.MissingModalityClassifier(method="auto", method_params={**FAST, **params})
    with pytest.raises(MlmmError, match=match):
        clf.fit(X, y)


def test_check_auto_options_accepts_every_documented_option():
    check_auto_options(
        {
            "budget": "fast",
            "folds": 2,
            "max_epochs": 3,
            "rounds": 5,
            "bags": 2,
            "portfolio": ["hemis"],
            "time_limit": 10.0,
            "cache_dir": "cache",
            "progress": False,
            "callback": None,
        }
    )


@pytest.mark.parametrize(
    "param, message",
    [
        ("nosuch=1", "error: method 'auto' has no option 'nosuch'"),
        ("seed=3", "error: method 'auto' takes 'seed' from the caller's own setting"),
    ],
)
def test_cli_train_auto_with_an_unknown_param_is_one_line(
    param, message, monkeypatch, capsys, tmp_path
):
    _no_member_may_train(monkeypatch)
    argv = ["mlmm", "train", "--dataset", "synthetic", "--dataset-param", "n_samples=60"]
    argv += ["--method", "auto", "--param", param, "--out", str(tmp_path / "m"), "--quiet"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_estimator_parameters_that_auto_ignores_are_said_when_set():
    X, y = _arrays()
    portfolio = {**FAST, "portfolio": ["per-modality-logistic"]}
    clf = mlmm.MissingModalityClassifier(method="auto", method_params=portfolio, max_epochs=5)
    with pytest.warns(UserWarning, match=r"method='auto' ignores max_epochs=5: .*'max_epochs': N"):
        clf.fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # at the defaults: nothing to say
        mlmm.MissingModalityClassifier(method="auto", method_params=portfolio).fit(X, y)


def test_a_modality_no_inner_training_fold_holds_is_one_error_before_training(monkeypatch):
    # was: every member was skipped on that fold, then "no portfolio member could be trained"
    _no_member_may_train(monkeypatch)
    X, y = _arrays()
    X["b"][1:] = np.nan  # b present in one row: the fold that holds it out trains without it
    with pytest.raises(MlmmError, match=r"^modality 'b' is present in only 1 training sample"):
        fit_auto(mlmm.from_arrays(X, y), **FAST)


def test_a_class_rarer_than_the_folds_spreads_over_them_and_the_rest_stays_stratified():
    # was: plain k-fold for every class as soon as one class had fewer than k samples, so a
    # rare class's samples could share a fold (all of them: a fold trained without the class)
    X, _ = _arrays(n=84)
    y = np.r_[np.zeros(40, int), np.ones(40, int), np.full(4, 2)]
    data = mlmm.from_arrays(X, y)
    for seed in range(5):
        folds = auto_module._folds(data, 5, seed)
        held = [y[rows] for _, rows in folds]
        assert [int((h == 2).sum()) for h in held].count(1) == 4  # one per fold, four folds
        assert all((h == 0).sum() == 8 and (h == 1).sum() == 8 for h in held)


def test_run_experiment_checks_the_auto_options_before_loading_the_data(monkeypatch):
    import mlmm.experiment

    def no_loading(*args, **kwargs):
        raise AssertionError("the data were loaded before the options were checked")

    monkeypatch.setattr(mlmm.experiment, "resolve_dataset", no_loading)
    with pytest.raises(MlmmError, match="method 'auto' has no option 'bugdet'"):
        mlmm.run_experiment("synthetic", "auto", method_params={"bugdet": "fast"})


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_regression_target_with_nan_or_inf_is_one_line_naming_y(bad):
    X, _ = _arrays()
    y = X["a"].sum(axis=1)
    y[[3, 7]] = bad
    reg = mlmm.MissingModalityRegressor(method="auto", method_params=FAST)
    with pytest.raises(
        MlmmError, match=r"^y has 2 NaN or infinite value\(s\) \(first rows: \[3, 7\]\)"
    ):
        reg.fit(X, y)
