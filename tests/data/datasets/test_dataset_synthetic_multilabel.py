"""synthetic-multilabel's exact Bayes posterior: each label's p(y_l = 1 | x_obs)."""

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from mlmm.data.datasets import MultilabelGenerator, load_dataset
from mlmm.data.datasets.synthetic_multilabel import MAX_EXACT_LABELS
from mlmm.errors import MlmmError


def _by_scipy(gen: MultilabelGenerator, x: dict, row: int, present: np.ndarray) -> np.ndarray:
    """p(y_l = 1 | x_obs) of one row by enumerating the label vectors with scipy's densities."""
    vectors = np.array(list(itertools.product([0, 1], repeat=gen.n_labels)), dtype=float)
    logs = []
    for y in vectors:
        log = np.sum(y * np.log(gen.rates) + (1 - y) * np.log(1 - gen.rates))
        for j, name in enumerate(gen.modality_names):
            if present[j]:
                mean = gen.offsets[name] + y @ gen.signals[name]
                log += multivariate_normal(mean, np.eye(gen.dim)).logpdf(x[name][row])
        logs.append(log)
    weights = np.exp(np.array(logs) - logsumexp(logs))  # [C]
    return weights @ vectors  # [L]


def test_the_loader_keeps_its_samples_and_carries_the_generator():
    ds = load_dataset("synthetic-multilabel", n_samples=300, n_modalities=3, dim=5, n_labels=4)
    gen = ds.meta["generator"]
    assert isinstance(gen, MultilabelGenerator) and gen.exact_posterior
    assert (gen.n_labels, gen.n_modalities, gen.dim) == (4, 3, 5)
    np.testing.assert_array_equal(ds.meta["rates"], np.linspace(0.15, 0.5, 4))
    # label 1 is seen strongly by m1, with a third of the amplitude by m0
    np.testing.assert_allclose(np.linalg.norm(gen.signals["m1"][1]), 2.0)
    np.testing.assert_allclose(np.linalg.norm(gen.signals["m0"][1]), 2.0 / 3)
    # the generator's own sampler continues the loader's stream: the same samples
    rng = np.random.default_rng(0)
    MultilabelGenerator.create(n_modalities=3, dim=5, n_labels=4, seed=0, rng=rng)
    inputs, targets = gen.sample(300, rng)
    np.testing.assert_array_equal(targets, ds.targets)
    np.testing.assert_array_equal(inputs["m2"].astype(np.float32), ds.inputs["m2"])


def test_with_all_modalities_present_the_reference_is_the_full_data_posterior():
    gen = MultilabelGenerator.create(n_modalities=2, dim=4, n_labels=3, seed=1)
    x, _ = gen.sample(5, np.random.default_rng(2))
    full = np.ones((5, 2), dtype=bool)
    posterior = gen.label_posterior(x, full)
    for row in range(5):
        np.testing.assert_allclose(posterior[row], _by_scipy(gen, x, row, full[row]), atol=1e-10)
    # an absent modality's rows are never read; with nothing present, the prior
    partial = np.array([[True, False], [False, True], [False, False]] + [[True, True]] * 2)
    x_nan = {name: v.copy() for name, v in x.items()}
    x_nan["m1"][0], x_nan["m0"][1], x_nan["m0"][2], x_nan["m1"][2] = np.nan, np.nan, 0, 0
    posterior = gen.label_posterior(x_nan, partial)
    for row in range(2):
        np.testing.assert_allclose(posterior[row], _by_scipy(gen, x, row, partial[row]), atol=1e-10)
    np.testing.assert_allclose(posterior[2], gen.rates)
    assert gen.predict(x, full).tolist() == (gen.label_posterior(x, full) >= 0.5).tolist()


def test_the_posterior_matches_a_brute_force_monte_carlo_estimate():
    gen = MultilabelGenerator.create(n_modalities=2, dim=3, n_labels=4, seed=3)
    x, _ = gen.sample(6, np.random.default_rng(4))
    present = np.array([[True, True], [True, False], [False, True]] * 2)
    exact = gen.label_posterior(x, present)  # [6, L]
    # importance sampling from the prior: label vectors weighted by p(x_obs | y)
    draws = (np.random.default_rng(5).random((100_000, gen.n_labels)) < gen.rates).astype(float)
    for row in range(6):
        log_w = np.zeros(len(draws))
        for j, name in enumerate(gen.modality_names):
            if present[row, j]:
                residual = x[name][row] - gen.offsets[name] - draws @ gen.signals[name]  # [S, D]
                log_w += -0.5 * (residual**2).sum(axis=1)
        w = np.exp(log_w - log_w.max())
        estimate = w @ draws / w.sum()  # [L]
        # the ratio estimator's standard error (delta method)
        se = np.sqrt((w[:, None] ** 2 * (draws - estimate) ** 2).sum(axis=0)) / w.sum()
        assert (np.abs(estimate - exact[row]) < 4 * se + 1e-4).all(), (row, estimate, exact[row])


def test_the_labels_are_dependent_given_the_inputs():
    # independent a priori, but their signals overlap: the joint posterior is not the product
    # of the marginals, so a per-label posterior that ignores the other labels would be wrong
    gen = MultilabelGenerator.create(n_modalities=2, dim=2, n_labels=3, seed=0)
    x, _ = gen.sample(200, np.random.default_rng(1))
    full = np.ones((200, 2), dtype=bool)
    joint = np.exp(gen.log_joint_posterior(x, full))  # [N, 8]
    marginal = gen.label_posterior(x, full)  # [N, 3]
    vectors = np.array([[(c >> bit) & 1 for bit in range(3)] for c in range(8)])
    product = np.prod(np.where(vectors[None], marginal[:, None], 1 - marginal[:, None]), axis=-1)
    assert np.abs(joint - product).max() > 0.05
    np.testing.assert_allclose(joint.sum(axis=1), 1.0)


def test_no_classifier_beats_the_reference_on_hamming_loss_or_auroc():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    gen = MultilabelGenerator.create(n_modalities=2, dim=8, n_labels=5, seed=0)
    rng = np.random.default_rng(6)
    x_train, y_train = gen.sample(20_000, rng)
    x_test, y_test = gen.sample(5_000, rng)
    features = lambda x: np.concatenate([x["m0"], x["m1"]], axis=1)  # noqa: E731
    proba = np.stack(
        [
            LogisticRegression(max_iter=500)
            .fit(features(x_train), y_train[:, label])
            .predict_proba(features(x_test))[:, 1]
            for label in range(5)
        ],
        axis=1,
    )  # [N, L]
    bayes = gen.label_posterior(x_test, np.ones((5_000, 2), dtype=bool))
    # Hamming loss: the 0.5 threshold of the exact posterior is optimal sample by sample
    loss_lr = ((proba >= 0.5) != y_test).mean(axis=1)
    loss_bayes = ((bayes >= 0.5) != y_test).mean(axis=1)
    difference = loss_lr - loss_bayes  # paired on the same samples
    assert difference.mean() > -3 * difference.std(ddof=1) / np.sqrt(len(difference))
    # AUROC: each label's exact posterior ranks optimally; the logistic model gets close
    for label in range(5):
        auc_bayes = roc_auc_score(y_test[:, label], bayes[:, label])
        auc_lr = roc_auc_score(y_test[:, label], proba[:, label])
        assert auc_lr < auc_bayes + 0.005 and auc_lr > auc_bayes - 0.03


def test_too_many_labels_have_no_exact_posterior():
    gen = MultilabelGenerator.create(n_modalities=1, dim=2, n_labels=MAX_EXACT_LABELS + 1)
    assert not gen.exact_posterior
    x, _ = gen.sample(3, np.random.default_rng(0))
    with pytest.raises(MlmmError, match="at most 16 labels, got 17; use fewer labels"):
        gen.label_posterior(x, np.ones((3, 1), dtype=bool))


def test_the_mnar_posterior_is_synthetics_summed_over_label_vectors():
    from mlmm.data.datasets import SyntheticGenerator
    from mlmm.data.missingness import parse_missingness, simulate

    # equal rates: a uniform prior over the label vectors, as synthetic's over its classes
    base = MultilabelGenerator.create(n_modalities=2, dim=3, n_labels=2, seed=2)
    gen = MultilabelGenerator(base.modality_names, base.signals, base.offsets, [0.5, 0.5])
    ds = load_dataset("synthetic-multilabel", n_samples=300, dim=3, n_labels=2, seed=2)
    ds.meta["generator"] = gen
    model = parse_missingness("mnar:0.4")
    law = model.fit_law(ds)
    masked, _ = simulate(ds, model, seed=0)
    vectors = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)  # bit l = label l
    means = {name: gen.offsets[name] + vectors @ gen.signals[name] for name in ("m0", "m1")}
    classes = SyntheticGenerator(("m0", "m1"), means)
    joint = np.exp(classes.log_posterior_mnar(masked.inputs, masked.observed, law, n_mc=500))
    got = gen.label_posterior_mnar(masked.inputs, masked.observed, law, n_mc=500)
    np.testing.assert_allclose(got, joint @ vectors, atol=1e-10)
    ignorable = gen.label_posterior(masked.inputs, masked.observed)
    assert np.abs(got - ignorable).max() > 0.01  # the presence pattern is evidence


def test_the_mnar_posterior_is_calibrated_within_each_presence_pattern():
    from mlmm.data.missingness import parse_missingness, simulate

    ds = load_dataset("synthetic-multilabel", n_samples=8000, dim=4, n_labels=3, seed=0)
    model = parse_missingness("mnar:0.4")
    masked, _ = simulate(ds, model, seed=0)
    gen, y = ds.meta["generator"], masked.targets
    mnar = gen.label_posterior_mnar(masked.inputs, masked.observed, model.fit_law(ds), n_mc=5000)
    ignorable = gen.label_posterior(masked.inputs, masked.observed)
    worst_ignorable = 0.0
    for pattern in np.unique(masked.observed, axis=0):
        rows = (masked.observed == pattern).all(axis=1)
        residual = y[rows] - mnar[rows]  # [n, L]: mean 0 where the posterior is right
        se = residual.std(axis=0, ddof=1) / np.sqrt(rows.sum())
        assert (np.abs(residual.mean(axis=0)) < 4 * se).all(), (pattern, residual.mean(0) / se)
        bias = (y[rows] - ignorable[rows]).mean(axis=0) / se
        worst_ignorable = max(worst_ignorable, float(np.abs(bias).max()))
    assert worst_ignorable > 6  # the ignorable posterior is visibly off under MNAR


@pytest.mark.parametrize("spec", ["mnar:0.5", "mnar:0.5:mode=high:allow_empty=true"])
def test_the_mnar_posterior_matches_a_direct_monte_carlo_over_the_absent_modalities(spec):
    """p(y | x_obs, R) ∝ p(y) p(x_obs | y) E[P(R | x_obs, x_mis)], computed here without the
    first-PC shortcut: whole absent vectors drawn given each label vector, their drop
    probabilities from the law's own drop_probabilities, the at-least-one rule by hand."""
    from mlmm.data.missingness import parse_missingness, simulate

    ds = load_dataset("synthetic-multilabel", n_samples=400, n_modalities=3, dim=3, n_labels=3)
    gen = ds.meta["generator"]
    model = parse_missingness(spec)
    law = model.fit_law(ds)
    masked, _ = simulate(ds, model, seed=0)
    got = gen.label_posterior_mnar(masked.inputs, masked.observed, law, n_mc=20_000)
    ignorable = gen.label_posterior(masked.inputs, masked.observed)
    vectors = np.array(list(itertools.product([0, 1], repeat=3)), dtype=float)  # [C, L]
    rng = np.random.default_rng(7)
    rows = np.flatnonzero(~masked.observed.all(axis=1))[:4]  # [4], each with a modality absent
    for row in rows:
        present = masked.observed[row]
        logs = []
        for y in vectors:
            draws = {}
            log = np.sum(y * np.log(gen.rates) + (1 - y) * np.log1p(-gen.rates))
            for j, name in enumerate(gen.modality_names):
                mean = gen.offsets[name] + y @ gen.signals[name]  # [D]
                if present[j]:
                    draws[name] = np.broadcast_to(masked.inputs[name][row], (50_000, gen.dim))
                    log += multivariate_normal(mean, np.eye(gen.dim)).logpdf(draws[name][0])
                else:
                    draws[name] = mean + rng.standard_normal((50_000, gen.dim))  # [S, D]
            p = law.drop_probabilities(draws)  # [S, M]
            mask = np.prod(np.where(present, 1 - p, p), axis=1)  # [S], P(R | x)
            if not model.allow_empty:
                mask = mask / (1 - np.prod(p, axis=1))
            logs.append(log + np.log(mask.mean()))
        weights = np.exp(np.array(logs) - logsumexp(logs))  # [C]
        np.testing.assert_allclose(got[row], weights @ vectors, atol=0.01)
    assert np.abs(got[rows] - ignorable[rows]).max() > 0.05  # the pattern was evidence there


def test_the_mnar_posterior_is_scored_in_row_chunks_with_the_same_result(monkeypatch):
    """Its [batches + 1, rows, 2^L] arrays are held a chunk of rows at a time, as the
    ignorable posterior's, so memory stays bounded on a large test part; chunks of one row give
    what one chunk gives (float32 first-PC scores round differently: 1e-6)."""
    import mlmm.data.datasets.synthetic_multilabel as module
    from mlmm.data.missingness import parse_missingness, simulate

    ds = load_dataset("synthetic-multilabel", n_samples=300, n_modalities=3, n_labels=4)
    gen = ds.meta["generator"]
    model = parse_missingness("mnar:0.5")
    law = model.fit_law(ds)
    masked, _ = simulate(ds, model, seed=0)
    whole = gen.label_posterior_mnar(masked.inputs, masked.observed, law, n_mc=200, batches=4)
    monkeypatch.setattr(module, "_CHUNK_VALUES", 1)  # one row per chunk
    rows = gen.label_posterior_mnar(masked.inputs, masked.observed, law, n_mc=200, batches=4)
    assert whole.shape == rows.shape == (5, 300, 4)
    np.testing.assert_allclose(rows, whole, atol=1e-6)
    empty = {name: x[:0] for name, x in masked.inputs.items()}
    assert gen.label_posterior_mnar(empty, masked.observed[:0], law, n_mc=10).shape == (0, 4)
