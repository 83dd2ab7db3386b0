"""masked-attention: absent modalities get no attention, masking equals removing the token,
the modality embedding says which modality a token is; hyperparameter checks."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.nn.backbones import prepend_class_token
from mlmm.testing import contract_dataset

PATTERNS = [[True, False, True], [False, True, False], [True, True, True], [False, False, True]]


def _batch(rows):
    data = contract_dataset()
    part = data.subset(np.arange(len(rows))).with_presence(np.array(rows, dtype=bool))
    return data, MultimodalBatch.from_dataset(part)


def _model(data, **params):
    torch.manual_seed(0)
    return create_method("masked-attention", data.specs, data.task, **params).eval()


def test_absent_modalities_get_exactly_zero_attention():
    data, batch = _batch(PATTERNS)
    model = _model(data, n_layers=2)
    weights = model.attention(batch)  # per layer [B, 1 + M, 1 + M]
    assert [w.shape for w in weights] == [(4, 4, 4)] * 2
    present = torch.tensor(PATTERNS)
    keys = torch.cat([torch.ones(4, 1, dtype=torch.bool), present], dim=1)  # [B, 1 + M]
    for layer in weights:
        for row in range(4):
            assert torch.all(layer[row][:, ~keys[row]] == 0)  # no query reads an absent token
            assert torch.all(layer[row][:, keys[row]] > 0)
            assert torch.allclose(layer[row].sum(-1), torch.ones(4))


def test_masking_a_token_equals_removing_it_from_the_sequence():
    data, batch = _batch([[True, False, True]] * 3)
    model = _model(data)
    with torch.no_grad():
        out = model(batch)
        tokens = model.tokens(batch, batch.present)  # [B, 3, D]: a, b, s
        kept, _ = prepend_class_token(model.class_token, tokens[:, [0, 2]])  # b removed
        removed, _ = model.transformer(kept)  # no mask at all
    assert torch.allclose(out.embedding, removed[:, 0], atol=1e-5)


def test_present_inputs_and_modality_identity_matter():
    data, batch = _batch([[True, True, False]] * 2)
    model = _model(data)
    with torch.no_grad():
        base = model(batch).prediction
        changed = dict(batch.inputs, a=batch.inputs["a"] + 1.0)
        moved = model(MultimodalBatch(changed, batch.present, batch.modalities)).prediction
        # not a constant shift: the pre-norm LayerNorm would remove it
        model.modality_embedding[0] += torch.linspace(-1, 1, model.embed_dim)
        relabelled = model(batch).prediction
    assert not torch.allclose(base, moved)  # a present modality is read
    assert not torch.allclose(base, relabelled)  # the modality embedding is used


def test_modality_dropout_only_while_training():
    data, batch = _batch([[True, True, True]] * 64)
    model = _model(data, modality_dropout=0.5, dropout=0.0)
    with torch.no_grad():
        a, b = model(batch).prediction, model(batch).prediction
        model.train()
        torch.manual_seed(1)
        c = model(batch).prediction
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # rows lost modalities at random


@pytest.mark.parametrize(
    "params, message",
    [
        ({"embed_dim": 30, "n_heads": 4}, "divisible by n_heads"),
        ({"n_layers": 0}, "n_layers"),
        ({"n_heads": 0}, "n_heads"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"dropout": -0.1}, "dropout"),
    ],
)
def test_bad_hyperparameters_are_rejected(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method("masked-attention", data.specs, data.task, **params)
