"""LoRA: a zero update at initialisation, the update by hand, merging, targets by name."""

import pytest
import torch
from torch import nn

from mlmm.errors import MlmmError
from mlmm.nn.lora import LoRALinear, apply_lora, linear_names, lora_parameters, merge_lora


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))


def test_update_by_hand_and_zero_at_initialisation():
    base = nn.Linear(2, 2)
    layer = LoRALinear(base, rank=1, alpha=2.0)
    x = torch.tensor([[1.0, -2.0]])
    assert torch.equal(layer(x), base(x))  # B = 0
    with torch.no_grad():
        layer.lora_a.copy_(torch.tensor([[1.0, 1.0]]))
        layer.lora_b.copy_(torch.tensor([[3.0], [0.0]]))
    # (alpha / r) B A x = 2 * [3, 0] * (1 - 2) = [-6, 0]
    assert torch.allclose(layer(x) - base(x), torch.tensor([[-6.0, 0.0]]))


def test_merge_gives_the_same_outputs():
    net = _net()
    assert apply_lora(net, rank=2, alpha=4.0) == ["0", "2"]
    with torch.no_grad():
        for p in lora_parameters(net):
            p.normal_()
    x = torch.randn(5, 3)
    before = net(x)
    assert merge_lora(net) == 2
    assert torch.allclose(net(x), before, atol=1e-5)
    assert all(torch.equal(p, torch.zeros_like(p)) for p in (net[0].lora_b, net[2].lora_b))


def test_rank_zero_wraps_nothing_and_targets_are_checked():
    net = _net()
    assert apply_lora(net, rank=0, alpha=1.0) == []
    assert linear_names(net) == ["0", "2"]
    with pytest.raises(MlmmError, match=r"valid names: \['0', '2'\]"):
        apply_lora(_net(), rank=2, alpha=1.0, targets=["1"])
    assert apply_lora(net, rank=3, alpha=1.0, targets=["2"]) == ["2"]
    assert isinstance(net[2], LoRALinear) and isinstance(net[0], nn.Linear)


def test_attention_output_projection_is_not_a_target():
    net = nn.ModuleDict({"attn": nn.MultiheadAttention(4, 2), "proj": nn.Linear(4, 4)})
    assert linear_names(net) == ["proj"]
