"""missing-aware-prompts with adapter="lora" / "both": rank 0 is the frozen model exactly,
LoRA on the transformer's MLP layers trains in stage 2 only, merge_lora keeps the outputs,
counts, and target-name errors."""

import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

NAME = "missing-aware-prompts"


def test_rank_zero_reproduces_the_frozen_model_exactly():
    data = contract_dataset(n_samples=40)
    plain = create_method(NAME, data.specs, data.task).eval()
    lora0 = create_method(NAME, data.specs, data.task, adapter="both", lora_rank=0).eval()
    lora0.load_state_dict(plain.state_dict())
    batch = MultimodalBatch.from_dataset(data)
    assert torch.equal(lora0(batch).prediction, plain(batch).prediction)


def test_lora_trains_in_stage_two_only_and_merges():
    data = contract_dataset(n_samples=150)
    split = train_val_test_split(data, test_size=0.2, val_size=0.15, seed=0)
    model = create_method(NAME, data.specs, data.task, adapter="lora", lora_rank=2)
    assert model.lora_layers == [
        "blocks.0.mlp.0",
        "blocks.0.mlp.3",
        "blocks.1.mlp.0",
        "blocks.1.mlp.3",
    ]
    trainer = Trainer(max_epochs=2, batch_size=32, seed=0, progress=False)
    states, fit_module = {}, trainer.fit_module

    def recording(module, tr, va, stage="main", max_epochs=None):
        history = fit_module(module, tr, va, stage=stage, max_epochs=max_epochs)
        states[stage] = {k: v.clone() for k, v in module.state_dict().items()}
        return history

    trainer.fit_module = recording
    model.fit(trainer, split.train, split.val)
    before, after = states["pretrain"], states["prompts"]
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name.startswith(("transformer.", "encoders.")) and ".lora_" not in name:
            assert not changed, f"{name} changed in stage 2"
        if name.endswith(".lora_b"):
            assert torch.equal(before[name], torch.zeros_like(before[name]))
            assert changed, f"{name} did not train in stage 2"
    model.eval()
    batch = MultimodalBatch.from_dataset(split.test)
    expected = model(batch).prediction
    assert model.merge_lora() == 4
    assert torch.allclose(model(batch).prediction, expected, atol=1e-5)
    counts = model.parameter_counts()
    assert counts["lora"] == 2 * 2 * ((64 + 128) + (128 + 64)) and counts["prompts"] == 0
    # what stage 2 trains, counted from the freezing fit() does
    model.set_frozen(True, *model.BACKBONE)
    for name, p in model.transformer.named_parameters():
        p.requires_grad_(".lora_" in name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trained"] == trainable and counts["frozen"] == counts["total"] - trainable


def test_unknown_target_and_bad_rank():
    data = contract_dataset(n_samples=40)
    with pytest.raises(MlmmError, match=r"valid names: \['blocks.0.mlp.0'"):
        create_method(NAME, data.specs, data.task, adapter="lora", lora_targets=["attention"])
    with pytest.raises(MlmmError, match="lora_rank must be"):
        create_method(NAME, data.specs, data.task, adapter="lora", lora_rank=-2)


def test_a_saved_lora_model_keeps_its_layers_when_the_default_targets_change(
    lora_layers_survive_a_default_change,
):
    lora_layers_survive_a_default_change(NAME)
