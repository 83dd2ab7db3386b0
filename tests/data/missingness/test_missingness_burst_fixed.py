"""Bursty outages (Gilbert-Elliott) and fixed patterns."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import numpy as np
import pytest

from mlmm.data.missingness import Burst, Fixed, gilbert_elliott, parse_missingness
from mlmm.errors import MlmmError


def run_lengths(flags: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a 1-D boolean array."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize("rate, length", [(0.3, 20), (0.1, 5), (0.5, 1)])
def test_gilbert_elliott_rate_and_outage_length(rate, length):
    outage = gilbert_elliott(200_000, rate, length, np.random.default_rng(0))
    assert outage.shape == (200_000,) and outage.dtype == bool
    assert abs(outage.mean() - rate) < 0.02
    assert abs(run_lengths(outage).mean() - length) < 0.08 * length
    good_length = length * (1 - rate) / rate  # mean gap between outages
    assert abs(run_lengths(~outage).mean() - good_length) < 0.08 * good_length


def test_gilbert_elliott_is_bursty_seeded_and_edge_cases():
    a = gilbert_elliott(5000, 0.3, 20, 1)
    assert np.array_equal(a, gilbert_elliott(5000, 0.3, 20, np.random.default_rng(1)))
    assert not np.array_equal(a, gilbert_elliott(5000, 0.3, 20, 2))
    assert np.mean(a[1:] == a[:-1]) > 0.9  # iid at 0.3 would agree only 58% of the time
    assert not gilbert_elliott(100, 0.0, 20, 0).any()
    assert gilbert_elliott(0, 0.3, 20, 0).shape == (0,)
    with pytest.raises(MlmmError, match=r"len >= 9"):
        gilbert_elliott(10, 0.9, 2, 0)
    with pytest.raises(MlmmError, match="at least 1 step"):
        gilbert_elliott(10, 0.3, 0.5, 0)


def in_time_order(data):
    """The same data, declaring its rows consecutive time steps."""
    return replace(data, meta={**data.meta, "time_ordered": True})


def test_burst_model_rate_and_outage_length(full_data):
    full_data = in_time_order(full_data)
    result = parse_missingness("burst:0.3:len=20").apply(full_data, seed=0)
    # keeping one modality where all three are out lowers the rate by about 0.3**3 / 3
    assert abs(result.realised_rate - (0.3 - 0.3**3 / 3)) < 0.03
    assert result.present.any(axis=1).all()
    free = parse_missingness("burst:0.3:len=20:allow_empty").apply(full_data, seed=0)
    assert abs(free.realised_rate - 0.3) < 0.03
    runs = np.concatenate([run_lengths(free.removed[:, j]) for j in range(3)])
    assert abs(runs.mean() - 20) < 2.5
    assert (~free.present.any(axis=1)).any()


def test_burst_keeps_one_modality_even_at_high_rates(full_data, gappy_data):
    for data in (full_data, gappy_data):
        result = Burst(0.8, 5).apply(data, seed=0)
        assert result.present.any(axis=1).all()
        assert not (result.present & ~data.observed).any()
    kept = Burst(0.8, 5).apply(full_data, seed=0).present
    assert (kept.sum(axis=1) == 1).mean() > 0.3
    assert min(kept[:, j].mean() for j in range(3)) > 0.15  # the one kept is not always the same


def test_gilbert_elliott_memory_is_bounded_by_the_rows_not_by_len():
    tracemalloc.start()
    outage = gilbert_elliott(1000, 0.3, 1e6, 0)  # used to allocate about 3.3 GB
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert outage.shape == (1000,) and peak < 1_000_000
    # a tiny P(good -> bad) saturates numpy's geometric draws at 2**63 - 1: no overflow
    assert not gilbert_elliott(500, 1e-12, 1e9, 0).any()
    assert gilbert_elliott(500, 0.999, 1e9, 3).shape == (500,)


@pytest.mark.parametrize("spec", ["burst:0.3:len=1e308", "burst:0.3:len=2e9"])
def test_burst_length_is_bounded_in_the_grammar(spec):
    with pytest.raises(MlmmError, match=r"len must be at most 1000000000 steps, got"):
        parse_missingness(spec)


def test_burst_on_data_without_time_order_does_not_cluster_by_class(make_data):
    data = make_data(6000)
    order = np.argsort(data.targets, kind="stable")
    by_class = data.subset(order)  # rows sorted by class, as the built-in datasets are
    classes = by_class.targets
    result = Burst(0.3, 500, allow_empty=True).apply(by_class, seed=0)
    per_class = [result.removed[classes == c].mean() for c in (0, 1)]
    assert abs(per_class[0] - per_class[1]) < 0.03 and abs(np.mean(per_class) - 0.3) < 0.03
    # in time order the chains follow the rows: a few outages of ~500 rows each, one class
    # gets far more than the other for this seed (that was the bug on non-temporal data)
    ordered = Burst(0.3, 500, allow_empty=True).apply(in_time_order(by_class), seed=0)
    per_class = [ordered.removed[classes == c].mean() for c in (0, 1)]
    assert abs(per_class[0] - per_class[1]) > 0.05
    runs = run_lengths(ordered.removed[:, 0])
    assert runs.mean() > 100  # bursts along the rows


def test_burst_is_reproducible(full_data):
    model = Burst(0.3, 10)
    a = model.apply(full_data, seed=4)
    assert np.array_equal(a.present, model.apply(full_data, seed=4).present)
    assert not np.array_equal(a.present, model.apply(full_data, seed=5).present)


def test_fixed_remove_and_keep_only(full_data, gappy_data):
    removed = parse_missingness("fixed:-pix").apply(full_data, seed=0)
    assert removed.per_modality == {"pix": 1.0, "fou": 0.0, "kar": 0.0}
    assert removed.removed[:, 0].all() and not removed.removed[:, 1:].any()
    other_seed = parse_missingness("fixed:-pix").apply(full_data, seed=99)
    assert np.array_equal(removed.present, other_seed.present)  # nothing random
    keep = Fixed(("fou", "kar"), keep=True).apply(full_data, seed=0)
    assert np.array_equal(keep.present, removed.present)
    with_fou = gappy_data.subset(gappy_data.observed[:, 1])
    result = parse_missingness("fixed:+fou").apply(with_fou, seed=0)
    assert np.array_equal(result.present[:, 1], with_fou.observed[:, 1])
    assert not result.present[:, [0, 2]].any()
    assert np.array_equal(result.removed[:, [0, 2]], with_fou.observed[:, [0, 2]])


def test_fixed_that_empties_samples_raises_or_allows(gappy_data):
    # rows holding only pix lose everything under +fou+kar / -pix
    lone_pix = (gappy_data.observed == [True, False, False]).all(axis=1).sum()
    assert lone_pix > 0
    with pytest.raises(
        MlmmError, match=rf"leaves {lone_pix} of 20000 sample\(s\) with no modality"
    ):
        parse_missingness("fixed:+fou+kar").apply(gappy_data, seed=0)
    result = parse_missingness("fixed:+fou+kar:allow_empty").apply(gappy_data, seed=0)
    assert (~result.present.any(axis=1)).sum() == lone_pix


def test_fixed_unknown_modality(full_data):
    with pytest.raises(
        MlmmError, match=r"unknown modality 'kra' in 'fixed:-kra'\. Did you mean 'kar'\?"
    ):
        parse_missingness("fixed:-kra").apply(full_data, seed=0)


def test_burst_that_can_remove_nothing_raises_instead_of_a_silent_zero_rate(make_data):
    # one observed modality per sample: one is kept, so burst removed nothing (rate 0) silently
    # where mcar and mnar say the rate is infeasible
    from mlmm.data.missingness import simulate

    observed = np.zeros((50, 3), bool)
    observed[:, 1] = True
    data = make_data(50, observed=observed)
    with pytest.raises(MlmmError, match=r"'burst:0.3:len=3' can remove nothing.*allow_empty"):
        simulate(data, "burst:0.3:len=3", seed=0)
    masked, _ = simulate(data, "burst:0.3:len=3:allow_empty", seed=0)
    assert 0 < (~masked.observed[:, 1]).sum() < 50
    masked, _ = simulate(data, "burst:0:len=3", seed=0)  # rate 0 removes nothing, as asked
    assert (masked.observed == observed).all()
