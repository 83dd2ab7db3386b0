"""Encoders chosen from the modality kind: MLP (vector), 1-D conv or GRU (sequence), CNN (image)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn.heads import MLPHead


class MLPEncoder(MLPHead):
    """Flatten, then ``depth`` blocks of Linear → LayerNorm → GELU → Dropout, then Linear.

    Parameters
    ----------
    in_dim, out_dim : int
        Flattened input size and embedding size.
    hidden : int
        Width of the hidden blocks.
    depth : int
        Number of hidden blocks (0 = a single linear map).
    dropout : float
        Dropout after each hidden block.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *shape] -> [B, out_dim]
        return self.net(x.flatten(1))


class SequenceEncoder(nn.Module):
    """Sequence ``[B, T, C]`` → embedding, by 1-D convolutions (default) or a GRU.

    The convolutional form stacks ``depth`` Conv1d(kernel 5) → GroupNorm → GELU blocks (GroupNorm, not BatchNorm: no statistics shared across samples, so absent
    rows in a batch never leak into present ones) and
    pools over time with mean and max; the GRU form takes the final hidden state of a
    bidirectional GRU.
    """

    def __init__(
        self,
        channels: int,
        out_dim: int,
        hidden: int = 64,
        depth: int = 2,
        dropout: float = 0.1,
        architecture: str = "conv",
    ):
        super().__init__()
        if architecture not in ("conv", "gru"):
            raise MlmmError(f"sequence architecture must be 'conv' or 'gru', got {architecture!r}")
        self.architecture = architecture
        if architecture == "conv":
            blocks: list[nn.Module] = []
            width = channels
            for _ in range(depth):
                blocks += [
                    nn.Conv1d(width, hidden, 5, padding=2),
                    nn.GroupNorm(1, hidden),
                    nn.GELU(),
                ]
                width = hidden
            self.body = nn.Sequential(*blocks)
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_dim))
        else:
            self.body = nn.GRU(
                channels, hidden, num_layers=max(depth - 1, 1), batch_first=True, bidirectional=True
            )
            self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, out_dim]
        if self.architecture == "conv":
            h = self.body(x.transpose(1, 2))  # [B, H, T]
            pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # [B, 2H]
        else:
            _, last = self.body(x)  # [layers * 2, B, H]
            pooled = torch.cat([last[-2], last[-1]], dim=1)  # [B, 2H]
        return self.out(pooled)


class ImageEncoder(nn.Module):
    """Small CNN for ``[B, C, H, W]``: ``depth`` (Conv3x3 → GroupNorm → GELU → MaxPool) blocks,
    global average pooling, then Linear."""

    def __init__(
        self, channels: int, out_dim: int, hidden: int = 32, depth: int = 2, dropout: float = 0.1
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = channels
        for i in range(depth):
            nxt = hidden * 2**i
            blocks += [
                nn.Conv2d(width, nxt, 3, padding=1),
                nn.GroupNorm(1, nxt),
                nn.GELU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            width = nxt
        self.body = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, out_dim]
        return self.out(self.body(x))


def build_encoder(
    spec: ModalitySpec,
    out_dim: int,
    hidden: int = 256,
    depth: int = 1,
    dropout: float = 0.1,
    sequence_architecture: str = "conv",
) -> nn.Module:
    """The default encoder for a modality's kind.

    ``hidden`` is the MLP width for vectors; sequences and images use a quarter/eighth of it
    as channel width (at least 16) so one setting scales every encoder.
    """
    if spec.kind == "vector":
        return MLPEncoder(math.prod(spec.shape), out_dim, hidden, depth, dropout)
    if spec.kind == "sequence":
        return SequenceEncoder(
            spec.shape[1],
            out_dim,
            max(hidden // 4, 16),
            max(depth, 1) + 1,
            dropout,
            sequence_architecture,
        )
    return ImageEncoder(spec.shape[0], out_dim, max(hidden // 8, 16), max(depth, 1) + 1, dropout)
