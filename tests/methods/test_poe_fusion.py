"""poe-fusion: the fused embedding is the product of the present experts; hyperparameter checks."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset


def _batch(present_rows):
    """The first rows of the contract dataset with the given presence."""
    data = contract_dataset()
    n = len(present_rows)
    part = data.subset(np.arange(n)).with_presence(np.array(present_rows, dtype=bool))
    return data, MultimodalBatch.from_dataset(part)


def _encoder_gaussians(model, batch):
    out = torch.stack([model.encoders[m](batch.inputs[m]) for m in model.modalities], dim=1)
    return out.chunk(2, dim=-1)  # mean, logvar [B, M, D]


def test_embedding_is_the_closed_form_product_of_present_experts():
    data, batch = _batch([[True, False, True], [True, False, False], [True, True, True]])
    model = create_method("poe-fusion", data.specs, data.task).eval()
    with torch.no_grad():
        out = model(batch)
        mean, logvar = _encoder_gaussians(model, batch)
    precision = torch.exp(-logvar)  # [B, M, D]
    for row, present in enumerate(batch.present):
        total = 1.0 + precision[row, present].sum(0)  # the prior's precision is 1
        expected_mean = (precision[row, present] * mean[row, present]).sum(0) / total
        assert torch.allclose(out.embedding[row], expected_mean, atol=1e-5)
        assert torch.allclose(out.extras["logvar"][row], -total.log(), atol=1e-5)


def test_without_prior_a_lone_modality_is_its_own_expert():
    data, batch = _batch([[False, True, False]])
    model = create_method("poe-fusion", data.specs, data.task, prior_expert=False).eval()
    with torch.no_grad():
        out = model(batch)
        mean, logvar = _encoder_gaussians(model, batch)
    assert torch.allclose(out.embedding, mean[:, 1], atol=1e-6)
    assert torch.allclose(out.extras["logvar"], logvar[:, 1], atol=1e-6)


def test_head_inputs():
    data, batch = _batch([[True, True, False]] * 4)
    sample = create_method(
        "poe-fusion", data.specs, data.task, head_input="sample", dropout=0.0, modality_dropout=0.0
    )
    plain = create_method("poe-fusion", data.specs, data.task, dropout=0.0, modality_dropout=0.0)
    plain.load_state_dict(sample.state_dict())
    sample.train()
    first, second = sample(batch).prediction, sample(batch).prediction
    assert not torch.allclose(first, second)  # a fresh sample each call while training
    sample.eval(), plain.eval()
    with torch.no_grad():  # at evaluation the sample is the mean
        assert torch.allclose(sample(batch).prediction, plain(batch).prediction)
    both = create_method("poe-fusion", data.specs, data.task, head_input="mean_logvar")
    assert both.head.net[0].in_features == 2 * both.embed_dim


@pytest.mark.parametrize(
    "params, message",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden": -1}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"prior_expert": "yes"}, "prior_expert"),
        ({"prior_expert": 1}, "prior_expert"),
        ({"head_input": "variance"}, "head_input"),
    ],
)
def test_invalid_hyperparameters(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method("poe-fusion", data.specs, data.task, **params)
