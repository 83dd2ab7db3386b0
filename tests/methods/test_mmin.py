"""mmin: simulated missing conditions, the imagination and cycle losses, staged training."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.representation.mmin import hide_random_subset
from mlmm.nn.embedding_completion import masked_mse
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer


def _batch(present_rows):
    data = contract_dataset()
    part = data.subset(np.arange(len(present_rows))).with_presence(
        np.array(present_rows, dtype=bool)
    )
    return data, MultimodalBatch.from_dataset(part)


def test_hidden_subset_is_non_empty_proper_and_uniform():
    present = torch.tensor(
        [[True, True, True]] * 6000 + [[True, False, True], [False, True, False]]
    )
    torch.manual_seed(0)
    visible = hide_random_subset(present, 1.0)
    assert not (visible & ~present).any()  # only present modalities stay visible
    hidden = present & ~visible
    full, pair, lone = slice(0, 6000), 6000, 6001
    assert visible[full].any(1).all() and hidden[full].any(1).all()
    assert visible[pair].sum() == 1 and hidden[pair].sum() == 1
    assert torch.equal(visible[lone], present[lone])  # a lone modality is never hidden
    # the six non-empty proper subsets of three modalities, each about 1/6 of the rows
    codes = (hidden[full].long() * torch.tensor([1, 2, 4])).sum(1)
    counts = torch.bincount(codes, minlength=8)
    assert counts[0] == 0 and counts[7] == 0
    assert ((counts[1:7] - 1000).abs() < 120).all(), counts


def test_simulation_probability_zero_hides_nothing():
    present = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.equal(hide_random_subset(present, 0.0), present)


def _model(**params):
    data = contract_dataset()
    params = {"dropout": 0.0, **params}
    return create_method("mmin", data.specs, data.task, **params)


def test_imagination_loss_is_the_mse_on_hidden_embeddings():
    data, batch = _batch([[True, True, True], [True, False, True], [False, True, False]] * 3)
    model = _model().train()
    torch.manual_seed(5)
    out = model(batch)
    # replay: with no dropout the only random draw is the simulated missing condition
    torch.manual_seed(5)
    visible = hide_random_subset(batch.present, 1.0)
    hidden = batch.present & ~visible
    assert hidden.any()
    with torch.no_grad():
        emb = torch.stack([model.encoders[m](batch.inputs[m]) for m in model.modalities], 1)
        x = torch.where(visible.unsqueeze(-1), emb, torch.zeros_like(emb))
        imagined, _ = model.imagination(x.flatten(1))
        expected = masked_mse(imagined.view_as(emb), emb, hidden)
    assert torch.allclose(out.aux_losses["imagination"], model.forward_weight * expected)
    # visible slots of the completed embeddings are the encoders' own
    assert torch.allclose(out.extras["completed"][visible], emb[visible], atol=1e-6)


def test_no_imagination_loss_without_hidden_modalities_and_cycle_only_where_missing():
    data, batch = _batch([[True, True, True], [True, True, True]])
    model = _model().eval()
    with torch.no_grad():
        out = model(batch)
    # at evaluation nothing is hidden: no imagination target, and with every modality present
    # there is no missing part for the cycle either
    assert out.aux_losses["imagination"].item() == 0.0
    assert out.aux_losses["cycle"].item() == 0.0
    _, batch = _batch([[True, False, True]])
    with torch.no_grad():
        assert model(batch).aux_losses["cycle"].item() > 0.0


def test_classifier_inputs():
    data, batch = _batch([[True, False, True]] * 2)
    latents = _model().eval()
    completed = _model(classifier_input="completed").eval()
    with torch.no_grad():
        assert latents(batch).embedding.shape == (2, latents.n_blocks * latents.bottleneck)
        out = completed(batch)
    assert torch.equal(out.embedding, out.extras["completed"].flatten(1))


class _RecordingTrainer(Trainer):
    """Keeps the encoders' weights after each stage."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model, self.after = model, {}

    def fit_module(self, module, train, val, stage="main", max_epochs=None):
        history = super().fit_module(module, train, val, stage, max_epochs)
        self.after[stage] = {k: v.clone() for k, v in self.model.encoders.state_dict().items()}
        return history


@pytest.mark.parametrize("encoder_training", ["pretrained-frozen", "pretrained-finetuned", "joint"])
def test_staged_training(encoder_training):
    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = create_method("mmin", data.specs, data.task, encoder_training=encoder_training)
    trainer = _RecordingTrainer(model, max_epochs=2, seed=0, progress=False)
    trained = trainer.fit(model, split.train, split.val)
    stages = [h.stage for h in trained.histories]
    if encoder_training == "joint":
        assert stages == ["imagination"] and model.pretrain_head is None
        return
    assert stages == ["pretrain", "imagination"]
    before, after = trainer.after["pretrain"], trainer.after["imagination"]
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert unchanged == (encoder_training == "pretrained-frozen")
    assert all(p.requires_grad for p in model.parameters())  # unfrozen after training
    assert not model.training and not model.encoders.training


@pytest.mark.parametrize(
    "params, message",
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"n_blocks": 0}, "n_blocks"),
        ({"bottleneck": 0}, "bottleneck"),
        ({"forward_weight": -1.0}, "forward_weight"),
        ({"cycle_weight": -0.5}, "cycle_weight"),
        ({"simulate_missing": 1.5}, "simulate_missing"),
        ({"classifier_input": "bottleneck"}, "classifier_input"),
        ({"encoder_training": "frozen"}, "encoder_training"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_hyperparameters(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method("mmin", data.specs, data.task, **params)
