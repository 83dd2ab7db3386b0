"""Masked reconstruction of modality tokens (ActionMAE-style): drop tokens, rebuild them, classify.

S. Woo, S. Lee, Y. Park, M. A. Nugroho, C. Kim, "Towards Good Practices for Missing Modality
Robust Action Recognition", AAAI 2023, arXiv:2211.13916.
Authors' code: github.com/sangminwoo/ActionMAE (read for reference, not copied).

Each modality's encoder gives one token. While training, present tokens are dropped at random
(on top of the modalities that are absent anyway, at least one kept per sample); every absent
or dropped token is replaced by a learned mask token, every token gets a learned modality
embedding, and a small transformer encoder over the M tokens reconstructs the missing ones.
A reconstruction loss (MSE) is taken only on the tokens that were present and then dropped,
against their true embeddings (detached: the encoders are not pulled towards what the
transformer can predict). The completed set (present tokens as encoded, missing ones
reconstructed) is pooled (mean) or read through a class token, and a head predicts. At test
time nothing is dropped: absent modalities are reconstructed the same way.

Differences from the paper: ActionMAE encodes the kept tokens with a transformer, then a
transformer decoder fills mask tokens (MAE's asymmetric design) and the fusion reads every
decoded token; here one transformer sees the kept tokens and the mask tokens together
(decoder-only) and present tokens enter the fusion as encoded. No memory tokens, no per-token
target normalisation, a detached target (the authors' target keeps its gradient), and each
present token is dropped independently with probability ``drop_rate`` (the authors draw how
many tokens to keep, the same for the whole batch). Encoders are those of each modality's kind.
"""

from __future__ import annotations

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import (
    MethodOutput,
    MissingModalityModel,
    check_choice,
    check_common,
    check_range,
)
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.backbones import prepend_class_token
from mlmm.nn.embedding_completion import masked_mse
from mlmm.tune.space import Categorical, Float, Int

POOLINGS = ("mean", "cls")


@register_method(
    "masked-reconstruction",
    family="representation",
    subtype="generation",
    paper="Woo et al., ActionMAE, AAAI 2023",
)
class MaskedReconstruction(MissingModalityModel):
    """Drop modality tokens, reconstruct them with a transformer, classify the completed set.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 32
        Token size (each encoder's output and the transformer's width).
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers and of the transformer's
        feed-forward layer.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.1
        Dropout in the encoders, the transformer and the head.
    n_layers : int, default 1
        Transformer encoder layers.
    n_heads : int, default 4
        Attention heads; must divide ``embed_dim``.
    drop_rate : float, default 0.5
        Probability of dropping each present token in a training batch (at least one kept per
        sample); the dropped tokens are the ones reconstructed and scored.
    reconstruction_weight : float, default 1.0
        Weight of the reconstruction loss added to the task loss.
    pooling : {"mean", "cls"}, default "mean"
        Head input: the mean of the completed tokens, or the transformer's output at a learned
        class token placed before the modality tokens.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality, to a token of ``embed_dim``.
    mask_token : nn.Parameter, shape (embed_dim,)
        Stands in for every absent or dropped token.
    modality_embedding : nn.Parameter, shape (M, embed_dim)
        Added to each modality's token (real or mask) so the transformer knows whose it is.
    class_token : nn.Parameter, shape (embed_dim,), or None
        With ``pooling="cls"`` only.
    transformer : nn.TransformerEncoder
        Batch-first, pre-norm, over the ``M`` (+1) tokens.
    reconstruct : nn.Linear
        Projects the transformer's outputs back to token space.
    head : MLPHead

    The output's ``embedding`` is the head's input; ``extras["completed"]`` the completed
    tokens ``[B, M, embed_dim]``.

    References
    ----------
    S. Woo, S. Lee, Y. Park, M. A. Nugroho, C. Kim. "Towards Good Practices for Missing
    Modality Robust Action Recognition." AAAI 2023.
    arXiv:2211.13916

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("masked-reconstruction", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.embedding.shape, out.extras["completed"].shape
    (torch.Size([200, 32]), torch.Size([200, 3, 32]))
    """

    search_space = {
        "embed_dim": Categorical([16, 32, 64]),
        "hidden": Int(64, 256, log=True),
        "dropout": Float(0.0, 0.5),
        "n_layers": Int(1, 2),
        "n_heads": Categorical([2, 4]),
        "drop_rate": Float(0.2, 0.8),
        "reconstruction_weight": Float(0.1, 10.0, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 32,
        hidden: int = 128,
        depth: int = 1,
        dropout: float = 0.1,
        n_layers: int = 1,
        n_heads: int = 4,
        drop_rate: float = 0.5,
        reconstruction_weight: float = 1.0,
        pooling: str = "mean",
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("n_layers", n_layers, 1, integer=True)
        check_range("n_heads", n_heads, 1, integer=True)
        if embed_dim % n_heads:
            raise MlmmError(
                f"n_heads must divide embed_dim, got n_heads={n_heads} and embed_dim={embed_dim}"
            )
        check_range("drop_rate", drop_rate, 0, 1, high_inclusive=False)
        check_range("reconstruction_weight", reconstruction_weight, 0)
        check_choice("pooling", pooling, POOLINGS)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.n_layers, self.n_heads = n_layers, n_heads
        self.drop_rate, self.reconstruction_weight, self.pooling = (
            drop_rate,
            reconstruction_weight,
            pooling,
        )
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.mask_token = nn.Parameter(torch.empty(embed_dim))
        self.modality_embedding = nn.Parameter(torch.empty(len(self.specs), embed_dim))
        self.class_token = nn.Parameter(torch.empty(embed_dim)) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            n_heads,
            dim_feedforward=hidden,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, n_layers, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )
        self.reconstruct = nn.Linear(embed_dim, embed_dim)
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the learned tokens (normal, std 0.02, as MAE) and the attention projections.

        ``nn.MultiheadAttention`` keeps its input projection as a raw parameter re-drawn only
        by its private ``_reset_parameters``, which the trainer's re-initialisation does not
        call; without this, a model's start would depend on the global random state at build
        time, not on the trainer's seed.
        """
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.modality_embedding, std=0.02)
        if self.class_token is not None:
            nn.init.normal_(self.class_token, std=0.02)
        for module in self.transformer.modules():
            if isinstance(module, nn.MultiheadAttention):
                module._reset_parameters()

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        kept = present
        if self.training and self.drop_rate > 0:
            kept = modality_dropout(present, self.drop_rate)  # [B, M], at least one kept
        dropped = present & ~kept  # [B, M]: present, then dropped; only these are scored
        tokens = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]; absent rows are computed on zeros and replaced below, never read
        slots = kept.unsqueeze(-1)  # [B, M, 1]
        inputs = torch.where(slots, tokens, self.mask_token.expand_as(tokens))  # [B, M, D]
        inputs = inputs + self.modality_embedding  # [B, M, D]
        if self.class_token is not None:  # the batch size stays a size op in an ONNX trace
            inputs, _ = prepend_class_token(self.class_token, inputs)  # [B, 1+M, D]
        encoded = self.transformer(inputs)  # [B, (1+)M, D]
        offset = 0 if self.class_token is None else 1
        reconstructed = self.reconstruct(encoded[:, offset:])  # [B, M, D]
        completed = torch.where(slots, tokens, reconstructed)  # [B, M, D]
        features = completed.mean(dim=1) if self.class_token is None else encoded[:, 0]  # [B, D]
        aux = {}
        if batch.target is not None:
            loss = masked_mse(reconstructed, tokens.detach(), dropped)
            aux["reconstruction"] = self.reconstruction_weight * loss
        return self.output(
            batch, self.head(features), aux_losses=aux, embedding=features, completed=completed
        )
