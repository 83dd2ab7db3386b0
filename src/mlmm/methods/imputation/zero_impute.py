"""Zero imputation: fill absent standardised inputs with zeros, concatenate, classify.

The baseline every paper in the field reports (e.g. the zero-filling baseline of Ma et al.,
"SMIL: Multimodal Learning with Severely Missing Modality", AAAI 2021, and the input masking
of DCP, Lin et al., TPAMI 2022). Inputs are standardised on the training split, so zero is
the training mean of a present entry: zero filling is train-mean filling in raw units.
Vector modalities enter the classifier as they are (input-level fusion); sequences and
images first pass through their kind's encoder, applied to the zero-filled input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.tune.space import Float, Int


@register_method(
    "zero-impute",
    family="imputation",
    subtype="composition",
    paper="zero-filling baseline (e.g. Ma et al., SMIL, AAAI 2021)",
)
class ZeroImpute(MissingModalityModel):
    """Zero-fill absent modalities after standardisation, concatenate, and classify with an MLP.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    hidden : int, default 256
        Width of the classifier's hidden layers.
    depth : int, default 2
        Hidden layers of the classifier.
    dropout : float, default 0.2
    embed_dim : int, default 64
        Embedding size for sequence and image modalities (vectors are not encoded).
    modality_dropout : float, default 0.0
        Probability of hiding each present modality during training (keeps at least one);
        0 gives the plain baseline.

    References
    ----------
    M. Ma, J. Ren, L. Zhao, S. Tulyakov, C. Wu, X. Peng. "SMIL: Multimodal Learning with
    Severely Missing Modality." AAAI 2021. arXiv:2103.05677 (zero-filling baseline).

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("zero-impute", ds.specs, ds.task)
    >>> model(mlmm.MultimodalBatch.from_dataset(ds)).prediction.shape
    torch.Size([200, 4])
    """

    search_space = {
        "hidden": Int(64, 512, log=True),
        "depth": Int(1, 3),
        "dropout": Float(0.0, 0.6),
        "embed_dim": Int(16, 128, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        hidden: int = 256,
        depth: int = 2,
        dropout: float = 0.2,
        embed_dim: int = 64,
        modality_dropout: float = 0.0,
    ) -> None:
        super().__init__(specs, task)
        check_common(
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            embed_dim=embed_dim,
            modality_dropout=modality_dropout,
        )
        self.hidden, self.depth, self.dropout = hidden, depth, dropout
        self.embed_dim, self.modality_dropout = embed_dim, modality_dropout
        self.encoders = nn.ModuleDict(
            {
                s.name: build_encoder(s, embed_dim, hidden, 1, dropout)
                for s in self.specs
                if s.kind != "vector"
            }
        )
        width = sum(math.prod(s.shape) if s.kind == "vector" else embed_dim for s in self.specs)
        self.head = MLPHead(width, task.output_dim, hidden, depth, dropout)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        batch = batch.with_present(present)  # absent rows are zeros, whatever they held
        parts = []
        for name in self.modalities:
            x = batch.inputs[name]  # [B, *shape], zero where absent
            parts.append(
                encode_modality(self.encoders[name], batch, name)
                if name in self.encoders
                else x.flatten(1)
            )
        fused = torch.cat(parts, dim=1)  # [B, sum of widths]
        return self.output(batch, self.head(fused), embedding=fused)
