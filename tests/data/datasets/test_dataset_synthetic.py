"""The synthetic generator: data, exact Bayes posterior and Bayes accuracies."""

import itertools
import math
import re

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal, norm
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mlmm.data.datasets import (
    DATASETS,
    SyntheticGenerator,
    bayes_accuracy_under_mask,
    from_arrays,
    load_dataset,
    load_synthetic,
)
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError


def _se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def test_defaults_shapes_names_and_exact_class_balance():
    ds = load_dataset("synthetic")
    assert ds.n_samples == 12500
    assert ds.modality_names == ("m0", "m1", "m2")
    assert all(s.kind == "vector" and s.shape == (16,) for s in ds.specs)
    assert ds.task.n_classes == 4
    assert np.bincount(ds.targets).tolist() == [3125] * 4
    assert ds.observed.all()
    assert "synthetic" in DATASETS and DATASETS.get("synthetic").info["source"]


def test_per_modality_dims_and_snr_lists():
    ds = load_synthetic(n_samples=50, n_modalities=2, dims=[3, 7], snr=[1.0, 2.0], n_classes=3)
    assert [s.shape for s in ds.specs] == [(3,), (7,)]
    assert ds.meta["generator"].snr == (1.0, 2.0)


@pytest.mark.parametrize(
    "params, phrase",
    [
        ({"n_samples": 10**11}, "n_samples asks for 1e+11 values"),
        ({"n_samples": 10**7, "dims": 64}, "n_samples × sum(dims) asks for"),
        ({"dims": 10**9}, "lower dims or n_classes"),
        ({"n_classes": 10**6}, "n_classes must be at most 1000"),
        ({"n_modalities": 10**9}, "n_modalities must be at most 64"),
        ({"snr": math.inf}, "snr values must be positive numbers"),
        ({"snr": math.nan}, "snr values must be positive numbers"),
        ({"shared": math.nan}, "shared must be a number in [0, 1]"),
    ],
)
def test_sizes_and_numbers_are_checked_before_anything_is_allocated(params, phrase):
    with pytest.raises(MlmmError, match=re.escape(phrase)):
        load_synthetic(**params)


def test_default_snr_spreads_over_the_documented_range_for_any_modality_count():
    gen = load_synthetic(n_samples=10, n_modalities=5).meta["generator"]
    assert gen.snr == pytest.approx(np.linspace(1.15, 1.65, 5))
    assert load_synthetic(n_samples=10).meta["generator"].snr == pytest.approx((1.15, 1.4, 1.65))


def test_same_seed_same_data_and_other_seed_other_data():
    a, b = load_synthetic(n_samples=300, seed=7), load_synthetic(n_samples=300, seed=7)
    c = load_synthetic(n_samples=300, seed=8)
    for name in a.modality_names:
        np.testing.assert_array_equal(a.inputs[name], b.inputs[name])
        assert not np.allclose(a.inputs[name], c.inputs[name])
    np.testing.assert_array_equal(a.targets, b.targets)


def test_parameters_do_not_depend_on_n_samples():
    small = load_synthetic(n_samples=10, seed=3).meta["generator"]
    large = load_synthetic(n_samples=999, seed=3).meta["generator"]
    for name in small.modality_names:
        np.testing.assert_array_equal(small.class_means[name], large.class_means[name])


@pytest.mark.parametrize("dims", [16, 2])
def test_snr_is_the_rms_distance_of_class_means_from_their_centre(dims):
    gen = SyntheticGenerator.create(dims=dims, snr=(0.5, 1.0, 3.0), seed=4)
    for name, snr in zip(gen.modality_names, gen.snr, strict=True):
        mu = gen.class_means[name]
        rms = np.sqrt(((mu - mu.mean(axis=0)) ** 2).sum(axis=1).mean())
        assert rms == pytest.approx(snr, rel=1e-9)


def _pairwise_distances(mu: np.ndarray) -> np.ndarray:
    return np.linalg.norm(mu[:, None] - mu[None], axis=-1)


def test_shared_one_gives_the_same_class_geometry_in_every_modality():
    gen = SyntheticGenerator.create(snr=(1.0, 2.0, 3.0), shared=1.0, seed=5)
    shapes = [
        _pairwise_distances(gen.class_means[n]) / s
        for n, s in zip(gen.modality_names, gen.snr, strict=True)
    ]
    np.testing.assert_allclose(shapes[0], shapes[1], atol=1e-9)
    np.testing.assert_allclose(shapes[0], shapes[2], atol=1e-9)
    specific = SyntheticGenerator.create(snr=(1.0, 2.0, 3.0), shared=0.0, seed=5)
    d0 = _pairwise_distances(specific.class_means["m0"]) / 1.0
    d1 = _pairwise_distances(specific.class_means["m1"]) / 2.0
    assert np.abs(d0 - d1).max() > 0.1


def test_log_posterior_matches_gaussian_densities_computed_directly():
    gen = SyntheticGenerator.create(n_modalities=3, dims=[2, 3, 4], n_classes=3, seed=2)
    rng = np.random.default_rng(0)
    inputs, _ = gen.sample(6, rng)
    present = np.array(
        [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=bool
    )
    got = gen.log_posterior(inputs, present)
    for i in range(6):
        joint = np.zeros(3)
        for j, name in enumerate(gen.modality_names):
            if present[i, j]:
                mu = gen.class_means[name]
                joint += [
                    multivariate_normal(mu[k], np.eye(mu.shape[1])).logpdf(inputs[name][i])
                    for k in range(3)
                ]
        np.testing.assert_allclose(got[i], joint - logsumexp(joint), atol=1e-9)
    np.testing.assert_allclose(got[5], np.log(np.full(3, 1 / 3)))  # nothing present: prior


def test_log_posterior_never_reads_absent_rows():
    gen = SyntheticGenerator.create(seed=1)
    inputs, _ = gen.sample(20, np.random.default_rng(1))
    present = np.random.default_rng(2).random((20, 3)) < 0.5
    reference = gen.log_posterior(inputs, present)
    poisoned = {k: v.copy() for k, v in inputs.items()}
    for j, name in enumerate(gen.modality_names):
        poisoned[name][~present[:, j]] = np.nan
    np.testing.assert_array_equal(gen.log_posterior(poisoned, present), reference)


def test_two_class_bayes_accuracy_matches_the_closed_form():
    # Two classes at distance d_m = 2 snr_m per modality, unit noise, independent modalities:
    # the Bayes accuracy of subset S is Phi(sqrt(sum_{m in S} snr_m^2)).
    gen = SyntheticGenerator.create(n_classes=2, snr=(0.4, 0.7, 1.0), seed=9)
    n_mc = 100_000
    for subset, accuracy in gen.bayes_accuracy_table(n_mc=n_mc).items():
        snr = [gen.snr[gen.modality_names.index(m)] for m in subset]
        exact = norm.cdf(math.sqrt(sum(s**2 for s in snr)))
        assert accuracy == pytest.approx(exact, abs=4 * _se(exact, n_mc)), subset


def test_realised_bayes_accuracy_matches_the_monte_carlo_estimate():
    ds = load_synthetic(n_samples=20_000, seed=1)
    gen = ds.meta["generator"]
    expected = gen.bayes_accuracy(n_mc=100_000)
    tolerance = 4 * math.sqrt(expected * (1 - expected) * (1 / 20_000 + 1 / 100_000))
    assert bayes_accuracy_under_mask(ds) == pytest.approx(expected, abs=tolerance)


def test_bayes_accuracy_under_a_mixed_mask_is_the_pattern_weighted_accuracy():
    ds = load_synthetic(n_samples=20_000, seed=2)
    gen = ds.meta["generator"]
    rng = np.random.default_rng(0)
    patterns = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 1]], dtype=bool)
    present = patterns[rng.integers(3, size=ds.n_samples)]
    masked = ds.with_presence(present)
    table = gen.bayes_accuracy_table(n_mc=100_000)
    expected = sum(
        (present == p).all(axis=1).mean() * table[tuple(np.asarray(gen.modality_names)[p])]
        for p in patterns
    )
    got = bayes_accuracy_under_mask(masked)
    assert got == pytest.approx(expected, abs=4 * _se(expected, 20_000) + 0.003)
    assert got < bayes_accuracy_under_mask(ds)  # hiding modalities costs accuracy


def test_more_modalities_never_lower_bayes_accuracy():
    table = load_synthetic(n_samples=10).meta["generator"].bayes_accuracy_table(n_mc=100_000)
    assert len(table) == 7
    for subset, accuracy in table.items():
        for extra in {"m0", "m1", "m2"} - set(subset):
            larger = tuple(sorted((*subset, extra)))
            assert table[larger] >= accuracy - 0.002, (subset, larger)


def test_default_bayes_accuracies_are_as_documented():
    gen = load_synthetic(n_samples=10).meta["generator"]
    table = gen.bayes_accuracy_table(n_mc=100_000)
    assert table[("m0", "m1", "m2")] == pytest.approx(0.895, abs=0.01)
    assert all(0.55 <= table[(m,)] <= 0.75 for m in ("m0", "m1", "m2"))
    assert gen.bayes_accuracy(("m1", "m2"), n_mc=100_000) == table[("m1", "m2")]
    assert gen.bayes_accuracy(n_mc=100_000) == table[("m0", "m1", "m2")]


def test_logistic_regression_approaches_but_does_not_beat_bayes():
    # Equal isotropic covariances make the Bayes rule linear, so a multinomial logistic
    # regression is well specified: with 10,000 training rows it should come close.
    ds = load_synthetic(seed=0)
    split = train_val_test_split(ds, test_size=0.2, val_size=0.0, seed=0)
    train, test = (
        np.concatenate([d.inputs[m] for m in ds.modality_names], axis=1)
        for d in (split.train, split.test)
    )
    scaler = StandardScaler().fit(train)
    with threadpool_limits(limits=1):  # multi-threaded BLAS is slower on tiny problems
        model = LogisticRegression(max_iter=1000).fit(scaler.transform(train), split.train.targets)
    learned = (model.predict(scaler.transform(test)) == split.test.targets).mean()
    bayes = bayes_accuracy_under_mask(split.test)  # same test rows: a paired comparison
    assert bayes - 0.03 <= learned <= bayes + 0.015


def test_sample_iid_labels_follow_the_uniform_prior():
    gen = SyntheticGenerator.create(n_classes=5, seed=0)
    inputs, targets = gen.sample(10_000, np.random.default_rng(0))
    counts = np.bincount(targets, minlength=5)
    assert np.abs(counts - 2000).max() < 4 * math.sqrt(10_000 * 0.2 * 0.8)
    assert inputs["m0"].shape == (10_000, 16)
    # noise is unit-variance around the class means
    residual = inputs["m1"] - gen.class_means["m1"][targets]
    assert residual.std() == pytest.approx(1.0, abs=0.01)


def test_subset_errors_name_the_problem():
    gen = SyntheticGenerator.create(seed=0)
    with pytest.raises(MlmmError, match="Did you mean 'm1'"):
        gen.bayes_accuracy(("m1x",))
    with pytest.raises(MlmmError, match="at least one modality"):
        gen.bayes_accuracy(())


def test_bayes_accuracy_under_mask_needs_a_synthetic_dataset():
    ds = from_arrays({"a": np.zeros((4, 2))}, [0, 1, 0, 1])
    with pytest.raises(MlmmError, match="no SyntheticGenerator"):
        bayes_accuracy_under_mask(ds)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dims": [4, 4]}, "dims needs one value or one per modality"),
        ({"snr": [1.0, -1.0, 1.0]}, "snr values must be positive"),
        ({"shared": 1.5}, r"shared must be a number in \[0, 1\]"),
        ({"n_classes": 1}, "n_classes must be at least 2"),
        ({"n_samples": 0}, "n_samples must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"n_modalities": 0}, "n_modalities must be a positive integer"),
    ],
)
def test_invalid_parameters_raise_clear_errors(params, message):
    with pytest.raises(MlmmError, match=message):
        load_synthetic(**params)


def test_table_covers_every_non_empty_subset_in_order():
    gen = SyntheticGenerator.create(n_modalities=3, seed=0)
    keys = list(gen.bayes_accuracy_table(n_mc=1000))
    expected = [c for r in (1, 2, 3) for c in itertools.combinations(("m0", "m1", "m2"), r)]
    assert keys == expected


# ---------------------------------------------------------------- Bayes posterior under MNAR
def _mnar_halves(n: int = 12_000):
    """A training and a test half of one synthetic draw (the halves are i.i.d.)."""
    from mlmm.data.datasets.synthetic import load_synthetic

    data = load_synthetic(n_samples=2 * n, seed=0)
    return data, data.subset(np.arange(n)), data.subset(np.arange(n, 2 * n))


def test_mnar_bayes_beats_the_per_pattern_prior_baseline():
    # under MNAR the presence pattern carries class information: the ignorable posterior is
    # beaten by adding a per-pattern class prior (issue: 70.10 -> 71.37%), and the true
    # p(y | x_obs, R) must beat both, within its Monte Carlo error
    from mlmm.data.datasets.synthetic import mnar_bayes_accuracy
    from mlmm.data.missingness import parse_missingness, simulate

    data, train, test = _mnar_halves()
    generator = data.meta["generator"]
    model = parse_missingness("mnar:0.5")
    masked_train, _ = simulate(train, model, 1)
    masked, _ = simulate(test, model, 2)
    log_posterior = generator.log_posterior(masked.inputs, masked.observed)  # ignorable
    ignorable = (log_posterior.argmax(1) == masked.targets).mean()
    prior = {}
    for pattern in np.unique(masked_train.observed, axis=0):
        rows = (masked_train.observed == pattern).all(axis=1)
        counts = np.bincount(masked_train.targets[rows], minlength=generator.n_classes)
        prior[pattern.tobytes()] = np.log(counts / rows.sum() + 1e-12)
    pattern_prior = np.stack([prior[row.tobytes()] for row in masked.observed])
    per_pattern = ((log_posterior + pattern_prior).argmax(1) == masked.targets).mean()
    assert per_pattern > ignorable  # the finding: the ignorable posterior is not Bayes
    accuracy, error = mnar_bayes_accuracy(masked, model.fit_law(test), n_mc=600, seed=0)
    assert 0 < error < 0.005
    assert accuracy >= per_pattern - 2 * error, (accuracy, error, per_pattern, ignorable)
    assert accuracy > ignorable + 0.01  # measured: 72.3 vs 70.2 (per-pattern prior 70.5)


def test_mnar_posterior_reduces_to_the_ignorable_one_without_value_dependence():
    # strength 0: the drop probability no longer depends on the values, R says nothing of y
    from mlmm.data.missingness import parse_missingness, simulate

    data, _, test = _mnar_halves(2000)
    generator = data.meta["generator"]
    model = parse_missingness("mnar:0.5:strength=0")
    masked, _ = simulate(test, model, 0)
    exact = generator.log_posterior(masked.inputs, masked.observed)
    mc = generator.log_posterior_mnar(masked.inputs, masked.observed, model.fit_law(test), 200)
    np.testing.assert_allclose(mc, exact, atol=1e-9)


def test_mnar_posterior_is_calibrated():
    # for the true posterior the mean top probability equals the accuracy (up to sampling);
    # its log-loss is lower than the ignorable posterior's
    from mlmm.data.missingness import parse_missingness, simulate

    data, _, test = _mnar_halves()
    generator = data.meta["generator"]
    model = parse_missingness("mnar:0.5")
    masked, _ = simulate(test, model, 2)
    mc = generator.log_posterior_mnar(masked.inputs, masked.observed, model.fit_law(test), 600)
    ignorable = generator.log_posterior(masked.inputs, masked.observed)
    rows = np.arange(len(masked.targets))
    accuracy = (mc.argmax(1) == masked.targets).mean()
    assert abs(np.exp(mc).max(1).mean() - accuracy) < 0.015
    assert -mc[rows, masked.targets].mean() < -ignorable[rows, masked.targets].mean() - 0.02
