"""ModDrop: train a fusion network with whole modalities dropped at random, so any subset works.

Paper: N. Neverova, C. Wolf, G. Taylor, F. Nebout, "ModDrop: Adaptive Multi-Modal Gesture
Recognition", IEEE TPAMI 38(8):1692-1706, 2016 (doi:10.1109/TPAMI.2015.2461544,
arXiv:1501.00102). Each modality has its own path into a shared fusion network; during
training every modality's input is dropped (set to zero) with some probability, independently
per sample, so the shared layers learn cross-modal correlations without depending on any one
modality, and the network answers from whatever is present.

Deliberate differences: the paper pre-trains each modality's path separately, then trains the
fusion layers with ModDrop; here everything trains end to end with ModDrop from the start.
The paper zeroes inputs; we drop the whole modality from ``present`` (so the chosen fusion
block sees it as absent: for ``concat`` its embedding is zeroed, exactly the paper's
behaviour at the fusion layer), and keep at least one modality per training sample. The
fusion is a hyperparameter (the paper's concatenation, or a mean / mean-and-variance over
present embeddings from :mod:`mlmm.nn`).
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
from mlmm.nn import (
    ConcatFusion,
    MeanVarianceFusion,
    MLPHead,
    build_encoder,
    encode_modality,
    masked_mean,
    modality_dropout,
)
from mlmm.tune.space import Categorical, Float, Int

FUSIONS = ("concat", "mean", "mean_variance")


class _MeanFusion(nn.Module):
    """``masked_mean`` as a module, so every fusion choice is called the same way."""

    def forward(self, embeddings: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return masked_mean(embeddings, present)  # [B, D]


@register_method(
    "moddrop",
    family="combination",
    subtype="dedicated training",
    paper="Neverova et al., ModDrop, IEEE TPAMI 2016",
)
class ModDrop(MissingModalityModel):
    """Per-modality encoders, a fusion block and a shared head, trained with ModDrop.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    fusion : {"concat", "mean", "mean_variance"}, default "concat"
        ``"concat"``: the embeddings side by side, absent ones zero (the paper's fusion;
        :class:`mlmm.nn.ConcatFusion`); ``"mean"``: their mean over present modalities
        (:func:`mlmm.nn.masked_mean`); ``"mean_variance"``: mean and variance over present
        modalities (:class:`mlmm.nn.MeanVarianceFusion`, HeMIS's).
    drop_prob : float or dict of str to float, default 0.3
        Probability of dropping each present modality from a training sample: one value for
        every modality, or ``{modality name: probability}`` (modalities not named are never
        dropped). At least one modality is kept per sample.
    embed_dim : int, default 64
    hidden : int, default 256
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers of each encoder and of the head.
    dropout : float, default 0.3

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality, chosen from its kind.
    fuse : nn.Module
        The fusion block, ``(embeddings [B, M, D], present [B, M]) -> [B, F]``.
    head : MLPHead
    drop_probs : Tensor, shape (M,)
        Buffer: the drop probability of each modality, in modality order.

    References
    ----------
    N. Neverova, C. Wolf, G. Taylor, F. Nebout. "ModDrop: Adaptive Multi-Modal Gesture
    Recognition." IEEE TPAMI 38(8):1692-1706, 2016. doi:10.1109/TPAMI.2015.2461544

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("moddrop", ds.specs, ds.task, drop_prob={"m0": 0.5})
    >>> model.drop_probs.tolist()
    [0.5, 0.0, 0.0]
    """

    revision = 2
    revision_notes = {
        2: "the mean_variance fusion's variance over present modalities divides by |K| - 1, "
        "not |K| (as HeMIS defines it)",
    }
    search_space = {
        "fusion": Categorical(["concat", "mean", "mean_variance"]),
        "drop_prob": Float(0.0, 0.7),
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        fusion: str = "concat",
        drop_prob: float | dict[str, float] = 0.3,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(specs, task)
        check_choice("fusion", fusion, FUSIONS)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        if isinstance(drop_prob, dict):
            unknown = sorted(set(drop_prob) - set(self.modalities))
            if unknown:
                raise MlmmError(
                    f"drop_prob names unknown modalities {unknown}; the modalities are "
                    f"{list(self.modalities)}"
                )
            for name, p in drop_prob.items():
                check_range(f"drop_prob[{name!r}]", p, 0, 1, high_inclusive=False)
            probs = [float(drop_prob.get(m, 0.0)) for m in self.modalities]
        else:
            check_range("drop_prob", drop_prob, 0, 1, high_inclusive=False)
            probs = [float(drop_prob)] * len(self.modalities)
        self.fusion, self.drop_prob, self.embed_dim = fusion, drop_prob, embed_dim
        self.hidden, self.depth, self.dropout = hidden, depth, dropout
        self.register_buffer("drop_probs", torch.tensor(probs))
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        m = len(self.modalities)
        self.fuse, width = {
            "concat": (ConcatFusion(), m * embed_dim),
            "mean": (_MeanFusion(), embed_dim),
            "mean_variance": (MeanVarianceFusion(), 2 * embed_dim),
        }[fusion]
        self.head = MLPHead(width, task.output_dim, hidden, depth, dropout)

    def changes_since(self, revision: int) -> list[str]:
        """Revision 2 changed the ``mean_variance`` fusion only: other fusions answer as saved."""
        return super().changes_since(revision) if self.fusion == "mean_variance" else []

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self.training:
            present = modality_dropout(present, self.drop_probs)  # [B, M]
        embeddings = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]
        fused = self.fuse(embeddings, present)  # [B, F]
        return self.output(batch, self.head(fused), embedding=fused)
