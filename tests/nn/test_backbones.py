"""Token transformer with input-level prompts, missing-aware prompt selection, frozen external
backbones kept out of the module tree, the backbone registry."""

import pytest
import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn.backbones import (
    BACKBONES,
    ExternalBackbone,
    MissingAwarePrompts,
    TokenTransformer,
    load_backbone,
    register_backbone,
)
from mlmm.train.trainer import reset_parameters


def test_prompts_join_at_their_layer_and_stay_in_the_sequence():
    torch.manual_seed(0)
    net = TokenTransformer(8, n_layers=2, n_heads=2, hidden=16, dropout=0.0).eval()
    tokens, prompts = torch.randn(3, 4, 8), torch.randn(3, 2, 5, 8)  # [B, T, D], [B, L, P, D]
    out, weights = net(tokens, prompts=prompts, need_weights=True)
    assert out.shape == (3, 4, 8)  # prompt positions are dropped
    assert [w.shape for w in weights] == [(3, 9, 9), (3, 14, 14)]  # 5 more tokens per layer
    with torch.no_grad():
        second = net(tokens, prompts=prompts.clone().index_fill_(1, torch.tensor([1]), 0.0))[0]
    assert not torch.allclose(out, second)  # the second layer's prompts are read


def test_ignored_tokens_do_not_change_the_others():
    torch.manual_seed(0)
    net = TokenTransformer(8, n_layers=2, n_heads=2, hidden=16, dropout=0.0).eval()
    tokens = torch.randn(2, 3, 8)
    ignore = torch.tensor([[False, True, False], [False, False, False]])
    noisy = tokens.clone()
    noisy[0, 1] = 100 * torch.randn(8)
    a, _ = net(tokens, ignore)
    b, _ = net(noisy, ignore)
    assert torch.allclose(a[0, [0, 2]], b[0, [0, 2]], atol=1e-5)


def test_reset_parameters_redraws_the_attention_projections():
    net = TokenTransformer(8, n_layers=1, n_heads=2, hidden=16, dropout=0.0)
    torch.manual_seed(3)
    reset_parameters(net)
    first = net.blocks[0].attention.in_proj_weight.clone()
    torch.manual_seed(3)
    reset_parameters(net)
    assert torch.equal(first, net.blocks[0].attention.in_proj_weight)


def test_pattern_index_is_the_bit_field_of_present_modalities_minus_one():
    prompts = MissingAwarePrompts(n_modalities=3, n_layers=1, length=2, dim=4)
    present = torch.tensor([[1, 0, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=bool)
    assert prompts.pattern(present).tolist() == [0, 3, 4, 6, 0]
    assert prompts(present).shape == (5, 1, 2, 4)
    assert torch.equal(prompts(present)[2], prompts.prompts[4])


def test_external_backbone_is_outside_the_module_tree():
    inner = nn.Linear(3, 5)
    weight = inner.weight.clone()
    backbone = ExternalBackbone("x", inner, ModalitySpec("v", "vector", (3,)))
    assert backbone.embed_dim == 5
    assert list(backbone.parameters()) == [] and backbone.state_dict() == {}
    assert not inner.weight.requires_grad and not inner.training
    reset_parameters(backbone)  # what the trainer does before training
    assert torch.equal(inner.weight, weight)
    backbone.to(torch.float64)  # .to() still reaches it
    assert inner.weight.dtype == torch.float64


def test_backbone_registry_refuses_duplicates_and_suggests_names():
    if "test-registry-twice" not in BACKBONES:
        register_backbone("test-registry-twice", lambda spec: nn.Identity())
    with pytest.raises(MlmmError, match="already registered"):
        register_backbone("test-registry-twice", lambda spec: nn.Identity())
    with pytest.raises(MlmmError, match="all-minilm-l6-v2"):
        BACKBONES.get("all-minilm-l6")


class _TinyAttention(nn.Module):
    """A stand-in for a pretrained text encoder: BERT-style attention projection names."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.dense = nn.Linear(width, width)

    def forward(self, x):  # [B, width] -> [B, width]
        return self.dense(self.query(x) * self.key(x) + self.value(x))


def test_lora_on_an_external_backbone_adapts_its_attention_projections_only():
    torch.manual_seed(0)
    inner = _TinyAttention()
    original = {k: v.clone() for k, v in inner.state_dict().items()}
    backbone = ExternalBackbone("tiny", inner, ModalitySpec("t", "vector", (6,)))
    x = torch.randn(4, 6)
    before = backbone(x)
    assert backbone.add_lora(2, 4.0) == ["query", "value"]  # Hu et al.: W_q and W_v
    assert torch.equal(backbone(x), before)  # B = 0: exactly the frozen model at first
    assert sorted(backbone.state_dict()) == [
        "lora.query.lora_a",
        "lora.query.lora_b",
        "lora.value.lora_a",
        "lora.value.lora_b",
    ]  # the backbone's own weights stay out of the artifact
    assert sum(p.numel() for p in backbone.parameters()) == 2 * (2 * 6 + 6 * 2)
    assert backbone.frozen_parameters() == 4 * (36 + 6)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        backbone(x).pow(2).sum().backward()
        optimizer.step()
    assert not torch.allclose(backbone(x), before)  # LoRA trained
    for key, value in inner.state_dict().items():  # the shared model was copied, not changed
        assert torch.equal(value, original[key])
    assert all(
        torch.equal(backbone.model.get_submodule(n).base.weight, original[f"{n}.weight"])
        for n in ("query", "value")
    )


def test_lora_on_an_external_backbone_rejects_unknown_targets_and_black_boxes():
    backbone = ExternalBackbone("tiny", _TinyAttention(), ModalitySpec("t", "vector", (6,)))
    with pytest.raises(MlmmError, match=r"valid names: \['query', 'key', 'value', 'dense'\]"):
        backbone.add_lora(2, 4.0, ["quary"])
    assert backbone.add_lora(0, 4.0) == [] and list(backbone.parameters()) == []
    plain = ExternalBackbone("fn", lambda x: x * 2, ModalitySpec("t", "vector", (6,)))
    with pytest.raises(MlmmError, match="not a torch module"):
        plain.add_lora(2, 4.0)
    no_attention = ExternalBackbone("mlp", nn.Linear(6, 3), ModalitySpec("t", "vector", (6,)))
    with pytest.raises(MlmmError, match="no attention projection"):
        no_attention.add_lora(2, 4.0)


def test_a_backbone_whose_files_are_missing_offline_is_one_line():
    """A registered factory that loads a model absent from the local cache (Hugging Face
    raises OSError offline): a several-line traceback before, one line naming it now."""
    import mlmm

    name = "test-offline-missing"
    if name not in BACKBONES:

        @register_backbone(name)
        def offline(spec):
            raise OSError(
                "We couldn't connect to 'https://huggingface.co' to load the files, and "
                "couldn't find them in the cached files.\nCheck your internet connection."
            )

    ds = mlmm.load_dataset("synthetic", n_samples=40)
    first = ds.specs[0].name
    with pytest.raises(MlmmError) as err:
        mlmm.create_method("frozen-backbone-prompting", ds.specs, ds.task, backbones={first: name})
    message = str(err.value)
    assert "\n" not in message
    assert f"backbone {name!r} could not be loaded for modality {first!r}" in message
    assert "couldn't connect to 'https://huggingface.co'" in message
    assert "load the model from a local folder" in message


def test_a_corrupt_backbone_file_keeps_its_reason_and_other_errors_pass_through():
    """An OSError from a damaged local file is one line with the loader's reason (not only
    "offline"); an error that is not an OSError (a bug, a bad tensor) is not rewritten."""
    spec = ModalitySpec("t", "vector", (6,))
    corrupt, broken = "test-corrupt-file", "test-broken-factory"
    if corrupt not in BACKBONES:

        @register_backbone(corrupt)
        def damaged(spec):
            raise OSError("Unable to load weights from checkpoint file '/models/x/model.bin'")

        @register_backbone(broken)
        def failing(spec):
            raise RuntimeError("size mismatch for encoder.weight")

    with pytest.raises(MlmmError) as err:
        load_backbone(corrupt, spec)
    message = str(err.value)
    assert "\n" not in message and "unreadable" in message
    assert "Unable to load weights from checkpoint file '/models/x/model.bin'" in message
    assert "fix or replace a damaged local file" in message
    with pytest.raises(RuntimeError, match="size mismatch for encoder.weight"):
        load_backbone(broken, spec)
