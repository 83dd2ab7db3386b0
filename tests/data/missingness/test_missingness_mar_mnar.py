"""MAR and MNAR: calibrated rates, the direction of the dependence, the driver, errors."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import MAR, MNAR, first_pc_score, parse_missingness
from mlmm.data.missingness.calibration import calibrated_removal
from mlmm.errors import MlmmError

TOL = 0.02


def quartile_drop_rates(values: np.ndarray, dropped: np.ndarray) -> tuple[float, float]:
    """Drop rate among the lowest and the highest quarter of ``values``."""
    low, high = np.quantile(values, [0.25, 0.75])
    return float(dropped[values <= low].mean()), float(dropped[values >= high].mean())


def test_first_pc_score_by_hand():
    score = first_pc_score(np.array([[1.0], [2.0], [3.0], [9.0]]), np.array([1, 1, 1, 0], bool))
    assert np.allclose(score, [-np.sqrt(1.5), 0.0, np.sqrt(1.5), 0.0])
    t = np.linspace(-1, 1, 50)
    values = np.stack([t, -2 * t], axis=1)  # first PC along (1, -2): largest loading is -2
    assert np.allclose(first_pc_score(values, np.ones(50, bool)), -t / t.std())
    assert not first_pc_score(np.ones((5, 3)), np.ones(5, bool)).any()  # constant: no score


@pytest.mark.parametrize("spec", ["mar:0.2", "mar:0.4", "mar:0.6:strength=4"])
def test_mar_slot_rate_matches_and_driver_stays(full_data, spec):
    result = parse_missingness(spec).apply(full_data, seed=0)
    rate = parse_missingness(spec).rate
    assert abs(result.realised_rate - rate) < TOL
    assert result.per_modality["pix"] == 0.0  # default driver: the first modality
    assert result.present.any(axis=1).all()


def test_mar_sample_unit_and_named_driver(full_data):
    result = parse_missingness("mar:0.5:driver=fou:unit=samples").apply(full_data, seed=0)
    assert abs(result.sample_rate - 0.5) < TOL
    assert result.per_modality["fou"] == 0.0 and result.per_modality["pix"] > 0.1


@pytest.mark.parametrize("strength, rises", [(2.0, True), (-2.0, False)])
def test_mar_drop_probability_follows_driver(full_data, strength, rises):
    result = MAR(0.3, strength=strength).apply(full_data, seed=0)
    driver = full_data.inputs["pix"][:, 0]  # 1-D driver: its score is its z-scored value
    for j in (1, 2):
        low, high = quartile_drop_rates(driver, result.removed[:, j])
        assert (high > low + 0.3) if rises else (low > high + 0.3)


def test_mar_strength_zero_is_flat(full_data):
    result = MAR(0.3, strength=0.0).apply(full_data, seed=0)
    low, high = quartile_drop_rates(full_data.inputs["pix"][:, 0], result.removed[:, 1])
    assert abs(high - low) < 0.04


def test_mar_driver_missing_rows_keep_a_modality(gappy_data):
    result = MAR(0.5).apply(gappy_data, seed=0)
    assert result.present.any(axis=1).all()
    assert not (result.present & ~gappy_data.observed).any()
    assert not result.removed[:, 0].any()


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "mar:0.7",
            r"infeasible: the maximum is 0.6667 .*the driver 'pix' is never removed; "
            r"lower the rate$",
        ),
        (
            "mar:0.3:driver=fuo",
            r"unknown modality 'fuo' in 'mar:0.3:driver=fuo'\. Did you mean 'fou'\?",
        ),
    ],
)
def test_mar_errors(full_data, spec, message):
    with pytest.raises(MlmmError, match=message):
        parse_missingness(spec).apply(full_data, seed=0)


def test_mar_needs_two_modalities(make_data):
    data = make_data(50)
    one = MultimodalDataset(data.specs[:1], data.task, {"pix": data.inputs["pix"]}, data.targets)
    with pytest.raises(MlmmError, match="needs at least 2 modalities"):
        MAR(0.3).apply(one, seed=0)


@pytest.mark.parametrize("mode", ["extreme", "high", "low"])
@pytest.mark.parametrize("unit, rate", [("slots", 0.3), ("slots", 0.6), ("samples", 0.5)])
def test_mnar_rate_matches(full_data, mode, unit, rate):
    result = MNAR(rate, mode=mode, unit=unit).apply(full_data, seed=0)
    assert abs(result.realised_rate - rate) < TOL
    assert result.present.any(axis=1).all()


def test_mnar_extreme_readings_go_missing(full_data):
    result = MNAR(0.3).apply(full_data, seed=0)
    x = np.abs(full_data.inputs["pix"][:, 0])
    dropped = result.removed[:, 0]
    assert x[dropped].mean() > x[~dropped].mean() + 0.3
    fou = np.abs(first_pc_score(full_data.inputs["fou"], full_data.observed[:, 1]))
    assert fou[result.removed[:, 1]].mean() > fou[~result.removed[:, 1]].mean() + 0.3


@pytest.mark.parametrize("mode, sign", [("high", 1), ("low", -1)])
def test_mnar_high_and_low(full_data, mode, sign):
    result = MNAR(0.3, mode=mode).apply(full_data, seed=0)
    x = full_data.inputs["pix"][:, 0]
    dropped = result.removed[:, 0]
    assert sign * (x[dropped].mean() - x[~dropped].mean()) > 0.5


def test_mnar_and_mar_are_reproducible(full_data):
    for model in (MNAR(0.4), MAR(0.4)):
        a, b = model.apply(full_data, seed=5), model.apply(full_data, seed=5)
        assert np.array_equal(a.present, b.present)
        assert not np.array_equal(a.present, model.apply(full_data, seed=6).present)


def test_mnar_allow_empty_and_infeasible(full_data):
    free = MNAR(0.6, allow_empty=True).apply(full_data, seed=0)
    assert (~free.present.any(axis=1)).any()
    assert abs(free.realised_rate - 0.6) < TOL
    with pytest.raises(MlmmError, match=r"the maximum is 0.6667 .*add ':allow_empty'"):
        MNAR(0.7).apply(full_data, seed=0)


@pytest.mark.parametrize(
    "spec",
    [
        "mar:0.5:strength=200",  # realised 0.399 when theta's search stopped at +-60
        "mar:0.5:strength=-200",
        "mnar:0.3:strength=1e4",  # realised 0.318
        "mnar:0.3:strength=1e4:unit=samples",
        "mar:0.6:strength=1e4:unit=samples",
    ],
)
def test_strong_dependence_still_meets_the_rate(full_data, spec):
    model = parse_missingness(spec)
    result = model.apply(full_data, seed=0)
    assert abs(result.realised_rate - model.rate) < 0.005  # near-deterministic drops
    assert result.present.any(axis=1).all()


@pytest.mark.parametrize("strength", ["1e5", "-2e4", "1e308"])
def test_strength_is_bounded(strength):
    with pytest.raises(MlmmError, match=r"strength must be a number in \[-10000, 10000\]"):
        parse_missingness(f"mnar:0.3:strength={strength}")


def test_a_rate_that_cannot_be_calibrated_is_refused():
    # offsets so large that float64 cannot place theta between them: the expected rate jumps
    offsets = np.array([[1e17, -np.inf], [-1e17, -np.inf]] * 50)  # [100, 2]
    observed = np.ones((100, 2), dtype=bool)
    with pytest.raises(MlmmError, match=r"cannot be met: .*\(closest [0-9.]+\) .*smaller strength"):
        calibrated_removal(
            offsets, observed, 0.2, "slots", True, np.random.default_rng(0), "mar:0.2"
        )
