"""Encoders chosen from the modality kind: MLP (vector), 1-D conv or GRU (sequence), CNN (image)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn.heads import MLPHead

if TYPE_CHECKING:
    from mlmm.data.batch import MultimodalBatch

#: Whether the GRU sequence encoder reads variable-length rows through packed sequences
#: (``pack_padded_sequence``) outside tracing; tracing always uses :func:`gru_last_valid`.
PACKED_GRU = True


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
    bidirectional GRU. With per-row lengths the GRU reads packed sequences, or, while traced
    (ONNX export), :func:`gru_last_valid` on the padded batch, which gives the same state.
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

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:  # [B, T, C] -> [B, out_dim]
        """Embed ``x``; with ``lengths`` (``[B]`` valid steps), steps from ``lengths[i]`` on are
        padding and never change the output: whatever they hold, however many there are."""
        if lengths is not None:
            return self.out(self._pooled_valid(x, lengths))
        if self.architecture == "conv":
            h = self.body(x.transpose(1, 2))  # [B, H, T]
            pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # [B, 2H]
        else:
            _, last = self.body(x)  # [layers * 2, B, H]
            pooled = torch.cat([last[-2], last[-1]], dim=1)  # [B, 2H]
        return self.out(pooled)

    def _pooled_valid(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The pooled features ``[B, 2H]`` of the valid steps only."""
        steps = x.shape[1]
        lengths = lengths.to(x.device).long().clamp(0, steps)  # [B]
        valid = torch.arange(steps, device=x.device)[None, :] < lengths[:, None]  # [B, T]
        if self.architecture == "gru":
            # a row with no valid step (an absent modality) is run on one zero step
            x = torch.where(valid[..., None], x, torch.zeros_like(x))  # [B, T, C]
            if PACKED_GRU and not _tracing():
                packed = nn.utils.rnn.pack_padded_sequence(
                    x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
                )
                _, last = self.body(packed)  # [layers * 2, B, H]
            else:
                last = gru_last_valid(self.body, x, lengths.clamp(min=1))  # [layers * 2, B, H]
            return torch.cat([last[-2], last[-1]], dim=1)  # [B, 2H]
        keep = valid[:, None, :].to(x.dtype)  # [B, 1, T]
        count = keep.sum(dim=2).clamp(min=1.0)  # [B, 1]
        h = x.transpose(1, 2) * keep  # [B, C, T]: padding as the convolution's own zeros
        for layer in self.body:
            if isinstance(layer, nn.GroupNorm):
                h = _masked_group_norm(layer, h, keep)
            else:
                h = layer(h)
            if isinstance(layer, nn.GELU):
                h = h * keep  # padded steps back to zero before the next convolution
        mean = h.sum(dim=2) / count  # [B, H]
        top = h.masked_fill(keep == 0, float("-inf")).amax(dim=2)  # [B, H]
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # no valid step
        return torch.cat([mean, top], dim=1)  # [B, 2H]


def _tracing() -> bool:
    """True while ``torch.jit.trace`` or the ONNX exporter records the forward pass."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def gru_last_valid(gru: nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``gru``'s final hidden state ``[layers * directions, B, H]`` with each row read up to its
    own length, as ``gru(pack_padded_sequence(x, lengths))`` gives it, without packing.

    Packed sequences do not trace into an ONNX graph that honours per-row lengths; this runs
    on the padded batch instead, one layer and direction at a time. The forward direction
    reads the padding only after the valid steps, so its state at step ``lengths - 1`` is the
    packed one. The backward direction must start at each row's last valid step: each row's
    valid steps are reversed in place by an index gather (padding stays where it is), run
    forwards with the reverse weights, and gathered back, which is the same permutation.

    Parameters
    ----------
    gru : nn.GRU
        A ``batch_first`` GRU (any number of layers, one or two directions).
    x : Tensor
        ``[B, T, C]``; the padding must be finite (it is read, then discarded).
    lengths : Tensor
        ``[B]`` valid steps per row, 1 to ``T``.

    Returns
    -------
    Tensor
        ``[layers * directions, B, H]``, in ``nn.GRU``'s order (layer 0 forward, layer 0
        backward, layer 1 forward, ...).
    """
    if not gru.batch_first:
        raise MlmmError("gru_last_valid needs a GRU built with batch_first=True; build it so")
    b, t, _ = x.shape
    h = gru.hidden_size
    steps = torch.arange(t, device=x.device)[None, :]  # [1, T]
    last = (lengths.to(x.device).long() - 1)[:, None]  # [B, 1]
    # row i's valid steps reversed, its padding in place; its own inverse
    reverse = torch.where(steps <= last, last - steps, steps)  # [B, T]
    at_last = last[:, :, None].expand(b, 1, h)  # [B, 1, H]
    zero = x.new_zeros(1, b, h)  # [1, B, H]
    directions = 2 if gru.bidirectional else 1
    states = []
    inputs = x  # [B, T, C], then [B, T, directions * H]
    for layer in range(gru.num_layers):
        outputs = []
        for d in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            weights = [getattr(gru, f"{w}{suffix}") for w in ("weight_ih", "weight_hh")]
            if gru.bias:
                weights += [getattr(gru, f"{w}{suffix}") for w in ("bias_ih", "bias_hh")]
            seq = inputs
            if d:
                seq = inputs.gather(1, reverse[..., None].expand(-1, -1, inputs.shape[2]))
            # torch.gru is nn.GRU's own kernel, here for one layer and one direction
            out, _ = torch.gru(seq, zero, weights, gru.bias, 1, 0.0, gru.training, False, True)
            states.append(
                out.gather(1, at_last)[:, 0]
            )  # [B, H]: the state after the last valid step
            if d:
                out = out.gather(1, reverse[..., None].expand(-1, -1, h))  # [B, T, H]
            outputs.append(out)
        inputs = torch.cat(outputs, dim=2)  # [B, T, directions * H]
        if gru.dropout and gru.training and layer < gru.num_layers - 1:
            inputs = nn.functional.dropout(inputs, gru.dropout, True)
    return torch.stack(states)  # [layers * directions, B, H]


def _masked_group_norm(norm: nn.GroupNorm, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``norm`` (a GroupNorm over ``[B, H, T]``) with statistics from the valid steps only."""
    b, c, t = h.shape
    g = norm.num_groups
    grouped = h.reshape(b, g, c // g, t)  # [B, G, H/G, T]
    mask = keep[:, None]  # [B, 1, 1, T]
    count = (mask.sum(dim=3, keepdim=True) * (c // g)).clamp(min=1.0)  # [B, 1, 1, 1]
    mean = (grouped * mask).sum(dim=(2, 3), keepdim=True) / count  # [B, G, 1, 1]
    var = (((grouped - mean) * mask) ** 2).sum(dim=(2, 3), keepdim=True) / count
    normed = ((grouped - mean) / torch.sqrt(var + norm.eps)).reshape(b, c, t)  # [B, H, T]
    if norm.affine:
        normed = normed * norm.weight[None, :, None] + norm.bias[None, :, None]
    return normed


def encode_padded(
    encoder: nn.Module,
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
) -> torch.Tensor:
    """``encoder(x)``, or with ``lengths`` (``[B]`` valid steps) ``encoder(x, lengths)``.

    Lengths describe the recorded rows only: where ``present`` (``[B]`` bool) is False the
    row holds zeros or an imputed sequence, which is encoded over all its steps, exactly as
    without lengths.
    """
    if lengths is None:
        return encoder(x)
    if not isinstance(encoder, SequenceEncoder):
        raise MlmmError(
            f"a variable-length modality needs an encoder that skips padding, got a "
            f"{type(encoder).__name__}; use the default sequence encoder (build_encoder) or "
            "pad the data to a fixed length without lengths"
        )
    if present is not None:
        lengths = torch.where(present.to(lengths.device), lengths, x.shape[1])  # [B]
    return encoder(x, lengths)


def encode_modality(
    encoder: nn.Module, batch: MultimodalBatch, name: str, x: torch.Tensor | None = None
) -> torch.Tensor:
    """``encoder(batch.inputs[name])`` (or ``encoder(x)``, e.g. imputed inputs), passing the
    modality's valid steps when the batch has variable-length sequences (``batch.lengths``)
    so that padding never changes the embedding (see :func:`encode_padded`). Methods call
    their encoders through this."""
    x = batch.inputs[name] if x is None else x
    lengths = None if batch.lengths is None else batch.lengths.get(name)
    present = batch.present[:, batch.modalities.index(name)]  # [B]
    return encode_padded(encoder, x, lengths, present)


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
