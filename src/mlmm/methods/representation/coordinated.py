"""Coordinated representations: per-modality encoders aligned by a cross-modal contrastive loss.

Each modality has its own encoder into a common space. While training, a symmetric InfoNCE
loss pulls the embeddings of two modalities of the same sample together and pushes those of
different samples apart, computed for every pair of modalities on the samples of the batch
where BOTH are present (``mlmm.nn.alignment.pairwise_info_nce``); it is added to the task loss
with weight ``align_weight``. To predict, the L2-normalised embeddings of the modalities that
are present are averaged (``mlmm.nn.masked_mean``) and an MLP head classifies or regresses:
once aligned, any present modality stands in for an absent one.

Papers. The alignment line of work for incomplete multi-view data: Y. Lin, Y. Gou, Z. Liu, B. Li,
J. Lv, X. Peng, "COMPLETER: Incomplete Multi-view Clustering via Contrastive Prediction", CVPR
2021; Y. Lin, Y. Gou, X. Liu, J. Bai, J. Lv, X. Peng, "Dual Contrastive Prediction for
Incomplete Multi-View Representation Learning" (DCP), IEEE TPAMI 2022. The loss is CLIP-style
InfoNCE: A. van den Oord, Y. Li, O. Vinyals, "Representation Learning with Contrastive
Predictive Coding", arXiv:1807.03748, 2018; A. Radford et al., "Learning Transferable Visual
Models From Natural Language Supervision", ICML 2021, arXiv:2103.00020.

What we take, precisely. From COMPLETER/DCP: one encoder per view, and a cross-view contrastive
consistency term computed only on the samples where both views are observed, trained jointly
with the other objective (here the supervised task loss, as in DCP's supervised variant). From
CPC/CLIP: the loss itself, a symmetric InfoNCE on cosine similarities divided by a temperature,
with the other samples of the batch as negatives.

Deliberate differences. COMPLETER/DCP's contrastive term is a mutual-information objective on
softmax outputs with an entropy regulariser, not InfoNCE; we leave out their within-view
autoencoders (reconstruction loss) and their dual prediction networks that map one view's
latent to another's to recover a missing latent: we average the present aligned embeddings
instead. CLIP learns its temperature; ours is a fixed hyperparameter. With more than two
modalities the loss is the mean over all modality pairs. Training also hides present
modalities at random from the fusion (``modality_dropout``, not in these papers) so the head
sees every subset; the alignment loss still uses every observed modality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, masked_mean, modality_dropout
from mlmm.nn.alignment import pairwise_info_nce
from mlmm.tune.space import Float, Int


@register_method(
    "coordinated",
    family="representation",
    subtype="coordinated",
    paper="Contrastive alignment as in COMPLETER/DCP (Lin et al., CVPR 2021, TPAMI 2022), CLIP InfoNCE",
)
class Coordinated(MissingModalityModel):
    """Per-modality encoders aligned by cross-modal InfoNCE; mean of present embeddings; head.

    The fused representation averages the *L2-normalised* embeddings of the present
    modalities. InfoNCE on cosine similarities aligns directions only: the norms are left free
    and can differ between modalities, so averaging raw vectors would let one modality dominate
    and would average a quantity the loss never aligned. Averaging unit vectors averages exactly
    what was aligned, and the fused vector's norm then says how much the present modalities
    agree.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities, in the fixed order of ``batch.present`` columns.
    task : TaskSpec
        Classification (the head outputs ``n_classes`` logits) or regression (one value).
    embed_dim : int, default 64
        Size of the common (aligned) embedding space.
    hidden : int, default 256
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.4
        Dropout inside the encoders and the head. Kept by the held-out tuning protocol
        (``docs/tuning.md``): no point of a study of the whole space on tuning seed 100
        (``handwritten``, ``mcar:0.5``) beat the defaults' validation loss there.
    modality_dropout : float, default 0.3
        Probability of hiding each present modality from the fusion in a training batch (at
        least one kept), so the head learns to answer from any subset. 0 turns it off.
    align_weight : float, default 1.0
        Weight of the contrastive alignment loss added to the task loss (0 turns it off:
        the method is then a plain masked-mean fusion of normalised embeddings).
    temperature : float, default 0.1
        InfoNCE temperature (> 0): the cosine similarities are divided by it.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality (MLP, 1-D conv, CNN by kind) into ``embed_dim``.
    head : MLPHead
        Prediction head on the fused (mean of normalised embeddings) representation.

    References
    ----------
    Y. Lin, Y. Gou, Z. Liu, B. Li, J. Lv, X. Peng. "COMPLETER: Incomplete Multi-view Clustering
    via Contrastive Prediction." CVPR 2021.

    Y. Lin, Y. Gou, X. Liu, J. Bai, J. Lv, X. Peng. "Dual Contrastive Prediction for Incomplete
    Multi-View Representation Learning." IEEE TPAMI, 2022.

    A. van den Oord, Y. Li, O. Vinyals. "Representation Learning with Contrastive Predictive
    Coding." arXiv:1807.03748, 2018.

    A. Radford et al. "Learning Transferable Visual Models From Natural Language Supervision."
    ICML 2021. arXiv:2103.00020

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("coordinated", ds.specs, ds.task, temperature=0.2)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.embedding.shape, sorted(out.aux_losses)
    (torch.Size([200, 64]), ['align'])
    """

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "modality_dropout": Float(0.0, 0.6),
        "align_weight": Float(0.01, 10.0, log=True),
        "temperature": Float(0.05, 0.5, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.4,
        modality_dropout: float = 0.3,
        align_weight: float = 1.0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(specs, task)
        check_common(
            embed_dim=embed_dim,
            hidden=hidden,
            depth=depth,
            dropout=dropout,
            modality_dropout=modality_dropout,
        )
        check_range("align_weight", align_weight, 0)
        check_range("temperature", temperature, 0, low_inclusive=False)
        self.embed_dim, self.hidden, self.depth = embed_dim, hidden, depth
        self.dropout, self.modality_dropout = dropout, modality_dropout
        self.align_weight, self.temperature = align_weight, temperature
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        embeddings = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]; absent rows are computed on zeros and never used
        aligned = F.normalize(embeddings, dim=-1)  # [B, M, D]
        aux = {}
        if batch.target is not None and self.align_weight > 0:
            # every observed pair aligns, including modalities hidden from the fusion below
            aux["align"] = self.align_weight * pairwise_info_nce(aligned, present, self.temperature)
        shown = present
        if self.training and self.modality_dropout > 0:
            shown = modality_dropout(present, self.modality_dropout)  # [B, M]
        fused = masked_mean(aligned, shown)  # [B, D]
        return self.output(batch, self.head(fused), aux_losses=aux, embedding=fused)
