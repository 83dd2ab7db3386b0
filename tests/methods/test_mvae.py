"""MVAE: the sub-sampled ELBO computed by hand, and its own hyperparameter."""

from __future__ import annotations

import math

import pytest
import torch

import mlmm
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))]
TASK = TaskSpec("classification", 2)
INPUTS = {
    "a": torch.tensor([[1.0, 2.0], [1e3, -1e3]]),  # row 1: absent, garbage
    "b": torch.tensor([[1.0, 0.0, 1.0], [2.0, 0.0, 0.0]]),
}
PRESENT = torch.tensor([[True, True], [False, True]])


def standard_normal_experts_and_zero_decoders(model) -> None:
    """All VAE weights 0: every expert is N(0, I) and every reconstruction 0."""
    with torch.no_grad():
        for weight in model.vae.parameters():
            weight.zero_()


def kl_of_product(k: int, latent_dim: int) -> float:
    """KL to N(0, I) of the product of k N(0, I) experts and the prior: N(0, I / (1 + k))."""
    var = 1.0 / (1 + k)
    return 0.5 * latent_dim * (var - 1.0 - math.log(var))


def test_sub_sampled_elbo_by_hand():
    model = mlmm.create_method(
        "mvae", SPECS, TASK, latent_dim=3, n_random_subsets=0, beta=0.5, elbo_weight=2.0
    )
    standard_normal_experts_and_zero_decoders(model)
    losses = model.elbo_losses(INPUTS, PRESENT)
    # row 0 (a, b): joint term reconstructs a and b, unimodal terms a and b again;
    # row 1 (b only): joint term and b's unimodal term reconstruct b; a's term is empty
    squares = 0.5 * 2 * ((1 + 4) + (1 + 1)) + 0.5 * 2 * 4
    scale = 2.0 / (5 * 2)  # elbo_weight / (input features * rows)
    assert losses["reconstruction"].item() == pytest.approx(scale * squares)
    kl = (kl_of_product(2, 3) + 2 * kl_of_product(1, 3)) + (kl_of_product(1, 3) * 2)
    assert losses["kl"].item() == pytest.approx(0.5 * scale * kl, rel=1e-5)


def test_random_subsets_add_terms_within_the_present_modalities():
    model = mlmm.create_method("mvae", SPECS, TASK, latent_dim=3, n_random_subsets=4)
    standard_normal_experts_and_zero_decoders(model)
    torch.manual_seed(0)
    with_subsets = model.elbo_losses(INPUTS, PRESENT)
    model.n_random_subsets = 0
    without = model.elbo_losses(INPUTS, PRESENT)
    extra = with_subsets["reconstruction"] - without["reconstruction"]
    # half squared errors: each random subset of row 1 is {b} (2); of row 0 one of {b} (1),
    # {a} (2.5) or {a, b} (3.5)
    scale = 1.0 / (5 * 2)
    assert 4 * (2 + 1) * scale <= extra.item() <= 4 * (2 + 3.5) * scale


@pytest.mark.parametrize("value", [-1, 1.5])
def test_invalid_number_of_random_subsets_is_refused(value):
    with pytest.raises(MlmmError, match="n_random_subsets"):
        mlmm.create_method("mvae", SPECS, TASK, n_random_subsets=value)
