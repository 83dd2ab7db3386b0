"""Fusion of Gaussian embeddings: the product of experts over the present modalities.

Each modality's encoder gives a diagonal Gaussian ``N(mean_i, diag(exp(logvar_i)))``; the
product of the present experts (times an optional standard-normal prior expert) is again a
Gaussian, with precision ``T = sum_i T_i`` (``T_i = exp(-logvar_i)``) and mean
``sum_i T_i mean_i / T``. This is the fusion rule of the MVAE (Wu & Goodman, "Multimodal
Generative Models for Scalable Weakly-Supervised Learning", NeurIPS 2018, arXiv:1802.05335).
"""

from __future__ import annotations

import torch
from torch import nn


def product_of_experts(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    present: torch.Tensor,
    prior_expert: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of the present modalities' diagonal Gaussians: ``[B, M, D] -> [B, D]``.

    Parameters
    ----------
    mean, logvar : Tensor, shape [B, M, D]
        Each modality's Gaussian (mean and log-variance per dimension).
    present : Tensor of bool, shape [B, M]
        Only present experts enter the product; an absent expert's ``mean`` and ``logvar`` are
        never read (they may hold anything, NaN included).
    prior_expert : bool, default True
        Multiply in a ``N(0, I)`` expert (precision 1, mean 0), as the MVAE does. It shrinks
        the fused mean towards 0 when the present experts are uncertain.

    Returns
    -------
    mean, logvar : Tensor, shape [B, D]
        The fused Gaussian. A row with nothing present gets the prior ``N(0, I)`` (mean 0,
        log-variance 0), with or without ``prior_expert``.

    Notes
    -----
    Computed in log space: ``logvar = -logsumexp(-logvar_i)`` and the mean's weights
    ``T_i / T`` are a softmax of ``-logvar_i``, so very large or small variances neither
    overflow nor divide by zero.
    """
    mask = present.unsqueeze(-1)  # [B, M, 1]
    neg_logvar = torch.where(mask, -logvar, torch.full_like(logvar, -torch.inf))  # [B, M, D]
    safe_mean = torch.where(mask, mean, torch.zeros_like(mean))  # [B, M, D]
    has_expert = present.any(dim=1, keepdim=True)  # [B, 1]
    if prior_expert:
        prior = torch.zeros_like(neg_logvar[:, :1])  # [B, 1, D]: log precision 0, mean 0
        neg_logvar = torch.cat([neg_logvar, prior], dim=1)  # [B, M+1, D]
        safe_mean = torch.cat([safe_mean, prior], dim=1)  # [B, M+1, D]
        has_expert = torch.ones_like(has_expert)
    # a row without any expert gets finite dummy values (all -inf would give NaN), then N(0, I)
    neg_logvar = torch.where(has_expert.unsqueeze(-1), neg_logvar, torch.zeros_like(neg_logvar))
    log_precision = torch.logsumexp(neg_logvar, dim=1)  # [B, D]: log sum_i T_i
    weights = torch.softmax(neg_logvar, dim=1)  # [B, M(+1), D]: T_i / sum_j T_j
    fused_mean = (weights * safe_mean).sum(dim=1)  # [B, D]
    fused_mean = torch.where(has_expert, fused_mean, torch.zeros_like(fused_mean))
    fused_logvar = torch.where(has_expert, -log_precision, torch.zeros_like(log_precision))
    return fused_mean, fused_logvar


class ProductOfExperts(nn.Module):
    """:func:`product_of_experts` as a module (no parameters).

    ``forward(mean [B, M, D], logvar [B, M, D], present [B, M]) -> (mean [B, D], logvar [B, D])``.
    Absent experts are left out of the product (never read); a row with nothing present gets
    ``N(0, I)``; a modality absent for every row simply never contributes.

    Parameters
    ----------
    prior_expert : bool, default True
        Include a ``N(0, I)`` prior expert in the product (MVAE).
    """

    def __init__(self, prior_expert: bool = True) -> None:
        super().__init__()
        self.prior_expert = prior_expert

    def forward(
        self, mean: torch.Tensor, logvar: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_experts(mean, logvar, present, self.prior_expert)

    def extra_repr(self) -> str:
        return f"prior_expert={self.prior_expert}"
