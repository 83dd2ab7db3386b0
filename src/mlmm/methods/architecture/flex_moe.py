"""Flex-MoE: a missing-modality bank fills absent embeddings; a sparse mixture of experts routes
each sample's tokens, its top-1 expert fixed to the expert of its observed modality combination.

Paper: S. Yun, I. Choi, J. Peng, Y. Wu, J. Bao, Q. Zhang, J. Xin, Q. Long, T. Chen, "Flex-MoE:
Modeling Arbitrary Modality Combination via the Flexible Mixture-of-Experts", NeurIPS 2024,
arXiv:2410.08245 (code: UNITES-Lab/flex-moe).

Each modality is encoded into one token where it is present. An absent modality's token is a
learned embedding of the *missing-modality bank*, indexed by the sample's observed combination
(presence pattern) and the absent modality. The ``M`` tokens (plus a learned modality
embedding) go through ``n_layers`` transformer blocks whose feed-forward part is a sparse
mixture of experts (top-``k`` routing, :class:`mlmm.nn.moe.SparseMoE`); an MLP head reads the
concatenated tokens. There is one expert per presence pattern (``2**M - 1``), and at least
``4 * M * top_k`` (:data:`EXPERTS_PER_SLOT` per expert one sample may use), by default; the
experts' width is sized so that one sample's active parameters are at most a third of the
total (:func:`sparse_expert_width`), for every sample: a complete sample's ``M`` tokens are
routed one by one and may use ``min(M * top_k, n_experts)`` experts per block, which
:meth:`FlexMoE.active_parameters` counts (:meth:`FlexMoE.sample_active_parameters` counts what
each sample used). The width is capped at :data:`MAX_EXPERT_WIDTH`; where the cap binds, more
experts keep the third, up to :data:`MAX_EXPERTS` per block: past that (inputs so wide that the
encoders outweigh that many capped experts) the experts stay bounded and the third is not kept.

Routing follows the paper's two routers. The *generalised* router (G-Router) routes the tokens
of complete samples freely to their top ``k`` experts, kept balanced by the load-balancing loss
``cv²(importance) + cv²(load)`` (Shazeer et al., 2017). The *specialised* router (S-Router)
fixes the top-1 expert of an incomplete sample's tokens to the expert of its combination (the
other ``k - 1`` are the router's best among the rest) and trains the router's logits towards
that expert with a cross-entropy term. Training runs in two stages, as the paper's warm-up on
samples sorted by their number of modalities: stage ``"generalised"`` on the complete training
samples only, then stage ``"specialised"`` on all of them.

Deliberate differences from the paper: one token per modality (the paper splits each modality
into ``num_patches`` patch tokens); the G-stage is a separate fit stage on the complete samples
(the paper warms up for a few epochs on all samples sorted by their number of modalities); when
the training split has fewer than :data:`MIN_COMPLETE` complete samples, the generalised stage
is skipped (``generalised_samples`` records how many there were) and the G-Router trains only
on the complete samples met in the specialised stage; the router is not noisy (no noisy top-k
gating), so the load term counts selections and carries no gradient (the importance term
does); the incomplete samples' gates get no balancing term (the cross-entropy pulls them to
their combination's expert); fixed top-1 routing also applies at prediction time (the
presence pattern is known); modality dropout (off in the generalised stage) makes training
patterns cover test patterns; the head reads the concatenated tokens (the paper averages each
modality's patch tokens, then concatenates); more experts than the paper's 16 for 4 modalities
with top-4 routing, whose complete sample may reach all of them (``4 * M * top_k``: 24 for 3
modalities with the default top-2), so that a complete sample's active parameters stay at most
a third. With ``n_experts`` below ``2**M - 1``, pattern ``p``'s expert is ``p mod n_experts``.
"""

from __future__ import annotations

from copy import deepcopy
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, modality_dropout
from mlmm.nn.backbones import MAX_PATTERNS
from mlmm.nn.moe import SparseMoE, load_balancing_loss
from mlmm.tune.space import Categorical, Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

#: Fewest complete training samples for which the generalised stage runs on its own.
MIN_COMPLETE = 32

#: The largest share of the parameters one sample may pass through when ``n_experts`` and
#: ``expert_hidden`` are sized from the data (the experts hold the capacity and a sample uses
#: few of them).
ACTIVE_SHARE = 1 / 3

#: Experts per block for each expert one sample may route to (``n_experts=None``: at least
#: ``EXPERTS_PER_SLOT * M * top_k``; the paper's 16 experts for top-4 routing is 4 per slot).
EXPERTS_PER_SLOT = 4

#: The widest expert ``expert_hidden=None`` gives (16 times the default token width; two times
#: ``embed_dim``, its narrowest, where that is wider). Where a wider expert would be needed to
#: reach :data:`ACTIVE_SHARE` (very wide inputs make the encoders large), ``n_experts=None``
#: adds experts instead, up to :data:`MAX_EXPERTS`; an explicit ``n_experts`` keeps the capped
#: width, and the share is then not guaranteed.
MAX_EXPERT_WIDTH = 1024

#: The most experts per block ``n_experts=None`` reaches by adding experts under the width cap
#: (one per presence pattern may be more: that count is never lowered). With both caps a
#: block's experts hold at most ``MAX_EXPERTS * (MAX_EXPERT_WIDTH * (2 D + 1) + D)``
#: parameters (8.5M at ``embed_dim=64``) whatever the input width; where this cap binds, one
#: sample's active parameters pass :data:`ACTIVE_SHARE` (the encoders, which every sample
#: uses, outweigh the experts). No built-in dataset reaches it over the search space (at most
#: 57: ``iemocap`` with ``embed_dim=32``, ``hidden=512``, ``top_k=2``).
MAX_EXPERTS = 64


def sample_experts(n_modalities: int, top_k: int, n_experts: int) -> int:
    """The most experts one sample's tokens can use in one block: ``min(M * top_k, N)``.

    A complete sample's ``M`` tokens are routed one by one by the G-Router, each to ``top_k``
    experts; an incomplete sample's tokens share their combination's expert and add at most
    ``top_k - 1`` each (``1 + M (top_k - 1)``, never more than the complete sample's).
    """
    return min(n_modalities * top_k, n_experts)


def sparse_expert_width(
    dense: int, idle: int, dim: int, n_experts: int, routed: int, n_layers: int
) -> int:
    """The narrowest expert width (``2 * dim``, or a multiple of 8 above it, or ``2 * dim``
    plus a multiple of 8 when ``2 * dim`` is not one) at which one sample's active parameters
    are at most :data:`ACTIVE_SHARE` of the total (:meth:`FlexMoE.active_parameters`).

    ``dense`` counts the parameters outside the experts that every sample passes through
    (encoders, attention, routers, head, its own bank entries), ``idle`` those it does not (the
    other patterns' bank entries). An expert of width ``h`` has ``E = h (2 dim + 1) + dim``
    parameters, and a sample uses at most ``routed`` of the ``n_experts`` in each of the
    ``n_layers`` blocks (:func:`sample_experts`): the share is
    ``(dense + L r E) / (dense + idle + L N E)``, at most 1/3 from
    ``E >= (2 dense - idle) / (L (N - 3 r))``. With ``N <= 3 r`` no width reaches it: the
    answer is then ``2 * dim``. Not capped (the caller caps it at :data:`MAX_EXPERT_WIDTH`).
    """
    floor = 2 * dim
    slack = n_layers * (n_experts * ACTIVE_SHARE - routed)  # > 0: wider experts lower the share
    if slack <= 0:
        return floor

    def share(width: int) -> float:
        expert = width * (2 * dim + 1) + dim
        return (dense + n_layers * routed * expert) / (dense + idle + n_layers * n_experts * expert)

    expert = max(0.0, (dense * (1 - ACTIVE_SHARE) - idle * ACTIVE_SHARE) / slack)
    width = max(floor, 8 * int(np.ceil(max(expert - dim, 0.0) / (2 * dim + 1) / 8)))
    while share(width) > ACTIVE_SHARE:  # rounding in the closed form: one more step of 8
        width += 8
    return width


class MoEBlock(nn.Module):
    """Pre-norm transformer block whose feed-forward part is a :class:`SparseMoE`.

    ``forward(x [B, M, D], forced [B])`` routes every token of row ``b`` with that row's forced
    top-1 expert (``-1``: none) and returns ``(x, logits [B, M, E], index [B, M, k], gates
    [B, M, k])``. Every token is attended (absent modalities carry bank embeddings).
    """

    def __init__(
        self, dim: int, n_heads: int, n_experts: int, top_k: int, hidden: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = SparseMoE(dim, n_experts, top_k, hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        self.attention._reset_parameters()  # torch's name; the trainer calls reset_parameters

    def forward(self, x: torch.Tensor, forced: torch.Tensor):
        b, m, d = x.shape
        h = self.norm1(x)
        attended, _ = self.attention(h, h, h, need_weights=False)  # [B, M, D]
        x = x + self.drop(attended)
        tokens_forced = forced.repeat_interleave(m)  # [B * M]
        y, logits, index, gates = self.moe(self.norm2(x).reshape(b * m, d), tokens_forced)
        x = x + self.drop(y.reshape(b, m, d))
        k = index.shape[1]
        return x, logits.reshape(b, m, -1), index.reshape(b, m, k), gates.reshape(b, m, k)


@register_method(
    "flex-moe",
    family="architecture",
    subtype="large multimodal models",
    paper="Yun et al., Flex-MoE, NeurIPS 2024 (missing-modality bank + sparse MoE)",
)
class FlexMoE(MissingModalityModel):
    """Missing-modality bank, then transformer blocks with a sparse mixture of experts.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        At most 10 modalities (the bank and the default experts are per presence pattern).
    task : TaskSpec
    embed_dim : int, default 64
        Width of the modality tokens.
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    n_heads : int, default 4
        Attention heads (``embed_dim`` must be divisible by it).
    n_layers : int, default 1
        Transformer blocks with a sparse MoE feed-forward part.
    n_experts : int or None, default None
        Experts per block; None: one per presence pattern (``2**M - 1``), and at least
        ``4 * M * top_k`` (:data:`EXPERTS_PER_SLOT` for each expert one sample may use: its
        ``M`` tokens, ``top_k`` each), more where the expert width would pass
        :data:`MAX_EXPERT_WIDTH` (up to :data:`MAX_EXPERTS`, past which a third is not
        kept). An explicit value is used as given; one sample's active parameters are then at
        most a third only if ``n_experts > 3 * min(M * top_k, n_experts)`` and the sized width
        is under the cap (check :meth:`active_parameters`).
    top_k : int, default 2
        Experts per token (at most the number of experts): an incomplete sample's tokens go to
        their combination's expert (the S-Router's top-1) and the router's best among the rest,
        a complete sample's to the G-Router's best two. ``top_k=2`` and ``hidden=128`` were
        chosen on tuning seeds (``benchmarks/flex_moe_config.py``).
    expert_hidden : int or None, default None
        Width of each expert's hidden layer; None: sized from the data so that one sample's
        active parameters are at most :data:`ACTIVE_SHARE` of the total (the smallest multiple
        of 8 that reaches it, at least two times the token width, the paper's
        ``hidden_times=2``, and at most :data:`MAX_EXPERT_WIDTH` or that floor where it is
        wider). An explicit width is used as given, and the third is then not guaranteed.
    gate_loss_weight : float, default 0.01
        Weight of the load-balancing and specialisation terms (the paper's 1e-2).
    dropout : float, default 0.3
        Dropout in the encoders, the blocks, the experts and the head.
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch of the specialised
        stage (at least one kept); 0 turns it off.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality.
    missing_bank : nn.Parameter, shape (2**M - 1, M, embed_dim)
        The missing-modality bank: the token of modality ``m`` when absent from pattern ``p``.
    modality_embedding : nn.Parameter, shape (M, embed_dim)
    blocks : nn.ModuleList of MoEBlock
    head : MLPHead
        Reads the ``M * embed_dim`` concatenated tokens.
    expert_count : int
        The number of experts per block (``n_experts`` resolved).
    expert_width : int
        The width of each expert's hidden layer (``expert_hidden`` resolved). A saved model
        records both (:meth:`resolved_hyperparameters`) and is rebuilt with them, whatever
        the sizing rules of the mlmm that loads it.
    generalised_samples : int
        Complete training samples seen by the last :meth:`fit` (the generalised stage runs
        when there are at least :data:`MIN_COMPLETE`).

    References
    ----------
    S. Yun, I. Choi, J. Peng, Y. Wu, J. Bao, Q. Zhang, J. Xin, Q. Long, T. Chen. "Flex-MoE:
    Modeling Arbitrary Modality Combination via the Flexible Mixture-of-Experts." NeurIPS
    2024. arXiv:2410.08245

    N. Shazeer, A. Mirhoseini, K. Maziarz, A. Davis, Q. Le, G. Hinton, J. Dean. "Outrageously
    Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer." ICLR 2017.
    arXiv:1701.06538

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("flex-moe", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.prediction.shape, out.extras["expert_usage"].shape  # [B, K], [patterns, experts]
    (torch.Size([200, 4]), torch.Size([7, 24]))
    >>> model.active_parameters() < model.total_parameters()
    True
    """

    search_space = {
        "embed_dim": Categorical([32, 64, 128]),
        "hidden": Int(64, 512, log=True),
        "top_k": Int(1, 2),  # n_experts=None: at least 4 * M * top_k experts
        "gate_loss_weight": Float(1e-3, 1e-1, log=True),
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
        n_heads: int = 4,
        n_layers: int = 1,
        n_experts: int | None = None,
        top_k: int = 2,
        expert_hidden: int | None = None,
        gate_loss_weight: float = 0.01,
        dropout: float = 0.3,
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
        check_range("n_heads", n_heads, 1, integer=True)
        check_range("n_layers", n_layers, 1, integer=True)
        if n_experts is not None:
            check_range("n_experts", n_experts, 1, integer=True)
        check_range("top_k", top_k, 1, integer=True)
        if expert_hidden is not None:
            check_range("expert_hidden", expert_hidden, 1, integer=True)
        check_range("gate_loss_weight", gate_loss_weight, 0)
        if embed_dim % n_heads:
            raise MlmmError(
                f"embed_dim must be divisible by n_heads, got {embed_dim} and {n_heads}"
            )
        m = len(self.specs)
        n_patterns = 2**m - 1
        if n_patterns > MAX_PATTERNS:
            raise MlmmError(
                f"flex-moe keeps one bank entry per presence pattern: 2**M - 1 = {n_patterns} "
                f"for M = {m} modalities, more than {MAX_PATTERNS}; use masked-attention"
            )
        if n_experts is not None and top_k > n_experts:  # None: more than 3 * M * top_k
            raise MlmmError(
                f"top_k must be at most the number of experts ({n_experts}), got "
                f"top_k={top_k}; lower top_k or raise n_experts"
            )
        # the paper's 16 experts for top-4 routing: four experts per expert a sample may use
        expert_count = (
            max(n_patterns, EXPERTS_PER_SLOT * m * top_k) if n_experts is None else n_experts
        )
        self.embed_dim, self.hidden, self.depth, self.n_heads = embed_dim, hidden, depth, n_heads
        self.n_layers, self.n_experts, self.top_k = n_layers, n_experts, top_k
        self.expert_hidden, self.gate_loss_weight = expert_hidden, gate_loss_weight
        self.dropout, self.modality_dropout = dropout, modality_dropout
        self.n_patterns = n_patterns
        self.generalised_samples = 0

        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.missing_bank = nn.Parameter(torch.empty(n_patterns, m, embed_dim))
        self.modality_embedding = nn.Parameter(torch.empty(m, embed_dim))
        self.head = MLPHead(m * embed_dim, task.output_dim, hidden, depth, dropout)
        if expert_hidden is None:
            # never below the 2 * embed_dim floor: with embed_dim > 512 no count of experts
            # narrows the width under MAX_EXPERT_WIDTH, and the loop would not end
            widest = max(MAX_EXPERT_WIDTH, 2 * embed_dim)
            most = max(expert_count, MAX_EXPERTS)  # bounded experts for any input width
            expert_hidden = self._sized_width(expert_count)
            while n_experts is None and expert_hidden > widest and expert_count < most:
                expert_count += 1  # more experts, each narrower, instead of wider ones
                expert_hidden = self._sized_width(expert_count)
            expert_hidden = min(expert_hidden, widest)
        self.expert_count = expert_count
        self.expert_width = expert_hidden
        self.blocks = nn.ModuleList(
            MoEBlock(embed_dim, n_heads, expert_count, top_k, expert_hidden, dropout)
            for _ in range(n_layers)
        )
        self.register_buffer("bits", 2 ** torch.arange(m), persistent=False)
        self._generalising = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.missing_bank, std=0.02)
        nn.init.normal_(self.modality_embedding, std=0.02)

    # ------------------------------------------------------------------ sizes
    def resolved_hyperparameters(self) -> dict[str, int]:
        """``n_experts`` and ``expert_hidden`` given as None, with the count and width they
        resolved to (:attr:`expert_count`, :attr:`expert_width`): an artifact rebuilds from
        them, so a later change of :data:`EXPERTS_PER_SLOT`, :data:`MAX_EXPERT_WIDTH`,
        :data:`MAX_EXPERTS` or :func:`sparse_expert_width` does not change a saved model."""
        resolved = {}
        if self.n_experts is None:
            resolved["n_experts"] = self.expert_count
        if self.expert_hidden is None:
            resolved["expert_hidden"] = self.expert_width
        return resolved

    @classmethod
    def resolved_from_state(
        cls, hyperparameters: dict[str, Any], state: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """``n_experts`` and ``expert_hidden`` given as None, read from the first block's
        experts (``blocks.0.moe.experts.I.0.weight``: ``[expert_hidden, embed_dim]``): the
        sizing rule changed before artifacts recorded them (:meth:`resolved_hyperparameters`)."""
        prefix = "blocks.0.moe.experts."
        first = state.get(f"{prefix}0.0.weight")
        if first is None:  # not weights this version's flex-moe can read: let the load say so
            return {}
        resolved: dict[str, Any] = {}
        if hyperparameters.get("n_experts", 0) is None:
            resolved["n_experts"] = len(
                {k[len(prefix) :].split(".", 1)[0] for k in state if k.startswith(prefix)}
            )
        if hyperparameters.get("expert_hidden", 0) is None:
            resolved["expert_hidden"] = int(first.shape[0])
        return resolved

    def total_parameters(self) -> int:
        """Every learnable parameter."""
        return sum(p.numel() for p in self.parameters())

    def _sized_width(self, expert_count: int) -> int:
        """:func:`sparse_expert_width` for ``expert_count`` experts (built before the blocks)."""
        d, m = self.embed_dim, len(self.specs)
        # every parameter outside the experts: encoders, bank, attention, routers, head
        outside = sum(p.numel() for p in self.parameters()) + self.n_layers * (
            4 * d * d + 8 * d + (d + 1) * expert_count
        )  # + per block: attention (4 D^2 + 4 D), two layer norms (4 D), router (D N + N)
        idle = (self.n_patterns - 1) * m * d  # the other patterns' bank entries
        routed = sample_experts(m, self.top_k, expert_count)
        return sparse_expert_width(outside - idle, idle, d, expert_count, routed, self.n_layers)

    def active_parameters(self) -> int:
        """Parameters one sample passes through at most, over every presence pattern.

        All parameters, less, in every block, the experts the sample cannot reach (it uses at
        most :func:`sample_experts` ``= min(M * top_k, n_experts)``: a complete sample whose
        tokens each go to other experts), and less the bank entries of the other ``2**M - 2``
        presence patterns. :meth:`sample_active_parameters` counts what samples actually used;
        :meth:`token_active_parameters` is the per-token figure (the usual MoE convention).
        """
        routed = sample_experts(len(self.modalities), self.top_k, self.expert_count)
        return self._active(routed)

    def token_active_parameters(self) -> int:
        """Parameters one token passes through: as :meth:`active_parameters`, with ``top_k``
        experts per block (per sample too for an incomplete sample with ``top_k=1``)."""
        return self._active(self.top_k)

    def _active(self, routed: int) -> int:
        unused_experts = sum(
            (self.expert_count - routed) * block.moe.expert_size() for block in self.blocks
        )
        unused_bank = (self.n_patterns - 1) * len(self.modalities) * self.embed_dim
        return self.total_parameters() - unused_experts - unused_bank

    def sample_active_parameters(self, experts: torch.Tensor) -> torch.Tensor:
        """Parameters each sample passes through, from the experts its tokens chose.

        ``experts`` is ``out.extras["experts"]`` (``[B, L, M, k]``). Like
        :meth:`token_active_parameters`, but counting, in every block, each expert that any of the
        sample's ``M`` tokens used: an incomplete sample's tokens share its combination's expert
        (with ``top_k=1``, one expert, so :meth:`token_active_parameters`), while a complete
        sample's tokens are routed one by one and may use up to ``min(M * top_k, n_experts)``
        experts (at most :meth:`active_parameters`).
        Returns ``[B]`` int64.
        """
        b, n_layers = experts.shape[:2]
        used = torch.zeros(b, n_layers, self.expert_count, dtype=torch.bool, device=experts.device)
        used.scatter_(2, experts.flatten(2), True)  # [B, L, E]: experts any token used
        unused = (self.expert_count - used.sum(dim=2)).sum(dim=1)  # [B]
        expert = self.blocks[0].moe.expert_size()  # every block's experts have the same size
        unused_bank = (self.n_patterns - 1) * len(self.modalities) * self.embed_dim
        return self.total_parameters() - unused * expert - unused_bank

    def pattern(self, present: torch.Tensor) -> torch.Tensor:
        """Presence-pattern index in ``[0, 2**M - 1)`` of each row (``[B, M]`` -> ``[B]``);
        the complete pattern is ``2**M - 2``; a row with nothing present maps to 0."""
        return ((present.long() * self.bits).sum(dim=1) - 1).clamp_min(0)

    def combination_expert(self, pattern: torch.Tensor) -> torch.Tensor:
        """The expert of each presence pattern (the pattern itself with one expert each)."""
        return pattern % self.expert_count

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Stage ``"generalised"`` on the complete training samples (when there are at least
        :data:`MIN_COMPLETE`), then stage ``"specialised"`` on all of them."""
        complete = np.flatnonzero(train.observed.all(axis=1))
        self.generalised_samples = len(complete)
        histories = []
        if len(complete) >= MIN_COMPLETE:
            val_complete = None
            if val is not None and val.observed.all(axis=1).any():
                val_complete = val.subset(np.flatnonzero(val.observed.all(axis=1)))
            self._generalising = True
            try:
                histories.append(
                    trainer.fit_module(
                        self, train.subset(complete), val_complete, stage="generalised"
                    )
                )
            finally:
                self._generalising = False
        histories.append(trainer.fit_module(self, train, val, stage="specialised"))
        return histories

    # ------------------------------------------------------------------ forward
    def onnx_module(self) -> nn.Module:
        """A copy whose mixtures of experts run every expert on every token, weighted by its
        gate (:attr:`mlmm.nn.moe.SparseMoE.dense`): the same predictions, traceable whole.
        Traced as it is, the graph kept only the experts the export's check inputs selected,
        and answered other inputs without the rest (0.016 off in probability, unnoticed by
        the check)."""
        copy = deepcopy(self)
        for block in copy.blocks:
            block.moe.dense = True
        return copy

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self.training and self.modality_dropout > 0 and not self._generalising:
            present = modality_dropout(present, self.modality_dropout)  # [B, M]
        pattern = self.pattern(present)  # [B]
        embeddings = torch.stack(
            [encode_modality(self.encoders[name], batch, name) for name in self.modalities], dim=1
        )  # [B, M, D]; absent rows computed on zeros, replaced below
        filled = self.missing_bank[pattern]  # [B, M, D]: the bank entries of each row's pattern
        tokens = torch.where(present.unsqueeze(-1), embeddings, filled) + self.modality_embedding
        complete = present.all(dim=1)  # [B]
        forced = torch.where(complete, -1, self.combination_expert(pattern))  # [B]; -1: G-Router
        token_complete = complete.repeat_interleave(len(self.modalities))  # [B * M]
        token_forced = forced.repeat_interleave(len(self.modalities))  # [B * M]
        balance, specialise = tokens.new_zeros(()), tokens.new_zeros(())
        layer_index, layer_gates = [], []
        for block in self.blocks:
            tokens, logits, index, gates = block(tokens, forced)  # [B, M, D], [B, M, E], [B, M, k]
            flat_logits = logits.flatten(0, 1)  # [B * M, E]
            dense = SparseMoE.dense_gates(
                index.flatten(0, 1), gates.flatten(0, 1), self.expert_count
            )  # [B * M, E]
            balance = balance + load_balancing_loss(dense[token_complete])
            specialise = specialise + SparseMoE.specialisation_loss(flat_logits, token_forced)
            layer_index.append(index)
            layer_gates.append(gates)
        fused = tokens.flatten(1)  # [B, M * D]
        experts = torch.stack(layer_index, dim=1)  # [B, L, M, k]
        usage = torch.zeros(
            self.n_patterns, self.expert_count, dtype=tokens.dtype, device=tokens.device
        )  # [P, E]: (token, slot) assignments per presence pattern and expert
        rows = pattern.view(-1, 1, 1, 1).expand_as(experts)
        usage.index_put_(
            (rows.reshape(-1), experts.reshape(-1)), tokens.new_ones(()), accumulate=True
        )
        aux = {
            "load_balance": self.gate_loss_weight * balance,
            "specialisation": self.gate_loss_weight * specialise,
        }
        return self.output(
            batch,
            self.head(fused),
            aux_losses=aux,
            embedding=fused,
            experts=experts,
            gates=torch.stack(layer_gates, dim=1),
            expert_usage=usage,
            pattern=pattern,
        )
