"""moddrop: per-modality drop rates, at least one modality kept, fusion choices, bad input."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.combination.moddrop import drop_modalities
from mlmm.testing import contract_dataset


def test_each_modality_is_dropped_at_its_own_rate_and_one_is_always_kept():
    torch.manual_seed(0)
    present = torch.ones(20000, 3, dtype=torch.bool)
    present[::2, 2] = False  # half the rows lack the third modality
    kept = drop_modalities(present, torch.tensor([0.5, 0.0, 0.2]))
    assert not (kept & ~present).any()  # never adds a modality
    assert kept.any(dim=1).all()
    assert kept[:, 1].all()  # probability 0: never dropped
    # modality 0 is dropped at 0.5, except where it is the last survivor of its row
    rows_with_two = present[:, 2]
    rate_0 = 1 - kept[~rows_with_two, 0].float().mean().item()
    assert abs(rate_0 - 0.5) < 0.02
    rate_2 = 1 - kept[rows_with_two, 2].float().mean().item()
    assert abs(rate_2 - 0.2) < 0.02


def test_a_row_left_empty_gets_one_present_modality_back():
    torch.manual_seed(0)
    present = torch.tensor([[True, False, True]] * 2000)
    kept = drop_modalities(present, torch.tensor([0.9, 0.9, 0.9]))
    assert (kept.sum(1) >= 1).all() and not kept[:, 1].any()
    lone = kept.sum(1) == 1
    share = kept[lone, 0].float().mean().item()  # survivors split between the two
    assert 0.4 < share < 0.6


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
