"""mean-impute: per-position training means fill absent rows; the indicators reach the head."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.imputation.zero_impute import ZeroImpute
from mlmm.testing import contract_dataset

SPECS = [ModalitySpec("v", "vector", (2,)), ModalitySpec("s", "sequence", (2, 1))]
TASK = TaskSpec("classification", 2)


def tiny_dataset() -> MultimodalDataset:
    """Three samples, treated as already standardised; the third has v only."""
    v = np.array([[1.0, -1.0], [-1.0, 3.0], [3.0, 1.0]])
    s = np.array([[[1.0], [2.0]], [[3.0], [6.0]], [[100.0], [100.0]]])
    observed = np.array([[True, True], [True, True], [True, False]])
    return MultimodalDataset(SPECS, TASK, {"v": v, "s": s}, np.array([0, 1, 0]), observed)


def fitted(**params):
    model = mlmm.create_method("mean-impute", SPECS, TASK, **params)
    model.fit_imputer(tiny_dataset())
    return model.eval()


def batch_of(v, s, present):
    return mlmm.MultimodalBatch(
        {"v": torch.tensor(v), "s": torch.tensor(s)}, torch.tensor(present), ("v", "s")
    )


def test_the_means_are_taken_per_position_over_present_training_rows_only():
    model = fitted()
    # v: mean of [1,-1], [-1,3], [3,1]; s: mean of the two present sequences (not the 100s)
    np.testing.assert_allclose(model.train_mean.v.numpy(), [1.0, 1.0])
    np.testing.assert_allclose(model.train_mean.s.numpy(), [[2.0], [4.0]])


def test_impute_fills_absent_rows_with_the_means_and_leaves_present_rows_unchanged():
    model = fitted()
    v = [[0.5, 0.25], [9.0, 9.0]]
    s = [[[8.0], [9.0]], [[-5.0], [5.0]]]
    present = [[True, False], [False, True]]
    out = model.impute(batch_of(v, s, present))
    assert torch.equal(out["v"][0], torch.tensor(v[0])) and torch.equal(
        out["v"][1], model.train_mean.v
    )
    assert torch.equal(out["s"][1], torch.tensor(s[1])) and torch.equal(
        out["s"][0], model.train_mean.s
    )
    garbage = model.impute(batch_of([v[0], [1e6, -1e6]], [[[1e6], [1e6]], s[1]], present))
    for name in out:
        assert torch.equal(garbage[name], out[name])


def test_indicators_are_the_last_inputs_of_the_head():
    data = contract_dataset()
    with_ind = mlmm.create_method("mean-impute", data.specs, data.task).eval()
    without = mlmm.create_method("mean-impute", data.specs, data.task, indicators=False).eval()
    plain = ZeroImpute(data.specs, data.task)
    m = data.n_modalities
    assert with_ind.head.net[0].in_features == plain.head.net[0].in_features + m
    assert without.head.net[0].in_features == plain.head.net[0].in_features
    present = np.array([[True, False, True], [False, True, False]])
    batch = mlmm.MultimodalBatch.from_dataset(data.with_presence(np.resize(present, (360, 3))))
    with torch.no_grad():
        embedding = with_ind(batch).embedding
    assert torch.equal(embedding[:2, -m:], torch.from_numpy(present).float())


def test_without_indicators_on_vectors_it_is_zero_impute_because_the_means_are_zero():
    full = contract_dataset()
    data = MultimodalDataset(
        full.specs[:2], full.task, {"a": full.inputs["a"], "b": full.inputs["b"]}, full.targets
    )
    split = mlmm.train_val_test_split(data, seed=0)
    train, _ = mlmm.simulate(split.train, "mcar:0.4", seed=0)
    test, _ = mlmm.simulate(split.test, "mcar:0.4", seed=1)
    trainer = mlmm.Trainer(max_epochs=3, seed=0, progress=False)
    mean = trainer.fit(
        mlmm.create_method("mean-impute", data.specs, data.task, indicators=False), train, split.val
    )
    zero = trainer.fit(mlmm.create_method("zero-impute", data.specs, data.task), train, split.val)
    assert all(b.abs().max() < 1e-6 for b in mean.model.train_mean.buffers())
    np.testing.assert_allclose(mean.predict_raw(test), zero.predict_raw(test), atol=1e-4)


def test_sequence_means_are_not_zero_after_per_channel_standardisation():
    data = contract_dataset()
    split = mlmm.train_val_test_split(data, seed=0)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(
        mlmm.create_method("mean-impute", data.specs, data.task), split.train, split.val
    )
    standardised = trained.standardizer.transform(split.train).inputs["s"]
    np.testing.assert_allclose(
        trained.model.train_mean.s.numpy(), standardised.mean(axis=0), atol=1e-5
    )
    assert trained.model.train_mean.s.abs().max() > 0.5  # the class-driven sine waves


@pytest.mark.parametrize("bad", [{"indicators": "yes"}, {"indicators": 1}, {"hidden": 0}])
def test_bad_hyperparameters_are_refused(bad):
    with pytest.raises(MlmmError, match=next(iter(bad))):
        mlmm.create_method("mean-impute", SPECS, TASK, **bad)
