"""Artifacts written before sizes were recorded: members held by a scheduler or an
auto-ensemble are sized from their weights too, not only a top-level method (and their
weights brought up to date, as upgrade_weights does for every module).

Was: "config.json describes a 'scheduler' model of N values but model.safetensors holds M
...; another mlmm version sizes this method differently" for any such artifact holding a
flex-moe with n_experts=None, once flex-moe's sizing rule changed (only the top-level
method's resolved_from_state was asked).
"""

import numpy as np
import pytest
import torch

from mlmm.methods.registry import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer

SMALL = {"embed_dim": 16, "hidden": 32}  # flex-moe, n_experts and expert_hidden sized (None)
NESTED = {
    "scheduler": {"experts": "flex-moe,late-fusion", "expert_params": {"flex-moe": SMALL}},
    "auto-ensemble": {
        "members": [{"method": "flex-moe", "params": SMALL}, {"method": "late-fusion"}]
    },
    "auto-ensemble-of-scheduler": {  # two levels down: auto-ensemble > scheduler > flex-moe
        "members": [
            {"method": "scheduler", "params": {"experts": "flex-moe,late-fusion"}},
            {"method": "late-fusion"},
        ]
    },
}


def _change_the_sizing_rule(monkeypatch):
    """Fewer experts per slot and a narrower cap: what a later mlmm might resolve None to."""
    from mlmm.methods.architecture import flex_moe

    monkeypatch.setattr(flex_moe, "EXPERTS_PER_SLOT", 1)
    monkeypatch.setattr(flex_moe, "MAX_EXPERT_WIDTH", 8)


def _save_as_before_sizes_were_recorded(trained, path):
    """The artifact an mlmm that did not record resolved sizes wrote: hyperparameters only,
    and late-fusion members without ``log_prior`` (their weights then predicted as zeros do)."""
    from mlmm.train.card import model_card
    from mlmm.train.checkpoint import save_artifact

    with torch.no_grad():
        for name, buffer in trained.model.named_buffers():
            if name.endswith("log_prior"):
                buffer.zero_()
    state = {k: v for k, v in trained.model.state_dict().items() if not k.endswith("log_prior")}
    assert len(state) < len(trained.model.state_dict())  # a late-fusion member had one
    config = trained.config()
    del config["resolved_hyperparameters"]
    return save_artifact(path, state, config, card=model_card(config))


def _flex_moe(model):
    return next(m for m in model.modules() if getattr(m, "method_name", "") == "flex-moe")


@pytest.mark.parametrize("case", sorted(NESTED))
def test_an_old_nested_artifact_loads_after_the_members_sizing_rule_changed(
    case, tmp_path, monkeypatch
):
    data = contract_dataset(n_samples=48)
    method = case.split("-of-")[0]
    model = create_method(method, data.specs, data.task, **NESTED[case])
    trained = Trainer(max_epochs=1, batch_size=16, seed=0, progress=False).fit(model, data, None)
    path = _save_as_before_sizes_were_recorded(trained, tmp_path / "old")
    inner = _flex_moe(trained.model)
    sizes = (inner.expert_count, inner.expert_width)
    _change_the_sizing_rule(monkeypatch)
    today = _flex_moe(create_method(method, data.specs, data.task, **NESTED[case]))
    assert (today.expert_count, today.expert_width) != sizes  # the rule did change
    loaded = TrainedModel.load(path)
    assert (_flex_moe(loaded.model).expert_count, _flex_moe(loaded.model).expert_width) == sizes
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
    # the arguments read as given, so a re-save records what was asked, and the sizes
    assert loaded.model.get_hyperparameters() == trained.model.get_hyperparameters()
    again = TrainedModel.load(loaded.save(tmp_path / "again"))
    np.testing.assert_array_equal(again.predict_raw(data), trained.predict_raw(data))
