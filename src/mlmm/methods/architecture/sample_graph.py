"""Sample graph: a sample's missing modality embeddings are filled from its most similar
training samples, similarity learned on the modalities both have (M3Care-style).

Paper: C. Zhang, X. Chu, L. Ma, Y. Zhu, Y. Wang, J. Wang, J. Zhao, "M3Care: Learning with
Missing Modalities in Multimodal Healthcare Data", KDD 2022, doi:10.1145/3534678.3539388,
arXiv:2210.17292.

Per-modality encoders give embeddings. Between a sample and each training sample, a learned
kernel compares the embeddings of every modality both have present (cosine similarity of a
learned per-modality projection), and the similarities are averaged over those shared
modalities: the task-guided, modality-adaptive similarity of M3Care. For each modality the
sample lacks, the ``k`` most similar training samples that have it are its graph neighbours;
their embeddings of that modality, weighted by the softmax of the similarity over the
neighbours (divided by ``temperature``) and mapped by a learned per-modality linear layer (one
graph-convolution step), become the missing embedding. Observed and imputed embeddings are
concatenated with the presence mask and an MLP predicts. Training hides present modalities at
random (``modality_dropout``) so the imputation gets task gradients.

The graph is inductive: the standardised training samples are kept as buffers (a
:class:`mlmm.nn.retrieval.SampleBank`, saved in the artifact) and re-encoded by the current
encoders (without gradients or dropout) at every forward pass, so neighbours at prediction time
are always training samples. During training a sample is never its own neighbour: bank rows
identical to it on every shared modality are excluded (:func:`mlmm.nn.graph.bank_self_matches`).

Deliberate differences from M3Care: M3Care builds the graph transductively within a batch,
sparsifies it with a learned threshold, runs two GCN layers and fuses the imputed information
into observed modalities too, then a transformer over modalities; here the neighbours are the
top ``k`` training samples (an inductive nearest-neighbour index), one attention-weighted
aggregation fills only the missing slots, the neighbours' embeddings are taken without
gradient, the kernel is a cosine on learned projections (M3Care mixes a learned and a fixed
Gaussian kernel), and the fusion is an MLP on the concatenation. A modality that no
qualifying neighbour has gets a learned per-modality token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.graph import bank_self_matches, neighbour_attention
from mlmm.nn.retrieval import BankLengths, SampleBank, fill_bank, overlap_distances
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


@register_method(
    "sample-graph",
    family="architecture",
    subtype="graph learning",
    paper="Zhang et al., M3Care, KDD 2022 (inductive sample-similarity graph)",
)
class SampleGraph(MissingModalityModel):
    """Fill missing modality embeddings from similar training samples, then classify.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 64
        Size of each modality's embedding (and of the similarity projections).
    hidden : int, default 256
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    dropout : float, default 0.3
        Dropout in the encoders and the head.
    k : int, default 20
        Neighbours per missing modality (fewer when fewer training samples qualify).
    temperature : float, default 0.2
        The neighbours' weights are ``softmax(similarity / temperature)``; similarities are
        cosines in [-1, 1].
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch (at least one kept), so
        the imputation is trained by the task loss.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality.
    kernels : nn.ModuleDict
        Per-modality linear projections; the similarity is the cosine of projected embeddings.
    neighbour_transform : nn.ModuleDict
        Per-modality linear map of the aggregated neighbour embedding.
    missing_token : nn.Parameter, shape (M, embed_dim)
        The embedding of a missing modality when no neighbour qualifies.
    bank : SampleBank
        The standardised training samples (empty until :meth:`fit`); padded steps of
        variable-length sequences are zero.
    bank_lengths : BankLengths
        One int64 buffer per ``sequence`` modality, ``bank_lengths.<name>`` of shape ``[N]``:
        the valid steps of each bank sample when the training data had variable lengths for
        it (the bank is then encoded skipping padding, as queries are), empty otherwise.
    head : MLPHead
        Reads the ``M * embed_dim`` completed embeddings and the ``M`` presence flags.

    References
    ----------
    C. Zhang, X. Chu, L. Ma, Y. Zhu, Y. Wang, J. Wang, J. Zhao. "M3Care: Learning with Missing
    Modalities in Multimodal Healthcare Data." KDD 2022. doi:10.1145/3534678.3539388.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("sample-graph", ds.specs, ds.task, k=5)
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    >>> len(trained.model.bank) == split.train.n_samples
    True
    >>> test, _ = mlmm.simulate(split.test, "mcar:0.5", seed=1)
    >>> batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(test))
    >>> out = trained.model(batch)
    >>> out.extras["neighbours"].shape  # [B, M, k]: the training rows that filled each slot
    torch.Size([60, 3, 5])
    """

    streams_data = False  # the sample graph links every training row in memory

    supports_data_parallel = False
    data_parallel_reason = (
        "its graph links each sample to a bank of all training samples "
        "(needs an all-gather mlmm does not do)"
    )
    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "k": Int(5, 50, log=True),
        "temperature": Float(0.05, 1.0, log=True),
        "modality_dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.3,
        k: int = 20,
        temperature: float = 0.2,
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
        check_range("k", k, 1, integer=True)
        check_range("temperature", temperature, 0, low_inclusive=False)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.k, self.temperature, self.modality_dropout = k, temperature, modality_dropout

        names = self.modalities
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.kernels = nn.ModuleDict({m: nn.Linear(embed_dim, embed_dim) for m in names})
        self.neighbour_transform = nn.ModuleDict(
            {m: nn.Linear(embed_dim, embed_dim) for m in names}
        )
        self.missing_token = nn.Parameter(torch.empty(len(names), embed_dim))
        self.bank = SampleBank(self.specs)
        self.bank_lengths = BankLengths(self.specs, "sample-graph", "fill_bank")
        m = len(names)
        self.head = MLPHead(m * embed_dim + m, task.output_dim, hidden, depth, dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.missing_token, std=0.02)

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> TrainHistory:
        """Store the standardised training samples (the graph's bank), then train."""
        self.fill_bank(MultimodalBatch.from_dataset(train))
        return trainer.fit_module(self, train, val)

    @torch.no_grad()
    def fill_bank(self, batch: MultimodalBatch) -> None:
        """Replace the bank and its ``bank_lengths`` with the standardised samples of
        ``batch``, padding stored as zeros (:func:`mlmm.nn.retrieval.fill_bank`)."""
        fill_bank(self.bank, self.bank_lengths, batch)

    # ------------------------------------------------------------------ graph
    def encode(
        self, inputs: dict[str, torch.Tensor], batch: MultimodalBatch | None = None
    ) -> torch.Tensor:
        """Embeddings ``[B, M, D]`` of every modality (absent rows computed, never used);
        with ``batch``, its variable-length sequences skip their padding."""
        if batch is not None:
            return torch.stack(
                [encode_modality(self.encoders[n], batch, n) for n in self.modalities], dim=1
            )
        return torch.stack([self.encoders[name](inputs[name]) for name in self.modalities], dim=1)

    def encode_bank(self) -> torch.Tensor:
        """The bank's embeddings ``[N, M, D]`` by the current encoders, without dropout or
        gradient (rows of absent modalities are encodings of zeros, never used); variable-length
        sequences skip their padding (``bank_lengths``), as a query's do."""
        was_training = self.encoders.training
        self.encoders.eval()
        with torch.no_grad():
            n = len(self.bank)
            inputs = {
                s.name: self.bank.row(s.name).reshape(n, *s.shape) for s in self.specs
            }  # name -> [N, *shape]
            lengths = self.bank_lengths.lookup(n)  # name -> [N]; none: fixed-length data
            if lengths:
                bank = MultimodalBatch(inputs, self.bank.present, self.modalities, None, lengths)
                embeddings = self.encode(inputs, bank)  # [N, M, D]
            else:
                embeddings = self.encode(inputs)  # [N, M, D]
        self.encoders.train(was_training)
        return embeddings

    def similarity(
        self, embeddings: torch.Tensor, present: torch.Tensor, bank_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over shared present modalities of the learned kernels: ``([B, N], shared [B, N])``.

        ``shared`` counts the modalities present on both sides; where it is 0 the similarity
        is 0 and the pair is no neighbour.
        """
        total = embeddings.new_zeros(present.shape[0], len(self.bank))  # [B, N]
        shared = torch.zeros_like(total)  # [B, N]
        for j, name in enumerate(self.modalities):
            query = F.normalize(self.kernels[name](embeddings[:, j]), dim=-1)  # [B, D]
            keys = F.normalize(self.kernels[name](bank_embeddings[:, j]), dim=-1)  # [N, D]
            both = present[:, j : j + 1] & self.bank.present[:, j].unsqueeze(0)  # [B, N]
            total = total + torch.where(both, query @ keys.T, torch.zeros_like(total))
            shared = shared + both
        return total / shared.clamp_min(1), shared

    def complete(
        self, batch: MultimodalBatch, present: torch.Tensor, embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fill the slots absent from ``present`` from graph neighbours in the bank.

        Returns the completed embeddings ``[B, M, D]``, the neighbours' bank rows ``[B, M, k']``
        and their weights ``[B, M, k']`` (zero weights where no neighbour, and for present
        slots), ``k' = min(k, N)``.
        """
        b, m, _ = embeddings.shape
        chosen = min(self.k, len(self.bank))
        index = torch.zeros(b, m, chosen, dtype=torch.long, device=present.device)
        weights = embeddings.new_zeros(b, m, chosen)
        token = self.missing_token.unsqueeze(0).expand(b, -1, -1)  # [B, M, D]
        filled = torch.where(present.unsqueeze(-1), embeddings, token)  # [B, M, D]
        missing = ~present  # [B, M]
        if chosen == 0 or not missing.any():
            return filled, index, weights
        bank_embeddings = self.encode_bank()  # [N, M, D]
        similarity, shared = self.similarity(embeddings, present, bank_embeddings)  # [B, N]
        linked = shared > 0  # [B, N]
        if self.training:  # a training sample is not its own neighbour
            inputs = batch.zero_padding().inputs  # raw distances: padding as the bank holds it
            screen = overlap_distances(inputs, present, self.bank)  # [B, N]
            linked = linked & ~bank_self_matches(inputs, present, self.bank, screen)
        scores = similarity / self.temperature  # [B, N]
        slots = []
        for j, name in enumerate(self.modalities):
            if not missing[:, j].any():  # present in every row: nothing to fill
                slots.append(filled[:, j])
                continue
            candidates = linked & self.bank.present[:, j].unsqueeze(0)  # [B, N]
            aggregate, found, index[:, j], w = neighbour_attention(
                scores, candidates, bank_embeddings[:, j], self.k
            )  # [B, D], [B], [B, k'], [B, k']
            keep = missing[:, j] & found  # [B]
            weights[:, j] = torch.where(keep.unsqueeze(1), w, torch.zeros_like(w))
            imputed = self.neighbour_transform[name](aggregate)  # [B, D]
            slots.append(torch.where(keep.unsqueeze(1), imputed, filled[:, j]))
        return torch.stack(slots, dim=1), index, weights  # [B, M, D]

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)  # [B, M]
        embeddings = self.encode(batch.inputs, batch)  # [B, M, D]
        completed, index, weights = self.complete(batch, present, embeddings)
        features = torch.cat([completed.flatten(1), present.to(completed.dtype)], dim=1)
        return self.output(
            batch,
            self.head(features),
            embedding=features,
            completed=completed,
            neighbours=index,
            neighbour_weights=weights,
        )
