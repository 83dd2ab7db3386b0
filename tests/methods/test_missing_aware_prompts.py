"""missing-aware-prompts: stage 2 trains only prompts, placeholders and head on a frozen
backbone; one prompt set per presence pattern; pretraining data; hyperparameter checks."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

BACKBONE = ("encoders.", "transformer.", "modality_embedding", "class_token")


def _model(data=None, **params):
    data = data or contract_dataset()
    torch.manual_seed(0)
    return create_method("missing-aware-prompts", data.specs, data.task, **params)


def _fit_recording(model, train, val, epochs=3):
    """Run model.fit and return the state after each stage."""
    trainer = Trainer(max_epochs=epochs, batch_size=32, seed=0, progress=False)
    states = {}
    fit_module = trainer.fit_module

    def recording(module, tr, va, stage="main", max_epochs=None):
        history = fit_module(module, tr, va, stage=stage, max_epochs=max_epochs)
        states[stage] = {k: v.clone() for k, v in module.state_dict().items()}
        states[stage + "_trainable"] = {n for n, p in module.named_parameters() if p.requires_grad}
        states[stage + "_rows"] = tr.n_samples
        return history

    trainer.fit_module = recording
    histories = model.fit(trainer, train, val)
    return histories, states


def test_stage_two_trains_only_prompts_placeholders_and_head():
    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = _model(data)
    histories, states = _fit_recording(model, split.train, split.val)
    assert [h.stage for h in histories] == ["pretrain", "prompts"]
    before, after = states["pretrain"], states["prompts"]
    trainable = states["prompts_trainable"]
    assert trainable == {n for n, _ in model.named_parameters() if not n.startswith(BACKBONE)}
    assert any(n.startswith("prompts.") for n in trainable) and "placeholder" in trainable
    for name in before:
        if name.startswith(BACKBONE):
            assert torch.equal(before[name], after[name]), f"{name} changed in stage 2"
    assert not torch.equal(before["prompts.prompts"], after["prompts.prompts"])
    assert not torch.equal(before["placeholder"], after["placeholder"])
    assert not torch.equal(before["head.net.0.weight"], after["head.net.0.weight"])
    # after fit every parameter is trainable again (a later fit starts from a clean state)
    assert all(p.requires_grad for p in model.parameters())


def test_one_prompt_set_per_presence_pattern():
    data = contract_dataset()
    rows = [[True, False, False], [False, True, False], [True, True, False], [True, True, True]]
    assert _model(data).prompts.pattern(torch.tensor(rows)).tolist() == [0, 1, 2, 6]
    part = data.subset(np.arange(8)).with_presence(np.array(rows * 2, dtype=bool))
    batch = MultimodalBatch.from_dataset(part)
    model = _model(data).eval()
    assert model.prompts.prompts.shape == (7, 1, 8, 64)  # 2**3 - 1 patterns
    with torch.no_grad():
        base = model(batch).prediction
        model.prompts.prompts[2] += torch.randn_like(model.prompts.prompts[2])  # pattern a + b
        changed = model(batch).prediction
    moved = ~torch.isclose(base, changed).all(dim=1)
    assert moved.tolist() == [False, False, True, False] * 2


def test_absent_modalities_are_the_learned_placeholder():
    data = contract_dataset()
    part = data.subset(np.arange(4)).with_presence(np.array([[True, False, True]] * 4))
    batch = MultimodalBatch.from_dataset(part)
    model = _model(data).eval()
    with torch.no_grad():
        base = model(batch).prediction
        model.placeholder[0] += torch.randn(64)  # modality a: present, its placeholder unused
        same = model(batch).prediction
        model.placeholder[1] += torch.randn(64)  # modality b: absent, its placeholder is read
        moved = model(batch).prediction
    assert torch.equal(base, same)
    assert not torch.allclose(base, moved)


def test_pretraining_on_complete_samples_only():
    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    present = np.ones((split.train.n_samples, 3), dtype=bool)
    present[::2, 0] = False  # half the training samples miss modality a
    train = split.train.with_presence(present)
    _, states = _fit_recording(_model(data, pretrain_on="complete"), train, split.val, epochs=1)
    assert states["pretrain_rows"] == int(present.all(axis=1).sum())
    assert states["prompts_rows"] == train.n_samples


def test_pretraining_on_complete_samples_fails_clearly_without_any():
    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    present = np.ones((split.train.n_samples, 3), dtype=bool)
    present[np.arange(len(present)), np.arange(len(present)) % 3] = False  # one missing each
    train = split.train.with_presence(present)
    trainer = Trainer(max_epochs=1, progress=False)
    with pytest.raises(MlmmError, match="no training sample with every modality"):
        trainer.fit(_model(data, pretrain_on="complete"), train, split.val)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"prompt_depth": 3, "n_layers": 2}, "prompt_depth"),
        ({"prompt_depth": 0}, "prompt_depth"),
        ({"prompt_length": 0}, "prompt_length"),
        ({"pretrain_on": "full"}, "pretrain_on"),
        ({"embed_dim": 30}, "divisible by n_heads"),
        ({"modality_dropout": 1.0}, "modality_dropout"),
    ],
)
def test_bad_hyperparameters_are_rejected(params, message):
    with pytest.raises(MlmmError, match=message):
        _model(**params)


def test_too_many_modalities_for_one_prompt_set_per_pattern():
    specs = [ModalitySpec(f"m{i}", "vector", (2,)) for i in range(11)]
    with pytest.raises(MlmmError, match="2\\*\\*M - 1 = 2047"):
        create_method("missing-aware-prompts", specs, TaskSpec("classification", 2))


def test_prompted_model_attends_prompts_and_placeholders_but_pretraining_masks():
    data = contract_dataset()
    part = data.subset(np.arange(4)).with_presence(np.array([[True, False, True]] * 4))
    batch = MultimodalBatch.from_dataset(part)
    model = _model(data, prompt_length=3, prompt_depth=2).eval()
    weights = model.attention(batch)  # prompts 3 + class 1 + modalities 3, then 3 more prompts
    assert [w.shape for w in weights] == [(4, 7, 7), (4, 10, 10)]
    absent_b = 3 + 1 + 1  # column of modality b in the first layer
    assert torch.all(weights[0][:, :, absent_b] > 0)  # the placeholder is read, as a dummy input
    model._pretraining = True
    weights = model.attention(batch)  # stage 1: masked-attention, no prompts
    assert [w.shape for w in weights] == [(4, 4, 4)] * 2
    assert torch.all(weights[0][:, :, 2] == 0)
