"""frozen-backbone-prompting with adapter="lora" / "both": rank 0 is the frozen model exactly,
LoRA trains only in stage 2 while the encoders' weights stay frozen, merge_lora keeps the
outputs, parameter counts, and errors for bad ranks and unknown target names."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

NAME = "frozen-backbone-prompting"


def _split():
    data = contract_dataset(n_samples=150)
    return data, train_val_test_split(data, test_size=0.2, val_size=0.15, seed=0)


def test_rank_zero_reproduces_the_frozen_model_exactly():
    data = contract_dataset(n_samples=40)
    plain = create_method(NAME, data.specs, data.task, adapter="prompt").eval()
    lora0 = create_method(NAME, data.specs, data.task, adapter="both", lora_rank=0).eval()
    assert lora0.state_dict().keys() == plain.state_dict().keys()
    lora0.load_state_dict(plain.state_dict())
    batch = MultimodalBatch.from_dataset(data)
    assert torch.equal(lora0(batch).prediction, plain(batch).prediction)
    assert lora0.parameter_counts()["lora"] == 0


def test_lora_trains_in_stage_two_only_and_merges():
    data, split = _split()
    model = create_method(NAME, data.specs, data.task, adapter="lora", lora_rank=2)
    trainer = Trainer(max_epochs=2, batch_size=32, seed=0, progress=False)
    states, fit_module = {}, trainer.fit_module

    def recording(module, tr, va, stage="main", max_epochs=None):
        history = fit_module(module, tr, va, stage=stage, max_epochs=max_epochs)
        states[stage] = {k: v.clone() for k, v in module.state_dict().items()}
        return history

    trainer.fit_module = recording
    model.fit(trainer, split.train, split.val)
    before, after = states["pretrain"], states["prompts"]
    assert not hasattr(model, "prompts")  # adapter="lora": no prompts
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name.startswith("encoders.") and ".lora_" not in name:
            assert not changed, f"{name} changed in stage 2"
        if name.endswith(".lora_b"):
            assert torch.equal(before[name], torch.zeros_like(before[name]))  # not in stage 1
            assert changed, f"{name} did not train in stage 2"
    model.eval()
    batch = MultimodalBatch.from_dataset(split.test)
    expected = model(batch).prediction
    assert model.merge_lora() == 5  # the Linear layers of a, b and s's encoders
    assert torch.allclose(model(batch).prediction, expected, atol=1e-5)


def test_parameter_counts():
    data = contract_dataset(n_samples=40)
    model = create_method(NAME, data.specs, data.task, adapter="lora", lora_rank=4)
    counts = model.parameter_counts()
    # a: 6 -> 256 -> 64, b: 4 -> 256 -> 64, s: one Linear 128 -> 64 after the convolutions
    assert counts["lora"] == 4 * ((6 + 256) + (256 + 64) + (4 + 256) + (256 + 64) + (128 + 64))
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    encoders = dict(model.encoders.named_parameters())
    assert counts["frozen"] == sum(p.numel() for n, p in encoders.items() if "lora_" not in n)
    # what stage 2 trains, counted from the freezing fit() does: the parameters left with
    # gradients, less the stage-1 heads stage 2 never uses
    model.set_frozen(True, "encoders")
    for name, p in encoders.items():
        p.requires_grad_("lora_" in name)
    heads = sum(p.numel() for p in model.pretrain_heads.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["trained"] == trainable - heads
    assert counts["full_finetune"] == counts["total"] - heads


def test_bad_rank_and_unknown_target():
    data = contract_dataset(n_samples=40)
    for rank in (-1, 1.5, "4"):
        with pytest.raises(MlmmError, match="lora_rank must be"):
            create_method(NAME, data.specs, data.task, adapter="lora", lora_rank=rank)
    with pytest.raises(MlmmError, match=r"valid names: \['a.net.0', 'a.net.4'"):
        create_method(NAME, data.specs, data.task, adapter="lora", lora_targets=["a.net.9"])
    with pytest.raises(MlmmError, match="adapter must be one of"):
        create_method(NAME, data.specs, data.task, adapter="lorra")
    model = create_method(NAME, data.specs, data.task, adapter="lora", lora_targets=["b.net.0"])
    assert model.lora_layers == ["b.net.0"]
    assert np.isclose(model.parameter_counts()["lora"], 4 * (4 + 256))


def test_lora_model_saves_and_loads(tmp_path):
    from mlmm.train.trained import TrainedModel

    data, split = _split()
    model = create_method(
        NAME, data.specs, data.task, adapter="both", lora_rank=2, lora_targets=["a.net.0"]
    )
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, split.train, None)
    trained.save(tmp_path / "lora")
    loaded = TrainedModel.load(tmp_path / "lora")
    assert loaded.model.get_hyperparameters() == model.get_hyperparameters()
    np.testing.assert_allclose(
        trained.predict_raw(split.test), loaded.predict_raw(split.test), atol=1e-6
    )


class _TinyText(torch.nn.Module):
    """A registered stand-in for a pretrained external encoder with BERT-style attention names
    (the same weights at every build, as a registered factory must give)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.query, self.value = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 5)

    def forward(self, x):  # [B, 6] -> [B, 5]
        return self.out(torch.tanh(self.query(x)) + self.value(x))


def _external_data():
    from mlmm.data.datasets import from_arrays
    from mlmm.nn.backbones import BACKBONES, register_backbone

    if "test-tiny-text" not in BACKBONES:
        register_backbone("test-tiny-text", lambda spec: _TinyText())
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    t = rng.normal(size=(120, 6)) + y[:, None]
    v = rng.normal(size=(120, 3)) + y[:, None]
    t[::5] = np.nan  # some rows without the external modality
    data = from_arrays({"t": t, "v": v}, y)
    return data, train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)


def test_lora_reaches_an_external_torch_backbone_and_survives_saving(tmp_path):
    from mlmm.train.trained import TrainedModel

    data, split = _external_data()
    params = {"backbones": {"t": "test-tiny-text"}, "adapter": "lora", "lora_rank": 2}
    model = create_method(NAME, data.specs, data.task, **params)
    assert model.external["t"].lora_layers == ["query", "value"]
    counts = model.parameter_counts()
    assert counts["external"] == 2 * (36 + 6) + (30 + 5)  # the backbone's own weights
    lora_v = 2 * ((3 + 256) + (256 + 64))  # our encoder of v
    assert counts["lora"] == lora_v + 2 * 2 * (6 + 6)
    heads = sum(p.numel() for p in model.pretrain_heads.parameters())
    assert counts["full_finetune"] == counts["total"] - heads + counts["external"]
    assert counts["frozen"] == counts["external"] + sum(
        p.numel() for n, p in model.encoders.named_parameters() if "lora_" not in n
    )
    trained = Trainer(max_epochs=3, seed=0, progress=False).fit(model, split.train, split.val)
    lora_b = model.external["t"].lora["query"].lora_b
    assert lora_b.abs().sum() > 0  # the external backbone's LoRA trained (B starts at 0)
    assert model.merge_lora() == 2  # our encoder's layers; the external LoRA stays a side path
    trained.save(tmp_path / "ext")
    loaded = TrainedModel.load(tmp_path / "ext")
    assert torch.equal(loaded.model.external["t"].lora["query"].lora_b, lora_b)
    np.testing.assert_allclose(
        trained.predict_raw(split.test), loaded.predict_raw(split.test), atol=1e-5
    )


def test_a_saved_lora_model_keeps_its_layers_when_the_default_targets_change(
    lora_layers_survive_a_default_change,
):
    lora_layers_survive_a_default_change(NAME)
