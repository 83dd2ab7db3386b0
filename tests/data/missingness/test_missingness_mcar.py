"""MCAR: calibrated rates in both units, per-modality rates, the guarantee, seeds, feasibility."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import MCAR, parse_missingness
from mlmm.data.missingness.calibration import _draw_keeping_one, conditional_rates, draw_removal
from mlmm.errors import MlmmError

TOL = 0.02


def no_empty_rows(result) -> bool:
    return bool(result.present.any(axis=1).all())


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.65])
def test_slot_rate_matches_request(full_data, rate):
    result = parse_missingness(f"mcar:{rate}").apply(full_data, seed=0)
    assert result.unit == "slots"
    assert abs(result.slot_rate - rate) < TOL
    assert abs(result.realised_rate - rate) < TOL
    assert no_empty_rows(result)
    for value in result.per_modality.values():  # one rate for all modalities
        assert abs(value - rate) < TOL


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.9])
def test_sample_rate_matches_request(full_data, rate):
    result = parse_missingness(f"mcar:{rate}:unit=samples").apply(full_data, seed=0)
    assert result.unit == "samples"
    assert abs(result.sample_rate - rate) < TOL
    assert no_empty_rows(result)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("mcar:pix=0.8,fou=0.2", {"pix": 0.8, "fou": 0.2, "kar": 0.0}),
        ("mcar:pix=0.8,fou=0.6,kar=0.5", {"pix": 0.8, "fou": 0.6, "kar": 0.5}),
        ("mcar:kar=0.9:allow_empty", {"pix": 0.0, "fou": 0.0, "kar": 0.9}),
    ],
)
def test_per_modality_rates_match_request(full_data, spec, expected):
    result = parse_missingness(spec).apply(full_data, seed=0)
    for name, rate in expected.items():
        assert abs(result.per_modality[name] - rate) < TOL, name
    assert no_empty_rows(result)
    unlisted = [j for j, name in enumerate(result.modalities) if expected[name] == 0.0]
    assert not result.removed[:, unlisted].any()


def test_rates_count_observed_slots_and_never_add_modalities(gappy_data):
    observed = gappy_data.observed
    for spec in ["mcar:0.4", "mcar:pix=0.5,kar=0.3", "mcar:0.4:unit=samples"]:
        result = parse_missingness(spec).apply(gappy_data, seed=3)
        assert not (result.present & ~observed).any()
        assert not (result.removed & ~observed).any()
        assert np.array_equal(result.present | result.removed, observed)
        assert no_empty_rows(result)
    result = parse_missingness("mcar:0.4").apply(gappy_data, seed=3)
    assert abs(result.realised_rate - 0.4) < TOL  # over observed slots...
    assert abs(result.slot_rate - (1 - 0.6 * observed.mean())) < TOL  # ...not over all slots
    result = parse_missingness("mcar:pix=0.5,kar=0.3").apply(gappy_data, seed=3)
    removed_share = result.removed.sum(axis=0) / observed.sum(axis=0)
    assert np.allclose(removed_share, [0.5, 0.0, 0.3], atol=TOL)


def test_rows_already_empty_are_left_alone(make_data):
    observed = np.ones((4000, 3), dtype=bool)
    observed[:100] = False
    data = make_data(4000, observed=observed, allow_empty=True)
    result = parse_missingness("mcar:0.5").apply(data, seed=0)
    assert not result.present[:100].any() and not result.removed[:100].any()
    assert result.present[100:].any(axis=1).all()


def test_allow_empty_lets_rows_empty(full_data):
    guarded = parse_missingness("mcar:0.6").apply(full_data, seed=0)
    free = parse_missingness("mcar:0.6:allow_empty").apply(full_data, seed=0)
    assert no_empty_rows(guarded)
    empty = (~free.present.any(axis=1)).mean()
    assert abs(empty - 0.6**3) < TOL  # fully independent drops
    assert abs(free.slot_rate - 0.6) < TOL


def test_guarantee_holds_near_the_maximum(full_data):
    result = parse_missingness("mcar:0.66").apply(full_data, seed=1)
    assert no_empty_rows(result)
    assert abs(result.slot_rate - 0.66) < TOL


def test_closed_form_conditional_rates_by_hand():
    p = np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.0]])
    observed = np.array([[True, True], [True, False], [True, True]])
    drop, incomplete = conditional_rates(p, observed, allow_empty=False)
    # row 0: Q = 1/4, E[drop] = (1/2 - 1/4) / (3/4) = 1/3, P(incomplete) = 1 - (1/4)/(3/4) = 2/3
    # row 1: a lone observed modality is never dropped; row 2: Q = 0, so no conditioning
    assert np.allclose(drop, [[1 / 3, 1 / 3], [0, 0], [0.2, 0]])
    assert np.allclose(incomplete, [2 / 3, 0, 0.2])
    drop, incomplete = conditional_rates(p, observed, allow_empty=True)
    assert np.allclose(drop, [[0.5, 0.5], [0.5, 0], [0.2, 0]])
    assert np.allclose(incomplete, [0.75, 0.5, 0.2])


@pytest.mark.parametrize("sampler", ["rejection", "sequential"])
def test_guarantee_redraws_rows_instead_of_forcing_a_modality(sampler):
    # two modalities at p = 1/2, conditioned on keeping one: keep both / drop a / drop b,
    # each with probability 1/3 (forcing a fixed modality would never drop it)
    rng = np.random.default_rng(0)
    p = np.full((30_000, 2), 0.5)
    observed = np.ones_like(p, dtype=bool)
    if sampler == "rejection":
        removed = draw_removal(p, observed, allow_empty=False, rng=rng)
    else:
        removed = _draw_keeping_one(p, observed, rng)
    assert not removed.all(axis=1).any()
    freq = [(~removed.any(axis=1)).mean(), removed[:, 0].mean(), removed[:, 1].mean()]
    assert np.allclose(freq, 1 / 3, atol=TOL)


def test_draw_terminates_when_rejection_would_loop():
    p = np.full((500, 3), 1.0)  # clipped just below 1: rejection alone would take ~1e9 rounds
    removed = draw_removal(p, np.ones((500, 3), dtype=bool), False, np.random.default_rng(0))
    assert (removed.sum(axis=1) == 2).all()


def test_seeds_reproduce_and_differ(full_data):
    model = parse_missingness("mcar:0.5")
    a, b = model.apply(full_data, seed=7), model.apply(full_data, seed=7)
    assert np.array_equal(a.present, b.present)
    assert not np.array_equal(a.present, model.apply(full_data, seed=8).present)
    from_generator = model.apply(full_data, np.random.default_rng(7))
    assert np.array_equal(a.present, from_generator.present)


def test_no_global_random_state(full_data):
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    parse_missingness("mcar:0.5").apply(full_data, seed=0)
    assert np.random.random() == before


@pytest.mark.parametrize("seed", [None, 1.0, True, -1, np.int64(-3)])
def test_bad_seed_raises(full_data, seed):
    # a negative int was numpy's "ValueError: expected non-negative integer"
    with pytest.raises(MlmmError, match="seed must be a non-negative int or a numpy Generator"):
        parse_missingness("mcar:0.5").apply(full_data, seed=seed)


def test_zero_rate_removes_nothing(full_data):
    assert not parse_missingness("mcar:0").apply(full_data, seed=0).removed.any()


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "mcar:0.7",
            r"missing rate 0.7 in 'mcar:0.7' is infeasible: the maximum is 0.6667 .*"
            r"keeping at least one modality per sample; lower the rate or add ':allow_empty'",
        ),
        ("mcar:pix=0.9,fou=0.9,kar=0.9", r"per-modality rates .* infeasible .* ':allow_empty'"),
        ("mcar:pixx=0.5", r"unknown modality 'pixx' in 'mcar:pixx=0.5'\. Did you mean 'pix'\?"),
    ],
)
def test_infeasible_or_unknown_raise(full_data, spec, message):
    with pytest.raises(MlmmError, match=message):
        parse_missingness(spec).apply(full_data, seed=0)
    assert parse_missingness("mcar:0.7:allow_empty").apply(full_data, seed=0).slot_rate > 0.65


def test_sample_rate_infeasible_when_rows_hold_one_modality(make_data):
    observed = np.ones((2000, 3), dtype=bool)
    observed[:1000, 1:] = False  # half the samples only have pix: they cannot lose anything
    data = make_data(2000, observed=observed)
    with pytest.raises(MlmmError, match=r"the maximum is 0.5 \(fraction of samples made"):
        MCAR(0.6, unit="samples").apply(data, seed=0)
    result = MCAR(0.45, unit="samples").apply(data, seed=0)
    assert abs(result.realised_rate - 0.45) < 0.04
    assert not result.removed[:1000].any()


def test_single_modality_dataset_cannot_lose_its_modality(make_data):
    data = make_data(100)
    one = MultimodalDataset(data.specs[:1], data.task, {"pix": data.inputs["pix"]}, data.targets)
    with pytest.raises(MlmmError, match="the maximum is 0 "):
        MCAR(0.3).apply(one, seed=0)
