"""moddrop: fusion choices, per-modality drop rates, bad input (the dropping itself is
tested with mlmm.nn.modality_dropout)."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset


@pytest.mark.parametrize("fusion, width", [("concat", 3 * 8), ("mean", 8), ("mean_variance", 16)])
def test_fusion_choices(fusion, width):
    data = contract_dataset()
    model = create_method("moddrop", data.specs, data.task, fusion=fusion, embed_dim=8).eval()
    rows = np.array([[True, False, True], [False, True, False]])
    batch = MultimodalBatch.from_dataset(data.subset([0, 1]).with_presence(rows))
    with torch.no_grad():
        out = model(batch)
    assert out.embedding.shape == (2, width)
    if fusion == "concat":  # absent modalities' slots are zero, as in the paper
        assert (out.embedding[0, 8:16] == 0).all() and (out.embedding[1, :8] == 0).all()


def test_no_dropping_at_prediction_time():
    data = contract_dataset()
    model = create_method("moddrop", data.specs, data.task, drop_prob=0.9).eval()
    batch = MultimodalBatch.from_dataset(data.subset(np.arange(8)))
    with torch.no_grad():
        assert torch.equal(model(batch).prediction, model(batch).prediction)


def test_bad_hyperparameters():
    data = contract_dataset()
    with pytest.raises(MlmmError, match="fusion"):
        create_method("moddrop", data.specs, data.task, fusion="sum")
    with pytest.raises(MlmmError, match="drop_prob"):
        create_method("moddrop", data.specs, data.task, drop_prob=1.0)
    with pytest.raises(MlmmError, match="unknown modalities"):
        create_method("moddrop", data.specs, data.task, drop_prob={"x": 0.2})
    model = create_method("moddrop", data.specs, data.task, drop_prob={"s": 0.4})
    assert model.drop_probs.tolist() == pytest.approx([0.0, 0.0, 0.4])


def test_training_drops_whole_modalities_and_keeps_one_per_row():
    # ModDrop: in training a dropped modality leaves the fusion entirely (its concat slot is
    # exactly zero), a kept one enters untouched; never every modality of a row
    data = contract_dataset()
    model = create_method(
        "moddrop", data.specs, data.task, fusion="concat", embed_dim=8, dropout=0.0, drop_prob=0.5
    )
    batch = MultimodalBatch.from_dataset(data)  # everything present
    with torch.no_grad():
        full = model.eval()(batch).embedding.view(len(data), 3, 8)  # [B, M, D]
        torch.manual_seed(0)
        dropped = model.train()(batch).embedding.view(len(data), 3, 8)
    zero = (dropped == 0).all(dim=-1)  # [B, M]
    same = (dropped == full).all(dim=-1)  # [B, M]
    assert (zero ^ same).all(), "a slot was neither dropped whole nor kept as encoded"
    assert not zero.all(dim=1).any(), "a row lost every modality"
    rate = zero.float().mean().item()
    assert 0.3 < rate < 0.5, rate  # 0.5 per modality, minus the rows that keep one back
