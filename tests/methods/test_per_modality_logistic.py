"""per-modality-logistic: one scikit-learn model per modality fitted on the rows that have it,
the mean of the present modalities' probabilities (computed by hand), absent rows never read."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

SPECS = [ModalitySpec("u", "vector", (1,)), ModalitySpec("v", "vector", (2,))]


def _hand_model(task: TaskSpec):
    model = create_method("per-modality-logistic", SPECS, task).eval()
    with torch.no_grad():
        model.coef["u"].copy_(torch.tensor([[0.0], [1.0]]))
        model.intercept["u"].copy_(torch.tensor([0.0, 0.0]))
        model.coef["v"].copy_(torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
        model.intercept["v"].copy_(torch.tensor([0.0, -1.0]))
    return model


def _batch(present):
    inputs = {"u": torch.tensor([[1.0], [1.0], [5.0]]), "v": torch.tensor([[9.0, 1.0]] * 3)}
    return MultimodalBatch(inputs, torch.tensor(present), ("u", "v"))


def test_probabilities_are_averaged_over_the_present_modalities():
    model = _hand_model(TaskSpec("classification", 2))
    with torch.no_grad():
        out = model(_batch([[True, True], [True, False], [False, True]])).prediction.exp()
    p_u = 1 / (1 + math.exp(-1.0))  # class 1 from u = 1: logits [0, 1]
    p_v = 1 / (1 + math.exp(-(2.0 - 1.0)))  # class 1 from v: logits [0, 2 * 1 - 1]
    p_u5 = 1 / (1 + math.exp(-5.0))
    expected = [(p_u + p_v) / 2, p_u, p_v]
    np.testing.assert_allclose(out[:, 1].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-6)
    assert abs(out[2, 1].item() - p_u5) > 0.1  # row 3's absent u (= 5) is not read


def test_regression_averages_the_present_modalities_predictions():
    model = create_method("per-modality-logistic", SPECS, TaskSpec("regression")).eval()
    with torch.no_grad():
        model.coef["u"].copy_(torch.tensor([[3.0]]))
        model.coef["v"].copy_(torch.tensor([[1.0, 1.0]]))
        model.intercept["v"].copy_(torch.tensor([2.0]))
        out = model(_batch([[True, True], [True, False], [False, True]])).prediction
    np.testing.assert_allclose(out.numpy(), [(3.0 + 12.0) / 2, 3.0, 12.0])


def test_each_model_is_scikit_learns_on_the_rows_that_have_its_modality():
    data = contract_dataset()
    rng = np.random.default_rng(1)
    present = rng.random(data.observed.shape) > 0.5
    present[~present.any(1), 0] = True
    data = data.with_presence(present)
    model = create_method("per-modality-logistic", data.specs, data.task, C=0.3)
    trained = Trainer(progress=False).fit(model, data)
    std = trained.standardizer.transform(data)
    for j, name in enumerate(data.modality_names):
        rows = std.observed[:, j]
        x = std.inputs[name][rows].reshape(rows.sum(), -1)
        sk = LogisticRegression(C=0.3, max_iter=1000).fit(x, std.targets[rows])
        np.testing.assert_allclose(model.coef[name].numpy(), sk.coef_, atol=1e-4)
        np.testing.assert_allclose(model.intercept[name].numpy(), sk.intercept_, atol=1e-4)
    assert model.n_models == 3


def test_a_sample_with_nothing_present_gets_a_finite_answer():
    model = _hand_model(TaskSpec("classification", 2))
    with torch.no_grad():
        out = model(_batch([[False, False]] * 3)).prediction.exp()
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-6)


def test_bad_hyperparameters_raise_clear_errors():
    with pytest.raises(MlmmError, match="C must"):
        create_method("per-modality-logistic", SPECS, TaskSpec("classification", 2), C=-1.0)


def test_linear_fits_run_their_blas_on_one_thread(monkeypatch):
    # L-BFGS's many small BLAS calls ran 3-7x slower on 2 threads
    # (benchmarks/classical_threads.py); fit_linear pins BLAS to LINEAR_BLAS_THREADS
    from threadpoolctl import threadpool_info, threadpool_limits

    from mlmm.methods.reference._classical import LINEAR_BLAS_THREADS, fit_linear

    seen = []
    fit = LogisticRegression.fit

    def spy(self, x, y, *args, **kwargs):
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return fit(self, x, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", spy)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), np.arange(40) % 3
    with threadpool_limits(limits=2):
        fit_linear(x, y, TaskSpec("classification", 3), 1.0, 100, 0)
    assert LINEAR_BLAS_THREADS == 1 and seen and set(seen) == {1}
