"""logistic-mean-impute: the training means of present entries fill absent modalities, the
model is scikit-learn's logistic (ridge) regression on the filled features, absent rows are
never read, and the binary layout is logits [0, w.x + b]."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.reference._classical import ABSENT_CLASS_LOGIT, fit_linear
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer


def _mixed_presence(data: MultimodalDataset, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    present = rng.random(data.observed.shape) > 0.4
    present[np.arange(data.n_samples), rng.integers(0, data.n_modalities, data.n_samples)] = True
    return data.with_presence(present)


def _filled_features(data: MultimodalDataset, means: dict[str, np.ndarray]) -> np.ndarray:
    """The features by hand: each modality flattened, absent rows replaced by its mean."""
    parts = []
    for j, s in enumerate(data.specs):
        x = data.inputs[s.name].reshape(data.n_samples, -1).astype(np.float64)
        parts.append(np.where(data.observed[:, j : j + 1], x, means[s.name]))
    return np.concatenate(parts, axis=1)


def test_fit_equals_scikit_learn_on_mean_filled_standardised_features():
    data = _mixed_presence(contract_dataset())
    train, test = data.subset(np.arange(260)), data.subset(np.arange(260, 360))
    model = create_method("logistic-mean-impute", data.specs, data.task, C=0.5)
    trained = Trainer(progress=False).fit(model, train)
    std = trained.standardizer.transform(train)
    means = {
        s.name: std.inputs[s.name][std.observed[:, j]].reshape(-1, int(np.prod(s.shape))).mean(0)
        for j, s in enumerate(data.specs)
    }
    # vector features are standardised to mean 0; the sequence's per-position mean is not 0
    assert np.abs(means["a"]).max() < 1e-5 and np.abs(means["s"]).max() > 0.05
    np.testing.assert_allclose(
        model.train_mean.numpy(), np.concatenate(list(means.values())), atol=1e-6
    )
    reference = LogisticRegression(C=0.5, max_iter=1000).fit(
        _filled_features(std, means), std.targets
    )
    expected = reference.predict_proba(
        _filled_features(trained.standardizer.transform(test), means)
    )
    np.testing.assert_allclose(trained.predict_proba(test), expected, atol=1e-5)


def test_an_absent_modality_is_read_as_its_training_mean():
    data = contract_dataset()
    model = create_method("logistic-mean-impute", data.specs, data.task)
    Trainer(progress=False).fit(model, _mixed_presence(data))
    batch = MultimodalBatch.from_dataset(data, np.arange(5), with_target=False)
    absent = batch.with_present(batch.present & torch.tensor([True, True, False]))
    mean_s = model.train_mean[10:].reshape(12, 2)  # after a (6) and b (4)
    as_mean = MultimodalBatch(
        {**batch.inputs, "s": mean_s.expand(5, 12, 2)}, batch.present, batch.modalities
    )
    with torch.no_grad():
        torch.testing.assert_close(model(absent).prediction, model(as_mean).prediction)


def test_binary_and_one_class_fits_become_logits_over_every_class():
    task = TaskSpec("classification", 3)
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    coef, intercept = fit_linear(x, np.array([0, 0, 2, 2]), task, 1.0, 100, 0)
    sk = LogisticRegression().fit(x, np.array([0, 0, 2, 2]))
    assert coef[0, 0] == 0.0 and intercept[0] == 0.0  # the first class is the reference
    assert coef[2, 0] == pytest.approx(sk.coef_[0, 0]) and intercept[2] == sk.intercept_[0]
    assert intercept[1] == ABSENT_CLASS_LOGIT and coef[1, 0] == 0.0  # never seen
    coef, intercept = fit_linear(x, np.array([1, 1, 1, 1]), task, 1.0, 100, 0)
    assert np.array_equal(intercept, [ABSENT_CLASS_LOGIT, 0.0, ABSENT_CLASS_LOGIT])
    assert not coef.any()


def test_regression_is_ridge_with_alpha_one_over_two_c():
    x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    y = np.array([1.0, 2.0, 4.0, 5.0])
    coef, intercept = fit_linear(x, y, TaskSpec("regression"), 2.0, 100, 0)
    ridge = Ridge(alpha=0.25).fit(x, y)
    np.testing.assert_allclose(coef[0], ridge.coef_)
    assert intercept[0] == pytest.approx(ridge.intercept_)


def test_the_seed_changes_nothing_and_there_are_no_epochs():
    data = contract_dataset()
    outs = []
    for seed in (0, 1):
        model = create_method("logistic-mean-impute", data.specs, data.task)
        trained = Trainer(seed=seed, progress=False).fit(model, data)
        outs.append(trained.predict_raw(data))
        assert trained.histories[0].epochs == []
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize(
    "params, message", [({"C": 0.0}, "C must"), ({"max_iter": 0}, "max_iter"), ({"C": "1"}, "C")]
)
def test_bad_hyperparameters_raise_clear_errors(params, message):
    specs = [ModalitySpec("a", "vector", (2,))]
    with pytest.raises(MlmmError, match=message):
        create_method("logistic-mean-impute", specs, TaskSpec("classification", 2), **params)
