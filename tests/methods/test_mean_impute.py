"""mean-impute: per-position training means fill absent rows; the indicators reach the head."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.imputation.zero_impute import ZeroImpute
from mlmm.testing import contract_dataset, padded_sequence_dataset
from mlmm.train.checkpoint import load_artifact, save_artifact

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


VARLEN_SPECS = [ModalitySpec("v", "vector", (1,)), ModalitySpec("s", "sequence", (4, 1))]


def varlen_dataset() -> MultimodalDataset:
    """Treated as standardised: s has 2, 1 and 3 valid steps; the fourth sample lacks s and
    the padding of present rows holds garbage (written after construction, which zeroes it)."""
    s = np.array([[1.0, 2.0, 0, 0], [3.0, 0, 0, 0], [5.0, 6.0, 7.0, 0], [100.0] * 4])[..., None]
    observed = np.array([[True, True], [True, True], [True, True], [True, False]])
    data = MultimodalDataset(
        VARLEN_SPECS,
        TASK,
        {"v": np.zeros((4, 1)), "s": s},
        np.array([0, 1, 0, 1]),
        observed,
        lengths={"s": np.array([2, 1, 3, 0])},
    )
    data.inputs["s"][0, 2:] = data.inputs["s"][1, 1:] = data.inputs["s"][2, 3:] = -50.0
    return data


def test_a_variable_length_mean_is_over_the_samples_that_have_each_step():
    # was: the padding of shorter present sequences was averaged in as zeros
    model = mlmm.create_method("mean-impute", VARLEN_SPECS, TASK)
    model.fit_imputer(varlen_dataset())
    # step 0: (1+3+5)/3; step 1: (2+6)/2; step 2: 7 alone; step 3: no sequence reaches it
    assert model.train_mean.s.flatten().tolist() == [3.0, 4.0, 7.0, 0.0]
    assert model.train_length.s.tolist() == [3]  # the longest present training sequence


def test_the_mean_of_padded_data_matches_a_per_step_loop():
    data = padded_sequence_dataset(garbage=True)  # padding of present rows holds 1e3
    model = mlmm.create_method("mean-impute", data.specs, data.task)
    before = data.inputs["s"].copy()
    model.fit_imputer(data)
    np.testing.assert_array_equal(data.inputs["s"], before)  # the data are not edited
    s, steps = data.inputs["s"], data.lengths["s"]
    present = np.flatnonzero(data.observed[:, 1])
    for t in range(s.shape[1]):
        have = [i for i in present if steps[i] > t]
        expected = np.mean([s[i, t] for i in have], axis=0) if have else np.zeros(2)
        np.testing.assert_allclose(model.train_mean.s[t].numpy(), expected, rtol=1e-6)
    assert model.train_length.s.tolist() == [int(steps[present].max())]


def test_a_refit_without_any_present_row_forgets_the_earlier_mean():
    # was: the mean of the earlier fit stayed, now with train_length empty (all steps)
    model = mlmm.create_method("mean-impute", VARLEN_SPECS, TASK)
    model.fit_imputer(varlen_dataset())
    assert model.train_mean.s.abs().sum() > 0
    observed = np.array([[True, False]] * 4)
    data = MultimodalDataset(
        VARLEN_SPECS,
        TASK,
        {"v": np.ones((4, 1)), "s": np.ones((4, 4, 1))},
        np.array([0, 1, 0, 1]),
        observed,
        lengths={"s": np.zeros(4, dtype=np.int64)},
    )
    model.fit_imputer(data)
    assert model.train_length.s.shape == (0,)
    assert torch.equal(model.train_mean.s, torch.zeros(4, 1))  # the standardised mean


def test_an_imputed_sequence_is_encoded_over_the_imputed_length():
    model = mlmm.create_method("mean-impute", VARLEN_SPECS, TASK, hidden=8, embed_dim=4)
    model.fit_imputer(varlen_dataset())
    model.eval()
    mean = model.train_mean.s.clone()
    batch = mlmm.MultimodalBatch(
        {"v": torch.zeros(3, 1), "s": torch.stack([torch.zeros(4, 1), mean, mean + 9.0])},
        torch.tensor([[True, False], [True, True], [True, True]]),
        ("v", "s"),
        lengths={"s": torch.tensor([0, 3, 2])},
    )
    filled, lengths = model.impute_with_lengths(batch)
    assert torch.equal(filled["s"][0], mean)
    assert lengths["s"].tolist() == [3, 3, 2]  # absent: train_length; present: their own
    with torch.no_grad():
        embedding = model(batch).embedding[:, 1:5]  # [B, embed_dim]: the s part
        # the imputed row is encoded as a recorded mean sequence of 3 steps, not over all 4
        assert torch.equal(embedding[0], embedding[1])
        over_all = model.encoders["s"](mean.unsqueeze(0))[0]
    assert not torch.allclose(embedding[0], over_all)


def test_fixed_length_sequences_keep_no_train_length():
    model = fitted()
    assert model.train_length.s.shape == (0,)  # every step is real
    batch = batch_of([[0.0, 0.0]], [[[1.0], [2.0]]], [[True, False]])
    assert model.impute_with_lengths(batch)[1] == {}  # encoded over all steps, as before


def test_artifacts_saved_before_train_length_load_and_predict_as_they_did(tmp_path):
    data = padded_sequence_dataset()
    train, _ = mlmm.simulate(data, "mcar:0.3", seed=0)
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(
        mlmm.create_method("mean-impute", data.specs, data.task, hidden=16, embed_dim=8),
        train,
        None,
    )
    path = trained.save(tmp_path / "artifact")
    now = trained.predict_raw(train)
    loaded = mlmm.TrainedModel.load(path)  # today's artifact keeps its train_length
    assert loaded.model.train_length.s.tolist() == trained.model.train_length.s.tolist() == [8]
    np.testing.assert_array_equal(loaded.predict_raw(train), now)
    # the code of then: the mean over every step of the present rows, padding included, and
    # imputed sequences encoded over all steps
    standardised = trained.standardizer.transform(train)
    rows = standardised.inputs["s"][standardised.observed[:, 1]]
    old_mean = torch.from_numpy(rows.mean(axis=0, dtype="float64")).float()
    assert not torch.allclose(old_mean, trained.model.train_mean.s)
    trained.model.train_mean.s.copy_(old_mean)
    trained.model.train_length.register_buffer("s", torch.zeros(0, dtype=torch.int64))
    then = trained.predict_raw(train)
    assert not np.allclose(then, now, atol=1e-6)  # the fix changes predictions

    config, weights = load_artifact(path)
    weights["train_mean.s"] = old_mean
    del weights["train_length.s"]
    save_artifact(path, weights, config, overwrite=True)  # the weights as then, hashed
    upgraded = mlmm.TrainedModel.load(path)
    assert upgraded.model.train_length.s.shape == (0,)
    np.testing.assert_array_equal(upgraded.predict_raw(train), then)
