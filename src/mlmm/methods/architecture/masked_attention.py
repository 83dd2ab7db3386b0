"""Masked-attention fusion: a transformer over one token per modality, absent tokens masked out.

Papers: the transformer encoder of A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones,
A. N. Gomez, L. Kaiser, I. Polosukhin, "Attention Is All You Need", NeurIPS 2017,
arXiv:1706.03762, used as a multimodal fusion transformer with a class token and modality
(token-type) embeddings, as studied for missing modalities by M. Ma, J. Ren, L. Zhao,
D. Testuggine, X. Peng, "Are Multimodal Transformers Robust to Missing Modality?", CVPR 2022,
pp. 18177-18186, doi:10.1109/CVPR52688.2022.01764, arXiv:2204.05454.

Each modality is encoded to one token; a learned modality embedding is added; a learned class
token is prepended; the tokens of absent modalities are removed from attention through the
key-padding mask (they get exactly zero attention weight, so no query reads them), the class
token's output feeds the head. Training hides random subsets of the present modalities
(modality dropout, Neverova et al., TPAMI 2016) so one model answers every subset.

Differences from the papers: Ma et al. study ViLT (a single-stream transformer over text and
image patch tokens, fine-tuned from pretraining) and feed absent modalities as empty text or
dummy images, then search where to fuse and train multi-task on missing cases; here absent
modalities are masked, not fed as dummies (mmFormer users report zero or dummy inputs work
worse, see METHODS.md), a modality is one token from its kind's encoder, training starts from
scratch, and modality dropout replaces the multi-task missing-case objective. Pre-norm blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.backbones import TokenTransformer, prepend_class_token
from mlmm.tune.space import Categorical, Float, Int


@register_method(
    "masked-attention",
    family="architecture",
    subtype="attention",
    paper="Vaswani et al., NeurIPS 2017; Ma et al., CVPR 2022 (masked multimodal attention)",
)
class MaskedAttention(MissingModalityModel):
    """Fusion transformer over modality tokens, absent modalities masked out of attention.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 64
        Token width (divisible by ``n_heads``).
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers and of each block's MLP.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    n_layers : int, default 2
        Transformer blocks.
    n_heads : int, default 4
        Attention heads.
    dropout : float, default 0.2
        Dropout in the encoders, the blocks (attention and MLP) and the head.
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch (at least one kept).

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality (its kind's default), each giving one token.
    modality_embedding : nn.Parameter, shape (M, embed_dim)
        Added to each modality's token (which modality a token is).
    class_token : nn.Parameter, shape (1, embed_dim)
        Prepended to every sequence, always attended; its output is the fused embedding.
    transformer : TokenTransformer
        Pre-norm blocks whose attention ignores absent modalities (key-padding mask).
    head : MLPHead
        Prediction head on the class token's output.

    References
    ----------
    A. Vaswani et al. "Attention Is All You Need." NeurIPS 2017. arXiv:1706.03762.

    M. Ma, J. Ren, L. Zhao, D. Testuggine, X. Peng. "Are Multimodal Transformers Robust to
    Missing Modality?" CVPR 2022. doi:10.1109/CVPR52688.2022.01764

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("masked-attention", ds.specs, ds.task)
    >>> model(mlmm.MultimodalBatch.from_dataset(ds)).embedding.shape
    torch.Size([200, 64])
    """

    search_space = {
        "embed_dim": Categorical([32, 64, 128]),
        "hidden": Int(64, 256, log=True),
        "n_layers": Int(1, 3),
        "n_heads": Categorical([2, 4]),
        "dropout": Float(0.0, 0.6),
        "modality_dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 128,
        depth: int = 1,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.2,
        modality_dropout: float = 0.3,
    ) -> None:
        super().__init__(specs, task)
        check_common(
            embed_dim=embed_dim,
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            modality_dropout=modality_dropout,
        )
        check_range("n_layers", n_layers, 1, integer=True)
        check_range("n_heads", n_heads, 1, integer=True)
        self.embed_dim, self.hidden, self.depth = embed_dim, hidden, depth
        self.n_layers, self.n_heads = n_layers, n_heads
        self.dropout, self.modality_dropout = dropout, modality_dropout

        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.modality_embedding = nn.Parameter(torch.empty(len(self.specs), embed_dim))
        self.class_token = nn.Parameter(torch.empty(1, embed_dim))
        self.transformer = TokenTransformer(embed_dim, n_layers, n_heads, hidden, dropout)
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)
        MaskedAttention.reset_parameters(self)  # a subclass draws its own in its __init__

    def reset_parameters(self) -> None:
        nn.init.normal_(self.modality_embedding, std=0.02)
        nn.init.normal_(self.class_token, std=0.02)

    def tokens(self, batch: MultimodalBatch, present: torch.Tensor) -> torch.Tensor:
        """One token per modality plus its modality embedding, ``[B, M, D]`` (zeros where
        absent; they are masked out of attention anyway)."""
        tokens = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]
        return torch.where(present.unsqueeze(-1), tokens + self.modality_embedding, 0.0)

    def sequence(
        self, batch: MultimodalBatch, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """What the transformer reads: the sequence ``[B, 1 + M, D]`` (class token first),
        its key-padding mask ``[B, 1 + M]`` (absent modalities) and prompts (none here)."""
        sequence, ignore = prepend_class_token(
            self.class_token, self.tokens(batch, present), present
        )
        return sequence, ignore, None

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        out, _ = self.transformer(*self.sequence(batch, present))  # [B, 1 + M, D]
        fused = out[:, 0]  # [B, D]: the class token
        return self.output(batch, self.head(fused), embedding=fused)

    @torch.no_grad()
    def attention(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        """Attention weights of each layer, ``[B, T, T]`` (mean over heads; the class token,
        then the modalities in order, after any prompt tokens); absent modalities' columns
        are 0."""
        present = self.present_mask(batch)
        _, weights = self.transformer(*self.sequence(batch, present), need_weights=True)
        return weights
