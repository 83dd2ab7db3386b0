"""benchmarks/auto_tuning.py: temperatures, anchored and gated bags (rounds 4-5), the adoption rule."""

import re

import numpy as np
import pandas as pd
import pytest

import mlmm
from mlmm.methods.combination.auto_ensemble import member_label


def _proba(rng, n=300, k=4):
    logits = rng.normal(size=(n, k)) * 2.0  # [N, K]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_tempered_probabilities_sum_to_one_and_keep_every_argmax(tuning):
    proba = _proba(np.random.default_rng(0))
    for temperature in (0.05, 0.5, 1.0, 3.0, 20.0):
        tempered = tuning.temper(proba, temperature)
        np.testing.assert_allclose(tempered.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_array_equal(tempered.argmax(axis=1), proba.argmax(axis=1))
    np.testing.assert_allclose(tuning.temper(proba, 1.0), proba, atol=1e-12)


def test_the_fitted_temperature_undoes_a_known_overconfidence(tuning):
    rng = np.random.default_rng(1)
    calibrated = _proba(rng, n=4000)
    y = np.array([rng.choice(4, p=p) for p in calibrated])  # labels drawn from it
    overconfident = tuning.temper(calibrated, 1 / 3)  # logits times 3
    assert tuning.fit_temperature(overconfident, y) == pytest.approx(3.0, rel=0.1)
    assert tuning.fit_temperature(calibrated, y) == pytest.approx(1.0, rel=0.1)


def test_a_member_without_errors_is_sharpened_to_the_lower_bound(tuning):
    proba = _proba(np.random.default_rng(2))
    y = proba.argmax(axis=1)  # right on every row: the loss falls as T falls
    low = tuning.TEMPERATURE_RANGE[0]
    assert tuning.fit_temperature(proba, y) == pytest.approx(low, rel=0.01)


def test_an_anchored_bag_always_holds_the_member_with_the_lowest_loss(tuning):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=200)
    preds = [_proba(rng, n=200) for _ in range(7)]
    best = np.eye(4)[y] * 0.6 + 0.1  # [N, K], right on every row
    preds.insert(4, best)
    draw = np.random.default_rng(0)
    bags = [tuning.bag(draw, preds, y, 4, anchored=True) for _ in range(30)]
    assert all(4 in b and len(set(b)) == 4 for b in bags)
    plain = [tuning.bag(draw, preds, y, 4, anchored=False) for _ in range(30)]
    assert any(4 not in b for b in plain)  # without the anchor it is left out of some bags


def test_the_tempered_cross_fit_records_its_temperatures_and_the_best_member(tuning):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, size=120)
    preds = [_proba(rng, n=120, k=3) for _ in range(3)]
    observed = np.ones((120, 2), dtype=bool)
    halves = []
    acc, loss = tuning.cross_fit(preds, y, observed, "tempered-anchored", 5, 0, 2, halves)
    assert len(halves) == 4 and all(len(h["temperatures"]) == 3 for h in halves)
    assert all(0 < h["best_weight"] <= 1 for h in halves)
    assert 0 <= acc <= 100 and loss > 0
    five = []
    tuning.cross_fit(preds, y, observed, "bagged", 5, 0, 2, five, folds=5)
    assert len(five) == 10 and all(h["temperatures"] is None for h in five)


def _frame(losses, accuracy):
    rows = []
    for (variant, scheme), per_case in losses.items():
        for case, value in per_case.items():
            rows.append(
                {
                    "case": case,
                    "seed": 100,
                    "model": f"ensemble ({variant})",
                    "scheme": scheme,
                    "oof_log_loss": value,
                    "oof_accuracy": accuracy.get((variant, scheme), 90.0),
                }
            )
    return pd.DataFrame(rows)


RULE = {
    "baseline": ["current", "bagged"],
    "candidates": {"T": ["current", "t"], "A": ["current", "a"], "TK": ["K", "t"]},
}


def test_the_rule_adopts_the_lowest_mean_ratio_with_ties_to_the_earlier(tuning):
    losses = {
        ("current", "bagged"): {"x": 1.0, "y": 1.0},
        ("current", "t"): {"x": 0.990, "y": 0.990},  # mean 0.990
        ("current", "a"): {"x": 0.989, "y": 0.989},  # within 0.002 of T: T, the earlier
        ("K", "t"): {"x": 0.95, "y": 1.02},  # lowest mean, but y rises by 2 %
    }
    checks = tuning.apply_rule(_frame(losses, {}), RULE)
    assert checks["adopted"] == "T"
    assert "not eligible" in checks["TK"]


def test_the_rule_adopts_nothing_when_accuracy_falls_or_no_mean_is_below_one(tuning):
    losses = {
        ("current", "bagged"): {"x": 1.0, "y": 1.0},
        ("current", "t"): {"x": 0.98, "y": 0.98},
        ("current", "a"): {"x": 1.0, "y": 1.001},
        ("K", "t"): {"x": 1.005, "y": 1.0},
    }
    accuracy = {("current", "t"): 89.9}  # below the baseline's 90.0
    assert tuning.apply_rule(_frame(losses, accuracy), RULE)["adopted"] == "nothing"


def test_the_gated_schemes_anchor_only_from_the_row_gate_and_with_dominance(tuning):
    rng = np.random.default_rng(5)
    n = 600
    y = rng.integers(0, 4, size=n)
    preds = [_proba(rng, n=n) for _ in range(5)]
    preds.insert(2, np.eye(4)[y] * 0.6 + 0.1)  # [N, K], dominant: right on every row
    keys = np.zeros(n, dtype=np.int64)

    def weights(scheme, rows):
        return tuning.grouped_weights(
            [p[:rows] for p in preds], y[:rows], keys[:rows], 5, 0, scheme
        )[0]

    small = tuning.ANCHOR_MIN_ROWS - 1
    for scheme in ("gated-anchored", "gated-dominant"):  # the gate shut: bagged as before
        assert weights(scheme, small) == weights("bagged", small)
        assert weights(scheme, n) == weights("anchored", n)  # open, and dominant
    # two equal best members: no dominance, so gated-dominant bags as before above the gate
    even = [preds[2], preds[2].copy(), *preds[3:]]
    pick = (even, y, keys, 5, 0)
    assert tuning.dominance_z(even, y) < tuning.DOMINANCE_Z
    bagged = tuning.grouped_weights(*pick, "bagged")[0]
    assert tuning.grouped_weights(*pick, "gated-dominant")[0] == bagged
    assert tuning.grouped_weights(*pick, "gated-anchored")[0] != bagged


def test_a_rule_is_checked_against_the_variants_and_schemes_before_the_run(tuning):
    variants, schemes = {"current": [], "K": ["x"]}, ["bagged", "t", "a"]
    tuning.check_rule(RULE, variants, schemes)  # every pair is run: no exit
    wrong = [
        {**RULE, "baseline": ["current", "global"]},  # a scheme not run
        {**RULE, "candidates": {"T": ["missing", "t"]}},  # a portfolio not run
        {"baseline": ["current", "bagged"]},  # no candidates
        {**RULE, "candidates": {"T": "current/t"}},  # not a pair
    ]
    for rule in wrong:
        with pytest.raises(SystemExit, match="--rule needs"):
            tuning.check_rule(rule, variants, schemes)


def test_the_accurate_scheme_anchors_only_a_dominant_member_that_is_the_most_accurate(tuning):
    rng = np.random.default_rng(6)
    n = 600
    y = rng.integers(0, 4, size=n)
    truth = np.eye(4)[y]  # [N, K]
    miss = (rng.random(n) < 0.1)[:, None]  # the dominant member is wrong on about 10 %
    wrong = np.eye(4)[(y + 1) % 4]
    dominant = np.where(miss, 0.5 * wrong + 0.2 * truth + 0.1, 0.6 * truth + 0.1)
    flat = 0.3 * truth + 0.7 / 3 * (1 - truth)  # right on every row, but a high log loss
    preds = [_proba(rng, n=n) for _ in range(3)] + [dominant, flat]
    keys = np.zeros(n, dtype=np.int64)
    assert tuning.dominance_z(preds, y) >= tuning.DOMINANCE_Z
    assert not tuning.most_accurate(preds, y, 3)  # the flat member is more accurate
    assert tuning.anchors("gated-dominant", preds, y)
    assert not tuning.anchors("gated-dominant-accurate", preds, y)

    def weights(scheme, members):
        return tuning.grouped_weights(members, y, keys, 5, 0, scheme)[0]

    assert weights("gated-dominant-accurate", preds) == weights("bagged", preds)
    assert weights("gated-dominant", preds) == weights("anchored", preds)
    # as accurate as the flat member (a tie counts as highest): anchored
    level = [*preds[:3], dominant, np.where(miss, 0.3 * wrong + 0.7 / 3 * (1 - wrong), flat)]
    assert tuning.most_accurate(level, y, 3)
    assert tuning.anchors("gated-dominant-accurate", level, y)
    assert weights("gated-dominant-accurate", level) == weights("anchored", level)
    # below the row gate, never
    assert not tuning.anchors("gated-dominant-accurate", [p[:100] for p in level], y[:100])


def test_the_rule_breaks_ties_within_its_own_tolerance(tuning):
    losses = {
        ("current", "bagged"): {"x": 1.0, "y": 1.0},
        ("current", "t"): {"x": 0.9985, "y": 0.9985},  # 0.0015 above A
        ("current", "a"): {"x": 0.997, "y": 0.997},
        ("K", "t"): {"x": 1.0, "y": 1.0},
    }
    frame = _frame(losses, {})
    assert tuning.apply_rule(frame, RULE)["adopted"] == "T"  # default tie: 0.002
    assert tuning.apply_rule(frame, {**RULE, "tie": 0.001})["adopted"] == "A"


def test_the_accurate_scheme_anchors_where_fit_auto_anchors(tuning):
    # the seventh round scored gated-dominant-accurate; fit_auto adopted it as dominant_member:
    # the same rows, the same anchor and the same accuracy (argmax of the same probabilities)
    from mlmm.tune import auto as A

    rng = np.random.default_rng(7)
    seen = {"anchored": 0, "refused for accuracy": 0, "no lead": 0}
    for n in (450, 600, 800) * 12:
        y = rng.integers(0, 3, size=n)
        truth = np.eye(3)[y]  # [N, K]
        preds = []
        for sharp, right in rng.uniform((0.3, 0.6), (0.9, 0.97), size=(4, 2)):
            hit = (rng.random(n) < right)[:, None]
            wrong = np.eye(3)[(y + rng.integers(1, 3, size=n)) % 3]
            preds.append(np.where(hit, sharp * truth, sharp * wrong) + (1 - sharp) / 3)
        anchored = tuning.anchors("gated-dominant-accurate", preds, y)
        dominant = A.dominant_member(preds, y, True)
        assert anchored == (dominant is not None)
        if anchored:
            seen["anchored"] += 1
            assert dominant == int(np.argmin([A._loss(p, y, True) for p in preds]))
        elif n >= A.ANCHOR_MIN_ROWS and tuning.anchors("gated-dominant", preds, y):
            seen["refused for accuracy"] += 1
        else:
            seen["no lead"] += 1
    assert min(seen.values()) > 0, seen  # every branch was compared


def test_an_extra_member_already_in_the_default_portfolio_is_refused(tuning):
    from mlmm.tune import auto as A

    def base(n):  # the default portfolio's labels for n training samples
        data = mlmm.MultimodalDataset(
            [mlmm.ModalitySpec("a", "vector", (4,)), mlmm.ModalitySpec("b", "vector", (2,))],
            mlmm.TaskSpec("classification", 3),
            {"a": np.zeros((n, 4)), "b": np.zeros((n, 2))},
            np.arange(n) % 3,
        )
        return [{"model": member_label(m)} for m in A.default_portfolio(data, "medium")[0]]

    kernel, n = A.KERNEL_MEMBER, A.KERNEL_MIN_SAMPLES
    with pytest.raises(SystemExit, match=re.escape(f"['{member_label(kernel)}'] are already")):
        tuning.check_extra([kernel], base(n), n, "hw05")
    other = {**kernel, "params": {**kernel["params"], "C": 0.003}}
    tuning.check_extra([other], base(n), n, "hw05")  # another C: a member of its own
    tuning.check_extra([kernel], base(n - 1), n - 1, "small")  # below the gate: not in the base


def test_the_syn300_case_is_auto_benchmarks_small_synthetic_part(tuning, auto_script):
    # the ninth round's fifth case: the same data, split and masks as benchmarks/auto.py's
    # run("small", "synthetic", ...) builds (its test_size computed the same way, to the bit)
    dataset, params, missing, test_size = tuning.CASES["syn300"]
    small, n_train = auto_script.SMALL["synthetic"]
    assert (dataset, params, missing) == ("synthetic", small, "mcar:0.3:unit=samples")
    assert test_size == 1 - n_train / small["n_samples"]
    train = tuning.training_part("syn300", 100)
    assert train.n_samples == n_train == 300
    assert 0.8 < train.observed.mean() < 1.0  # 30% of the samples lose some modality
