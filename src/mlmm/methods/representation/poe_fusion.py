"""Product-of-experts fusion: Gaussian modality embeddings fused by precision over those present.

Each modality's encoder outputs a diagonal Gaussian embedding (a mean and a log-variance);
the Gaussians of the present modalities, times a standard-normal prior expert, are multiplied
into one Gaussian (the precision-weighted mean, the summed precision), and a shared head
predicts from the fused mean. A modality that is absent simply leaves the product; one whose
encoder is unsure (large variance) counts for little.

Paper: the product-of-experts inference network of the MVAE. M. Wu, N. Goodman, "Multimodal
Generative Models for Scalable Weakly-Supervised Learning", NeurIPS 2018, arXiv:1802.05335:
``mean = sum_i T_i mean_i / sum_i T_i``, ``var = 1 / sum_i T_i`` with ``T_i = 1 / var_i`` over
the present modalities and a ``N(0, I)`` prior expert.

Differences from the paper: the MVAE is a generative model (decoders, an ELBO with sub-sampled
modality subsets); here the PoE is a supervised fusion layer with no decoder and no KL term,
so the variances are learned only as precision weights through the task loss (and, with
``head_input="sample"``, through the sampling noise). Training hides random present modalities
(``modality_dropout``), the supervised counterpart of the MVAE's sub-sampled ELBO terms. The
generalised PoE (Cao & Fleet, arXiv:1410.0651), which raises each expert to a learned
power, is not implemented.
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
)
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.gaussian_fusion import ProductOfExperts
from mlmm.tune.space import Categorical, Float, Int

HEAD_INPUTS = ("mean", "sample", "mean_logvar")


@register_method(
    "poe-fusion",
    family="representation",
    subtype="composition",
    paper="Wu & Goodman, MVAE product of experts, NeurIPS 2018",
)
class PoEFusion(MissingModalityModel):
    """Gaussian embedding per modality, product of the present experts, shared head.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 32
        Size of each Gaussian embedding (each encoder outputs ``2 * embed_dim``: mean and
        log-variance).
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.4
        Dropout in the encoders and the head. Kept by the held-out tuning protocol
        (``docs/tuning.md``): a study of ``dropout`` on tuning seed 100 (``handwritten``,
        ``mcar:0.5``) found its best at 0.398, within 0.25% of 0.4's validation loss.
    prior_expert : bool, default True
        Include the ``N(0, I)`` prior expert in the product (as the MVAE does).
    head_input : {"mean", "sample", "mean_logvar"}, default "mean"
        What the head reads: the fused mean; a reparameterised sample of the fused Gaussian
        while training (the mean at evaluation); or the fused mean concatenated with the fused
        log-variance (the head then also sees how certain the fusion is).
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch (at least one kept).

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality, output ``[B, 2 * embed_dim]`` split into mean and
        log-variance.
    fusion : ProductOfExperts
    head : MLPHead

    The output's ``embedding`` is the fused mean ``[B, embed_dim]``; ``extras["logvar"]`` the
    fused log-variance.

    References
    ----------
    M. Wu, N. Goodman. "Multimodal Generative Models for Scalable Weakly-Supervised Learning."
    NeurIPS 2018. arXiv:1802.05335

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("poe-fusion", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.embedding.shape, out.extras["logvar"].shape
    (torch.Size([200, 32]), torch.Size([200, 32]))
    """

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 256, log=True),
        "dropout": Float(0.0, 0.6),
        "head_input": Categorical(["mean", "sample", "mean_logvar"]),
        "modality_dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 32,
        hidden: int = 128,
        depth: int = 1,
        dropout: float = 0.4,
        prior_expert: bool = True,
        head_input: str = "mean",
        modality_dropout: float = 0.3,
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        if not isinstance(prior_expert, bool):
            raise MlmmError(f"prior_expert must be True or False, got {prior_expert!r}")
        check_choice("head_input", head_input, HEAD_INPUTS)
        check_common(modality_dropout=modality_dropout)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.prior_expert, self.head_input = prior_expert, head_input
        self.modality_dropout = modality_dropout
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, 2 * embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.fusion = ProductOfExperts(prior_expert)
        head_in = 2 * embed_dim if head_input == "mean_logvar" else embed_dim
        self.head = MLPHead(head_in, task.output_dim, hidden, depth, dropout)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        gaussians = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, 2D]; absent rows are computed on zeros and left out of the product
        mean, logvar = gaussians.chunk(2, dim=-1)  # [B, M, D] each
        fused_mean, fused_logvar = self.fusion(mean, logvar, present)  # [B, D] each
        if self.head_input == "mean_logvar":
            features = torch.cat([fused_mean, fused_logvar], dim=-1)  # [B, 2D]
        elif self.head_input == "sample" and self.training:
            # clamp only for the sample: a huge log-variance must not overflow exp
            std = torch.exp(0.5 * fused_logvar.clamp(max=20.0))  # [B, D]
            features = fused_mean + std * torch.randn_like(std)  # [B, D]
        else:
            features = fused_mean  # [B, D]
        return self.output(batch, self.head(features), embedding=fused_mean, logvar=fused_logvar)
