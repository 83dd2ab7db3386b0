"""`coordinated`: the cross-modal InfoNCE and the fusion of normalised embeddings, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.registry import create_method
from mlmm.nn.alignment import pairwise_info_nce

EYE = torch.eye(3)  # three orthogonal unit vectors, one per sample


def _pair(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], dim=1)  # [B, 2, D]


ALL = torch.ones(3, 2, dtype=torch.bool)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_aligned_pairs_give_the_closed_form_minimum(tau):
    loss = pairwise_info_nce(_pair(EYE, EYE), ALL, tau)
    # positive logit 1/tau, two negatives at 0, in both directions
    expected = math.log(1 + 2 * math.exp(-1 / tau))
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # float32 cancellation


def test_aligned_is_near_zero_and_swapped_is_larger():
    aligned = pairwise_info_nce(_pair(EYE, EYE), ALL, 0.1)
    swapped_b = EYE[[1, 0, 2]]  # samples 0 and 1 exchanged their b embedding
    swapped = pairwise_info_nce(_pair(EYE, swapped_b), ALL, 0.1)
    assert aligned.item() < 1e-3
    # samples 0 and 1: the positive has logit 0, the wrong partner 1/tau, one more negative 0
    wrong = math.log(2 + math.exp(10.0))
    right = math.log(1 + 2 * math.exp(-10.0))
    assert swapped.item() == pytest.approx((2 * wrong + right) / 3, rel=1e-5)
    assert swapped.item() > 6.0


def test_norm_does_not_matter_only_direction():
    scaled = pairwise_info_nce(_pair(5 * EYE, 0.1 * EYE), ALL, 0.1)
    assert scaled.item() == pytest.approx(pairwise_info_nce(_pair(EYE, EYE), ALL, 0.1).item())


def test_a_sample_with_one_modality_absent_contributes_nothing():
    clean = pairwise_info_nce(_pair(EYE, EYE), ALL, 0.1)
    # a fourth sample whose b is absent; garbage there (and a value that would pair perfectly
    # with another sample's a) must change nothing, value and gradient alike
    for garbage in (
        torch.tensor([1.0, 0.0, 0.0]),
        torch.full((3,), 1e6),
        torch.full((3,), math.inf),
    ):
        a = torch.cat([EYE, torch.tensor([[0.0, 1.0, 0.0]])]).requires_grad_(True)
        b = torch.cat([EYE, garbage[None]]).requires_grad_(True)
        present = torch.tensor([[True, True]] * 3 + [[True, False]])
        loss = pairwise_info_nce(_pair(a, b), present, 0.1)
        assert loss.item() == pytest.approx(clean.item(), rel=1e-6)
        loss.backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
        assert torch.all(b.grad[3] == 0) and torch.all(a.grad[3] == 0)


def test_pairs_with_fewer_than_two_shared_samples_are_skipped():
    # modality c is present in one sample only: (a, c) and (b, c) have no negatives
    c = torch.tensor([[0.0, 0.0, 1.0], [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]])
    emb = torch.stack([EYE, EYE[[1, 0, 2]], c], dim=1)  # [3, 3, 3]
    present = torch.tensor([[True, True, True], [True, True, False], [True, True, False]])
    expected = pairwise_info_nce(_pair(EYE, EYE[[1, 0, 2]]), ALL, 0.1)
    assert pairwise_info_nce(emb, present, 0.1).item() == pytest.approx(expected.item())
    single = torch.tensor([[True, True], [True, False], [False, True]])
    assert pairwise_info_nce(_pair(EYE, EYE), single, 0.1).item() == 0.0


def test_three_modalities_average_the_pairs():
    emb = torch.stack([EYE, EYE, EYE[[1, 0, 2]]], dim=1)  # c swapped, a and b aligned
    present = torch.ones(3, 3, dtype=torch.bool)
    ab = pairwise_info_nce(_pair(EYE, EYE), ALL, 0.1)
    ac = pairwise_info_nce(_pair(EYE, EYE[[1, 0, 2]]), ALL, 0.1)
    assert pairwise_info_nce(emb, present, 0.1).item() == pytest.approx((ab + 2 * ac).item() / 3)


# ---------------------------------------------------------------------- the model
SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))]
TASK = TaskSpec("classification", 2)


def _identity_model(**params):
    """`coordinated` whose encoders pass their 2-d input through, so embeddings are known."""
    model = create_method("coordinated", SPECS, TASK, embed_dim=2, **params)
    model.encoders = nn.ModuleDict({"a": nn.Identity(), "b": nn.Identity()})
    return model.eval()


def _batch(a, b, present, target=None):
    return MultimodalBatch(
        {"a": torch.tensor(a), "b": torch.tensor(b)},
        torch.tensor(present),
        ("a", "b"),
        None if target is None else torch.tensor(target),
    )


def test_fusion_averages_the_l2_normalised_present_embeddings():
    model = _identity_model()
    batch = _batch(
        [[3.0, 4.0], [3.0, 4.0], [50.0, 50.0]],
        [[0.0, 2.0], [77.0, -5.0], [0.0, -7.0]],
        [[True, True], [True, False], [False, True]],
    )
    out = model(batch)
    expected = torch.tensor([[0.3, 0.9], [0.6, 0.8], [0.0, -1.0]])
    assert torch.allclose(out.embedding, expected, atol=1e-6)


def test_alignment_loss_is_added_with_its_weight():
    a = [[1.0, 0.0], [0.0, 1.0]]
    batch = _batch(a, [[0.0, 1.0], [1.0, 0.0]], [[True, True], [True, True]], [0, 1])
    out = _identity_model(align_weight=2.5, temperature=0.5)(batch)
    # swapped pair: both rows have the positive at 0 and the negative at 1/tau = 2
    assert out.aux_losses["align"].item() == pytest.approx(2.5 * math.log(1 + math.exp(2.0)))
    task = torch.nn.functional.cross_entropy(out.prediction, torch.tensor([0, 1]))
    assert out.loss.item() == pytest.approx(task.item() + out.aux_losses["align"].item())
    assert "align" not in _identity_model(align_weight=0.0)(batch).aux_losses
    no_target = _batch(a, a, [[True, True], [True, True]])
    assert _identity_model()(no_target).aux_losses == {}


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"align_weight": -1.0}, "align_weight"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden": 0}, "hidden"),
        ({"depth": -1}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"temperature": "0.1"}, "temperature"),
    ],
)
def test_invalid_hyperparameters_raise(params, fragment):
    with pytest.raises(MlmmError, match=fragment):
        create_method("coordinated", SPECS, TASK, **params)
