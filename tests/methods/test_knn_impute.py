"""knn-impute: hand-computed neighbour averages, self-exclusion, fallback, the bank on disk."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.preprocessing import Standardizer
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import upgrade_weights
from mlmm.testing import contract_dataset

SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (1,))]
TASK = TaskSpec("classification", 2)


def four_samples() -> MultimodalDataset:
    """Treated as standardised training data; sample 1 lacks b."""
    a = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [3.0, 3.0]])
    b = np.array([[10.0], [0.0], [30.0], [40.0]])
    observed = np.array([[True, True], [True, False], [True, True], [True, True]])
    return MultimodalDataset(SPECS, TASK, {"a": a, "b": b}, np.array([0, 1, 0, 1]), observed)


def fitted(data=None, **params):
    model = mlmm.create_method("knn-impute", SPECS, TASK, **params)
    model.fit_imputer(data or four_samples())
    return model.eval()


def batch_of(a, b, present):
    return mlmm.MultimodalBatch(
        {"a": torch.tensor(a), "b": torch.tensor(b)}, torch.tensor(present), ("a", "b")
    )


def test_b_is_the_distance_weighted_average_of_the_k_nearest_samples_that_have_it():
    batch = batch_of([[1.0, 1.0]], [[0.0]], [[True, False]])
    # distances on a (RMS per feature): sample 0: sqrt(2/2) = 1; sample 1 lacks b;
    # sample 2: sqrt((1 + 4)/2) = sqrt(2.5); sample 3: sqrt((4 + 4)/2) = 2
    w0, w2, w3 = 1.0, 1 / math.sqrt(2.5), 0.5
    cases = {
        (2, "distance"): (10 * w0 + 30 * w2) / (w0 + w2),
        (2, "uniform"): 20.0,
        (1, "distance"): 10.0,
        (10, "distance"): (10 * w0 + 30 * w2 + 40 * w3) / (w0 + w2 + w3),
    }
    for (k, weighting), expected in cases.items():
        out = fitted(k=k, weighting=weighting).impute(batch)
        assert out["b"].item() == pytest.approx(expected), (k, weighting)
        assert torch.equal(out["a"], batch.inputs["a"])


def test_a_sample_sharing_no_present_modality_is_not_a_neighbour():
    batch = batch_of([[0.0, 0.0]], [[26.0]], [[False, True]])
    # on b: sample 0 at 16, sample 2 at 4, sample 3 at 14; sample 1 has a but no b: excluded
    w = {0: 1 / 16, 2: 1 / 4, 3: 1 / 14}
    a = {0: np.array([0.0, 0.0]), 2: np.array([0.0, 3.0]), 3: np.array([3.0, 3.0])}
    expected = sum(w[i] * a[i] for i in w) / sum(w.values())
    out = fitted(k=4).impute(batch)
    np.testing.assert_allclose(out["a"][0].numpy(), expected, rtol=1e-6)
    assert torch.equal(out["b"], batch.inputs["b"])


def test_with_no_qualifying_sample_the_training_mean_fills_in():
    a = np.array([[2.0, 4.0], [4.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0], [0.0], [5.0]])
    observed = np.array([[True, False], [True, False], [False, True]])  # a and b never together
    model = fitted(MultimodalDataset(SPECS, TASK, {"a": a, "b": b}, np.array([0, 1, 0]), observed))
    out = model.impute(batch_of([[0.0, 0.0]], [[1.0]], [[False, True]]))
    np.testing.assert_allclose(out["a"].numpy(), [[3.0, 2.0]])


def test_during_training_a_sample_is_not_its_own_neighbour():
    model = fitted(k=2)
    # sample 0 with b hidden (as modality dropout would do): it is at distance 0 from itself
    batch = batch_of([[0.0, 0.0]], [[123.0]], [[True, False]])
    assert model.impute(batch)["b"].item() == pytest.approx(10.0)  # prediction: exact match
    model.train()
    d2, d3 = math.sqrt(9 / 2), 3.0  # samples 2 and 3 (sample 1 lacks b)
    expected = (30 / d2 + 40 / d3) / (1 / d2 + 1 / d3)
    assert model.impute(batch)["b"].item() == pytest.approx(expected)


def test_present_rows_are_unchanged_and_absent_rows_are_not_read():
    model = fitted(k=3)
    present = [[True, False], [False, True], [True, True]]
    a = [[0.5, 2.0], [0.0, 0.0], [1.5, -1.0]]
    b = [[0.0], [12.0], [33.0]]
    out = model.impute(batch_of(a, b, present))
    noisy = model.impute(batch_of([a[0], [1e6, -1e6], a[2]], [[-1e6], b[1], b[2]], present))
    for j, name in enumerate(("a", "b")):
        rows = torch.tensor(present)[:, j]
        assert torch.equal(out[name][rows], torch.tensor((a, b)[j])[rows])
        assert torch.equal(noisy[name], out[name])


def test_the_bank_is_saved_with_the_weights_and_a_new_model_predicts_the_same(tmp_path):
    data = contract_dataset()
    split = mlmm.train_val_test_split(data, seed=0)
    train, _ = mlmm.simulate(split.train, "mcar:0.4", seed=0)
    test, _ = mlmm.simulate(split.test, "mcar:0.4", seed=1)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(
        mlmm.create_method("knn-impute", data.specs, data.task, k=3), train, split.val
    )
    assert len(trained.model.bank) == train.observed.any(axis=1).sum()
    save_file(trained.model.state_dict(), tmp_path / "weights.safetensors")
    fresh = mlmm.create_method("knn-impute", data.specs, data.task, k=3)
    fresh.load_state_dict(load_file(tmp_path / "weights.safetensors"))
    batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(test))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(batch).prediction, trained.model(batch).prediction)


def test_knn_imputes_handwritten_better_than_the_training_mean():
    """NRMSE (RMSE of imputed vs true standardised values over hidden rows) per modality."""
    ds = mlmm.load_dataset("handwritten")
    split = mlmm.train_val_test_split(ds, seed=0)
    train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    standardizer = Standardizer().fit(train)
    masked, result = mlmm.simulate(split.test, "mcar:0.5", seed=0)
    batch = mlmm.MultimodalBatch.from_dataset(standardizer.transform(masked))
    truth = standardizer.transform(split.test).inputs
    nrmse = {}
    for method in ("mean-impute", "knn-impute"):
        model = mlmm.create_method(method, ds.specs, ds.task)
        model.fit_imputer(standardizer.transform(train))
        filled = model.eval().impute(batch)
        nrmse[method] = np.array(
            [
                np.sqrt(np.mean((filled[k].numpy()[hide] - truth[k][hide]) ** 2))
                for k, hide in zip(ds.modality_names, result.removed.T, strict=True)
            ]
        )
    assert np.all(np.abs(nrmse["mean-impute"] - 1) < 0.1)  # about 1 by construction
    assert np.all(nrmse["knn-impute"] < nrmse["mean-impute"]), nrmse
    assert nrmse["knn-impute"].mean() < 0.8, nrmse


@pytest.mark.parametrize(
    "bad",
    [{"k": 0}, {"k": -3}, {"k": 2.5}, {"weighting": "cosine"}, {"indicators": "no"}],
)
def test_bad_hyperparameters_are_refused(bad):
    with pytest.raises(MlmmError, match=next(iter(bad))):
        mlmm.create_method("knn-impute", SPECS, TASK, **bad)


VARLEN_SPECS = [ModalitySpec("a", "vector", (1,)), ModalitySpec("s", "sequence", (4, 1))]


def varlen_samples() -> MultimodalDataset:
    """Treated as standardised training data: ``s`` of 1 to 4 valid steps (padding zero)."""
    a = np.array([[0.0], [1.0], [5.0]])
    s = np.array([[1.0, 2.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])[..., None]
    observed = np.ones((3, 2), dtype=bool)
    return MultimodalDataset(
        VARLEN_SPECS,
        TASK,
        {"a": a, "s": s},
        np.array([0, 1, 0]),
        observed,
        lengths={"s": np.array([2, 1, 4])},
    )


def test_garbage_in_a_query_padding_changes_no_distance():
    # distances read the query's padding as zeros, as the bank holds it (was: garbage there
    # moved the query away from its true neighbours and changed the imputation)
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=1)
    model.fit_imputer(varlen_samples())
    model.eval()
    s = torch.tensor([[1.0, 2.0, 0.0, 0.0]]).unsqueeze(-1)  # [1, T, C]: sample 0's s
    garbled = s.clone()
    garbled[0, 2:] = 100.0  # padding beyond the 2 valid steps
    filled = []
    for x in (s, garbled):
        batch = mlmm.MultimodalBatch(
            {"a": torch.zeros(1, 1), "s": x},
            torch.tensor([[False, True]]),
            ("a", "s"),
            lengths={"s": torch.tensor([2])},
        )
        filled.append(model.impute(batch)["a"])
    assert filled[0].item() == pytest.approx(0.0)  # sample 0, at distance 0
    assert torch.equal(filled[0], filled[1])


def test_an_imputed_sequence_reaches_the_classifier():
    # an absent row's length is 0, but an s filled from neighbours is encoded with the
    # neighbours' length (here 4), not masked out: the imputation reaches the classifier
    data = varlen_samples()
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=1, hidden=8, embed_dim=4)
    model.fit_imputer(data)
    model.eval()
    batch = mlmm.MultimodalBatch(
        {"a": torch.tensor([[5.0]]), "s": torch.zeros(1, 4, 1)},
        torch.tensor([[True, False]]),
        ("a", "s"),
        lengths={"s": torch.tensor([0])},
    )
    neighbour = torch.from_numpy(data.inputs["s"][2:3])  # sample 2, at distance 0 on a
    with torch.no_grad():
        before = model(batch).prediction
        assert torch.equal(model.impute(batch)["s"], neighbour)
        model.bank.row("s")[2] = -neighbour.flatten()  # the neighbour's s, negated
        after = model(batch).prediction
    assert not torch.allclose(before, after)


def test_an_imputed_sequence_takes_its_neighbours_steps_and_length():
    # per step, the average over the neighbours that have the step; the imputed length is the
    # longest neighbour's, so with k=1 the imputed sequence is encoded as its neighbour is
    data = varlen_samples()
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2, weighting="uniform")
    model.fit_imputer(data)
    model.eval()
    batch = mlmm.MultimodalBatch(
        {"a": torch.tensor([[0.4]]), "s": torch.zeros(1, 4, 1)},  # nearest: samples 0 and 1
        torch.tensor([[True, False]]),
        ("a", "s"),
        lengths={"s": torch.tensor([0])},
    )
    filled, lengths = model.impute_with_lengths(batch)
    assert filled["s"].flatten().tolist() == [2.0, 2.0, 0.0, 0.0]  # (1+3)/2, then 2 alone
    assert lengths["s"].tolist() == [2]
    assert torch.equal(model.bank_lengths.s, torch.tensor([2, 1, 4]))
    one = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=1, hidden=8, embed_dim=4)
    one.fit_imputer(data)
    one.eval()
    sample0 = mlmm.MultimodalBatch(
        {"a": torch.tensor([[0.4]]), "s": torch.from_numpy(data.inputs["s"][:1])},
        torch.tensor([[True, True]]),
        ("a", "s"),
        lengths={"s": torch.tensor([2])},
    )
    with torch.no_grad():
        assert torch.allclose(one(batch).embedding[:, 1:], one(sample0).embedding[:, 1:])


def test_artifacts_saved_before_bank_lengths_load_and_impute_as_they_did():
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2, weighting="uniform")
    model.fit_imputer(varlen_samples())
    # such an artifact has no train_length either (it came later)
    state = model.state_dict().items()
    old = {k: v for k, v in state if "bank_lengths" not in k and "train_length" not in k}
    new = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2, weighting="uniform")
    upgrade_weights(new, old)
    new.load_state_dict(old)
    assert len(new.bank_lengths.s) == 0  # as saved: neighbours' padding averaged in
    assert len(new.train_length.s) == 0
    batch = mlmm.MultimodalBatch(
        {"a": torch.tensor([[0.4]]), "s": torch.zeros(1, 4, 1)},
        torch.tensor([[True, False]]),
        ("a", "s"),
    )
    assert new.eval().impute(batch)["s"].flatten().tolist() == [2.0, 1.0, 0.0, 0.0]
    # a present sequence is still encoded over its own valid steps only
    recorded = torch.tensor([[1.0, 2.0, 0.0, 0.0]]).unsqueeze(-1)  # [1, T, C]
    outputs = []
    for x in (recorded, recorded.masked_fill(torch.arange(4)[None, :, None] >= 2, 9.0)):
        b = mlmm.MultimodalBatch(
            {"a": torch.zeros(1, 1), "s": x},
            torch.tensor([[False, True]]),
            ("a", "s"),
            lengths={"s": torch.tensor([2])},
        )
        with torch.no_grad():
            outputs.append(new(b).embedding[:, 1:])
    assert torch.allclose(outputs[0], outputs[1])


def test_with_no_qualifying_sample_a_sequence_takes_the_mean_and_its_length():
    # the samples that have s share no modality with the query: mean-impute's fill, its
    # per-step mean over the samples that have each step and the longest one's length
    s = np.array([[0.0] * 4, [1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 0.0]])[..., None]
    observed = np.array([[True, False], [False, True], [False, True]])
    data = MultimodalDataset(
        VARLEN_SPECS,
        TASK,
        {"a": np.array([[0.0], [0.0], [0.0]]), "s": s},
        np.array([0, 1, 0]),
        observed,
        lengths={"s": np.array([0, 2, 3])},
    )
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2)
    model.fit_imputer(data)
    batch = mlmm.MultimodalBatch(
        {"a": torch.tensor([[0.5]]), "s": torch.zeros(1, 4, 1)},
        torch.tensor([[True, False]]),
        ("a", "s"),
        lengths={"s": torch.tensor([0])},
    )
    filled, lengths = model.eval().impute_with_lengths(batch)
    assert filled["s"].flatten().tolist() == [2.0, 3.0, 5.0, 0.0]
    assert lengths["s"].tolist() == [3]  # was: all 4 steps


def test_artifacts_saved_before_train_length_fill_with_the_mean_over_all_steps():
    # saved with bank_lengths, before train_length: a row with no qualifying neighbour gets
    # the stored mean over all steps, as then (was only checked for mean-impute)
    s = np.array([[0.0] * 4, [1.0, 2.0, 0.0, 0.0], [3.0, 4.0, 5.0, 0.0]])[..., None]
    observed = np.array([[True, False], [False, True], [False, True]])
    data = MultimodalDataset(
        VARLEN_SPECS,
        TASK,
        {"a": np.zeros((3, 1)), "s": s},
        np.array([0, 1, 0]),
        observed,
        lengths={"s": np.array([0, 2, 3])},
    )
    model = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2, hidden=8, embed_dim=4)
    model.fit_imputer(data)
    old = {k: v for k, v in model.state_dict().items() if "train_length" not in k}
    new = mlmm.create_method("knn-impute", VARLEN_SPECS, TASK, k=2, hidden=8, embed_dim=4)
    upgrade_weights(new, old)
    new.load_state_dict(old)
    assert len(new.train_length.s) == 0 and torch.equal(new.bank_lengths.s, model.bank_lengths.s)
    batch = mlmm.MultimodalBatch(
        {"a": torch.tensor([[0.5]]), "s": torch.zeros(1, 4, 1)},
        torch.tensor([[True, False]]),
        ("a", "s"),
        lengths={"s": torch.tensor([0])},
    )
    filled, lengths = new.eval().impute_with_lengths(batch)
    assert torch.equal(filled["s"][0], new.train_mean.s)
    assert lengths["s"].tolist() == [4]  # all steps; the new model takes train_length, 3
    assert model.eval().impute_with_lengths(batch)[1]["s"].tolist() == [3]
    with torch.no_grad():
        over_all = new.encoders["s"](new.train_mean.s.unsqueeze(0))  # [1, embed_dim]
        assert torch.allclose(new(batch).embedding[:, 1:], over_all, atol=1e-6)
