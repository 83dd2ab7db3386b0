"""Low-rank adaptation (LoRA) of the linear layers of a frozen network.

After E. J. Hu, Y. Shen, P. Wallis, Z. Allen-Zhu, Y. Li, S. Wang, L. Wang, W. Chen, "LoRA:
Low-Rank Adaptation of Large Language Models", ICLR 2022, arXiv:2106.09685. A frozen
``nn.Linear`` ``W x + b`` becomes ``W x + b + (alpha / r) B A x`` with trained ``A`` (``r x in``,
Kaiming-uniform) and ``B`` (``out x r``, zeros): at initialisation the output is exactly the
frozen layer's, and :func:`merge_lora` folds ``(alpha / r) B A`` into ``W`` for inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlmm.errors import MlmmError, did_you_mean


class LoRALinear(nn.Module):
    """A linear layer ``base`` plus a trained low-rank update of rank ``rank``.

    Parameters
    ----------
    base : nn.Linear
        The layer to adapt (its parameters stay where they are; the caller freezes them).
    rank : int
        ``r >= 1``.
    alpha : float
        The update is scaled by ``alpha / rank``.
    hide_base : bool, default False
        Keep ``base`` out of the module tree (``parameters()``, ``state_dict()``), as for the
        layers of an external backbone (:class:`mlmm.nn.backbones.ExternalBackbone`), whose
        weights are rebuilt by name and never stored: only ``lora_a`` and ``lora_b`` are then
        this module's parameters; ``.to()`` still moves ``base``.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, hide_base: bool = False) -> None:
        super().__init__()
        if hide_base:
            object.__setattr__(self, "base", base)  # not a submodule: see hide_base
        else:
            self.base = base
        self.hide_base = hide_base
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def _apply(self, fn, recurse: bool = True):
        if self.hide_base:
            self.base._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., in] -> [..., out]
        return self.base(x) + self.scale * ((x @ self.lora_a.T) @ self.lora_b.T)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``base.weight`` and zero ``B``: same outputs, no extra work."""
        self.base.weight += self.scale * (self.lora_b @ self.lora_a)
        self.lora_b.zero_()


def linear_names(module: nn.Module) -> list[str]:
    """Names (as in ``named_modules``) of the ``nn.Linear`` layers LoRA can adapt.

    The output projection of an ``nn.MultiheadAttention`` is left out: attention reads its
    weight directly, so a wrapper around it would be bypassed.
    """
    inside_attention = {
        f"{name}.{child}" if name else child
        for name, m in module.named_modules()
        if isinstance(m, nn.MultiheadAttention)
        for child, _ in m.named_children()
    }
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear) and name and name not in inside_attention
    ]


def default_targets(module: nn.Module) -> list[str]:
    """The layers ``targets=None`` adapts: every one of :func:`linear_names`. Methods record
    what it gave (``resolved_hyperparameters``), so a saved model keeps its layers if this
    rule changes."""
    return linear_names(module)


def apply_lora(
    module: nn.Module,
    rank: int,
    alpha: float,
    targets: list[str] | None = None,
    owner: str = "the frozen encoders",
    hide_base: bool = False,
) -> list[str]:
    """Wrap the named linear layers of ``module`` (:func:`default_targets` when ``targets``
    is None) in
    :class:`LoRALinear`; returns the names wrapped. Rank 0 wraps nothing (the frozen model).

    An unknown name is one :class:`MlmmError` that lists the valid names (``owner`` names the
    module in it). ``hide_base`` is passed to every :class:`LoRALinear`.
    """
    valid = linear_names(module)
    chosen = default_targets(module) if targets is None else list(targets)
    for name in chosen:
        if name not in valid:
            hint = did_you_mean(str(name), valid) if valid else ""
            hint = hint if hint.startswith(" Did you mean") else ""  # the list is given anyway
            raise MlmmError(
                f"lora_targets names {name!r}, which is not a linear layer of {owner}; "
                f"valid names: {valid}.{hint}"
            )
    if rank == 0:
        return []
    for name in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha, hide_base))
    return chosen


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The ``A`` and ``B`` matrices of every :class:`LoRALinear` in ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA update in ``module`` into its base weight (:meth:`LoRALinear.merge`);
    returns how many layers were merged.

    Layers whose base is hidden (``hide_base``: an external backbone's) are left as they are:
    their base weights are not stored in an artifact, so a merged update would be lost on
    saving.
    """
    layers = [m for m in module.modules() if isinstance(m, LoRALinear) and not m.hide_base]
    for layer in layers:
        layer.merge()
    return len(layers)
