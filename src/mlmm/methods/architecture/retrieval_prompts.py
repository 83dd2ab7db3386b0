"""Retrieval-augmented dynamic prompts (RAGPT): training samples retrieved with the modalities a
sample has fill its absent modalities and build its prompts, on frozen encoders.

Paper: J. Lang, Z. Cheng, T. Zhong, F. Zhou, "Retrieval-Augmented Dynamic Prompt Tuning for
Incomplete Multimodal Learning", AAAI 2025, doi:10.1609/aaai.v39i17.33984, arXiv:2501.01120
(code: Jian-Lang/RAGPT).

The frozen parts are those of ``frozen-backbone-prompting`` (this class extends it): each
modality's encoder is pretrained alone in stage ``"pretrain"`` (or is a registered external
backbone) and then frozen; adapters turn frozen embeddings into tokens. RAGPT's three modules:

- *Retriever.* The standardised training samples are a memory bank (a
  :class:`mlmm.nn.retrieval.SampleBank`, saved in the artifact). A sample's ``k`` nearest bank
  samples are found with the masked distance :func:`mlmm.nn.retrieval.overlap_distances`, on
  the modalities both have present. While training, a sample never retrieves itself: bank rows
  identical to it on every shared modality are excluded (:func:`mlmm.nn.graph.bank_self_matches`).
  On variable-length sequences the bank also keeps each sample's valid steps (``bank_lengths``)
  and stores padded steps as zeros, as queries are compared
  (:meth:`~mlmm.data.batch.MultimodalBatch.zero_padding`).
- *Missing-modality generator.* The neighbours go through the frozen encoders and the adapters
  (with their own valid steps, so a neighbour is encoded exactly as it is as a query);
  for each modality the sample lacks, the mean of the tokens of the neighbours that have it,
  through a trained per-modality linear map, stands in for it (a learned token when no
  neighbour has it).
- *Context-aware prompter.* ``prompt_length`` learned queries, shifted by the mean of the
  sample's own present tokens, attend over the neighbours' present tokens (and one learned
  always-present context token): the result is the sample's prompts, prepended at the first
  fusion layer. The prompts change with the retrieved context (dynamic prompts).

A class token, the dynamic prompts and the ``M`` tokens (present or generated) go through the
trained fusion transformer; a head reads the class token. Training hides random subsets of the
present modalities (modality dropout), so the generator and the prompter are trained on
retrievals made with fewer modalities.

The bank is bounded: at most ``bank_size`` samples (itself at most :data:`MAX_BANK_SIZE`).
A larger training split is subsampled without replacement, from a generator seeded by the
trainer's seed (the same seed, the same bank), with a warning saying so.

Deliberate differences from the paper: RAGPT prompts one frozen multimodal transformer (ViLT)
and retrieves with frozen CLIP features per modality channel (text-to-text, image-to-image);
here the frozen parts are unimodal encoders, the prompts act in a trained fusion layer (as in
``frozen-backbone-prompting``), and retrieval uses the standardised inputs on all the
modalities the query and the bank sample share (one channel per shared set, not per
modality); the generator averages the neighbours' tokens before a linear map (RAGPT uses a
small network over the retrieved content); retrieved samples' labels are not used.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.architecture.frozen_backbone_prompting import FrozenBackbonePrompting
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import masked_mean, modality_dropout
from mlmm.nn.graph import bank_self_matches
from mlmm.nn.retrieval import BankLengths, SampleBank, fill_bank, overlap_distances
from mlmm.tune.space import Int
from mlmm.utils import rng_for

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

#: The largest memory bank ``bank_size`` may ask for (samples).
MAX_BANK_SIZE = 50_000


@register_method(
    "retrieval-prompts",
    family="architecture",
    subtype="large multimodal models",
    paper="Lang et al., RAGPT, AAAI 2025 (retrieval-augmented dynamic prompts, frozen encoders)",
)
class RetrievalPrompts(FrozenBackbonePrompting):
    """Retrieved training samples fill absent modalities and build dynamic prompts.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        At most 10 modalities.
    task : TaskSpec
    embed_dim, hidden, depth, n_heads, fusion_layers, dropout, modality_dropout, backbones
        As in ``frozen-backbone-prompting`` (its defaults).
    prompt_length : int, default 4
        Dynamic prompt tokens per sample, prepended at the first fusion layer.
    k : int, default 5
        Neighbours retrieved per sample (fewer when fewer bank samples share a modality).
    bank_size : int, default 10000
        Most training samples kept in the memory bank (at most :data:`MAX_BANK_SIZE`); a larger
        training split is subsampled with the trainer's seed, with a warning.

    Attributes
    ----------
    bank : SampleBank
        The memory bank: standardised training samples and their presence (empty until
        :meth:`fit`); padded steps of variable-length sequences are zero.
    bank_lengths : BankLengths
        One int64 buffer per ``sequence`` modality, ``bank_lengths.<name>`` of shape ``[N]``:
        the valid steps of each bank sample when the training data had variable lengths for
        it, empty (``[0]``: every step is real) otherwise. Saved in the artifact; an artifact
        saved before these buffers existed loads with them empty
        (:meth:`BankLengths.upgrade_state_dict`), which predicts exactly as it did when saved:
        neighbours encoded without lengths, as then.
    generators : nn.ModuleDict
        Per modality: the linear map of the neighbours' mean token to the missing token.
    missing_token : nn.Parameter, shape (M, embed_dim)
        The token of an absent modality that no neighbour has.
    prompt_queries : nn.Parameter, shape (prompt_length, embed_dim)
    null_context : nn.Parameter, shape (1, embed_dim)
        An always-present context token, so a sample without neighbours still gets prompts.
    prompter : nn.MultiheadAttention
        The prompt queries attend over the retrieved context.

    References
    ----------
    J. Lang, Z. Cheng, T. Zhong, F. Zhou. "Retrieval-Augmented Dynamic Prompt Tuning for
    Incomplete Multimodal Learning." AAAI 2025. doi:10.1609/aaai.v39i17.33984

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("retrieval-prompts", ds.specs, ds.task, k=3)
    >>> trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, split.train, split.val)
    >>> len(trained.model.bank) == split.train.n_samples
    True
    >>> batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(split.test))
    >>> trained.model(batch).extras["neighbours"].shape  # [B, k] bank rows
    torch.Size([60, 3])
    """

    streams_data = False  # the retrieval bank holds training rows in memory

    supports_data_parallel = False
    data_parallel_reason = (
        "its retrieval bank of training samples must hold every process's rows "
        "(kNN needs an all-gather mlmm does not do)"
    )
    search_space = {**FrozenBackbonePrompting.search_space, "k": Int(1, 16, log=True)}

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        n_heads: int = 4,
        fusion_layers: int = 1,
        prompt_length: int = 4,
        dropout: float = 0.4,
        modality_dropout: float = 0.3,
        backbones: dict[str, str] | None = None,
        k: int = 5,
        bank_size: int = 10000,
    ) -> None:
        super().__init__(
            specs,
            task,
            embed_dim=embed_dim,
            hidden=hidden,
            depth=depth,
            n_heads=n_heads,
            fusion_layers=fusion_layers,
            prompt_length=prompt_length,
            dropout=dropout,
            modality_dropout=modality_dropout,
            backbones=backbones,
        )
        check_range("k", k, 1, integer=True)
        check_range("bank_size", bank_size, 1, MAX_BANK_SIZE, integer=True)
        self.k, self.bank_size = k, bank_size
        del self.prompts  # static prompts of the parent: replaced by dynamic ones
        self.bank = SampleBank(self.specs)
        self.bank_lengths = BankLengths(self.specs, "retrieval-prompts", "fill_bank")
        self.generators = nn.ModuleDict(
            {m: nn.Linear(embed_dim, embed_dim) for m in self.modalities}
        )
        self.missing_token = nn.Parameter(torch.empty(len(self.modalities), embed_dim))
        self.prompt_queries = nn.Parameter(torch.empty(prompt_length, embed_dim))
        self.null_context = nn.Parameter(torch.empty(1, embed_dim))
        self.prompter = nn.MultiheadAttention(embed_dim, n_heads, dropout=dropout, batch_first=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "prompter"):  # the parent's constructor calls this before they exist
            nn.init.normal_(self.missing_token, std=0.02)
            nn.init.normal_(self.prompt_queries, std=0.02)
            nn.init.normal_(self.null_context, std=0.02)
            self.prompter._reset_parameters()

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Fill the memory bank (subsampled to ``bank_size`` with the trainer's seed), then
        train as ``frozen-backbone-prompting``: ``"pretrain"``, then ``"prompts"``."""
        rows = np.arange(train.n_samples)
        if train.n_samples > self.bank_size:
            rng = rng_for(trainer.seed, "retrieval-bank")
            rows = np.sort(rng.choice(train.n_samples, self.bank_size, replace=False))
            warnings.warn(
                f"retrieval-prompts: the training split has {train.n_samples} samples, more "
                f"than bank_size={self.bank_size}; the memory bank keeps a random "
                f"{self.bank_size} of them (seeded by the trainer's seed {trainer.seed}); "
                f"raise bank_size (at most {MAX_BANK_SIZE}) to keep more",
                stacklevel=2,
            )
        self.fill_bank(MultimodalBatch.from_dataset(train, rows, with_target=False))
        return super().fit(trainer, train, val)

    @torch.no_grad()
    def fill_bank(self, batch: MultimodalBatch) -> None:
        """Replace the bank and its ``bank_lengths`` with the standardised samples of
        ``batch``, padding stored as zeros (:func:`mlmm.nn.retrieval.fill_bank`)."""
        fill_bank(self.bank, self.bank_lengths, batch)

    # ------------------------------------------------------------------ retrieval
    def retrieve(
        self, batch: MultimodalBatch, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k' = min(k, N)`` nearest bank rows ``[B, k']`` on the shared present modalities
        and their distances ``[B, k']`` (``inf`` where fewer qualify). While training, a
        sample's own bank row (identical on every shared modality) is excluded."""
        chosen = min(self.k, len(self.bank))
        inputs = batch.zero_padding().inputs  # raw distances: padding as the bank holds it
        screen = overlap_distances(inputs, present, self.bank)  # [B, N]
        if self.training and chosen > 0:
            own = bank_self_matches(inputs, present, self.bank, screen)  # [B, N]
            screen = torch.where(own, torch.inf, screen)
        distance, index = torch.topk(screen, chosen, dim=1, largest=False)  # [B, k']
        return index, distance

    def neighbour_tokens(
        self, index: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The neighbours' tokens ``[B, k', M, D]`` (frozen encoders + adapters) and which of
        them are present ``[B, k', M]`` (only for valid neighbours)."""
        b, kk = index.shape
        flat = index.reshape(-1)  # [B * k']
        present = self.bank.present[flat] & valid.reshape(-1, 1)  # [B * k', M]
        inputs = {
            s.name: self.bank.row(s.name)[flat].reshape(len(flat), *s.shape) for s in self.specs
        }
        lengths = self.bank_lengths.lookup(len(self.bank), flat)  # name -> [B * k']
        embeddings = self.embed(
            MultimodalBatch(inputs, present, self.modalities, None, lengths or None), present
        )  # name -> [B * k', D_m], zero where absent
        tokens = torch.stack(
            [self.adapters[m](embeddings[m]) for m in self.modalities], dim=1
        )  # [B * k', M, D]
        m = len(self.modalities)
        return tokens.reshape(b, kk, m, self.embed_dim), present.reshape(b, kk, m)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self._pretraining:
            return self._pretrain_forward(batch, present)
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        b, m = present.shape
        embeddings = self.embed(batch, present)
        tokens = torch.stack(
            [self.adapters[name](embeddings[name]) for name in self.modalities], dim=1
        )  # [B, M, D]

        index, distance = self.retrieve(batch, present)  # [B, k'], [B, k']
        valid = torch.isfinite(distance)  # [B, k']
        context, context_present = self.neighbour_tokens(index, valid)  # [B, k', M, D], [B, k', M]

        # missing-modality generator: the neighbours that have m stand in for an absent m
        slots = []
        for j, name in enumerate(self.modalities):
            has = context_present[:, :, j]  # [B, k']
            found = has.any(dim=1, keepdim=True)  # [B, 1]
            average = masked_mean(context[:, :, j], has)  # [B, D]
            generated = torch.where(
                found, self.generators[name](average), self.missing_token[j]
            )  # [B, D]
            slots.append(torch.where(present[:, j : j + 1], tokens[:, j], generated))
        filled = torch.stack(slots, dim=1) + self.modality_embedding  # [B, M, D]

        # context-aware prompter: prompt queries attend over the retrieved present tokens
        own = masked_mean(tokens, present)  # [B, D]
        queries = self.prompt_queries.unsqueeze(0) + own.unsqueeze(1)  # [B, P, D]
        keys = torch.cat(
            [self.null_context.expand(b, 1, -1), context.flatten(1, 2)], dim=1
        )  # [B, 1 + k' M, D]
        ignore = torch.cat(
            [torch.zeros_like(present[:, :1]), ~context_present.flatten(1, 2)], dim=1
        )  # [B, 1 + k' M]; the null context is always attended
        prompts, _ = self.prompter(queries, keys, keys, key_padding_mask=ignore, need_weights=False)

        cls = self.class_token.expand(b, 1, -1)  # [B, 1, D]
        out, _ = self.fusion(torch.cat([cls, filled], dim=1), None, prompts.unsqueeze(1))
        fused = out[:, 0]  # [B, D]
        return self.output(
            batch,
            self.head(fused),
            embedding=fused,
            neighbours=torch.where(valid, index, -1),
            neighbour_distances=distance,
            prompts=prompts,
            completed=filled,
        )

    def extra_repr(self) -> str:
        return f"bank={len(self.bank)} samples (cap {self.bank_size})"


def bank_memory_bytes(specs: list[ModalitySpec], n_samples: int) -> int:
    """Most bytes the memory bank of ``n_samples`` samples holds: float32 rows, presence flags
    and, for each ``sequence`` modality, int64 valid steps (held for variable-length data)."""
    width = sum(int(np.prod(s.shape)) for s in specs)
    sequences = sum(s.kind == "sequence" for s in specs)
    return n_samples * (4 * width + len(specs) + 8 * sequences)
