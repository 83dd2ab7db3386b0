"""Blocks for completing missing embeddings: a cascade residual autoencoder and a masked MSE.

The cascade residual autoencoder (CRA) is the imagination module of MMIN (Zhao, Li & Jin,
ACL 2021, doi:10.18653/v1/2021.acl-long.203), after the cascaded residual autoencoder of
Tran, Liu, Zhou & Jin, "Missing Modalities Imputation via Cascaded Residual Autoencoder",
CVPR 2017: a chain of small autoencoders, each predicting the
residual that the next one starts from.
"""

from __future__ import annotations

import torch
from torch import nn

from mlmm.nn.heads import MLPHead


class ResidualAutoencoderBlock(nn.Module):
    """One autoencoder of the cascade: ``x [B, D] -> (residual [B, D], latent [B, bottleneck])``.

    Encoder and decoder are each one hidden block (Linear → LayerNorm → GELU → Dropout) then a
    Linear (:class:`~mlmm.nn.MLPHead`).
    """

    def __init__(self, dim: int, bottleneck: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = MLPHead(dim, bottleneck, hidden, 1, dropout)
        self.decoder = MLPHead(bottleneck, dim, hidden, 1, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(x)  # [B, bottleneck]
        return self.decoder(latent), latent  # [B, D], [B, bottleneck]


class CascadeResidualAutoencoder(nn.Module):
    """A chain of autoencoders, each adding the residual it predicts to its input.

    With ``x_0 = x`` and block ``k`` giving ``(r_k, z_k) = AE_k(x_{k-1})``,
    ``x_k = x_{k-1} + r_k``; the output is ``x_n = x + r_1 + ... + r_n`` and the latents
    ``concat(z_1, ..., z_n)`` (MMIN classifies from them).

    Parameters
    ----------
    dim : int
        Size of the vector to complete (in MMIN, the concatenated modality embeddings).
    n_blocks : int
        Autoencoders in the chain.
    bottleneck : int
        Size of each autoencoder's latent.
    hidden : int
        Width of each encoder's and decoder's hidden layer.
    dropout : float, default 0.0
        Dropout inside the autoencoders (MMIN's authors use none there).

    ``forward(x [B, dim]) -> (output [B, dim], latents [B, n_blocks * bottleneck])``. The block
    works on whatever it is given: callers zero the slots of absent modalities (with
    ``torch.where``) before calling it.
    """

    def __init__(
        self, dim: int, n_blocks: int, bottleneck: int, hidden: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [ResidualAutoencoderBlock(dim, bottleneck, hidden, dropout) for _ in range(n_blocks)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = []
        for block in self.blocks:
            residual, latent = block(x)  # [B, dim], [B, bottleneck]
            x = x + residual
            latents.append(latent)
        return x, torch.cat(latents, dim=-1)  # [B, dim], [B, n_blocks * bottleneck]


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the selected modality slots: ``[B, M, D], [B, M, D], [B, M]``.

    The mean runs over every dimension of every slot where ``mask`` is True; unselected slots
    are never read (``torch.where``, so NaN there does no harm). With no slot selected the
    result is an exact zero that still carries a gradient path (so it can be summed into a
    loss).
    """
    selected = mask.unsqueeze(-1)  # [B, M, 1]
    squared = torch.where(selected, prediction - target, torch.zeros_like(prediction)) ** 2
    count = selected.sum() * prediction.shape[-1]
    return squared.sum() / count.clamp_min(1).to(prediction.dtype)
