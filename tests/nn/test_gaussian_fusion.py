"""Product of experts on hand-written Gaussians, against the closed form."""

import math

import torch

from mlmm.nn.gaussian_fusion import ProductOfExperts, product_of_experts


def _experts(rows):
    """rows: list of per-modality (mean, variance) pairs -> mean, logvar [B=1, M, D=1]."""
    mean = torch.tensor([[[m] for m, _ in rows]])
    logvar = torch.tensor([[[math.log(v)] for _, v in rows]])
    return mean, logvar


def test_one_present_expert_with_prior():
    # expert N(2, 0.5): precision 2; with the N(0, 1) prior, precision 3, mean 2 * 2 / 3
    mean, logvar = _experts([(2.0, 0.5), (7.0, 9.0)])
    present = torch.tensor([[True, False]])
    fused_mean, fused_logvar = product_of_experts(mean, logvar, present, prior_expert=True)
    assert torch.allclose(fused_mean, torch.tensor([[4.0 / 3.0]]))
    assert torch.allclose(fused_logvar, torch.tensor([[math.log(1.0 / 3.0)]]))


def test_one_present_expert_without_prior_is_that_expert():
    mean, logvar = _experts([(2.0, 0.5), (7.0, 9.0)])
    present = torch.tensor([[True, False]])
    fused_mean, fused_logvar = product_of_experts(mean, logvar, present, prior_expert=False)
    assert torch.allclose(fused_mean, torch.tensor([[2.0]]))
    assert torch.allclose(fused_logvar, torch.tensor([[math.log(0.5)]]))


def test_two_experts_precision_weighted():
    # N(1, 1) and N(4, 0.25): precisions 1 and 4 -> mean (1 + 16) / 5 = 3.4, variance 1/5
    mean, logvar = _experts([(1.0, 1.0), (4.0, 0.25)])
    present = torch.tensor([[True, True]])
    fused_mean, fused_logvar = product_of_experts(mean, logvar, present, prior_expert=False)
    assert torch.allclose(fused_mean, torch.tensor([[3.4]]))
    assert torch.allclose(fused_logvar, torch.tensor([[math.log(0.2)]]))
    # with the prior: precision 6, mean 17 / 6
    fused_mean, fused_logvar = ProductOfExperts(prior_expert=True)(mean, logvar, present)
    assert torch.allclose(fused_mean, torch.tensor([[17.0 / 6.0]]))
    assert torch.allclose(fused_logvar, torch.tensor([[math.log(1.0 / 6.0)]]))


def test_absent_experts_have_no_effect_even_as_garbage():
    mean, logvar = _experts([(1.0, 1.0), (4.0, 0.25), (0.0, 1.0)])
    present = torch.tensor([[True, False, True]])
    clean = product_of_experts(mean, logvar, present)
    garbage_mean, garbage_logvar = mean.clone(), logvar.clone()
    garbage_mean[0, 1], garbage_logvar[0, 1] = float("nan"), -float("inf")
    noisy = product_of_experts(garbage_mean, garbage_logvar, present)
    for a, b in zip(clean, noisy, strict=True):
        assert torch.equal(a, b)
    # and it equals the product of the two present experts alone
    alone = product_of_experts(mean[:, [0, 2]], logvar[:, [0, 2]], present[:, [0, 2]])
    for a, b in zip(clean, alone, strict=True):
        assert torch.allclose(a, b)


def test_gradients_stay_finite_with_garbage_and_empty_rows():
    mean = torch.tensor([[[1.0], [float("nan")]], [[float("inf")], [2.0]]], requires_grad=True)
    logvar = torch.zeros(2, 2, 1, requires_grad=True)
    present = torch.tensor([[True, False], [False, False]])
    for prior in (True, False):
        fused_mean, fused_logvar = product_of_experts(mean, logvar, present, prior_expert=prior)
        (fused_mean.sum() + fused_logvar.sum()).backward()
        assert torch.isfinite(mean.grad).all() and torch.isfinite(logvar.grad).all()
        mean.grad, logvar.grad = None, None


def test_row_with_nothing_present_is_standard_normal():
    mean, logvar = _experts([(3.0, 0.1), (5.0, 2.0)])
    present = torch.tensor([[False, False]])
    for prior in (True, False):
        fused_mean, fused_logvar = product_of_experts(mean, logvar, present, prior_expert=prior)
        assert torch.equal(fused_mean, torch.zeros(1, 1))
        assert torch.equal(fused_logvar, torch.zeros(1, 1))


def test_extreme_variances_do_not_overflow():
    mean = torch.tensor([[[1.0], [3.0]]])
    logvar = torch.tensor([[[-200.0], [200.0]]])  # precisions e^200 and e^-200
    fused_mean, fused_logvar = product_of_experts(mean, logvar, torch.tensor([[True, True]]))
    assert torch.allclose(fused_mean, torch.tensor([[1.0]]))
    assert torch.allclose(fused_logvar, torch.tensor([[-200.0]]))
