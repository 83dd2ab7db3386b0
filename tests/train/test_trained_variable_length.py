"""A model trained on variable-length sequences: its artifact keeps that, and prediction
from arrays (which carry no lengths) is refused instead of counting padding as data."""

from dataclasses import replace

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train import TrainedModel, Trainer


def test_variable_length_model_round_trips_and_refuses_arrays(tmp_path):
    data = contract_dataset(n_samples=48)
    data = replace(data, lengths={"s": np.random.default_rng(0).integers(3, 13, size=48)})
    model = create_method("zero-impute", data.specs, data.task, hidden=16)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    trained.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")
    assert loaded.info["variable_length"] == ["s"]
    np.testing.assert_allclose(loaded.predict_proba(data), trained.predict_proba(data))
    arrays = {k: v for k, v in data.inputs.items()}
    with pytest.raises(MlmmError, match=r"variable-length sequences \['s'\].*lengths="):
        loaded.predict(arrays)
