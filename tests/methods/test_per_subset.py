"""per-subset: 2^M - 1 models, superset training, exact-pattern routing, fallback, the limit."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset


def test_one_model_per_subset_and_the_limit_is_refused_at_construction():
    data = contract_dataset()
    model = create_method("per-subset", data.specs, data.task)
    assert sorted(model.models) == sorted(["a", "b", "s", "a+b", "a+s", "b+s", "a+b+s"])
    assert model.cost()["n_models"] == 7
    with pytest.raises(MlmmError, match=r"2\^M - 1 = 7 models .* pass max_models=7"):
        create_method("per-subset", data.specs, data.task, max_models=6)
    big = mlmm.load_dataset("synthetic", n_samples=40, n_modalities=7)
    with pytest.raises(MlmmError, match="127 models for 7 modalities"):
        create_method("per-subset", big.specs, big.task)
    create_method("per-subset", big.specs, big.task, max_models=127, hidden=4, embed_dim=2)


def test_each_sample_is_answered_by_the_model_of_its_pattern():
    data = contract_dataset()
    rows = np.array(
        [[True, False, True], [False, True, False], [True, True, True], [True, False, True]]
    )
    batch = MultimodalBatch.from_dataset(data.subset(np.arange(4)).with_presence(rows))
    model = create_method("per-subset", data.specs, data.task).eval()
    with torch.no_grad():
        out = model(batch).prediction
        for i, name in enumerate(["a+s", "b", "a+b+s", "a+s"]):
            one = MultimodalBatch.from_dataset(data.subset([i]).with_presence(rows[[i]]))
            assert torch.allclose(out[i], model.models[name](one).prediction[0], atol=1e-6)


def test_each_model_trains_on_the_samples_having_its_subset():
    data = contract_dataset()
    # a and b never appear together: subsets a+b and a+b+s have no training sample
    present = np.array([[True, False, True], [False, True, True], [True, False, False]] * 120)
    train = data.with_presence(present)
    model = create_method("per-subset", data.specs, data.task, hidden=16, embed_dim=8)
    with pytest.warns(UserWarning, match=r"\['a\+b', 'a\+b\+s'\]"):
        trained = mlmm.Trainer(max_epochs=2, seed=0, progress=False).fit(model, train)
    table = model.cost_table().set_index("subset")
    assert table.loc["a", "n_train"] == 240 and table.loc["s", "n_train"] == 240
    assert table.loc["a+s", "n_train"] == 120 and table.loc["a+b", "n_train"] == 0
    # untrained patterns go to their largest trained sub-subset (more samples on ties)
    assert table.loc["a+b", "answered_by"] == "a"
    assert table.loc["a+b+s", "answered_by"] == "a+s"
    assert table.loc["b+s", "answered_by"] == "b+s"
    assert len(trained.histories) == 5  # one stage per trained subset
    assert {h.stage for h in trained.histories} >= {"subset a", "subset a+s"}
    assert model.cost()["n_trained"] == 5


def test_the_number_of_models_is_reported_as_a_cost():
    data = contract_dataset()
    assert create_method("per-subset", data.specs, data.task).n_models == 7
