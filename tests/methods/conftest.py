"""Checks shared by the tests of several methods."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.split import train_val_test_split
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer


@pytest.fixture
def lora_layers_survive_a_default_change(tmp_path, monkeypatch):
    """A check for a LoRA method: ``lora_targets=None`` is resolved at construction, and the
    artifact records the layers it gave, so a saved model reloads with them (and predicts the
    same) after the default targets change."""

    def check(name: str) -> None:
        import mlmm.nn.lora as lora
        from mlmm.train.trained import TrainedModel

        data = contract_dataset(n_samples=150)
        split = train_val_test_split(data, test_size=0.2, val_size=0.15, seed=0)
        params = {"adapter": "lora", "lora_rank": 2}
        model = create_method(name, data.specs, data.task, **params)
        assert model.resolved_hyperparameters() == {"lora_targets": model.lora_layers}
        assert create_method(name, data.specs, data.task).resolved_hyperparameters() == {}
        trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, split.train, None)
        path = trained.save(tmp_path / "lora")
        every = lora.linear_names
        monkeypatch.setattr(lora, "default_targets", lambda module: every(module)[:1])
        today = create_method(name, data.specs, data.task, **params)
        assert len(today.lora_layers) < len(model.lora_layers)  # the rule did change
        loaded = TrainedModel.load(path)
        assert loaded.model.lora_layers == model.lora_layers and loaded.model.lora_targets is None
        np.testing.assert_array_equal(
            loaded.predict_raw(split.test), trained.predict_raw(split.test)
        )

    return check
