"""Multimodal VAE blocks on hand-written Gaussians and inputs."""

from __future__ import annotations

import math

import pytest
import torch

from mlmm.data.specs import ModalitySpec
from mlmm.nn.multimodal_vae import (
    InputLevelHead,
    MultimodalVAE,
    all_subsets,
    gaussian_kl,
    product_of_experts,
    reconstruction_error,
    sample_subsets,
)

# Two experts (a, b) per dimension; the third slot holds garbage and is absent.
MU = torch.tensor([[[3.0, -2.0], [1.0, 4.0], [math.inf, math.nan]]])  # [B=1, M=3, D=2]
LOGVAR = torch.log(torch.tensor([[[0.5, 1.0], [1.0, 0.25], [1.0, 1.0]]]))
LOGVAR[0, 2] = torch.tensor([-1e4, math.nan])
A_AND_B = torch.tensor([[True, True, False]])


def test_product_of_two_experts_and_the_prior_matches_the_closed_form():
    mu, logvar = product_of_experts(MU, LOGVAR, A_AND_B)
    # precisions: dim 0: 2 + 1 + 1 (prior) = 4; dim 1: 1 + 4 + 1 = 6
    expected_mu = torch.tensor([[(3.0 * 2 + 1.0 * 1) / 4, (-2.0 * 1 + 4.0 * 4) / 6]])
    expected_var = torch.tensor([[1 / 4, 1 / 6]])
    assert torch.allclose(mu, expected_mu)
    assert torch.allclose(logvar.exp(), expected_var)


def test_an_absent_expert_has_no_effect_on_values_or_gradients():
    mu_in, logvar_in = MU.clone().requires_grad_(), LOGVAR.clone().requires_grad_()
    mu, logvar = product_of_experts(mu_in, logvar_in, A_AND_B)
    clean_mu, clean_logvar = product_of_experts(MU[:, :2], LOGVAR[:, :2], A_AND_B[:, :2])
    assert torch.allclose(mu, clean_mu) and torch.allclose(logvar, clean_logvar)
    (mu.sum() + logvar.sum()).backward()
    assert torch.isfinite(mu_in.grad).all() and torch.isfinite(logvar_in.grad).all()
    assert (mu_in.grad[0, 2] == 0).all() and (logvar_in.grad[0, 2] == 0).all()


def test_no_expert_gives_the_prior_and_one_expert_is_shrunk_towards_it():
    mu, logvar = product_of_experts(MU, LOGVAR, torch.tensor([[False, False, False]]))
    assert torch.equal(mu, torch.zeros(1, 2)) and torch.equal(logvar, torch.zeros(1, 2))
    mu, logvar = product_of_experts(MU, LOGVAR, torch.tensor([[False, True, False]]))
    # b alone: precisions 1 + 1 and 4 + 1
    assert torch.allclose(mu, torch.tensor([[0.5, 16.0 / 5]]))
    assert torch.allclose(logvar.exp(), torch.tensor([[0.5, 0.2]]))


def test_several_sets_per_row_match_one_set_at_a_time():
    sets = torch.tensor([[[True, False, False], [True, True, False], [False, False, False]]])
    mu, logvar = product_of_experts(MU, LOGVAR, sets)  # [1, 3, 2]
    assert mu.shape == (1, 3, 2)
    for k in range(3):
        one_mu, one_logvar = product_of_experts(MU, LOGVAR, sets[:, k])
        assert torch.allclose(mu[:, k], one_mu) and torch.allclose(logvar[:, k], one_logvar)


def test_gaussian_kl_by_hand():
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    expected = torch.tensor([0.0, 0.5, 0.5 * (math.e - 2.0)])
    assert torch.allclose(gaussian_kl(mu, logvar), expected)


def test_all_subsets_lists_each_non_empty_subset_once():
    subsets = all_subsets(3)
    assert subsets.shape == (7, 3)
    assert subsets.any(dim=1).all()
    assert len({tuple(row.tolist()) for row in subsets}) == 7


def test_sampled_subsets_are_uniform_non_empty_subsets_of_the_present_set():
    torch.manual_seed(0)
    present = torch.tensor([[True, True, False], [False, False, False]]).repeat(1500, 1)
    subsets = sample_subsets(present, 2)  # [3000, 2, 3]
    assert not (subsets & ~present.unsqueeze(1)).any()
    assert subsets[0::2].any(dim=-1).all() and not subsets[1::2].any()
    counts = torch.stack([subsets[0::2, :, 0], subsets[0::2, :, 1]], dim=-1).reshape(-1, 2)
    # three non-empty subsets of {a, b}: {a}, {b}, {a, b}, each a third of 3000 draws
    for pattern in ([True, False], [False, True], [True, True]):
        share = (counts == torch.tensor(pattern)).all(dim=1).float().mean().item()
        assert share == pytest.approx(1 / 3, abs=0.04)


def test_reconstruction_error_counts_only_masked_modalities():
    inputs = {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[1e6, math.nan]])}
    recon = {"a": torch.tensor([[0.0, 0.0]]), "b": torch.tensor([[0.0, 0.0]])}
    error = reconstruction_error(recon, inputs, torch.tensor([[True, False]]), ("a", "b"))
    assert torch.allclose(error, torch.tensor([0.5 * (1.0 + 4.0)]))
    # several sets per row: [B, K, F] reconstructions with a [B, K, M] mask
    recon3 = {k: v.unsqueeze(1).expand(-1, 2, -1) for k, v in recon.items()}
    sets = torch.tensor([[[True, False], [False, False]]])
    error = reconstruction_error(recon3, inputs, sets, ("a", "b"))
    assert torch.allclose(error, torch.tensor([[2.5, 0.0]]))


SPECS = [ModalitySpec("a", "vector", (3,)), ModalitySpec("s", "sequence", (4, 2))]


def test_complete_keeps_present_rows_and_decodes_absent_ones_from_the_present_posterior():
    torch.manual_seed(0)
    vae = MultimodalVAE(SPECS, latent_dim=2, hidden=8, depth=1)
    inputs = {"a": torch.randn(3, 3), "s": torch.randn(3, 4, 2)}
    present = torch.tensor([[True, False], [False, True], [True, True]])
    completed, joint_mu = vae.complete(inputs, present)
    assert torch.equal(completed["a"][[0, 2]], inputs["a"][[0, 2]])
    assert torch.equal(completed["s"][1:], inputs["s"][1:])
    mu, logvar = vae.encode(inputs, present)
    expected_mu, _ = product_of_experts(mu, logvar, present)
    assert torch.allclose(joint_mu, expected_mu)
    decoded = vae.decode(joint_mu)
    assert torch.allclose(completed["a"][1], decoded["a"][1])
    assert torch.allclose(completed["s"][0], decoded["s"][0].reshape(4, 2))
    # garbage in absent rows changes nothing
    noisy = {k: v.clone() for k, v in inputs.items()}
    noisy["a"][1] = 1e4
    noisy["s"][0] = -1e4
    again, _ = vae.complete(noisy, present)
    for name in inputs:
        assert torch.allclose(again[name], completed[name])


def test_input_level_head_sees_presence_flags():
    torch.manual_seed(0)
    head = InputLevelHead(SPECS, out_dim=3, hidden=8, depth=1, dropout=0.0, embed_dim=4)
    inputs = {"a": torch.randn(2, 3), "s": torch.randn(2, 4, 2)}
    both = head(inputs, torch.tensor([[True, True], [True, True]]))
    one = head(inputs, torch.tensor([[True, False], [True, False]]))
    assert both.shape == (2, 3) and not torch.allclose(both, one)
