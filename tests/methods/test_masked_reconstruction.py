"""masked-reconstruction: the loss covers only present-then-dropped tokens; seeded init."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.nn import modality_dropout
from mlmm.nn.embedding_completion import masked_mse
from mlmm.testing import contract_dataset
from mlmm.train.trainer import reset_parameters


def _batch(present_rows):
    data = contract_dataset()
    part = data.subset(np.arange(len(present_rows))).with_presence(
        np.array(present_rows, dtype=bool)
    )
    return data, MultimodalBatch.from_dataset(part)


def _model(**params):
    data = contract_dataset()
    return create_method(
        "masked-reconstruction", data.specs, data.task, **{"dropout": 0.0, **params}
    )


def test_loss_is_zero_when_nothing_is_dropped():
    _, batch = _batch([[True, True, True], [True, False, True], [False, True, False]])
    model = _model(drop_rate=0.0).train()
    assert model(batch).aux_losses["reconstruction"].item() == 0.0
    model = _model().eval()  # nothing is dropped at evaluation either
    with torch.no_grad():
        assert model(batch).aux_losses["reconstruction"].item() == 0.0


def test_modalities_absent_from_the_start_are_never_scored():
    # one present modality per row: it cannot be dropped, and the absent ones are not targets
    _, batch = _batch([[True, False, False], [False, True, False], [False, False, True]] * 4)
    model = _model(drop_rate=0.9).train()
    for _ in range(5):
        assert model(batch).aux_losses["reconstruction"].item() == 0.0


def test_loss_is_the_mse_on_dropped_tokens_only():
    _, batch = _batch([[True, True, True], [False, True, True], [True, False, True]] * 4)
    model = _model(drop_rate=0.5).train()
    torch.manual_seed(3)
    out = model(batch)
    torch.manual_seed(3)  # replay the only random draw (no dropout): which tokens are dropped
    kept = modality_dropout(batch.present, 0.5)
    dropped = batch.present & ~kept
    assert dropped.any()
    with torch.no_grad():
        tokens = torch.stack([model.encoders[m](batch.inputs[m]) for m in model.modalities], 1)
        inputs = torch.where(kept.unsqueeze(-1), tokens, model.mask_token.expand_as(tokens))
        encoded = model.transformer(inputs + model.modality_embedding)
        expected = masked_mse(model.reconstruct(encoded), tokens, dropped)
    assert torch.allclose(out.aux_losses["reconstruction"], expected, atol=1e-6)
    # kept tokens enter the completed set as encoded
    assert torch.allclose(out.extras["completed"][kept], tokens[kept], atol=1e-6)


def test_target_is_detached(monkeypatch):
    import mlmm.methods.representation.masked_reconstruction as module

    # drop the sequence modality "s" on every row: its encoder then reaches the
    # reconstruction loss only through the (detached) target
    monkeypatch.setattr(
        module, "modality_dropout", lambda present, p: present & ~torch.tensor([False, False, True])
    )
    _, batch = _batch([[True, True, True], [False, True, True]] * 3)
    model = _model().train()
    out = model(batch)
    assert out.aux_losses["reconstruction"].item() > 0.0
    out.aux_losses["reconstruction"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.encoders["s"].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.encoders["b"].parameters())


def test_seeded_reset_redraws_every_parameter():
    torch.manual_seed(1)
    a = _model(pooling="cls")
    torch.manual_seed(2)
    b = _model(pooling="cls")
    for model in (a, b):
        torch.manual_seed(0)
        reset_parameters(model)  # what the trainer does before training
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_class_token_pooling():
    _, batch = _batch([[True, False, True]] * 2)
    model = _model(pooling="cls").eval()
    with torch.no_grad():
        out = model(batch)
    assert out.embedding.shape == (2, model.embed_dim)
    assert model.class_token is not None and _model().class_token is None


@pytest.mark.parametrize(
    "params, message",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_heads": 0}, "n_heads"),
        ({"embed_dim": 30, "n_heads": 4}, "n_heads must divide embed_dim"),
        ({"drop_rate": 1.0}, "drop_rate"),
        ({"reconstruction_weight": -1.0}, "reconstruction_weight"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_invalid_hyperparameters(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method("masked-reconstruction", data.specs, data.task, **params)
