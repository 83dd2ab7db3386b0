"""``method="auto"``: inner cross-validation, ensemble selection, one artifact, resuming."""

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import cross_val_score

import mlmm
from mlmm import cli
from mlmm.data.missingness import parse_condition, simulate
from mlmm.errors import MlmmError
from mlmm.methods.combination.auto_ensemble import member_label
from mlmm.testing import contract_dataset
from mlmm.tune import auto as auto_module
from mlmm.tune.auto import (
    ANCHOR_MIN_ROWS,
    DOMINANCE_Z,
    bagged_ensemble_selection,
    default_portfolio,
    dominant_member,
    ensemble_selection,
    fit_auto,
    leaderboard,
)
from mlmm.utils import rng_for

PORTFOLIO = [
    "per-modality-logistic",
    {"method": "logistic-mean-impute", "params": {"C": 0.1}},
    {"method": "hemis", "params": {"hidden": 32, "embed_dim": 16}},
]
FAST = {"budget": "fast", "folds": 2, "max_epochs": 4, "rounds": 10, "progress": False}


def _split(task="classification", n=240):
    data = contract_dataset(n, task=task)
    split = mlmm.train_val_test_split(data, test_size=0.25, val_size=0.0, seed=0)
    train, _ = simulate(split.train, parse_condition("mcar:0.3").train, rng_for(0, "mask"))
    return train, split.test


@pytest.fixture(scope="module")
def fitted():
    train, test = _split()
    return fit_auto(train, portfolio=PORTFOLIO, **FAST), test


def test_beats_chance_clearly_on_small_data(fitted):
    trained, test = fitted
    accuracy = (trained.predict(test) == test.targets).mean()
    assert accuracy > 0.8  # three classes: chance is 1/3


def test_answers_every_modality_subset_including_single_modalities(fitted):
    trained, test = fitted
    table = mlmm.evaluate(trained, test, "none", seed=0)
    subsets = table[(table.scope == "subset") & (table.metric == "accuracy")]
    assert len(subsets) == 7  # 2^3 - 1, the three single modalities among them
    assert subsets.value.min() > 0.5


def test_artifact_saves_and_loads_with_identical_predictions(fitted, tmp_path):
    trained, test = fitted
    trained.save(tmp_path / "auto")
    loaded = mlmm.TrainedModel.load(tmp_path / "auto")
    assert loaded.method == "auto-ensemble"
    np.testing.assert_array_equal(loaded.predict_proba(test), trained.predict_proba(test))
    assert leaderboard(loaded).equals(leaderboard(trained))


def test_weights_sum_to_one_and_the_leaderboard_lists_every_member(fitted):
    trained, _ = fitted
    board = leaderboard(trained)
    assert board.model.tolist()[0] == "ensemble"
    assert set(board.model[1:]) == {
        "per-modality-logistic",
        "logistic-mean-impute[C=0.1]",
        "hemis[embed_dim=16,hidden=32]",
    }
    assert board.weight[1:].sum() == pytest.approx(1.0)
    assert trained.model.ensemble_weights.sum().item() == pytest.approx(1.0)
    used = board[1:][board.weight[1:] > 0].model.tolist()
    assert sorted(m["name"] for m in trained.model.member_specs) == sorted(used)
    scores = board.cv_log_loss[1:].tolist()
    assert scores == sorted(scores)  # best first
    # a mixture's log loss is at most the weighted mean of its members' (log is concave); bagged
    # selection may stay above the best member's, spreading weight to avoid overfitting
    weighted = (board.weight[1:] * board.cv_log_loss[1:]).sum()
    assert board.cv_log_loss[0] <= weighted + 1e-9


def test_deep_members_train_for_the_cross_validated_epoch_count_with_scaled_decay():
    train, _ = _split()
    trained = fit_auto(train, portfolio=PORTFOLIO[2:], **{**FAST, "max_epochs": 30, "lr": 0.03})
    row = leaderboard(trained).set_index("model").loc["hemis[embed_dim=16,hidden=32]"]
    assert row.weight == 1.0 and row.weight_decay == pytest.approx(0.5 / train.n_samples)
    assert 1 <= row.epochs < 30  # early-stopped in the folds: the median best epoch
    (history,) = trained.histories
    assert len(history.epochs) == row.epochs and not history.stopped_early


def test_a_zero_weight_decay_is_used_in_the_folds_as_in_the_refit(monkeypatch):
    # weight_decay=0 is a value, not "unset": the folds must train as the refit does
    import mlmm.tune.auto as auto

    seen = []

    class Recording(auto.Trainer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            seen.append(self.weight_decay)

    monkeypatch.setattr(auto, "Trainer", Recording)
    train, _ = _split()
    member = {"method": "hemis", "params": {"hidden": 32, "embed_dim": 16}, "weight_decay": 0.0}
    fit_auto(train, portfolio=[member], **{**FAST, "max_epochs": 1})
    # the two folds' trainers (the refit's copy gets it in fit_member, which tests `is not None`)
    assert seen[:2] == [0.0, 0.0]


def test_a_member_that_cannot_run_is_skipped_with_a_note():
    train, test = _split()
    portfolio = ["per-modality-logistic", {"method": "lda-em", "params": {"max_features": 5}}]
    trained = fit_auto(train, portfolio=portfolio, **FAST)
    row = leaderboard(trained).set_index("model").loc["lda-em[max_features=5]"]
    assert "skipped" in row.note and "max_features" in row.note and row.weight == 0
    assert (trained.predict(test) == test.targets).mean() > 0.8


def test_numpy_values_in_a_members_params_save_and_reload(tmp_path):
    # a C_grid given as an array trained, then save failed: ndarray is not JSON serializable
    train, test = _split()
    portfolio = [
        {"method": "per-modality-logistic", "params": {"C": np.float64(1.0)}},
        {"method": "lda-em", "params": {"shrinkage": np.array(0.3)}},
    ]
    trained = fit_auto(train, portfolio=portfolio, **FAST)
    trained.save(tmp_path / "m")
    loaded = mlmm.TrainedModel.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict_proba(test), trained.predict_proba(test))
    assert "lda-em[shrinkage=0.3]" in set(leaderboard(loaded).model)
    with pytest.raises(
        MlmmError, match=r"^portfolio entry 'lda-em' has params that cannot be saved"
    ):
        fit_auto(train, portfolio=[{"method": "lda-em", "params": {"shrinkage": {0.3}}}], **FAST)


def test_a_member_with_non_finite_out_of_fold_predictions_is_skipped(monkeypatch):
    train, test = _split()
    real = auto_module._fit_fold

    def nan_for_mean_impute(member, *args):
        result = real(member, *args)
        if member["method"] == "logistic-mean-impute":
            result["oof"][0][0] = float("nan")  # one NaN probability
        return result

    monkeypatch.setattr(auto_module, "_fit_fold", nan_for_mean_impute)
    portfolio = ["logistic-mean-impute", "per-modality-logistic"]  # the NaN member first
    trained = fit_auto(train, portfolio=portfolio, **FAST)
    board = leaderboard(trained).set_index("model")
    assert "not all finite" in board.loc["logistic-mean-impute", "note"]
    assert board.loc["logistic-mean-impute", "weight"] == 0
    assert board.loc["per-modality-logistic", "weight"] == 1.0
    assert (trained.predict(test) == test.targets).mean() > 0.8


def test_a_spent_time_limit_leaves_out_the_members_not_yet_cross_validated():
    train, _ = _split()
    trained = fit_auto(train, portfolio=PORTFOLIO, time_limit=1e-6, **FAST)
    board = leaderboard(trained).set_index("model")
    assert board.loc["per-modality-logistic", "weight"] == 1.0  # the first always completes
    for name in ("logistic-mean-impute[C=0.1]", "hemis[embed_dim=16,hidden=32]"):
        assert "time limit" in board.loc[name, "note"] and board.loc[name, "weight"] == 0


def test_no_member_can_run_is_a_clear_error():
    train, _ = _split()
    with pytest.raises(MlmmError, match="no portfolio member could be trained"):
        fit_auto(train, portfolio=[{"method": "lda-em", "params": {"max_features": 5}}], **FAST)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"budget": "huge"}, "budget must be one of"),
        ({"folds": 1}, "folds must be in"),
        ({"time_limit": 0}, "time_limit must be in"),
        ({"rounds": 0}, "rounds must be in"),
        ({"bags": 0}, "bags must be in"),
        ({"portfolio": []}, "portfolio is empty"),
        ({"portfolio": ["hemsi"]}, "unknown portfolio method 'hemsi'"),
        ({"portfolio": ["hemis", "hemis"]}, "must differ"),
        ({"portfolio": [{"method": "hemis", "epochs": 3}]}, "unknown keys"),
        ({"portfolio": [{"method": "hemis", "params": {"hiden": 3}}]}, "no hyperparameter 'hiden'"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    train, _ = _split(n=60)
    with pytest.raises(MlmmError, match=match):
        fit_auto(train, **{**FAST, **kwargs})


def test_same_seed_same_result_and_another_seed_differs(fitted):
    trained, test = fitted
    train, _ = _split()
    again = fit_auto(train, portfolio=PORTFOLIO, **FAST)
    np.testing.assert_array_equal(again.predict_proba(test), trained.predict_proba(test))
    assert (
        leaderboard(again)
        .drop(columns="cv_seconds")
        .equals(leaderboard(trained).drop(columns="cv_seconds"))
    )
    # another seed draws other folds, so other out-of-fold scores
    other = fit_auto(train, portfolio=PORTFOLIO, **{**FAST, "seed": 1})
    assert not np.allclose(leaderboard(other).cv_log_loss, leaderboard(trained).cv_log_loss)


class _Killed(Exception):
    pass


def test_an_interrupted_run_resumes_and_reuses_every_finished_fold(tmp_path):
    train, test = _split()
    events = []

    def die_after_three(event):
        events.append(event)
        if len(events) == 3:
            raise _Killed

    with pytest.raises(_Killed):
        fit_auto(train, portfolio=PORTFOLIO, cache_dir=tmp_path, callback=die_after_three, **FAST)
    rerun = []
    resumed = fit_auto(
        train, portfolio=PORTFOLIO, cache_dir=tmp_path, callback=rerun.append, **FAST
    )
    assert [e["cached"] for e in rerun[:3]] == [True, True, True]
    assert not any(e["cached"] for e in rerun[3:])
    assert len([e for e in rerun if e["stage"] == "cv"]) == 2 * len(PORTFOLIO)
    # the same model as one uninterrupted run without a cache
    fresh = fit_auto(train, portfolio=PORTFOLIO, **FAST)
    np.testing.assert_array_equal(resumed.predict_proba(test), fresh.predict_proba(test))
    # a third run reuses everything, the refitted members included
    third = []
    again = fit_auto(train, portfolio=PORTFOLIO, cache_dir=tmp_path, callback=third.append, **FAST)
    assert all(e["cached"] for e in third) and {e["stage"] for e in third} == {"cv", "refit"}
    np.testing.assert_array_equal(again.predict_proba(test), fresh.predict_proba(test))


def test_cached_results_are_reused_across_rounds_but_not_for_other_data(tmp_path):
    train, _ = _split()
    fit_auto(train, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, **FAST)
    events = []
    fit_auto(
        train, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, callback=events.append,
        **{**FAST, "rounds": 3},
    )  # fmt: skip
    assert events and all(e["cached"] for e in events)
    other = train.subset(np.arange(train.n_samples - 10))
    events = []
    fit_auto(other, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, callback=events.append, **FAST)
    assert not any(e["cached"] for e in events)


def test_a_cached_fold_is_not_read_for_other_folds(tmp_path, monkeypatch):
    # was: the cache key holds the data, member and settings but not the folds, so results
    # cached for other folds (e.g. before rare classes were stratified) were put on the wrong
    # rows of the out-of-fold predictions
    train, _ = _split()
    fit_auto(train, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, **FAST)
    folds = auto_module._folds
    monkeypatch.setattr(auto_module, "_folds", lambda *a: folds(*a)[::-1])  # same rows, swapped
    events = []
    fit_auto(train, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, callback=events.append, **FAST)
    assert [e["cached"] for e in events if e["stage"] == "cv"] == [False, False]
    events = []  # saved again for these folds: read back
    fit_auto(train, portfolio=PORTFOLIO[:1], cache_dir=tmp_path, callback=events.append, **FAST)
    assert [e["cached"] for e in events if e["stage"] == "cv"] == [True, True]


def test_ensemble_selection_by_hand():
    targets = np.array([0, 1, 0, 1])
    perfect = np.array([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.1, 0.9]])
    flat = np.full((4, 2), 0.5)
    assert ensemble_selection([flat, perfect], targets, True, 5) == [0.0, 1.0]
    # two members each right on half the samples, confidently: their average beats both
    left = np.array([[0.99, 0.01], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01]])
    right = 1.0 - left
    weights = ensemble_selection([left, right], targets, True, 4)
    assert weights == [0.5, 0.5]
    # regression: mean squared error, the average of +1 and -1 offsets is exact
    y = np.array([1.0, 2.0, 3.0])
    assert ensemble_selection([y + 1, y - 1], y, False, 2) == [0.5, 0.5]


def test_bagged_selection_spreads_the_weight_over_bags_of_half_the_candidates():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 60)
    truth = np.eye(2)[targets]  # [N, 2]
    # four members, each right with probability 0.8 on a different random 70% of the rows
    members = []
    for _ in range(4):
        right = rng.random(60) < 0.7
        members.append(np.where(right[:, None], 0.8 * truth + 0.1, 0.2 * truth + 0.4))
    plain = ensemble_selection(members, targets, True, 20)
    bagged = bagged_ensemble_selection(members, targets, True, 20, bags=10, seed=0)
    assert sum(bagged) == pytest.approx(1.0)
    # every bag holds 2 of the 4: no member can take more than the bags that drew it (plain
    # selection gives one member 0.65 here)
    assert max(plain) > 0.5 and max(bagged) < max(plain)
    assert sum(w > 0 for w in bagged) >= sum(w > 0 for w in plain)
    assert bagged == bagged_ensemble_selection(members, targets, True, 20, bags=10, seed=0)
    assert bagged != bagged_ensemble_selection(members, targets, True, 20, bags=10, seed=1)
    # one bag, or one candidate: plain selection over every candidate
    assert bagged_ensemble_selection(members, targets, True, 20, bags=1) == plain
    assert bagged_ensemble_selection(members[:1], targets, True, 20, bags=10) == [1.0]


def test_bagged_selection_of_two_candidates_weighs_them_by_their_loss():
    targets = np.array([0, 1] * 30)
    good = 0.8 * np.eye(2)[targets] + 0.1  # [N, 2]
    bad = 0.8 * np.eye(2)[1 - targets] + 0.1  # confidently wrong on every row
    # a bag of half of two candidates would hold one, and give it all its weight
    assert bagged_ensemble_selection([good, bad], targets, True, 10, bags=20) == [1.0, 0.0]
    assert bagged_ensemble_selection([bad, good], targets, True, 10, bags=20) == [0.0, 1.0]


def _library(n, seed=0):
    """Five candidates on ``n`` rows: one right with probability 0.95 on every row (dominant),
    four right on a random 70 % of the rows each."""
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    truth = np.eye(2)[targets]  # [N, 2]
    members = [0.9 * truth + 0.05]
    for _ in range(4):
        right = rng.random(n) < 0.7
        members.append(np.where(right[:, None], 0.8 * truth + 0.1, 0.2 * truth + 0.4))
    return members, targets


def _bags(monkeypatch, members, targets, **kwargs):
    """The candidates (indices) of every bag the bagged selection builds."""
    seen = []
    plain = auto_module.ensemble_selection

    def recording(predictions, *args):
        seen.append(sorted(next(i for i, m in enumerate(members) if m is p) for p in predictions))
        return plain(predictions, *args)

    monkeypatch.setattr(auto_module, "ensemble_selection", recording)
    weights = bagged_ensemble_selection(members, targets, True, 10, **kwargs)
    monkeypatch.setattr(auto_module, "ensemble_selection", plain)
    return seen, weights


def test_below_the_row_gate_the_bags_are_those_drawn_before_anchoring(monkeypatch):
    members, targets = _library(ANCHOR_MIN_ROWS - 1)
    assert dominant_member(members, targets, True) is None  # gate shut, however dominant
    default = bagged_ensemble_selection(members, targets, True, 10, bags=20, seed=3)
    assert default == bagged_ensemble_selection(members, targets, True, 10, 20, 3, anchor=None)
    bags, _ = _bags(monkeypatch, members, targets, bags=20, seed=3)
    assert any(0 not in b for b in bags)  # the dominant member is left out of some bags


def test_from_the_row_gate_on_a_dominant_member_is_in_every_bag(monkeypatch):
    members, targets = _library(ANCHOR_MIN_ROWS)
    assert dominant_member(members, targets, True) == 0
    assert dominant_member(members, targets, False) is None  # regression: never anchored
    bags, weights = _bags(monkeypatch, members, targets, bags=20, seed=3)
    assert len(bags) == 20 and all(0 in b and len(b) == 2 for b in bags)
    _, unanchored = _bags(monkeypatch, members, targets, bags=20, seed=3, anchor=None)
    assert weights[0] > unanchored[0] and sum(weights) == pytest.approx(1.0)
    with pytest.raises(MlmmError, match="anchor must be"):
        bagged_ensemble_selection(members, targets, True, 10, anchor=7)


@pytest.mark.parametrize("bags", [1, 20])
@pytest.mark.parametrize("anchor", [7, -1, True, "best"])
def test_a_wrong_anchor_is_refused_even_without_bags(anchor, bags):
    members, targets = _library(50)
    for candidates in (members, members[:1]):  # one candidate: plain selection, no bags either
        with pytest.raises(MlmmError, match="anchor must be"):
            bagged_ensemble_selection(candidates, targets, True, 10, bags, anchor=anchor)


def test_unanchored_bags_give_the_weights_of_the_selection_before_anchoring():
    members, targets = _library(ANCHOR_MIN_ROWS)  # member 0 is dominant
    # what bagged_ensemble_selection returned before anchoring existed (commit 607bac5)
    before = [0.25, 0.1125, 0.325, 0.1, 0.2125]
    weights = bagged_ensemble_selection(members, targets, True, 10, 8, 3, anchor=None)
    assert weights == pytest.approx(before, abs=1e-12)
    assert bagged_ensemble_selection(members, targets, True, 10, 8, 3) == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_without_dominance_the_bags_are_not_anchored(monkeypatch):
    members, targets = _library(2 * ANCHOR_MIN_ROWS)
    tied = [members[0], members[0].copy(), *members[2:]]  # two equal best members: no lead
    assert auto_module.dominance(tied, targets)[1] < DOMINANCE_Z
    assert dominant_member(tied, targets, True) is None
    default = bagged_ensemble_selection(tied, targets, True, 10, bags=20, seed=1)
    assert default == bagged_ensemble_selection(tied, targets, True, 10, 20, 1, anchor=None)


def test_a_dominant_member_that_is_not_the_most_accurate_is_not_anchored():
    rng = np.random.default_rng(0)
    n = ANCHOR_MIN_ROWS + 100
    targets = rng.integers(0, 2, n)
    truth = np.eye(2)[targets]  # [N, 2]
    rows = rng.permutation(n)
    # 0: hedged, right on 90 % of the rows: the lowest log loss by far (about 0.19)
    hedged = np.where(np.isin(np.arange(n), rows[: n // 10])[:, None], 0.4 - 0.2 * truth, truth)
    hedged = np.where(hedged == 1, 0.9, np.where(hedged == 0, 0.1, hedged + 0.2))
    # 1: right on 95 % of the rows, but confidently wrong on the others (about 0.47)
    wrong = np.isin(np.arange(n), rows[-n // 20 :])[:, None]
    bold = np.where(wrong, 1e-4 + (1 - 2e-4) * (1 - truth), 0.99 * truth + 0.005)
    weak = [np.where((rng.random(n) < 0.7)[:, None], 0.7 * truth + 0.15, 0.85 - 0.7 * truth)]
    members = [hedged, bold, *weak, weak[0][rng.permutation(n)]]
    np.testing.assert_allclose([m.sum(axis=1) for m in members], 1.0)
    correct = [int((m.argmax(axis=1) == targets).sum()) for m in members]
    assert correct[1] > correct[0] == max(correct[0], correct[2], correct[3])
    best, z = auto_module.dominance(members, targets)
    assert best == 0 and z >= DOMINANCE_Z  # dominant in log loss ...
    assert dominant_member(members, targets, True) is None  # ... but less accurate: refused
    default = bagged_ensemble_selection(members, targets, True, 10, bags=20, seed=2)
    assert default == bagged_ensemble_selection(members, targets, True, 10, 20, 2, anchor=None)
    # as accurate as the most accurate (a tie counts as highest): anchored
    level = bold.copy()
    flip = np.flatnonzero(~wrong[:, 0])[: correct[1] - correct[0]]
    level[flip] = level[flip][:, ::-1]  # wrong on as many rows as the hedged member
    tied = [hedged, level, *members[2:]]
    assert int((level.argmax(axis=1) == targets).sum()) == correct[0]
    assert dominant_member(tied, targets, True) == 0


def test_fit_auto_records_the_member_its_bags_were_anchored_on(monkeypatch, tmp_path):
    train, _ = _split(n=700)  # 525 training rows
    portfolio = ["per-modality-logistic", "logistic-mean-impute", "lda-em"]
    settings = {**FAST, "portfolio": portfolio}
    monkeypatch.setattr(auto_module, "DOMINANCE_Z", -np.inf)  # any lead will do
    anchors = []
    plain = auto_module.bagged_ensemble_selection

    def recording(*args):
        anchors.append(args[-1])
        return plain(*args)

    monkeypatch.setattr(auto_module, "bagged_ensemble_selection", recording)
    trained = fit_auto(train, **settings)
    board = leaderboard(trained)
    best = board.iloc[1]["model"]  # lowest out-of-fold log loss
    assert trained.trainer_config["auto"]["anchored_on"] == best
    assert anchors == [portfolio.index(best)]  # the bags were anchored on it
    assert board.iloc[0]["note"].endswith(f"anchored on the dominant member {best}")
    trained.save(tmp_path / "anchored")
    loaded = mlmm.TrainedModel.load(tmp_path / "anchored")
    assert loaded.trainer_config["auto"]["anchored_on"] == best
    assert leaderboard(loaded).equals(board)
    # one bag: the plain selection over every candidate, nothing to anchor
    assert fit_auto(train, **settings, bags=1).trainer_config["auto"]["anchored_on"] is None
    assert anchors[-1] is None
    monkeypatch.setattr(auto_module, "ANCHOR_MIN_ROWS", train.n_samples + 1)  # gate shut
    trained = fit_auto(train, **settings)
    assert trained.trainer_config["auto"]["anchored_on"] is None and anchors[-1] is None
    assert "anchored" not in leaderboard(trained).iloc[0]["note"]


def test_default_portfolio_follows_the_budget_and_the_data_width():
    data = contract_dataset(240)
    fast, fast_notes = default_portfolio(data, "fast")
    best, _ = default_portfolio(data, "best")
    assert {m["method"] for m in fast} < {m["method"] for m in best}
    assert "moddrop" in {m["method"] for m in best}
    # 240 samples < 10 x 34 features: no diagonal lda-em; no gradient boosting at "fast";
    # under 500 samples no kernel member
    notes = [n["method"] for n in fast_notes]
    assert notes == ["lda-em", "hist-gradient-boosting", "per-modality-kernel"]
    deep = [m for m in fast if m["method"] == "hemis"][0]
    assert deep["weight_decay"] == pytest.approx(0.5 / 240)  # scaled with n
    medium, _ = default_portfolio(data, "medium")
    assert "hist-gradient-boosting" in {m["method"] for m in medium}  # 34 features x 3 classes
    wide = mlmm.MultimodalDataset(
        [mlmm.ModalitySpec("a", "vector", (1000,)), mlmm.ModalitySpec("b", "vector", (2,))],
        mlmm.TaskSpec("classification", 3),
        {"a": np.zeros((30, 1000)), "b": np.zeros((30, 2))},
        np.arange(30) % 3,
    )
    members, notes = default_portfolio(wide, "medium")
    assert "hist-gradient-boosting" not in {m["method"] for m in members}
    (tree,) = [n for n in notes if n["method"] == "hist-gradient-boosting"]
    assert "too costly" in tree["note"] and "3006" in tree["note"]


def test_the_kernel_member_joins_from_500_training_samples_with_a_note_otherwise():
    # each modality's C chosen by inner CV since AUTO_REVISION 6 (the eighth design round),
    # from 1 to 1,000 since AUTO_REVISION 7 (the ninth)
    grid = [1, 3, 10, 30, 100, 300, 1000]
    kernel = {"method": "per-modality-kernel", "params": {"C": "cv", "C_grid": grid}}
    assert auto_module.KERNEL_MIN_SAMPLES == ANCHOR_MIN_ROWS == 500
    joined, notes = default_portfolio(_vectors(500, 46), "medium")
    assert joined[-1] == kernel  # last, after the deep members
    assert not any(n["method"] == "per-modality-kernel" for n in notes)
    left, notes = default_portfolio(_vectors(499, 46), "medium")
    assert "per-modality-kernel" not in {m["method"] for m in left}
    (note,) = [n for n in notes if n["method"] == "per-modality-kernel"]
    assert note["model"] == "per-modality-kernel[C=cv,C_grid=[1, 3, 10, 30, 100, 300, 1000]]"
    assert note["note"] == "needs 500 training samples, got 499"
    same = [(m["method"], m["params"]) for m in left]  # nothing else changes
    assert [(m["method"], m["params"]) for m in joined[:-1]] == same
    joined[-1]["params"]["C_grid"].append(3000)  # each portfolio holds a copy of the grid
    assert auto_module.KERNEL_MEMBER["params"]["C_grid"] == grid


def _vectors(n_samples, width):
    return mlmm.MultimodalDataset(
        [mlmm.ModalitySpec("a", "vector", (width,)), mlmm.ModalitySpec("b", "vector", (2,))],
        mlmm.TaskSpec("classification", 3),
        {"a": np.zeros((n_samples, width)), "b": np.zeros((n_samples, 2))},
        np.arange(n_samples) % 3,
    )


def test_diagonal_lda_joins_from_ten_samples_per_feature_with_a_note_otherwise():
    diagonal = {"shrinkage": 0.7, "shrinkage_target": "diagonal"}
    joined, notes = default_portfolio(_vectors(480, 46), "medium")  # 48 features x 10 = 480
    assert diagonal in [m["params"] for m in joined if m["method"] == "lda-em"]
    assert {} in [m["params"] for m in joined if m["method"] == "lda-em"]  # isotropic stays
    assert not any("samples per feature" in n["note"] for n in notes)
    left, notes = default_portfolio(_vectors(479, 46), "medium")
    assert [m["params"] for m in left if m["method"] == "lda-em"] == [{}]
    (note,) = [n for n in notes if n["method"] == "lda-em"]
    assert note["model"] == "lda-em[shrinkage=0.7,shrinkage_target=diagonal]"
    assert "10 samples per feature (480 for 48 features), got 479" in note["note"]


def test_regression():
    train, test = _split("regression")
    trained = fit_auto(train, portfolio=PORTFOLIO, **FAST)
    board = leaderboard(trained)
    assert "cv_mse" in board and board.weight[1:].sum() == pytest.approx(1.0)
    pred = trained.predict(test)
    r2 = 1 - ((pred - test.targets) ** 2).mean() / test.targets.var()
    assert r2 > 0.5


def test_estimators_with_method_auto_work_in_cross_val_score():
    data = contract_dataset(180)
    X = mlmm.MultimodalArray({k: v.reshape(len(v), -1) for k, v in data.inputs.items()})
    X.data["b"][::4] = np.nan  # b missing in a quarter of the samples
    params = {**FAST, "portfolio": PORTFOLIO[:2]}
    params.pop("progress")
    clf = mlmm.MissingModalityClassifier(method="auto", method_params=params)
    scores = cross_val_score(clf, X, data.targets, cv=2)
    assert scores.min() > 0.8
    fitted = clf.fit(X, data.targets)
    assert fitted.trained_.method == "auto-ensemble"
    reg = mlmm.MissingModalityRegressor(method="auto", method_params=params)
    assert reg.fit(X, data.targets.astype(float)).score(X, data.targets) > 0.5


def test_cli_train_method_auto_saves_one_artifact_and_prints_the_leaderboard(
    monkeypatch, capsys, tmp_path
):
    out_dir = tmp_path / "auto"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "mlmm", "train", "--dataset", "synthetic", "--dataset-param", "n_samples=300",
            "--method", "auto", "--missing", "mcar:0.5", "--out", str(out_dir), "--quiet",
            "--param", "budget=fast", "--param", "folds=2", "--param", "max_epochs=2",
            "--param", "portfolio=[per-modality-logistic, hemis]",
        ],
    )  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli.main()
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    assert mlmm.TrainedModel.load(out_dir).method == "auto-ensemble"
    flat = " ".join(captured.out.split())
    assert "leaderboard" in flat and "per-modality-logistic" in flat
    assert not (tmp_path / ".auto.auto-cache").exists()  # removed once the model is saved


def test_epoch_count_follows_the_whole_models_best_epoch():
    from mlmm.train.trainer import TrainHistory
    from mlmm.tune.auto import _best_epoch

    epochs = [{"epoch": e} for e in range(1, 9)]
    per_head = TrainHistory(epochs=epochs, best_epoch=3, part_best_epochs={"a": 7, "b": 2})
    assert _best_epoch([per_head]) == 3  # the assembled model's, not the latest head's
    staged = [TrainHistory(epochs=epochs, best_epoch=4), TrainHistory(epochs=epochs, best_epoch=6)]
    assert _best_epoch(staged) == 6
    assert _best_epoch([TrainHistory()]) is None  # fitted once, no epochs (reference methods)


def test_kill_minus_9_during_auto_loses_nothing_finished(tmp_path):
    import os
    import signal
    import subprocess
    import textwrap

    script = tmp_path / "killed.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from test_auto import FAST, PORTFOLIO, _split
            from mlmm.tune.auto import fit_auto

            done = []

            def die(event):
                done.append(event)
                if len(done) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)

            train, _ = _split()
            fit_auto(train, portfolio=PORTFOLIO, cache_dir={str(tmp_path / "cache")!r},
                     callback=die, **FAST)
            """
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    train, _ = _split()
    events = []
    fit_auto(
        train, portfolio=PORTFOLIO, cache_dir=tmp_path / "cache", callback=events.append, **FAST
    )
    assert [e["cached"] for e in events[:4]] == [True, True, True, False]


def test_inner_folds_keep_each_group_on_one_side():
    from dataclasses import replace

    from mlmm.tune.auto import _folds

    data = mlmm.load_dataset("synthetic", n_samples=240)
    subjects = np.random.default_rng(1).permutation(np.arange(240) // 8)  # 30 subjects
    folds = _folds(replace(data, groups=subjects), 3, seed=0)
    assert len(folds) == 3
    for fit, val in folds:
        assert not set(subjects[fit]) & set(subjects[val])
    fit, val = _folds(data, 3, seed=0)[0]  # ungrouped folds mix them
    assert set(subjects[fit]) & set(subjects[val])


def test_regression_from_500_samples_trains_the_kernel_member_and_never_anchors():
    # the seventh round scored classification only; regression gets the kernel member by the
    # same gate (kernel ridge per modality), and its bags are never anchored
    train, test = _split("regression", n=700)  # 525 training rows
    members, _ = default_portfolio(train, "fast")
    assert members[-1] == auto_module.KERNEL_MEMBER
    trained = fit_auto(train, portfolio=["per-modality-logistic", members[-1]], **FAST)
    row = leaderboard(trained).set_index("model").loc[member_label(members[-1])]
    assert row.cv_mse < 0.5 * train.targets.var()  # it learned, out of fold
    assert trained.trainer_config["auto"]["anchored_on"] is None
    pred = trained.predict(test)
    assert 1 - ((pred - test.targets) ** 2).mean() / test.targets.var() > 0.5
