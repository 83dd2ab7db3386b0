"""`shaspec`: mean-shared stand-ins, the alignment and domain losses, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.registry import create_method
from mlmm.methods.representation.shaspec import fill_absent_with_shared_mean
from mlmm.nn.alignment import modality_classification_loss, pairwise_l1_alignment

G = 1e6  # garbage in absent slots: it must never reach an output


def test_absent_slot_gets_the_mean_of_present_shared_features():
    own = torch.tensor(
        [
            [[10.0, 10.0], [20.0, 20.0], [G, G]],  # c absent
            [[G, G], [30.0, 30.0], [G, G]],  # only b
            [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]],  # all present
            [[G, G], [G, G], [G, G]],  # nothing present
        ]
    )  # [B=4, M=3, D=2]
    shared = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 6.0], [G, G]],
            [[G, G], [5.0, -1.0], [G, G]],
            [[G, G], [G, G], [G, G]],  # never needed: nothing is absent
            [[G, G], [G, G], [G, G]],
        ]
    )
    present = torch.tensor(
        [[True, True, False], [False, True, False], [True, True, True], [False, False, False]]
    )
    out = fill_absent_with_shared_mean(own, shared, present)
    expected = torch.tensor(
        [
            [[10.0, 10.0], [20.0, 20.0], [2.0, 4.0]],  # mean of (1, 2) and (3, 6)
            [[5.0, -1.0], [30.0, 30.0], [5.0, -1.0]],  # the one present shared feature
            [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]],  # unchanged
            [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        ]
    )
    assert torch.equal(out, expected)


def test_l1_alignment_by_hand_ignores_absent_modalities():
    emb = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 2.0], [G, -G]],  # pair (a, b): |2| + |0| -> mean 1
            [[0.0, 0.0], [1.0, 1.0], [2.0, 4.0]],  # ab: 1, ac: 3, bc: 2
            [[G, G], [7.0, 7.0], [G, G]],  # one modality: no pair
        ]
    )
    present = torch.tensor([[True, True, False], [True, True, True], [False, True, False]])
    loss = pairwise_l1_alignment(emb, present)
    assert loss.item() == pytest.approx((1 + 1 + 3 + 2) / 4)
    assert pairwise_l1_alignment(emb, torch.zeros_like(present)).item() == 0.0


def test_domain_loss_counts_present_modalities_only():
    logits = torch.tensor(
        [
            [[2.0, 0.0], [G, -G]],  # modality b absent: its garbage logits must not count
            [[0.0, 0.0], [1.0, 3.0]],
        ]
    )  # [B=2, M=2, M=2]
    present = torch.tensor([[True, False], [True, True]])
    expected = (2 * math.log(1 + math.exp(-2.0)) + math.log(2.0)) / 3
    assert modality_classification_loss(logits, present).item() == pytest.approx(expected)
    logits = logits.clone().requires_grad_(True)
    modality_classification_loss(logits, present).backward()
    assert torch.all(logits.grad[0, 1] == 0) and torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------------- the model
SPECS = [
    ModalitySpec("a", "vector", (3,)),
    ModalitySpec("b", "vector", (2,)),
    ModalitySpec("c", "vector", (4,)),
]
TASK = TaskSpec("classification", 3)


def _batch(present, seed=0, garbage=False):
    gen = torch.Generator().manual_seed(seed)
    inputs = {s.name: torch.randn(4, *s.shape, generator=gen) for s in SPECS}
    present = torch.tensor(present)
    for j, s in enumerate(SPECS):
        fill = torch.randn(inputs[s.name].shape, generator=gen) * 100 if garbage else 0.0
        inputs[s.name] = torch.where(present[:, j, None], inputs[s.name], fill)
    return MultimodalBatch(inputs, present, ("a", "b", "c"), torch.tensor([0, 1, 2, 0]))


PRESENT = [[True, False, True], [False, True, False], [True, True, True], [True, True, False]]


def test_model_fills_absent_slots_with_mean_shared_feature():
    model = create_method("shaspec", SPECS, TASK, embed_dim=5).eval()
    # with a zero residual projection the fused feature of a present modality is its shared one
    nn.init.zeros_(model.fusion_projection.weight)
    nn.init.zeros_(model.fusion_projection.bias)
    with torch.no_grad():
        fused = model(_batch(PRESENT)).embedding.reshape(4, 3, 5)
    present = torch.tensor(PRESENT)
    for row in range(4):
        mean_present = fused[row, present[row]].mean(dim=0)
        for slot in range(3):
            if not present[row, slot]:
                assert torch.allclose(fused[row, slot], mean_present, atol=1e-6)
    assert not torch.allclose(fused[0, 0], fused[0, 2])  # present slots keep their own


def test_auxiliary_losses_never_read_absent_modalities():
    model = create_method("shaspec", SPECS, TASK, align_weight=0.1).eval()
    with torch.no_grad():
        clean = model(_batch(PRESENT))
        noisy = model(_batch(PRESENT, garbage=True))
    assert set(clean.aux_losses) == {"align", "domain"}
    for name in ("align", "domain"):
        assert clean.aux_losses[name].item() == pytest.approx(noisy.aux_losses[name].item())
    assert torch.allclose(clean.prediction, noisy.prediction, atol=1e-5)
    # weights scale the terms; a zero weight removes one
    doubled = create_method("shaspec", SPECS, TASK, align_weight=0.2, domain_weight=0.0).eval()
    doubled.load_state_dict(model.state_dict())
    with torch.no_grad():
        out = doubled(_batch(PRESENT))
    assert set(out.aux_losses) == {"align"}
    assert out.aux_losses["align"].item() == pytest.approx(2 * clean.aux_losses["align"].item())


def test_alignment_is_zero_without_two_present_modalities():
    # with one modality per row the alignment term has no pair and is exactly 0
    model = create_method("shaspec", SPECS, TASK).eval()
    one_each = [
        [True, False, False],
        [False, True, False],
        [False, False, True],
        [True, False, False],
    ]
    with torch.no_grad():
        out = model(_batch(one_each))
    assert out.aux_losses["align"].item() == 0.0
    assert out.aux_losses["domain"].item() > 0.0


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"align_weight": -0.1}, "align_weight"),
        ({"domain_weight": -1.0}, "domain_weight"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden": 0}, "hidden"),
        ({"depth": -1}, "depth"),
        ({"dropout": 1.5}, "dropout"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
        ({"embed_dim": 8.5}, "embed_dim"),
    ],
)
def test_invalid_hyperparameters_raise(params, fragment):
    with pytest.raises(MlmmError, match=fragment):
        create_method("shaspec", SPECS, TASK, **params)
