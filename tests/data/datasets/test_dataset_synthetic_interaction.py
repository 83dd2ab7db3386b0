"""The interaction variant of synthetic: XOR of two latent signs seen by different modalities."""

import itertools

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import mlmm
from mlmm.data.datasets import (
    DATASETS,
    InteractionGenerator,
    bayes_accuracy_under_mask,
    load_dataset,
    load_synthetic_interaction,
)
from mlmm.errors import MlmmError


def _mask(gen: InteractionGenerator, subset, n: int) -> np.ndarray:
    present = np.zeros((n, gen.n_modalities), dtype=bool)
    for name in subset:
        present[:, gen.modality_names.index(name)] = True
    return present


def test_defaults_shapes_balance_and_registry():
    ds = load_dataset("synthetic-interaction", n_samples=1000)
    assert ds.modality_names == ("m0", "m1", "m2")
    assert all(s.kind == "vector" and s.shape == (16,) for s in ds.specs)
    assert ds.task.n_classes == 2
    assert np.bincount(ds.targets).tolist() == [500, 500]
    assert ds.observed.all()
    assert DATASETS.get("synthetic-interaction").info["task"] == "classification"
    again = load_synthetic_interaction(n_samples=1000)
    np.testing.assert_array_equal(ds.inputs["m1"], again.inputs["m1"])


def test_log_posterior_is_the_ratio_of_mixture_likelihoods_computed_directly():
    gen = InteractionGenerator.create(n_modalities=3, dims=[2, 3, 2], snr=[1.0, 1.5, 0.8], seed=3)
    inputs, _ = gen.sample(50, np.random.default_rng(0))
    for size in (1, 2, 3):
        for subset in itertools.combinations(gen.modality_names, size):
            present = _mask(gen, subset, 50)
            log_lik = np.zeros((50, 2))
            for y in (0, 1):
                parts = []
                for s0, s1 in [(-1, -1), (1, 1)] if y == 0 else [(-1, 1), (1, -1)]:
                    signs = (s0, s1)
                    total = np.zeros(50)
                    for name in subset:
                        j = gen.modality_names.index(name)
                        mean = gen.offsets[name] + signs[j % 2] * gen.snr[j] * gen.directions[name]
                        total += multivariate_normal(mean, np.eye(len(mean))).logpdf(inputs[name])
                    parts.append(total)
                log_lik[:, y] = logsumexp(parts, axis=0)
            expected = log_lik - logsumexp(log_lik, axis=1, keepdims=True)
            np.testing.assert_allclose(gen.log_posterior(inputs, present), expected, atol=1e-9)


def test_no_single_modality_and_no_one_sign_subset_carries_class_information():
    ds = load_synthetic_interaction(n_samples=4000, seed=1)
    gen = ds.meta["generator"]
    for subset in [("m0",), ("m1",), ("m2",), ("m0", "m2")]:
        logp = gen.log_posterior(ds.inputs, _mask(gen, subset, ds.n_samples))
        np.testing.assert_allclose(np.exp(logp), 0.5, atol=1e-12)  # exactly the prior
        assert gen.bayes_accuracy(subset) == 0.5
    # ...while the modalities together are highly informative
    assert gen.bayes_accuracy() > 0.96
    assert gen.bayes_accuracy(("m0", "m1")) > 0.9
    # and the class-conditional marginals of one modality coincide: the class means of the
    # projection on its own signal direction are both ~0 (the signs cancel)
    for name in gen.modality_names:
        score = (ds.inputs[name] - gen.offsets[name]) @ gen.directions[name]
        for y in (0, 1):
            assert abs(score[ds.targets == y].mean()) < 0.15
            assert abs(score[ds.targets == y].std() - np.hypot(1, gen.snr[int(name[1:])])) < 0.1


def test_exact_bayes_accuracy_matches_the_realised_accuracy_on_many_samples():
    ds = load_synthetic_interaction(n_samples=100_000, dims=4, seed=2)
    gen = ds.meta["generator"]
    for subset, exact in gen.bayes_accuracy_table().items():
        realised = (gen.predict(ds.inputs, _mask(gen, subset, ds.n_samples)) == ds.targets).mean()
        assert abs(realised - exact) < 4 * np.sqrt(exact * (1 - exact) / ds.n_samples) + 1e-12
    assert bayes_accuracy_under_mask(ds) == pytest.approx(
        (gen.predict(ds.inputs, ds.observed) == ds.targets).mean()
    )


def test_absent_rows_are_never_read():
    ds = load_synthetic_interaction(n_samples=200)
    gen = ds.meta["generator"]
    present = np.ones((200, 3), dtype=bool)
    present[::2, 1] = False
    poisoned = {k: v.copy() for k, v in ds.inputs.items()}
    poisoned["m1"][::2] = np.nan
    np.testing.assert_array_equal(
        gen.log_posterior(poisoned, present), gen.log_posterior(ds.inputs, present)
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_modalities": 1}, "n_modalities must be in [2"),
        ({"snr": [1.0, 2.0]}, "snr needs one value or one per modality"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"n_samples": 0}, "n_samples must be a positive integer"),
    ],
)
def test_invalid_parameters_raise_clear_errors(params, message):
    with pytest.raises(MlmmError, match=message.replace("[", r"\[")):
        load_synthetic_interaction(**params)


def test_trained_late_fusion_stays_near_chance_while_fusion_reaches_bayes():
    trainer = {"max_epochs": 12, "patience": 12, "batch_size": 128, "progress": False}
    params = {"n_samples": 2000, "dims": 4}
    late = mlmm.run_experiment(
        "synthetic-interaction", "late-fusion", dataset_params=params, trainer=trainer,
        subsets=False,
    )  # fmt: skip
    fused = mlmm.run_experiment(
        "synthetic-interaction", "zero-impute", dataset_params=params, trainer=trainer,
        subsets=False,
    )  # fmt: skip

    def accuracy(table):
        rows = table[(table.scope == "overall") & (table.metric == "accuracy")]
        return float(rows.value.iloc[0])

    bayes = accuracy(late.reference)
    assert bayes > 0.95  # every modality present: the interaction is fully observed
    assert abs(accuracy(late.table) - 0.5) < 0.075  # 400 test samples: 3 standard errors
    assert accuracy(fused.table) > 0.85  # a model that fuses features learns the XOR


def test_no_reference_under_mnar_where_the_posterior_is_not_known():
    with pytest.warns(UserWarning, match="no Bayes-optimal reference under mnar:0.3"):
        res = mlmm.run_experiment(
            "synthetic-interaction", "zero-impute", dataset_params={"n_samples": 400},
            missing="mnar:0.3", test_missing=["mnar:0.3", "mcar:0.3"],
            trainer={"max_epochs": 1, "progress": False}, subsets=False,
        )  # fmt: skip
    assert set(res.table.condition) == {"mnar:0.3", "mcar:0.3"}
    assert set(res.reference.condition) == {"mcar:0.3"}
