"""MoPoE: the mixture's components, the generalised ELBO by hand, subset sampling."""

from __future__ import annotations

import math

import pytest
import torch

import mlmm
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

G = 1e3  # garbage in absent rows
SPECS = [ModalitySpec(k, "vector", (width,)) for k, width in (("a", 2), ("b", 3), ("c", 1))]
TASK = TaskSpec("classification", 2)
INPUTS = {
    "a": torch.tensor([[1.0, 2.0], [G, -G], [0.0, 3.0]]),
    "b": torch.tensor([[1.0, 0.0, 1.0], [2.0, 0.0, 0.0], [G, G, -G]]),
    "c": torch.tensor([[2.0], [G], [1.0]]),
}
PRESENT = torch.tensor([[True, True, True], [False, True, False], [True, False, True]])


def standard_normal_experts_and_zero_decoders(model) -> None:
    """All VAE weights 0: every expert is N(0, I) and every reconstruction 0."""
    with torch.no_grad():
        for weight in model.vae.parameters():
            weight.zero_()


def kl_of_product(k: int, latent_dim: int) -> float:
    """KL to N(0, I) of the product of k N(0, I) experts and the prior: N(0, I / (1 + k))."""
    var = 1.0 / (1 + k)
    return 0.5 * latent_dim * (var - 1.0 - math.log(var))


def test_components_are_the_non_empty_subsets_of_the_present_modalities():
    model = mlmm.create_method("mopoe", SPECS, TASK)
    present = torch.tensor([[True, False, True], [False, False, False]])
    subsets, valid = model.mixture_components(present)  # [2, 7, 3], [2, 7]
    assert not (subsets & ~present.unsqueeze(1)).any()  # never an absent expert
    components = {tuple(s.tolist()) for s in subsets[0][valid[0]]}
    assert components == {(True, False, False), (False, False, True), (True, False, True)}
    assert not valid[1].any()  # nothing present: no component


def test_components_are_sampled_when_there_are_too_many_subsets():
    model = mlmm.create_method("mopoe", SPECS, TASK, max_subsets=5)  # 7 subsets > 5
    torch.manual_seed(0)
    present = torch.tensor([[True, False, True], [True, True, True]])
    subsets, valid = model.mixture_components(present)
    assert subsets.shape == (2, 5, 3) and valid.all()
    assert not (subsets & ~present.unsqueeze(1)).any() and subsets.any(dim=-1).all()


def test_generalised_elbo_by_hand():
    model = mlmm.create_method("mopoe", SPECS, TASK, latent_dim=3, beta=0.5, elbo_weight=2.0)
    standard_normal_experts_and_zero_decoders(model)
    losses = model.elbo_losses(INPUTS, PRESENT)
    # every present modality is reconstructed once (half squared errors), from one sample
    squares = 0.5 * (5 + 2 + 4) + 0.5 * 4 + 0.5 * (9 + 1)
    scale = 2.0 / (6 * 3)  # elbo_weight / (input features * rows)
    assert losses["reconstruction"].item() == pytest.approx(scale * squares)
    # the KL is the mean over the components: the 7 subsets of {a, b, c} for row 0,
    # {b} for row 1, and {a}, {c}, {a, c} for row 2
    kl1, kl2, kl3 = (kl_of_product(k, 3) for k in (1, 2, 3))
    kl = (3 * kl1 + 3 * kl2 + kl3) / 7 + kl1 + (2 * kl1 + kl2) / 3
    assert losses["kl"].item() == pytest.approx(0.5 * scale * kl, rel=1e-5)
    # one sampled component per row (7 subsets > max_subsets): the same reconstruction, and
    # a KL between those of the smallest and the largest components
    model.max_subsets = 1
    torch.manual_seed(0)
    sampled = model.elbo_losses(INPUTS, PRESENT)
    assert sampled["reconstruction"].item() == pytest.approx(scale * squares)
    assert 0.5 * scale * 3 * kl1 <= sampled["kl"].item() + 1e-6
    assert sampled["kl"].item() <= 0.5 * scale * (kl3 + kl1 + kl2) + 1e-6


@pytest.mark.parametrize("value", [0, -2, 3.0])
def test_invalid_max_subsets_is_refused(value):
    with pytest.raises(MlmmError, match="max_subsets"):
        mlmm.create_method("mopoe", SPECS, TASK, max_subsets=value)
