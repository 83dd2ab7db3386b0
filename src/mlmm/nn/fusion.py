"""Fusion blocks: every one takes ``(embeddings [B, M, D], present [B, M])``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.errors import MlmmError


def masked_mean(embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean over the present modalities: ``[B, M, D], [B, M] -> [B, D]``.

    Absent modalities never contribute; a row with nothing present gives zeros.
    """
    mask = present.unsqueeze(-1)  # [B, M, 1]
    # where, not multiply: an absent row is ignored even if it holds NaN or inf
    total = torch.where(mask, embeddings, torch.zeros_like(embeddings)).sum(dim=1)  # [B, D]
    return total / mask.sum(dim=1).clamp_min(1).to(embeddings.dtype)


class MeanVarianceFusion(nn.Module):
    """HeMIS abstraction layer: element-wise mean and variance over the present modalities.

    Returns ``[B, 2D]`` = concat(mean, variance). As in Havaei et al. (2016), the variance over
    the set ``K`` of present modalities is the unbiased one, ``sum_k (h_k - mean)^2 / (|K| - 1)``,
    when ``|K| >= 2``, and 0 when only one modality is present. A row with nothing present gives
    zeros for both.
    """

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        mean = masked_mean(embeddings, present)  # [B, D]
        mask = present.unsqueeze(-1)  # [B, M, 1]
        deviation = torch.where(mask, embeddings - mean.unsqueeze(1), torch.zeros_like(embeddings))
        squares = (deviation**2).sum(dim=1)  # [B, D]
        # |K| - 1 divides from two present on; one present leaves squares at exactly 0
        count = mask.sum(dim=1).to(embeddings.dtype)  # [B, 1]
        variance = squares / (count - 1).clamp_min(1)  # [B, D]
        return torch.cat([mean, variance], dim=1)  # [B, 2D]


class ConcatFusion(nn.Module):
    """Concatenate embeddings with absent ones set to zero: ``[B, M, D] -> [B, M*D]``.

    Absent modalities read as zero vectors (what zero-imputation feeds a classifier);
    rows with nothing present give all zeros.
    """

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        mask = present.unsqueeze(-1)  # [B, M, 1]
        return torch.where(mask, embeddings, torch.zeros_like(embeddings)).flatten(1)  # [B, M*D]


def combine_predictions(
    logits: torch.Tensor,
    present: torch.Tensor,
    rule: str = "mean_prob",
    log_prior: torch.Tensor | None = None,
) -> torch.Tensor:
    """Combine per-modality class logits over the present modalities: ``[B, M, K] -> [B, K]``.

    Parameters
    ----------
    rule : {"mean_prob", "sum_logprob"}
        ``mean_prob`` averages the present modalities' probabilities (returned as their log);
        ``sum_logprob`` sums their log-probabilities (a product of experts, the Bayes rule for
        conditionally independent modalities), returned renormalised as log-probabilities.
        Absent modalities never contribute; a row with nothing present gets a uniform output.
    log_prior : Tensor, shape (K,), optional
        Log class prior the per-modality classifiers were trained under. With ``sum_logprob``
        the product is divided by ``p(y)^(n - 1)`` for the ``n`` present modalities (Kittler
        et al., 1998: ``p(y | x_1..x_n)`` is proportional to ``prod_i p(y | x_i) / p(y)^(n-1)``
        when the modalities are conditionally independent given ``y``), and a row with nothing
        present gets the prior. A class whose log prior is ``-inf`` (absent from training) has
        nothing divided out: it keeps the heads' own product (dividing by a zero prior would
        make it win), and probability 0 where nothing is present. Ignored by ``mean_prob``; a
        uniform prior changes nothing.
    """
    logp = F.log_softmax(logits, dim=-1)  # [B, M, K]
    mask = present.unsqueeze(-1)  # [B, M, 1]
    # float: traced into ONNX, an integer count's log() is a Log on int64, a graph
    # onnxruntime refuses. The default dtype, as PyTorch promotes an integer's log() to:
    # logp's own dtype would round log(n) to bfloat16 under bf16-mixed and change the output
    n_present = present.sum(dim=1, keepdim=True).clamp_min(1)  # [B, 1]
    n_present = n_present.to(torch.get_default_dtype())
    if rule == "mean_prob":
        fused = torch.logsumexp(logp.masked_fill(~mask, -math.inf), dim=1) - n_present.log()
        fused = torch.where(present.any(dim=1, keepdim=True), fused, torch.zeros_like(fused))
    elif rule == "sum_logprob":
        fused = torch.where(mask, logp, torch.zeros_like(logp)).sum(dim=1)  # [B, K]
        if log_prior is not None:  # each head's posterior holds the prior once: keep one copy
            log_prior = log_prior.to(fused.dtype)  # [K]
            seen = torch.isfinite(log_prior)  # [K]
            divided = torch.where(seen, log_prior, torch.zeros_like(log_prior))  # [K]
            count = present.sum(dim=1, keepdim=True).to(fused.dtype)  # [B, 1], 0 allowed
            fused = fused - (count - 1) * divided  # [B, K]
            fused = torch.where(count > 0, fused, log_prior)  # nothing present: the prior
    else:
        raise MlmmError(f"combination rule must be 'mean_prob' or 'sum_logprob', got {rule!r}")
    return F.log_softmax(fused, dim=-1)  # [B, K]
