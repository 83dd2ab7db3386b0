"""learned-weight-ensemble: gate weights over present modalities, the mixture by hand."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset

ROWS = np.array([[True, False, True], [False, True, False], [True, True, True]])


def _model_and_batch():
    data = contract_dataset()
    part = data.subset(np.arange(len(ROWS))).with_presence(ROWS)
    model = create_method("learned-weight-ensemble", data.specs, data.task).eval()
    return model, MultimodalBatch.from_dataset(part)


def test_absent_modalities_get_weight_zero_and_weights_sum_to_one():
    model, batch = _model_and_batch()
    with torch.no_grad():
        w = model(batch).extras["weights"]
    assert (w[torch.from_numpy(~ROWS)] == 0).all()
    assert (w[torch.from_numpy(ROWS)] > 0).all()
    assert torch.allclose(w.sum(1), torch.ones(len(ROWS)))
    assert torch.equal(w[1], torch.tensor([0.0, 1.0, 0.0]))  # a lone modality takes it all


def test_prediction_is_the_weighted_mixture_of_present_heads():
    model, batch = _model_and_batch()
    with torch.no_grad():
        out = model(batch)
    probs = out.extras["per_modality"].softmax(-1)  # [B, M, K]
    expected = (out.extras["weights"].unsqueeze(-1) * probs).sum(1).log()  # [B, K]
    assert torch.allclose(out.prediction, expected, atol=1e-5)


def test_weights_depend_on_the_presence_pattern_only():
    model, batch = _model_and_batch()
    with torch.no_grad():
        w = model(batch).extras["weights"]
        other = MultimodalBatch(
            {k: v + 1.0 for k, v in batch.inputs.items()}, batch.present, batch.modalities
        )
        assert torch.equal(model(other).extras["weights"], w)
        with torch.no_grad():
            model.gate.net[-1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        tilted = model(batch).extras["weights"]
    assert tilted[2, 0] > w[2, 0] and tilted[0, 0] > w[0, 0]


def test_gradients_are_finite_with_missing_rows():
    model, batch = _model_and_batch()
    model.train()
    model(batch).loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.gate.net[0].weight.grad.abs().sum() > 0  # the gate learns from the mixture


def test_hyperparameters_are_checked():
    data = contract_dataset()
    with pytest.raises(MlmmError, match="gate_hidden"):
        create_method("learned-weight-ensemble", data.specs, data.task, gate_hidden=0)
