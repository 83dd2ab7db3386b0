"""auto-ensemble: a fixed-weight mixture of registered methods (what method="auto" saves)."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.errors import MlmmError
from mlmm.testing import contract_dataset

MEMBERS = [
    {"method": "per-modality-logistic"},
    {"method": "hemis", "params": {"hidden": 16}, "epochs": 3},
]


def test_prediction_is_the_weighted_mixture_of_member_probabilities():
    data = contract_dataset(120)
    model = mlmm.create_method(
        "auto-ensemble", data.specs, data.task, members=MEMBERS, weights=[0.25, 0.75]
    )
    trained = mlmm.Trainer(max_epochs=3, progress=False).fit(model, data)
    batch = MultimodalBatch.from_dataset(trained.standardizer.transform(data), with_target=False)
    present = batch.present.clone()
    present[::2, 0] = False  # a different pattern per row
    batch = MultimodalBatch(batch.inputs, present, batch.modalities, None)
    with torch.no_grad():
        probs = [torch.softmax(m(batch).prediction.double(), 1) for m in model.models.values()]
        expected = 0.25 * probs[0] + 0.75 * probs[1]  # [B, K]
        got = torch.softmax(model(batch).prediction.double(), 1)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_members_train_for_their_fixed_epochs_and_the_same_as_alone():
    data = contract_dataset(120)
    model = mlmm.create_method("auto-ensemble", data.specs, data.task, members=MEMBERS)
    trained = mlmm.Trainer(max_epochs=50, progress=False, seed=3).fit(model, data)
    hemis = [h for h in trained.histories if h.stage.startswith("hemis")]
    assert [len(h.epochs) for h in hemis] == [3]
    # the member alone, in an ensemble of one, comes out with the same weights
    alone = mlmm.create_method("auto-ensemble", data.specs, data.task, members=MEMBERS[1:])
    mlmm.Trainer(max_epochs=50, progress=False, seed=3).fit(alone, data)
    for key, value in alone.models["m0"].state_dict().items():
        torch.testing.assert_close(value, model.models["m1"].state_dict()[key])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"members": []}, "non-empty list"),
        ({"members": [{"params": {}}]}, "'method' key"),
        ({"members": [{"method": "hemis", "lr": 1}]}, "unknown keys"),
        ({"members": [{"method": "auto-ensemble"}]}, "cannot itself"),
        ({"members": [{"method": "hemis"}, {"method": "hemis"}]}, "unique"),
        ({"members": [{"method": "hemis", "epochs": 0}]}, "epochs must be"),
        ({"weights": [0.7, 0.7]}, "summing to 1"),
        ({"weights": [1.0]}, "one per member"),
    ],
)
def test_bad_members_and_weights_are_one_line_errors(kwargs, match):
    data = contract_dataset(30)
    with pytest.raises(MlmmError, match=match):
        mlmm.create_method("auto-ensemble", data.specs, data.task, **kwargs)


def test_leaderboard_frame_without_a_recorded_leaderboard_lists_members_and_weights():
    data = contract_dataset(30)
    model = mlmm.create_method("auto-ensemble", data.specs, data.task)
    frame = model.leaderboard_frame()
    assert frame.model.tolist() == ["per-modality-logistic", "hemis"]
    assert np.allclose(frame.weight, [0.5, 0.5])


def test_a_saved_default_ensemble_keeps_its_members_when_the_defaults_change(tmp_path, monkeypatch):
    # members=None resolves to DEFAULT_MEMBERS at their defaults: the artifact records them
    from mlmm.methods.combination import auto_ensemble
    from mlmm.train.trained import TrainedModel

    data = contract_dataset()
    model = mlmm.create_method("auto-ensemble", data.specs, data.task)
    members = model.resolved_hyperparameters()["members"]
    assert [m["method"] for m in members] == [m["method"] for m in auto_ensemble.DEFAULT_MEMBERS]
    assert members[1]["params"] == model.models["m1"].get_hyperparameters()
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)
    path = trained.save(tmp_path / "model")
    later = tuple(reversed(auto_ensemble.DEFAULT_MEMBERS))
    monkeypatch.setattr(auto_ensemble, "DEFAULT_MEMBERS", later)
    loaded = TrainedModel.load(path)
    assert loaded.model.members is None
    assert [m["name"] for m in loaded.model.member_specs] == [m["name"] for m in members]
    np.testing.assert_array_equal(loaded.predict_raw(data), trained.predict_raw(data))
