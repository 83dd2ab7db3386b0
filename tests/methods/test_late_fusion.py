"""late-fusion: independent heads, each early-stopped on its own validation loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlmm
from mlmm.errors import MlmmError
from mlmm.nn import combine_predictions
from mlmm.testing import contract_dataset


def head_validation_losses(trained, val) -> dict[str, float]:
    """Each head's mean loss on the validation rows that have its modality."""
    module = trained.model
    batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(val))
    with torch.no_grad():
        out = module(mlmm.MultimodalBatch(batch.inputs, batch.present, batch.modalities, None))
        losses = module.part_losses(out, batch)
    return {m: loss[rows].mean().item() for m, (loss, rows) in losses.items()}


def fit(selection: str, data, seed: int = 0):
    split = mlmm.train_val_test_split(data, seed=seed)
    train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=seed)
    val, _ = mlmm.simulate(split.val, "mcar:0.5", seed=seed + 1)
    model = mlmm.create_method("late-fusion", data.specs, data.task, selection=selection)
    trainer = mlmm.Trainer(max_epochs=40, patience=5, lr=3e-3, seed=seed, progress=False)
    return trainer.fit(model, train, val), val


def test_per_head_selection_gives_every_head_its_lowest_validation_loss():
    # one training trajectory (same seed) and two ways of choosing its weights: every head's
    # own validation loss is at least as low when each head is chosen on it
    data = contract_dataset(240)
    per_head, val = fit("per_head", data)
    joint, _ = fit("joint", data)
    assert set(per_head.histories[0].part_best_epochs) == {"a", "b", "s"}
    assert joint.histories[0].part_best_epochs == {}
    own, shared = head_validation_losses(per_head, val), head_validation_losses(joint, val)
    assert all(own[m] <= shared[m] + 1e-6 for m in own)
    # the heads did pick different epochs from the joint choice: the test can tell them apart
    assert own != pytest.approx(shared)


def test_selection_parts_cover_each_modality_encoder_and_head():
    data = contract_dataset(40)
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    parts = model.selection_parts()
    assert parts == {m: (f"encoders.{m}.", f"heads.{m}.") for m in ("a", "b", "s")}
    owned = [
        k for k in model.state_dict() if any(k.startswith(p) for ps in parts.values() for p in ps)
    ]
    # nothing trained is left to the joint choice (the class prior is a constant buffer)
    assert sorted(owned) == sorted(k for k in model.state_dict() if k != "log_prior")


def test_learned_weight_ensemble_selects_its_heads_jointly():
    # its heads also learn through the gated mixture, so they are not independent
    data = contract_dataset(40)
    assert (
        mlmm.create_method("learned-weight-ensemble", data.specs, data.task).selection_parts() == {}
    )


def test_unknown_selection_is_refused():
    data = contract_dataset(40)
    with pytest.raises(MlmmError, match="selection"):
        mlmm.create_method("late-fusion", data.specs, data.task, selection="best")


def test_product_rule_divides_by_the_training_prior_once_per_extra_modality():
    # classes 0/1 at 3:1 in training; heads trained to give the same probabilities as before
    data = contract_dataset(40)
    data = data.subset(np.flatnonzero(data.targets < 2))
    targets = np.where(np.arange(data.n_samples) % 4 == 0, 1, 0)
    data = mlmm.MultimodalDataset(
        data.specs, mlmm.TaskSpec("classification", 2), data.inputs, targets
    )
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    mlmm.Trainer(max_epochs=1, progress=False).fit(model, data)
    prior = np.bincount(targets, minlength=2) / len(targets)
    assert torch.allclose(model.log_prior, torch.tensor(np.log(prior), dtype=torch.float32))
    batch = mlmm.MultimodalBatch.from_dataset(data.subset(np.arange(3)))
    batch = mlmm.MultimodalBatch(batch.inputs, torch.ones_like(batch.present), batch.modalities)
    with torch.no_grad():
        out = model(batch)
    heads = torch.log_softmax(out.extras["per_modality"], dim=-1)  # [3, M, 2]
    # p(y | a, b, s) proportional to p(y|a) p(y|b) p(y|s) / p(y)^2, by hand
    by_hand = heads.sum(dim=1) - 2 * torch.log(torch.tensor(prior, dtype=heads.dtype))
    assert torch.allclose(out.prediction, torch.log_softmax(by_hand, dim=-1), atol=1e-5)


def test_product_rule_never_favours_a_class_absent_from_training():
    # class 2 has no training row: its prior is 0, and dividing by a floored prior (1e-12)
    # would add 2 * 27.6 to its log-probability with three modalities present
    data = contract_dataset(60)
    train = data.subset(np.flatnonzero(data.targets != 2))
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    mlmm.Trainer(max_epochs=3, progress=False, seed=0).fit(model, train)
    assert model.log_prior[2].item() == -np.inf and model.log_prior[:2].isfinite().all()
    batch = mlmm.MultimodalBatch.from_dataset(train)
    batch = mlmm.MultimodalBatch(batch.inputs, torch.ones_like(batch.present), batch.modalities)
    with torch.no_grad():
        out = model(batch)
        heads = torch.log_softmax(out.extras["per_modality"], dim=-1).sum(dim=1)  # [N, K]
        # by hand: the seen classes divided by their prior twice, class 2 the heads' product
        by_hand = heads - 2 * torch.cat([model.log_prior[:2], torch.zeros(1)])
        assert torch.allclose(out.prediction, torch.log_softmax(by_hand, dim=1), atol=1e-5)
        assert (out.prediction.argmax(dim=1) != 2).all()
        # nothing present: the training prior, class 2 impossible
        empty = mlmm.MultimodalBatch(
            batch.inputs, torch.zeros_like(batch.present), batch.modalities
        )
        probs = model(empty).prediction.exp()[0]
    assert torch.allclose(probs, torch.tensor([0.5, 0.5, 0.0]), atol=1e-6)


@pytest.mark.parametrize(
    "method, params",
    [("late-fusion", {"rule": "sum_logprob"}), ("learned-weight-ensemble", {})],
)
def test_an_artifact_saved_before_log_prior_loads_and_predicts_as_it_did(method, params, tmp_path):
    """Artifacts written before the product rule divided out the training prior have no
    ``log_prior``: every one of them (late-fusion, learned-weight-ensemble, a scheduler pool
    holding late-fusion) stopped loading with 'config.json describes a model of 114,832 values
    but model.safetensors holds 114,828', so `mlmm serve` refused a model that served before."""
    import json

    from mlmm.train import TrainedModel
    from mlmm.train.checkpoint import load_artifact, save_artifact

    data = contract_dataset(n_samples=60)
    model = mlmm.create_method(method, data.specs, data.task, hidden=8, **params)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, data)
    with torch.no_grad():  # confident heads, as trained ones are: rounding then shows
        for weight in model.parameters():
            weight.mul_(4)
    trained.save(tmp_path / "new")
    config, state = load_artifact(tmp_path / "new")
    for key in ("format", "format_version", "weights_sha256"):
        config.pop(key)
    del state["log_prior"]  # what an earlier mlmm wrote
    save_artifact(tmp_path / "old", state, json.loads(json.dumps(config)))
    old = TrainedModel.load(tmp_path / "old")
    # as the code before log_prior predicted, bit for bit: the heads' product, nothing divided
    # out (a uniform -log K, the first upgrade, changed 15% of float32 rows in their last bits)
    from mlmm.methods.combination import late_fusion

    def before_log_prior(outs, present, rule, log_prior=None):
        return combine_predictions(outs, present, rule)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(late_fusion, "combine_predictions", before_log_prior)
        then = trained.predict_proba(data)
    np.testing.assert_array_equal(old.predict_proba(data), then)
