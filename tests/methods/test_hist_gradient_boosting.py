"""hist-gradient-boosting: the torch traversal reproduces scikit-learn's predictions exactly
(NaN routing, multiclass, binary, regression), the fit is seeded and thread-limited, and the
fitted trees survive an artifact round trip."""

import numpy as np
import pytest
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.reference._classical import flat_features
from mlmm.methods.reference.hist_gradient_boosting import HistGradientBoosting
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer


def _mixed_presence(data: MultimodalDataset, seed: int = 0) -> MultimodalDataset:
    """Every row keeps at least one modality; about 40% of the slots are absent."""
    rng = np.random.default_rng(seed)
    present = rng.random(data.observed.shape) > 0.4
    present[np.arange(data.n_samples), rng.integers(0, data.n_modalities, data.n_samples)] = True
    return data.with_presence(present)


def _relabelled(task: TaskSpec, targets: np.ndarray) -> MultimodalDataset:
    data = contract_dataset()
    return MultimodalDataset(data.specs, task, dict(data.inputs), targets, name="contract")


def _fit_directly(data: MultimodalDataset, **params):
    """Fit scikit-learn on the model's own features and copy it in: (model, batch, x, est)."""
    model = create_method("hist-gradient-boosting", data.specs, data.task, **params).eval()
    batch = MultimodalBatch.from_dataset(data, with_target=False)
    x = flat_features(batch, float("nan")).double().numpy()  # [N, D]
    est = model.estimator(random_state=0, n_train=len(x)).fit(x, data.targets)
    model.load_estimator(est)
    return model, batch, x, est


def test_multiclass_probabilities_equal_scikit_learns_with_absent_modalities_as_nan():
    data = _mixed_presence(contract_dataset())
    model, batch, x, est = _fit_directly(data, max_iter=30, min_samples_leaf=5)
    assert np.isnan(x).any(axis=1).mean() > 0.5  # most rows route missing values
    own = torch.arange(model.trees.feature.shape[1])
    missing_left = model.trees.missing_left[model.trees.branches[..., 0] != own]  # split nodes
    assert missing_left.any() and not missing_left.all()  # both directions are learned
    assert len(model.trees) == 30 * 3  # one tree per class and iteration
    with torch.no_grad():
        proba = torch.softmax(model(batch).prediction.double(), 1).numpy()
    np.testing.assert_allclose(proba, est.predict_proba(x), atol=1e-6, rtol=0)


def test_a_split_on_missingness_itself_sends_every_value_left_and_nan_right():
    data = contract_dataset()
    present = data.observed.copy()
    present[data.targets == 1, 1] = False  # b is absent exactly for class 1: a split on NaN
    model, batch, x, est = _fit_directly(data.with_presence(present), max_iter=5)
    assert torch.isinf(model.trees.threshold).any()  # scikit-learn's mark of such a split
    with torch.no_grad():
        proba = torch.softmax(model(batch).prediction.double(), 1).numpy()
    np.testing.assert_allclose(proba, est.predict_proba(x), atol=1e-6, rtol=0)


def test_binary_logits_are_zero_for_the_first_class_and_the_boosted_score_for_the_second():
    data = _mixed_presence(
        _relabelled(TaskSpec("classification", 2), contract_dataset().targets % 2)
    )
    model, batch, x, est = _fit_directly(data, max_iter=20)
    assert len(model.trees) == 20  # one tree per iteration for two classes
    with torch.no_grad():
        logits = model(batch).prediction.double()
    assert torch.equal(logits[:, 0], torch.zeros(len(x), dtype=logits.dtype))
    np.testing.assert_allclose(logits[:, 1].numpy(), est.decision_function(x), atol=1e-5)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), est.predict_proba(x), atol=1e-6)


def test_regression_values_equal_scikit_learns():
    data = _mixed_presence(contract_dataset(task="regression"))
    model, batch, x, est = _fit_directly(data, max_iter=25)
    with torch.no_grad():
        pred = model(batch).prediction.double().numpy()
    np.testing.assert_allclose(pred, est.predict(x), atol=1e-5)


def test_categorical_splits_are_refused_and_never_used():
    data = contract_dataset()
    model = create_method("hist-gradient-boosting", data.specs, data.task)
    assert model.estimator(0, 100).categorical_features is None
    rng = np.random.default_rng(0)
    width = sum(int(np.prod(s.shape)) for s in data.specs)
    x = rng.normal(size=(300, width))
    x[:, 0] = rng.integers(0, 3, 300)
    y = (x[:, 0] == 1).astype(int) + (x[:, 0] == 2) * 2
    est = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(x, y)
    with pytest.raises(MlmmError, match="categorical"):
        model.load_estimator(est)


def test_a_class_missing_from_training_gets_almost_no_probability():
    data = contract_dataset()
    keep = np.flatnonzero(data.targets != 2)
    model, batch, x, est = _fit_directly(data.subset(keep), max_iter=10)
    with torch.no_grad():
        proba = torch.softmax(model(batch).prediction.double(), 1).numpy()
    assert proba.shape == (len(keep), 3) and np.isfinite(proba).all()
    assert proba[:, 2].max() < 1e-10
    np.testing.assert_allclose(proba[:, :2], est.predict_proba(x), atol=1e-6)


def test_fit_is_seeded_thread_limited_and_the_trees_load_into_a_new_model(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = {}
    original = HistGradientBoosting.fit_classical

    def spy(self, train, val, random_state):
        seen["random_state"] = random_state
        seen["threads"] = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"}
        return original(self, train, val, random_state)

    monkeypatch.setattr(HistGradientBoosting, "fit_classical", spy)
    data = contract_dataset()
    model = create_method("hist-gradient-boosting", data.specs, data.task, max_iter=5)
    Trainer(seed=7, num_threads=1, progress=False).fit(model, data)
    assert seen["threads"] <= {1}
    state = model.state_dict()
    first = seen["random_state"]
    Trainer(seed=8, num_threads=1, progress=False).fit(model, data)
    assert seen["random_state"] != first  # the seed reaches scikit-learn
    fresh = create_method("hist-gradient-boosting", data.specs, data.task, max_iter=5)
    assert fresh.trees.feature.shape != state["trees.feature"].shape
    fresh.load_state_dict(state)
    batch = MultimodalBatch.from_dataset(_mixed_presence(data), with_target=False)
    model.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(batch).prediction, model.eval()(batch).prediction)


def test_early_stopping_uses_the_trainers_validation_data():
    data = contract_dataset()
    train, val = data.subset(np.arange(240)), data.subset(np.arange(240, 360))
    model = create_method(
        "hist-gradient-boosting", data.specs, data.task, early_stopping=True, n_iter_no_change=2
    )
    trained = Trainer(progress=False).fit(model, train, val)
    assert 0 < len(model.trees) < 200 * 3  # stopped before max_iter
    assert np.isfinite(trained.histories[0].best_val_loss)
    assert trained.histories[0].epochs == []  # no gradient epochs


@pytest.mark.parametrize(
    "params, message",
    [
        ({"max_iter": 0}, "max_iter"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"max_leaf_nodes": 1}, "max_leaf_nodes"),
        ({"max_depth": 0}, "max_depth"),
        ({"early_stopping": "yes"}, "early_stopping"),
        ({"early_stopping": 1}, "early_stopping"),
        ({"l2_regularization": -1.0}, "l2_regularization"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method("hist-gradient-boosting", data.specs, data.task, **params)
