"""Modality dropout: hide present modalities at random during training."""

from __future__ import annotations

import torch


def modality_dropout(
    present: torch.Tensor, p: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Drop each present modality with probability ``p``, keeping at least one per row.

    A row whose present modalities were all dropped keeps one of them chosen uniformly at
    random (not a fixed one). Rows with nothing present stay empty.

    Parameters
    ----------
    present : Tensor of bool, shape [B, M]
    p : float in [0, 1), or Tensor of shape [M]
        One probability for every modality, or one per modality (ModDrop's per-channel rates).

    Returns
    -------
    Tensor of bool, shape [B, M], a subset of ``present``.
    """
    if not torch.is_tensor(p) and p <= 0:
        return present
    u = torch.rand(present.shape, generator=generator, device=present.device)  # [B, M]
    kept = present & (u >= p)
    emptied = present.any(dim=1) & ~kept.any(dim=1)  # [B]
    if emptied.any():
        # a fresh uniform score restricted to present modalities picks one survivor per row
        score = torch.rand(present.shape, generator=generator, device=present.device)
        score = score.masked_fill(~present, -1.0)
        keep_one = torch.zeros_like(present)
        keep_one[torch.arange(len(present), device=present.device), score.argmax(dim=1)] = True
        kept = torch.where(emptied[:, None], keep_one & present, kept)
    return kept
