"""lda-em: on complete data EM gives the class means and the pooled covariance; on incomplete
data it recovers what available-case estimates get wrong; prediction is the exact Gaussian
posterior (or conditional mean) given the present modalities, absent rows never read."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from scipy.stats import multivariate_normal

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset

SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))]
# a shared covariance with strong correlations between the two modalities
CHOLESKY = np.array([[1, 0, 0, 0], [0.5, 1, 0, 0], [0.8, 0.3, 0.6, 0], [0.2, 0.9, 0.1, 0.5]])
COVARIANCE = CHOLESKY @ CHOLESKY.T  # [4, 4], cross block [[0.8, 0.2], [0.7, 1.0]]
MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.5, 1.5]])  # [K=2, 4]


def _gaussian_classes(n: int, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = MEANS[y] + rng.normal(size=(n, 4)) @ CHOLESKY.T  # [N, 4]
    return MultimodalDataset(
        SPECS, TaskSpec("classification", 2), {"a": x[:, :2], "b": x[:, 2:]}, y
    )


def _mixed_presence(data: MultimodalDataset, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    present = rng.random(data.observed.shape) > 0.4
    present[np.arange(data.n_samples), rng.integers(0, data.n_modalities, data.n_samples)] = True
    return data.with_presence(present)


def _fit(data: MultimodalDataset, **params):
    model = create_method("lda-em", data.specs, data.task, **params)
    model.fit_classical(MultimodalBatch.from_dataset(data), None, 0)
    return model.eval()


def _flat(data: MultimodalDataset) -> np.ndarray:
    return np.concatenate(
        [data.inputs[k].reshape(data.n_samples, -1) for k in data.modality_names], axis=1
    ).astype(np.float64)


def test_complete_data_gives_class_means_and_pooled_covariance_in_two_iterations():
    data = contract_dataset()
    model = _fit(data, shrinkage=0.0)
    x, y, k = _flat(data), data.targets, data.task.n_classes
    means = np.stack([x[y == c].mean(0) for c in range(k)])  # [K, D]
    residual = x - means[y]
    np.testing.assert_allclose(model.mean.numpy(), means, atol=1e-5)
    np.testing.assert_allclose(model.covariance.numpy(), residual.T @ residual / len(x), atol=1e-5)
    np.testing.assert_allclose(model.log_prior.numpy(), np.log(np.full(k, 1 / k)), atol=1e-6)
    # nothing is hidden, so the second iteration changes nothing and EM stops there
    from mlmm.methods.reference.lda_em import gaussian_em

    xt = torch.from_numpy(x)
    columns = torch.ones(1, x.shape[1], dtype=torch.bool)
    _, _, iterations = gaussian_em(
        xt, columns, torch.zeros(len(x), dtype=torch.long), torch.from_numpy(y), k, 0.0, 20, 1e-4
    )
    assert iterations == 2


def test_shrinkage_mixes_in_the_average_variance():
    data = contract_dataset()
    plain, shrunk = _fit(data, shrinkage=0.0), _fit(data, shrinkage=0.3)
    cov = plain.covariance.numpy().astype(np.float64)
    expected = 0.7 * cov + 0.3 * np.trace(cov) / len(cov) * np.eye(len(cov))
    np.testing.assert_allclose(shrunk.covariance.numpy(), expected, atol=1e-5)


def test_diagonal_target_shrinks_only_the_correlations():
    data = contract_dataset()
    plain = _fit(data, shrinkage=0.0)
    shrunk = _fit(data, shrinkage=0.3, shrinkage_target="diagonal")
    cov = plain.covariance.numpy().astype(np.float64)
    expected = 0.7 * cov + 0.3 * np.diag(np.diag(cov))
    np.testing.assert_allclose(shrunk.covariance.numpy(), expected, atol=1e-5)
    # each feature keeps its own variance, unlike the isotropic target
    np.testing.assert_allclose(np.diag(shrunk.covariance.numpy()), np.diag(cov), atol=1e-5)
    assert np.ptp(np.diag(cov)) > 0.01  # the variances differ, so the two targets do too


def test_unknown_shrinkage_target_is_a_one_line_error():
    data = contract_dataset()
    with pytest.raises(MlmmError, match="'isotropic' or 'diagonal', got 'ledoit'"):
        create_method("lda-em", data.specs, data.task, shrinkage_target="ledoit")


def test_logits_are_the_gaussian_posterior_of_the_present_features():
    data = _mixed_presence(_gaussian_classes(600))
    model = _fit(data)
    rows = np.flatnonzero(data.observed[:, 0] & ~data.observed[:, 1])[:20]  # b absent
    with torch.no_grad():
        logits = model(MultimodalBatch.from_dataset(data, rows)).prediction.numpy()
    x = data.inputs["a"][rows].astype(np.float64)
    mean, cov = model.mean.numpy().astype(np.float64), model.covariance.numpy().astype(np.float64)
    by_hand = np.stack([multivariate_normal(mu[:2], cov[:2, :2]).logpdf(x) for mu in mean], 1)
    by_hand += model.log_prior.numpy()
    assert np.median(np.exp(log_softmax(by_hand, 1)).min(1)) > 0.1  # unsaturated: can fail
    np.testing.assert_allclose(log_softmax(logits, 1), log_softmax(by_hand, 1), atol=1e-5)


def test_absent_rows_are_never_read():
    data = _mixed_presence(contract_dataset())
    model = _fit(data)
    batch = MultimodalBatch.from_dataset(data)
    noisy = {}
    for j, name in enumerate(data.modality_names):
        x = batch.inputs[name].clone()
        x[~batch.present[:, j]] = float("nan")
        noisy[name] = x
    with torch.no_grad():
        clean = model(batch).prediction
        garbage = model(MultimodalBatch(noisy, batch.present, batch.modalities)).prediction
    torch.testing.assert_close(clean, garbage, rtol=0, atol=0)


def test_em_recovers_what_available_cases_get_wrong_under_mar():
    data = _gaussian_classes(4000)
    a0 = data.inputs["a"][:, 0]
    rng = np.random.default_rng(1)
    hide_b = rng.random(data.n_samples) < np.where(a0 > 0.5, 0.85, 0.15)  # MAR, about half
    present = np.stack([np.ones(data.n_samples, bool), ~hide_b], axis=1)
    model = _fit(data.with_presence(present), shrinkage=0.0, n_iter=200, tol=1e-8)
    cross = model.covariance.numpy()[:2, 2:]
    assert np.abs(cross - COVARIANCE[:2, 2:]).max() < 0.1  # the start (identity) is 1.0 off
    assert np.abs(model.covariance.numpy() - COVARIANCE).max() < 0.1
    b, y = data.inputs["b"][~hide_b], data.targets[~hide_b]
    available = np.stack([b[y == k].mean(0) for k in range(2)])  # class means of b where seen
    em_error = np.abs(model.mean.numpy()[:, 2:] - MEANS[:, 2:]).max()
    available_error = np.abs(available - MEANS[:, 2:]).max()
    assert available_error > 0.4 and em_error < 0.1


def test_close_to_bayes_optimal_on_synthetic_under_mcar():
    res = mlmm.run_experiment(
        "synthetic", "lda-em", dataset_params={"n_samples": 3000}, missing="mcar:0.5", seed=0
    )
    table, bayes = res.table, res.reference
    accuracy = table[table.metric == "accuracy"].set_index(["scope", "subset"]).value
    optimal = bayes[bayes.metric == "accuracy"].set_index(["scope", "subset"]).value
    assert accuracy["overall"].iloc[0] > optimal["overall"].iloc[0] - 0.03
    subsets = accuracy["subset"]
    assert len(subsets) == 7 and (subsets > optimal["subset"][subsets.index] - 0.05).all()
    assert (subsets > 0.25 + 0.25).all()  # four classes: chance is 0.25


def test_regression_is_the_conditional_mean_of_the_target():
    rng = np.random.default_rng(0)
    n, w = 20000, np.array([1.0, -0.5, 2.0, 0.5])
    x = rng.normal(size=(n, 4)) @ CHOLESKY.T  # [N, 4]
    y = x @ w + 0.1 * rng.normal(size=n)
    data = MultimodalDataset(SPECS, TaskSpec("regression"), {"a": x[:, :2], "b": x[:, 2:]}, y)
    model = _fit(_mixed_presence(data), shrinkage=0.0, n_iter=100, tol=1e-8)
    assert model.mean.shape == (1, 5) and not hasattr(model, "log_prior")
    test = np.array([[1.0, 1.0], [0.5, 2.0], [-1.5, 0.0]])  # values of a; b absent
    present = torch.tensor([[True, False]] * 3)
    batch = MultimodalBatch(
        {"a": torch.tensor(test, dtype=torch.float32), "b": torch.zeros(3, 2)},
        present,
        ("a", "b"),
    )
    with torch.no_grad():
        prediction = model(batch).prediction.numpy()
    # E[y | a] = w_a a + w_b E[b | a], with E[b | a] = S_ba S_aa^-1 a (everything centred)
    expected_b = test @ np.linalg.solve(COVARIANCE[:2, :2], COVARIANCE[:2, 2:])
    expected = test @ w[:2] + expected_b @ w[2:]
    np.testing.assert_allclose(prediction, expected, atol=0.06)
    assert np.abs(expected - test @ w[:2]).min() > 0.5  # ignoring b's correlation is far off


def test_too_many_features_raise_a_clear_error():
    specs = [ModalitySpec("image", "image", (1, 40, 40))]
    with pytest.raises(MlmmError, match=r"1600 x 1600 .*max_features=1000.*late-fusion"):
        create_method("lda-em", specs, TaskSpec("classification", 2), max_features=1000)
    create_method("lda-em", specs, TaskSpec("classification", 2), max_features=1600)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"shrinkage": 1.5}, "shrinkage must"),
        ({"shrinkage": -0.1}, "shrinkage must"),
        ({"n_iter": 0}, "n_iter must"),
        ({"n_iter": 2.0}, "n_iter must be an integer"),
        ({"tol": 0.0}, "tol must"),
        ({"max_features": 0}, "max_features must"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(params, message):
    with pytest.raises(MlmmError, match=message):
        create_method("lda-em", SPECS, TaskSpec("classification", 2), **params)


def test_a_class_missing_from_training_gets_a_finite_floor():
    data = _gaussian_classes(200)
    three = MultimodalDataset(SPECS, TaskSpec("classification", 3), data.inputs, data.targets * 2)
    model = _fit(three)  # classes 0 and 2 only
    assert model.log_prior[1].item() == -30.0 and not model.mean[1].any()
    with torch.no_grad():
        logits = model(MultimodalBatch.from_dataset(three)).prediction
    assert torch.isfinite(logits).all() and (logits.argmax(1) != 1).all()


def _dense_em(x, columns, pattern, group, n_groups, shrinkage, n_iter, tol, target):
    """EM with the full ``P x P`` covariance, as lda-em computed it up to 0.x (the textbook
    E-step: one Cholesky of ``S_oo`` and the regression ``S_oo^-1 S_om`` per pattern)."""
    n, width = x.shape
    observed = columns[pattern]
    filled = torch.where(observed, x, 0.0)
    zeros = x.new_zeros(n_groups, width)
    counts = x.new_zeros(n_groups).index_add_(0, group, x.new_ones(n))
    seen = zeros.index_add(0, group, observed.to(x.dtype))
    mean = zeros.index_add(0, group, filled) / seen.clamp(min=1)
    covariance = torch.eye(width, dtype=x.dtype)
    for iteration in range(1, n_iter + 1):
        residual = filled - mean[group]
        hidden = torch.zeros_like(covariance)
        for q in range(len(columns)):
            rows = (pattern == q).nonzero().squeeze(1)
            o, m = columns[q].nonzero().squeeze(1), (~columns[q]).nonzero().squeeze(1)
            if len(m) == 0:
                continue
            conditional = covariance[m][:, m]
            if len(o) == 0:
                residual[rows[:, None], m] = 0.0
            else:
                coef = torch.linalg.solve(covariance[o][:, o], covariance[o][:, m])
                residual[rows[:, None], m] = residual[rows[:, None], o] @ coef
                conditional = conditional - covariance[m][:, o] @ coef
            hidden[m[:, None], m] += len(rows) * conditional
        completed = mean[group] + residual
        mean = zeros.index_add(0, group, completed) / counts.clamp(min=1)[:, None]
        residual = completed - mean[group]
        update = (residual.T @ residual + hidden) / n
        if target == "diagonal":
            goal = torch.diag(torch.diagonal(update))
        else:
            goal = update.trace() / width * torch.eye(width, dtype=x.dtype)
        update = (1 - shrinkage) * update + shrinkage * goal
        change = torch.linalg.norm(update - covariance) / torch.linalg.norm(covariance)
        covariance = update
        if change < tol:
            return mean, covariance, iteration
    return mean, covariance, n_iter


def _incomplete_rows(n, widths, n_groups, seed, never_last=False):
    """Rows of ``sum(widths)`` features in blocks (modalities) that are present or not,
    NaN where absent; returns the arguments of ``gaussian_em`` before the settings."""
    g = torch.Generator().manual_seed(seed)
    group = torch.arange(n) % n_groups
    x = torch.randn(n, sum(widths), generator=g, dtype=torch.float64)
    x += torch.randn(n_groups, sum(widths), generator=g, dtype=torch.float64)[group]
    present = torch.rand(n, len(widths), generator=g) > 0.35
    present[torch.arange(n), torch.randint(0, len(widths), (n,), generator=g)] = True
    if never_last:  # the last block is never observed; the first always is
        present[:, -1], present[:, 0] = False, True
    patterns, pattern = torch.unique(present, dim=0, return_inverse=True)
    columns = patterns.repeat_interleave(torch.tensor(widths), dim=1)
    x[~columns[pattern]] = float("nan")
    return x, columns, pattern, group, n_groups


@pytest.mark.parametrize(
    "n, widths, n_groups, shrinkage, target, never_last",
    [
        (40, [50, 3, 20], 4, 0.05, "isotropic", False),  # wider than its rows: reduced basis
        (40, [50, 3, 20], 4, 0.001, "isotropic", False),
        (60, [80, 70], 1, 0.3, "isotropic", False),  # one group, as regression has
        (60, [45, 30], 3, 0.05, "isotropic", True),
        (50, [40, 40], 2, 0.3, "diagonal", False),  # the diagonal target: dense
        (200, [5, 6], 2, 0.05, "isotropic", False),  # more rows than features: dense
    ],
)
def test_em_gives_the_dense_em_result_to_round_off(
    n, widths, n_groups, shrinkage, target, never_last
):
    from mlmm.methods.reference.lda_em import _feature_blocks, gaussian_em

    x, columns, pattern, group, k = _incomplete_rows(n, widths, n_groups, n, never_last)
    settings = (shrinkage, 30, 1e-6, target)
    mean, covariance, iterations = gaussian_em(x, columns, pattern, group, k, *settings)
    dense_mean, dense_covariance, dense_iterations = _dense_em(
        x, columns, pattern, group, k, *settings
    )
    assert iterations == dense_iterations
    torch.testing.assert_close(mean, dense_mean, rtol=0, atol=1e-8)
    torch.testing.assert_close(covariance, dense_covariance, rtol=0, atol=1e-8)
    blocks = _feature_blocks(torch.nan_to_num(x), columns, pattern, target == "diagonal")
    reduced = sum(len(features) - basis.shape[1] for features, basis in blocks)
    assert (reduced > 0) == (target == "isotropic" and max(widths) > n / 2)


def test_a_wide_regression_fit_matches_the_dense_em():
    """The target joins the features as a block always observed (lda-em's regression)."""
    x, columns, pattern, _, _ = _incomplete_rows(30, [60, 25], 1, 7)
    target = torch.nan_to_num(x[:, :5]).sum(1, keepdim=True)  # [N, 1]
    x = torch.cat([x, target], dim=1)
    columns = torch.cat([columns, columns.new_ones(len(columns), 1)], dim=1)
    group = torch.zeros(len(x), dtype=torch.long)
    from mlmm.methods.reference.lda_em import gaussian_em

    new = gaussian_em(x, columns, pattern, group, 1, 0.05, 20, 1e-4)
    dense = _dense_em(x, columns, pattern, group, 1, 0.05, 20, 1e-4, "isotropic")
    assert new[2] == dense[2]
    torch.testing.assert_close(new[0], dense[0], rtol=0, atol=1e-8)
    torch.testing.assert_close(new[1], dense[1], rtol=0, atol=1e-8)


def test_no_shrinkage_on_features_wider_than_their_rows_is_a_one_line_error():
    from mlmm.methods.reference.lda_em import gaussian_em

    x, columns, pattern, group, k = _incomplete_rows(40, [50, 3, 20], 4, 5)
    with pytest.raises(MlmmError, match="not positive definite.*raise shrinkage above 0"):
        gaussian_em(x, columns, pattern, group, k, 0.0, 20, 1e-4)


def test_prediction_solves_each_pattern_once_until_the_parameters_change(monkeypatch):
    """forward keeps each presence pattern's linear map (one Cholesky of S_oo, about a second at
    4,000 features) between calls, and computes it anew once fit or load_state_dict changes
    the parameters, so no call answers with another fit's maps."""
    from mlmm.methods.reference.lda_em import LdaEm

    data = _mixed_presence(_gaussian_classes(120), seed=1)
    other = _fit(_mixed_presence(_gaussian_classes(120, seed=5), seed=2))
    model = _fit(data)
    batch = MultimodalBatch.from_dataset(data).without_target()
    n_patterns = len(np.unique(data.observed, axis=0))
    solved = []
    original = LdaEm._linear_map
    monkeypatch.setattr(LdaEm, "_linear_map", lambda self, o: solved.append(1) or original(self, o))
    with torch.inference_mode():  # as mlmm serve runs it; the maps kept serve any later call
        first = model(batch).prediction
    again = model(batch).prediction
    assert len(solved) == n_patterns and torch.equal(first, again)
    model.load_state_dict(other.state_dict())
    np.testing.assert_array_equal(model(batch).prediction.numpy(), other(batch).prediction.numpy())
    assert len(solved) == 3 * n_patterns  # anew for model, and once for other
    model.fit_classical(MultimodalBatch.from_dataset(data), None, 0)
    torch.testing.assert_close(model(batch).prediction, first, rtol=0, atol=0)
    assert len(solved) == 4 * n_patterns


@pytest.mark.parametrize("case", ["all rows complete", "a block observed in one row"])
def test_em_edge_cases_give_the_dense_em_result(case):
    """Wider than the rows, where the basis of a block's rows is smallest: no row missing
    anything (no E-step at all), and a block only one row observes (a basis of one vector)."""
    from mlmm.methods.reference.lda_em import gaussian_em

    g = torch.Generator().manual_seed(0)
    n, widths = 20, [30, 25]
    x = torch.randn(n, sum(widths), generator=g, dtype=torch.float64)
    present = torch.ones(n, 2, dtype=torch.bool)
    if case == "a block observed in one row":
        present[1:, 1] = False
    patterns, pattern = torch.unique(present, dim=0, return_inverse=True)
    columns = patterns.repeat_interleave(torch.tensor(widths), dim=1)
    x[~columns[pattern]] = float("nan")
    group = torch.arange(n) % 3
    new = gaussian_em(x, columns, pattern, group, 3, 0.05, 30, 1e-6)
    dense = _dense_em(x, columns, pattern, group, 3, 0.05, 30, 1e-6, "isotropic")
    assert new[2] == dense[2]
    torch.testing.assert_close(new[0], dense[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(new[1], dense[1], rtol=0, atol=1e-10)
