"""scheduler: the choice rule by hand, nearest-pattern fallback, no possible expert, artifact."""

import numpy as np
import pandas as pd
import pytest
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset

NAN = float("nan")


def _scheduler():
    data = contract_dataset()
    params = {"hidden": 8, "embed_dim": 4}
    model = create_method(
        "scheduler",
        data.specs,
        data.task,
        experts="late-fusion,moddrop",
        expert_params={"late-fusion": params, "moddrop": params},
    )
    return data, model.eval()


def test_choice_rule_and_nearest_seen_pattern_on_fixed_numbers():
    data, model = _scheduler()
    # codes: a=1, b=2, a+b=3, s=4, a+s=5, b+s=6, a+b+s=7; seen: a, b, a+b, s
    model.n_val.copy_(torch.tensor([10, 5, 4, 3, 0, 0, 0]))
    model.scores.copy_(
        torch.tensor([[0.9, 0.8], [0.5, 0.7], [0.6, 0.6], [0.4, 0.4]] + [[NAN, NAN]] * 3)
    )
    model.losses.copy_(
        torch.tensor([[0.3, 0.2], [0.9, 0.8], [0.5, 0.4], [1.0, 1.0]] + [[NAN, NAN]] * 3)
    )
    model._choose()
    table = model.choice_table().set_index("pattern")
    assert table.chosen.tolist()[:4] == ["late-fusion", "moddrop", "moddrop", "late-fusion"]
    # a+s: seen patterns inside it are a and s, both one flip away; a has more validation
    # samples. b+s: b (5) over s (3). a+b+s: a+b is one flip away.
    assert (
        table.loc["a+s", "borrowed_from"] == "a"
        and table.loc["a+s", "answered_by"] == "late-fusion"
    )
    assert table.loc["b+s", "borrowed_from"] == "b" and table.loc["b+s", "answered_by"] == "moddrop"
    assert table.loc["a+b+s", "borrowed_from"] == "a+b"
    assert pd.isna(table.loc["a+s", "chosen"])
    rows = np.array([[True, False, True], [False, True, True], [False, False, True]])
    routes = model.routes(torch.from_numpy(rows))
    assert routes.tolist() == [0, 1, 0]


def test_rows_are_answered_by_their_routed_expert():
    data, model = _scheduler()
    model.n_val.fill_(1)
    model.scores.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 3 + [[1.0, 0.0]]))
    model.losses.fill_(0.0)
    model._choose()
    rows = np.array([[True, False, False], [False, True, False], [True, True, True]])
    batch = MultimodalBatch.from_dataset(data.subset(np.arange(3)).with_presence(rows))
    with torch.no_grad():
        out = model(batch)
        late = model.pool["late-fusion"](batch).prediction
        drop = model.pool["moddrop"](batch).prediction
    assert out.extras["routes"].tolist() == [0, 1, 0]
    assert torch.allclose(out.prediction[[0, 2]], late[[0, 2]], atol=1e-6)
    assert torch.allclose(out.prediction[1], drop[1], atol=1e-6)


def test_a_pattern_with_no_possible_expert_fails_clearly(tmp_path):
    data, model = _scheduler()
    split = mlmm.train_val_test_split(data, seed=0)
    only_a = np.zeros((split.val.n_samples, 3), dtype=bool)
    only_a[:, 0] = True
    val = split.val.with_presence(only_a)  # validation shows the pattern "a" only
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, split.train, val)
    table = trained.model.choice_table()
    assert table.n_val.tolist() == [val.n_samples, 0, 0, 0, 0, 0, 0]
    assert table.answered_by.notna().tolist() == [True, False, True, False, True, False, True]
    assert trained.predict(split.test).shape == (split.test.n_samples,)  # a+b+s borrows a
    only_b = np.zeros((split.test.n_samples, 3), dtype=bool)
    only_b[:, 1] = True
    with pytest.raises(MlmmError, match="no expert can answer the pattern b: .*seen: a"):
        trained.predict(split.test.with_presence(only_b))
    # the choice table travels in the artifact
    trained.save(tmp_path / "model")
    loaded = mlmm.TrainedModel.load(tmp_path / "model")
    pd.testing.assert_frame_equal(loaded.model.choice_table(), table)
    assert [h.stage for h in trained.histories] == ["late-fusion/main", "moddrop/main"]


def test_bad_pools_are_refused():
    data = contract_dataset()
    for experts, match in [
        (("hemis", "late-fusion"), "comma-separated string or a list"),
        ("hemis,hemis", "twice"),
        ("hemis,scheduler", "its own expert"),
        ("hemis,,late-fusion", "at least one"),
    ]:
        with pytest.raises(MlmmError, match=match):
            create_method("scheduler", data.specs, data.task, experts=experts)
    with pytest.raises(MlmmError, match="not experts"):
        create_method("scheduler", data.specs, data.task, expert_params={"mvae": {}})
    with pytest.raises(MlmmError):
        create_method("scheduler", data.specs, data.task, experts="no-such-method")
    model = create_method("scheduler", data.specs, data.task, experts=["hemis"])
    assert model.get_hyperparameters() == {"experts": ["hemis"], "expert_params": None}


def test_every_expert_counts_as_a_model():
    data = contract_dataset()
    model = create_method("scheduler", data.specs, data.task, experts="late-fusion,per-subset")
    assert model.n_models == 1 + 7


def test_a_saved_scheduler_rebuilds_its_experts_as_trained_after_their_sizing_changes(
    tmp_path, monkeypatch
):
    # a flex-moe expert sizes itself (n_experts=None); the artifact records how every expert
    # was built, so a later sizing rule (or default) does not change the saved model
    from mlmm.methods.architecture import flex_moe
    from mlmm.train.trained import TrainedModel

    data = contract_dataset()
    params = {"experts": "late-fusion,flex-moe", "expert_params": {"flex-moe": {"hidden": 16}}}
    model = create_method("scheduler", data.specs, data.task, **params)
    built = model.resolved_hyperparameters()["expert_params"]["flex-moe"]
    assert built["n_experts"] == model.pool["flex-moe"].expert_count and built["hidden"] == 16
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, data)
    path = trained.save(tmp_path / "model")
    monkeypatch.setattr(flex_moe, "EXPERTS_PER_SLOT", 1)
    today = create_method("scheduler", data.specs, data.task, **params)
    assert today.pool["flex-moe"].expert_count != model.pool["flex-moe"].expert_count
    loaded = TrainedModel.load(path)
    assert loaded.model.get_hyperparameters() == model.get_hyperparameters()  # as given
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
    again = TrainedModel.load(loaded.save(tmp_path / "again"))
    np.testing.assert_array_equal(again.predict_raw(data), trained.predict_raw(data))


def test_a_diverged_expert_is_never_chosen():
    """An expert whose predictions are NaN scores -inf (its NaN rows were read as class 0)."""
    data, model = _scheduler()
    with torch.no_grad():
        for p in model.pool["moddrop"].parameters():
            p.fill_(NAN)
    model.select(data)
    seen = model.n_val > 0
    assert seen.any()
    assert torch.isneginf(model.scores[seen, 1]).all()
    assert torch.isfinite(model.scores[seen, 0]).all()
    assert set(model.choice_table().chosen.dropna()) == {"late-fusion"}
