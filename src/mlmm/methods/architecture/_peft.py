"""Options shared by the methods that adapt a frozen backbone with prompts and/or LoRA
(``frozen-backbone-prompting``, ``missing-aware-prompts``): their checks and parameter counts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mlmm.errors import MlmmError
from mlmm.methods.base import check_choice, check_range
from mlmm.nn.backbones import ExternalBackbone
from mlmm.nn.lora import lora_parameters

#: What adapts the frozen backbone in stage 2.
ADAPTERS = ("prompt", "lora", "both")


def check_lora(adapter: str, lora_rank: int, lora_alpha: float, lora_targets) -> None:
    """Clear errors for the ``adapter`` / ``lora_*`` hyperparameters (target names are checked
    against the backbone when LoRA is applied)."""
    check_choice("adapter", adapter, ADAPTERS)
    check_range("lora_rank", lora_rank, 0, integer=True)
    check_range("lora_alpha", lora_alpha, 0, low_inclusive=False)
    if lora_targets is not None and (
        not isinstance(lora_targets, (list, tuple))
        or not all(isinstance(t, str) for t in lora_targets)
    ):
        raise MlmmError(f"lora_targets must be a list of layer names or None, got {lora_targets!r}")


def resolved_lora_targets(model: nn.Module) -> dict[str, list[str]]:
    """``lora_targets`` given as None, with the layers LoRA wrapped (``model.lora_layers``):
    the method's ``resolved_hyperparameters``. Nothing when nothing was wrapped (rank 0 or
    ``adapter="prompt"``: the targets are then only checked)."""
    if model.lora_targets is None and model.lora_layers:
        return {"lora_targets": list(model.lora_layers)}
    return {}


def _count(part: nn.Module | nn.Parameter) -> int:
    if isinstance(part, nn.Parameter):
        return part.numel()
    return sum(p.numel() for p in part.parameters())


def lora_counts(
    model: nn.Module,
    backbone: Sequence[nn.Module | nn.Parameter],
    unused: Sequence[nn.Module] = (),
) -> dict[str, int]:
    """``total`` (the model's own parameters, as stored in its artifact); ``frozen`` (the
    ``backbone`` parts without their LoRA matrices, plus the weights of the external backbones,
    which are rebuilt by name and never stored); ``external`` (those external weights alone);
    ``lora``; ``prompts`` (``model.prompts`` when it has them); ``trained`` (stage 2: all but
    the frozen and the ``unused`` parts, those prediction does not use); ``full_finetune``
    (every weight prediction uses, the external backbones' included)."""
    total = _count(model)
    lora = sum(p.numel() for p in lora_parameters(model))
    frozen_own = sum(
        _count(part) - (0 if isinstance(part, nn.Parameter) else _lora_count(part))
        for part in backbone
    )
    external = sum(
        m.frozen_parameters() for m in model.modules() if isinstance(m, ExternalBackbone)
    )
    spare = sum(_count(part) for part in unused)
    prompts = model.prompts.prompts.numel() if hasattr(model, "prompts") else 0
    return {
        "total": total,
        "frozen": frozen_own + external,
        "external": external,
        "lora": lora,
        "prompts": prompts,
        "trained": total - frozen_own - spare,
        "full_finetune": total - spare + external,
    }


def _lora_count(part: nn.Module) -> int:
    return sum(p.numel() for p in lora_parameters(part))
