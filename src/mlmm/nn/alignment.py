"""Cross-modal alignment losses on ``(embeddings [B, M, D], present [B, M])``.

Every loss here looks only at (sample, modality) entries that are present: absent entries are
replaced by zeros with ``torch.where`` before any arithmetic, so whatever an absent row holds
(zeros, noise, inf) changes neither the value nor the gradient. A pair of modalities counts for
a sample only when both are present in it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _present_only(embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Absent entries set to zero (``where``, so non-finite garbage never propagates)."""
    return torch.where(present.unsqueeze(-1), embeddings, torch.zeros_like(embeddings))


def pairwise_info_nce(
    embeddings: torch.Tensor, present: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Symmetric InfoNCE between every pair of modalities, on the samples that have both.

    For modalities ``i < j``, let ``S`` be the samples where both are present (at least two
    are needed, otherwise the pair is skipped: one sample has no negatives). With
    L2-normalised embeddings, the logits are cosine similarities divided by ``temperature``;
    for a sample in ``S`` the positive is its own other-modality embedding and the negatives
    are the other samples of ``S`` (CLIP's symmetric loss, van den Oord et al. 2018; Radford
    et al. 2021)::

        l_ij = 1/2 mean_{s in S} [ -log softmax_t(z_i[s] . z_j[t] / tau)_{t=s}
                                   -log softmax_t(z_j[s] . z_i[t] / tau)_{t=s} ]

    The result is the mean of ``l_ij`` over the pairs that were not skipped, and 0 when none
    is left. With ``k`` samples whose embeddings are identical across modalities and
    orthogonal across samples, ``l_ij = log(1 + (k - 1) exp(-1 / tau))``.

    Parameters
    ----------
    embeddings : Tensor, shape [B, M, D]
    present : Tensor of bool, shape [B, M]
    temperature : float
        Softmax temperature (> 0); smaller values punish hard negatives more.

    Returns
    -------
    Tensor, scalar.
    """
    z = F.normalize(_present_only(embeddings, present), dim=-1)  # [B, M, D]; absent rows 0
    n_modalities = present.shape[1]
    losses = []
    for i in range(n_modalities):
        for j in range(i + 1, n_modalities):
            both = present[:, i] & present[:, j]  # [B]
            n_both = int(both.sum())
            if n_both < 2:
                continue
            logits = z[:, i] @ z[:, j].T / temperature  # [B, B]
            # only samples that have both modalities are candidates (columns) and anchors (rows)
            candidates = both.unsqueeze(0)  # [1, B]
            forward = torch.logsumexp(logits.masked_fill(~candidates, -torch.inf), dim=1)  # [B]
            backward = torch.logsumexp(logits.T.masked_fill(~candidates, -torch.inf), dim=1)
            per_row = forward + backward - 2 * logits.diagonal()  # [B]
            per_row = torch.where(both, per_row, torch.zeros_like(per_row))
            losses.append(per_row.sum() / (2 * n_both))
    if not losses:
        return embeddings.new_zeros(())
    return torch.stack(losses).mean()


def pairwise_l1_alignment(embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the embeddings of two modalities of one sample.

    Averaged over features, then over every (sample, modality pair ``i < j``) with both
    present; 0 when no sample has two present modalities. This is the distribution-alignment
    term of ShaSpec (Wang et al., CVPR 2023; the authors' code uses ``nn.L1Loss`` between the
    shared features of modality pairs).

    Parameters
    ----------
    embeddings : Tensor, shape [B, M, D]
    present : Tensor of bool, shape [B, M]

    Returns
    -------
    Tensor, scalar.
    """
    z = _present_only(embeddings, present)  # [B, M, D]
    distance = (z.unsqueeze(2) - z.unsqueeze(1)).abs().mean(dim=-1)  # [B, M, M]
    n_modalities = present.shape[1]
    upper = torch.ones(n_modalities, n_modalities, dtype=torch.bool, device=present.device)
    upper = upper.triu(diagonal=1)  # [M, M], each unordered pair once
    pairs = present.unsqueeze(2) & present.unsqueeze(1) & upper  # [B, M, M]
    total = torch.where(pairs, distance, torch.zeros_like(distance)).sum()
    return total / pairs.sum().clamp_min(1).to(distance.dtype)


def modality_classification_loss(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting which modality each present feature came from.

    ``logits[b, m]`` are the ``M`` modality scores of sample ``b``'s modality-``m`` feature; the
    target of entry ``(b, m)`` is ``m``. Averaged over the present entries (0 when none is).
    ShaSpec's domain-classification objective on the specific features.

    Parameters
    ----------
    logits : Tensor, shape [B, M, M]
    present : Tensor of bool, shape [B, M]

    Returns
    -------
    Tensor, scalar.
    """
    batch_size, n_modalities = present.shape
    safe = _present_only(logits, present)  # [B, M, M]
    target = torch.arange(n_modalities, device=logits.device).expand(batch_size, n_modalities)
    per_entry = F.cross_entropy(safe.flatten(0, 1), target.flatten(), reduction="none")
    per_entry = torch.where(present.flatten(), per_entry, torch.zeros_like(per_entry))  # [B*M]
    return per_entry.sum() / present.sum().clamp_min(1).to(per_entry.dtype)
