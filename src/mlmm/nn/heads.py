"""Prediction heads."""

from __future__ import annotations

import torch
from torch import nn


class MLPHead(nn.Module):
    """``depth`` hidden blocks (Linear → LayerNorm → GELU → Dropout) then a Linear output."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 256, depth: int = 1, dropout: float = 0.1
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [
                nn.Linear(width, hidden),
                nn.LayerNorm(hidden),
                nn.GELU(),
                nn.Dropout(dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in_dim] -> [B, out_dim]
        return self.net(x)
