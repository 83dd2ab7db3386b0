"""Missing-aware prompts: a frozen pretrained fusion transformer prompted per missing case.

Y.-L. Lee, Y.-H. Tsai, W.-C. Chiu, C.-Y. Lee, "Multimodal Prompting with Missing Modalities
for Visual Recognition", CVPR 2023, pp. 14943-14952, doi:10.1109/CVPR52729.2023.01435,
arXiv:2303.03369. Authors' code: github.com/YiLunLee/missing_aware_prompts (read for
reference, not copied).

A multimodal transformer pretrained on complete data is frozen; absent modalities are fed as
dummy inputs; one learnable prompt set per *missing case* is selected by each sample's
presence pattern and prepended, as input-level prompts, at the first ``prompt_depth`` layers
(the prompts of layer ``l`` join the sequence there and stay in it); only the prompts and the
head train. Here the two stages run inside :meth:`fit`:

1. ``"pretrain"``: the backbone (``masked-attention``'s: per-modality token encoders,
   modality embeddings, class token, transformer) and the head learn the task, absent
   modalities masked out of attention, so the backbone never sees a dummy input: with
   ``pretrain_on="observed"`` (default) on every training sample, with ``"complete"`` on the
   samples that have every modality (an error if there are none).
2. ``"prompts"``: the backbone is frozen (weights fixed, dropout off); the prompts, the
   learned placeholder tokens that stand in for absent modalities, and the head train.

Both stages hide random subsets of the present modalities (``modality_dropout``), so the
backbone learns from partial views of complete samples and the prompts of many patterns are
trained, including patterns the data has few samples of.

Differences from the paper: the backbone is pretrained here on the training data, not taken
from ViLT; a modality is one token from its kind's encoder, not text tokens and image
patches; with M modalities there are ``2**M - 1`` missing cases (the paper has three with
text + image), so at most 10 modalities; an absent modality is a learned placeholder token
(trained with the prompts in stage 2) instead of the paper's dummy input (empty text, an
all-ones image) passed through the frozen embedding; ``pretrain_on="observed"`` pretrains on
incomplete samples with absent modalities masked, because complete samples are rare under
heavy missingness (e.g. 1.0–1.7% of `handwritten` training samples at MCAR 0.5); prompts start from
N(0, 0.02) rather than the authors' one-hot initialisation; the head (the paper's pooler and
classifier) is the one trained in stage 1 and keeps training in stage 2.

Parameter-efficient fine-tuning: ``adapter="lora"`` (no prompts) or ``"both"`` adds LoRA
updates (E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
arXiv:2106.09685; :mod:`mlmm.nn.lora`) to the frozen transformer's linear layers (its blocks'
MLPs; attention's packed input projection and its output projection are read directly by
attention and get none), trained in stage 2 with the placeholders and the head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.architecture._peft import check_lora, lora_counts, resolved_lora_targets
from mlmm.methods.architecture.masked_attention import MaskedAttention
from mlmm.methods.base import check_choice, check_range
from mlmm.methods.registry import register_method
from mlmm.nn.backbones import MissingAwarePrompts, prepend_class_token
from mlmm.nn.lora import apply_lora, lora_parameters, merge_lora
from mlmm.tune.space import Categorical, Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

PRETRAIN_ON = ("observed", "complete")


@register_method(
    "missing-aware-prompts",
    family="architecture",
    subtype="attention",
    paper="Lee et al., Multimodal Prompting with Missing Modalities, CVPR 2023",
)
class MissingAwarePromptsModel(MaskedAttention):
    """A frozen pretrained transformer over modality tokens, prompted per presence pattern.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        At most 10 modalities (one prompt set for each of the ``2**M - 1`` patterns).
    task : TaskSpec
    embed_dim : int, default 64
        Token width (divisible by ``n_heads``).
    hidden : int, default 128
        Width of the encoders' and the head's hidden layers and of each block's MLP.
    depth : int, default 1
        Hidden layers in each encoder and in the head.
    n_layers : int, default 2
        Transformer blocks of the backbone.
    n_heads : int, default 4
        Attention heads.
    prompt_length : int, default 8
        Prompt tokens per prompted layer (the paper uses 16 with a 768-wide ViLT).
    prompt_depth : int, default 1
        Prompted layers, counted from the first (at most ``n_layers``; the paper prompts the
        first 6 of 12).
    dropout : float, default 0.2
        Dropout in the encoders, blocks and head (the frozen backbone runs without it).
    modality_dropout : float, default 0.3
        Probability of hiding each present modality in a training batch of either stage (at
        least one kept), so prompts see patterns the data has few samples of.
    pretrain_on : {"observed", "complete"}, default "observed"
        Stage-1 data: every training sample with its absent modalities masked out of
        attention, or only the samples with every modality (the paper's complete-data
        pretraining; raises if the training data has none).
    adapter : {"prompt", "lora", "both"}, default "prompt"
        What adapts the frozen backbone in stage 2: the missing-aware prompts, LoRA updates of
        the transformer's linear layers (no prompts), or both.
    lora_rank : int, default 4
        Rank of the LoRA updates (0: none); used with ``adapter="lora"`` or ``"both"``.
    lora_alpha : float, default 8.0
        The update is ``(lora_alpha / lora_rank) B A``.
    lora_targets : list of str or None, default None
        Names of the transformer's linear layers to adapt (``"blocks.0.mlp.0"``...;
        :func:`mlmm.nn.lora.linear_names` of ``transformer`` lists them); None: all of them.

    Attributes
    ----------
    encoders : nn.ModuleDict
        Backbone: one token encoder per modality.
    modality_embedding : nn.Parameter, shape (M, embed_dim)
        Backbone: which modality a token is.
    class_token : nn.Parameter, shape (1, embed_dim)
        Backbone: its output is the fused embedding.
    transformer : TokenTransformer
        Backbone: the fusion transformer.
    prompts : MissingAwarePrompts
        ``prompts.prompts``, shape ``(2**M - 1, prompt_depth, prompt_length, embed_dim)``.
    placeholder : nn.Parameter, shape (M, embed_dim)
        The token that stands in for an absent modality in stage 2 (and at prediction).
    head : MLPHead
        Prediction head on the class token's output.

    References
    ----------
    Y.-L. Lee, Y.-H. Tsai, W.-C. Chiu, C.-Y. Lee. "Multimodal Prompting with Missing Modalities
    for Visual Recognition." CVPR 2023. doi:10.1109/CVPR52729.2023.01435

    E. J. Hu, Y. Shen, P. Wallis, Z. Allen-Zhu, Y. Li, S. Wang, L. Wang, W. Chen. "LoRA:
    Low-Rank Adaptation of Large Language Models." ICLR 2022. arXiv:2106.09685

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("missing-aware-prompts", ds.specs, ds.task)
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    >>> [h.stage for h in trained.histories]
    ['pretrain', 'prompts']
    """

    search_space = {
        "embed_dim": Categorical([32, 64, 128]),
        "hidden": Int(64, 256, log=True),
        "n_heads": Categorical([2, 4]),
        "prompt_length": Int(2, 16, log=True),
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
        prompt_length: int = 8,
        prompt_depth: int = 1,
        dropout: float = 0.2,
        modality_dropout: float = 0.3,
        pretrain_on: str = "observed",
        adapter: str = "prompt",
        lora_rank: int = 4,
        lora_alpha: float = 8.0,
        lora_targets: list[str] | None = None,
    ) -> None:
        # the backbone is masked-attention's: encoders, modality embedding, class token,
        # transformer (and the head)
        super().__init__(
            specs, task, embed_dim, hidden, depth, n_layers, n_heads, dropout, modality_dropout
        )
        check_range("prompt_length", prompt_length, 1, integer=True)
        check_range("prompt_depth", prompt_depth, 1, n_layers, integer=True)
        check_choice("pretrain_on", pretrain_on, PRETRAIN_ON)
        check_lora(adapter, lora_rank, lora_alpha, lora_targets)
        self.prompt_length, self.prompt_depth = prompt_length, prompt_depth
        self.pretrain_on = pretrain_on
        self.adapter, self.lora_rank, self.lora_alpha = adapter, lora_rank, lora_alpha
        self.lora_targets = lora_targets
        m = len(self.specs)
        if adapter != "lora":
            self.prompts = MissingAwarePrompts(m, prompt_depth, prompt_length, embed_dim)
        self.lora_layers = apply_lora(
            self.transformer,
            lora_rank if adapter != "prompt" else 0,
            lora_alpha,
            None if lora_targets is None else list(lora_targets),
            owner="the frozen transformer",
        )
        self.placeholder = nn.Parameter(torch.empty(m, embed_dim))
        self._pretraining = False
        self.reset_parameters()

    def resolved_hyperparameters(self) -> dict[str, list[str]]:
        """``lora_targets`` given as None, with the layers it wrapped (:attr:`lora_layers`)."""
        return resolved_lora_targets(self)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        nn.init.normal_(self.placeholder, std=0.02)

    #: The parts frozen in stage 2 (attribute names).
    BACKBONE = ("encoders", "transformer", "modality_embedding", "class_token")

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Stage ``"pretrain"`` (backbone + head), then ``"prompts"`` (prompts, placeholders
        and head on the frozen backbone)."""
        pre_train, pre_val = train, val
        if self.pretrain_on == "complete":
            pre_train, pre_val = _complete(train), None if val is None else _complete(val)
            if pre_train is None:
                raise MlmmError(
                    "missing-aware-prompts with pretrain_on='complete' found no training sample "
                    "with every modality present; use pretrain_on='observed'"
                )
        lora = lora_parameters(self.transformer)
        for p in lora:  # LoRA adapts the frozen backbone in stage 2 only
            p.requires_grad_(False)
        self._pretraining = True
        try:
            pretrain = trainer.fit_module(self, pre_train, pre_val, stage="pretrain")
        finally:
            self._pretraining = False
        self.set_frozen(True, *self.BACKBONE)
        for p in lora:
            p.requires_grad_(True)
        try:
            prompts = trainer.fit_module(self, train, val, stage="prompts")
        finally:
            self.set_frozen(False, *self.BACKBONE)
        return [pretrain, prompts]

    # ------------------------------------------------------------------ forward
    def sequence(
        self, batch: MultimodalBatch, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Stage 1: masked-attention's (absent modalities masked, no prompts), so the backbone
        never sees a stand-in for an absent modality. Otherwise: absent modalities are the
        learned placeholder (the paper's dummy input), nothing is masked, and the prompts of
        each row's pattern, ``[B, prompt_depth, prompt_length, D]``, go with the sequence."""
        if self._pretraining:
            return super().sequence(batch, present)
        tokens = torch.where(
            present.unsqueeze(-1),
            self.tokens(batch, present),
            self.placeholder + self.modality_embedding,
        )  # [B, M, D]
        sequence, _ = prepend_class_token(self.class_token, tokens)  # [B, 1 + M, D]
        prompts = None if self.adapter == "lora" else self.prompts(present)
        return sequence, None, prompts

    # ------------------------------------------------------------------ LoRA
    def merge_lora(self) -> int:
        """Fold every LoRA update into the frozen transformer's weights for inference (the
        same outputs); returns how many layers were merged."""
        return merge_lora(self.transformer)

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts, as ``frozen-backbone-prompting``'s: ``total``, ``frozen`` (the
        backbone without its LoRA matrices), ``lora``, ``prompts``, ``trained`` (stage 2) and
        ``full_finetune`` (every parameter)."""
        return lora_counts(self, [getattr(self, name) for name in self.BACKBONE])


def _complete(data: MultimodalDataset) -> MultimodalDataset | None:
    """The samples with every modality present, or None when there are none."""
    rows = np.flatnonzero(data.observed.all(axis=1))
    return data.subset(rows) if len(rows) else None
