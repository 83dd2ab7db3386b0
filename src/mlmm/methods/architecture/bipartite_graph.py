"""Bipartite graph: samples and modalities are nodes, a present modality is an edge carrying its
encoded input, and message passing gives the sample representations (MUSE-style).

Paper: Z. Wu, A. Dadu, N. Tustison, B. Avants, M. Nalls, J. Sun, F. Faghri, "Multimodal
Patient Representation Learning with Missing Modalities and Labels" (MUSE), ICLR 2024,
openreview Je5SHCKpPa (code: zzachw/MUSE); its layer follows GRAPE: J. You, X. Ma, D. Ding,
M. Kochenderfer, J. Leskovec, "Handling Missing Data with Graph Representation Learning",
NeurIPS 2020, arXiv:2010.16418.

Each batch is a bipartite graph: its samples on one side, the ``M`` modality nodes on the other,
an edge ``(i, m)`` only where modality ``m`` is present in sample ``i``, with the modality's
encoder output as edge feature. ``n_layers`` GraphSAGE layers with edge features
(:class:`mlmm.nn.graph.BipartiteSageLayer`) update sample, modality and edge states; the final
sample state feeds the head. A missing modality is an absent edge, so it sends no message at
all. Training adds MUSE's mutual-consistent contrastive learning in a compact form: an
augmented graph drops each present edge with ``edge_dropout`` (at least one kept per sample),
and a cross-view contrastive loss (:func:`mlmm.nn.graph.cross_view_contrastive`) pulls each
sample's two representations together, with same-label samples as extra positives. The task
loss is on the original graph only, as in MUSE.

Deliberate differences: the whole training set is not one graph; each mini-batch is its own
graph (as in the authors' code), and at prediction time each modality node's incoming
aggregate is a running average collected during training (like BatchNorm's running
statistics), so a prediction never depends on the other samples of its batch; MUSE's
unlabeled-patient branch (samples without a label) has no counterpart, since every training
sample here has a target; no separate projection head for the contrastive loss.
"""

from __future__ import annotations

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.graph import BipartiteSageLayer, cross_view_contrastive
from mlmm.tune.space import Float, Int


@register_method(
    "bipartite-graph",
    family="architecture",
    subtype="graph learning",
    paper="Wu et al., MUSE, ICLR 2024 (sample-modality bipartite graph)",
)
class BipartiteGraph(MissingModalityModel):
    """Message passing on a sample-modality bipartite graph with edges only where present.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 64
        Size of the edge features (encoder outputs) and of the node states.
    hidden : int, default 256
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.3
        Dropout in the encoders, on the sample states and in the head.
    n_layers : int, default 2
        Message-passing layers.
    edge_dropout : float, default 0.5
        Probability of dropping each present edge in the augmented graph (at least one edge
        kept per sample).
    contrastive_weight : float, default 0.1
        Weight of the cross-view contrastive loss (0 turns it off, and with it the augmented
        graph, which nothing else uses).
    temperature : float, default 0.1
        Temperature of the contrastive loss.
    running_momentum : float, default 0.1
        Weight of each training batch in the running averages of the modality nodes' incoming
        aggregates used at prediction time.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality: its output is the edge feature.
    sample_init : nn.Parameter, shape (embed_dim,)
        Initial state of every sample node.
    modality_init : nn.Parameter, shape (M, embed_dim)
        Initial state of each modality node.
    layers : nn.ModuleList
        The :class:`~mlmm.nn.graph.BipartiteSageLayer` s.
    running_aggregate : Tensor, shape (n_layers, M, embed_dim)
        Buffer: running averages of each modality node's incoming aggregate, per layer.
    head : MLPHead

    References
    ----------
    Z. Wu, A. Dadu, N. Tustison, B. Avants, M. Nalls, J. Sun, F. Faghri. "Multimodal Patient
    Representation Learning with Missing Modalities and Labels." ICLR 2024.
    https://openreview.net/forum?id=Je5SHCKpPa

    J. You, X. Ma, D. Ding, M. Kochenderfer, J. Leskovec. "Handling Missing Data with Graph
    Representation Learning." NeurIPS 2020. arXiv:2010.16418.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("bipartite-graph", ds.specs, ds.task, n_layers=1)
    >>> model(mlmm.MultimodalBatch.from_dataset(ds)).embedding.shape
    torch.Size([200, 64])
    """

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "n_layers": Int(1, 3),
        "edge_dropout": Float(0.0, 0.7),
        "contrastive_weight": Float(1e-3, 1.0, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.3,
        n_layers: int = 2,
        edge_dropout: float = 0.5,
        contrastive_weight: float = 0.1,
        temperature: float = 0.1,
        running_momentum: float = 0.1,
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("n_layers", n_layers, 1, integer=True)
        check_range("edge_dropout", edge_dropout, 0, 1, high_inclusive=False)
        check_range("contrastive_weight", contrastive_weight, 0)
        check_range("temperature", temperature, 0, low_inclusive=False)
        check_range("running_momentum", running_momentum, 0, 1, low_inclusive=False)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.n_layers, self.edge_dropout = n_layers, edge_dropout
        self.contrastive_weight, self.temperature = contrastive_weight, temperature
        self.running_momentum = running_momentum

        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.sample_init = nn.Parameter(torch.empty(embed_dim))
        self.modality_init = nn.Parameter(torch.empty(len(self.specs), embed_dim))
        self.layers = nn.ModuleList(
            [BipartiteSageLayer(embed_dim, embed_dim, dropout) for _ in range(n_layers)]
        )
        self.register_buffer("running_aggregate", torch.zeros(n_layers, len(specs), embed_dim))
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the node initial states; forget the running aggregates."""
        nn.init.normal_(self.sample_init, std=0.02)
        nn.init.normal_(self.modality_init, std=0.02)
        self.running_aggregate.zero_()

    # ------------------------------------------------------------------ graph
    def propagate(
        self, edges: torch.Tensor, present: torch.Tensor, update_running: bool = False
    ) -> torch.Tensor:
        """Sample representations ``[B, D]`` from edge features ``[B, M, D]`` and ``present``.

        Training uses each modality node's aggregate over the batch (the running average for a
        modality no sample of the batch has); prediction uses the running averages only.
        """
        b = edges.shape[0]
        samples = self.sample_init.expand(b, -1)  # [B, D]
        modalities = self.modality_init  # [M, D]
        batch_aggregates = []
        for layer, running in zip(self.layers, self.running_aggregate, strict=True):
            if self.training:
                aggregate, seen = layer.modality_messages(samples, edges, present)  # [M, D], [M]
                batch_aggregates.append((aggregate.detach(), seen))
                aggregate = torch.where(seen.unsqueeze(1), aggregate, running)  # [M, D]
            else:
                aggregate = running  # [M, D]
            samples, modalities, edges = layer(samples, modalities, edges, present, aggregate)
        if update_running:
            with torch.no_grad():
                for running, (aggregate, seen) in zip(
                    self.running_aggregate, batch_aggregates, strict=True
                ):
                    # under autocast the batch's aggregate may be bfloat16; the buffer is not
                    blended = torch.lerp(
                        running, aggregate.to(running.dtype), self.running_momentum
                    )
                    running.copy_(torch.where(seen.unsqueeze(1), blended, running))
        return samples

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        edges = torch.stack(
            [encode_modality(self.encoders[name], batch, name) for name in self.modalities], dim=1
        )  # [B, M, D]; absent edges are computed on zeros and never read
        representation = self.propagate(edges, present, update_running=self.training)  # [B, D]
        prediction = self.head(representation)
        if not (self.training and batch.target is not None):
            return self.output(batch, prediction, embedding=representation)
        # the task loss is on the original graph only, as in MUSE: an augmented graph often
        # lacks the modalities that decide the label, and asking the head to predict it from
        # them anyway pulled every prediction to the prior (a collapse to one class on
        # synthetic-interaction, where no modality alone carries class information)
        task_loss = self.task_loss(prediction, batch.target)
        aux = {}
        if self.contrastive_weight > 0:
            dropped = modality_dropout(present, self.edge_dropout)  # [B, M], augmented graph
            augmented = self.propagate(edges, dropped)  # [B, D]
            labels = batch.target if self.task.is_classification else None
            aux["contrastive"] = self.contrastive_weight * cross_view_contrastive(
                representation, augmented, self.temperature, labels
            )
        return self.output(
            batch, prediction, aux_losses=aux, task_loss=task_loss, embedding=representation
        )
