"""sample-graph: a training sample is never its own neighbour, neighbours come from the stored
training bank and have the missing modality, the similarity by hand, and bad hyperparameters."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.errors import MlmmError
from mlmm.methods.base import upgrade_weights
from mlmm.testing import contract_dataset, padded_sequence_dataset


def _filled(**params):
    """A model whose bank holds the (complete) contract data, and a batch of the same samples
    with modality "a" hidden."""
    data = contract_dataset()
    model = mlmm.create_method("sample-graph", data.specs, data.task, **params)
    batch = mlmm.MultimodalBatch.from_dataset(data)
    model.bank.fill(batch.inputs, batch.present)
    hidden = batch.with_present(batch.present & torch.tensor([False, True, True]))
    return data, model, hidden


def test_a_training_sample_is_never_its_own_neighbour():
    data, model, hidden = _filled(modality_dropout=0.0, k=3)
    rows = torch.arange(data.n_samples)
    model.train()
    out = model(hidden)
    neighbours, weights = out.extras["neighbours"][:, 0], out.extras["neighbour_weights"][:, 0]
    assert (weights.sum(dim=1) - 1).abs().max() < 1e-5  # every row found neighbours for "a"
    assert not ((neighbours == rows.unsqueeze(1)) & (weights > 0)).any()
    # at prediction time the sample itself (identical on every shared modality, cosine 1 on
    # each) is the most similar training sample, so excluding it in training is not a no-op
    model.eval()
    with torch.no_grad():
        out = model(hidden)
    assert torch.equal(out.extras["neighbours"][:, 0, 0], rows)


def test_neighbours_have_the_missing_modality_and_present_slots_are_not_filled():
    data, model, _ = _filled(k=4)
    batch = mlmm.MultimodalBatch.from_dataset(data)
    bank_present = torch.tensor([[i % 2 == 0, True, True] for i in range(data.n_samples)])
    model.bank.fill(batch.inputs, bank_present)  # odd bank rows lack "a"
    query = mlmm.MultimodalBatch.from_dataset(data, list(range(5)))
    query = query.with_present(torch.tensor([[False, True, False]] * 5))
    with torch.no_grad():
        out = model.eval()(query)
    chosen_a = out.extras["neighbours"][:, 0]  # [5, 4]
    assert (chosen_a % 2 == 0).all()
    assert (out.extras["neighbour_weights"][:, 1] == 0).all()  # "b" is present: not imputed
    embeddings = model.encode(query.inputs)
    torch.testing.assert_close(out.extras["completed"][:, 1], embeddings[:, 1])


def test_similarity_averages_the_kernels_over_shared_modalities_only():
    data, model, _ = _filled()
    with torch.no_grad():
        for kernel in model.kernels.values():  # identity kernels: plain cosine similarity
            kernel.weight.copy_(torch.eye(model.embed_dim))
            kernel.bias.zero_()
    bank = model.encode_bank()  # [N, M, D]
    query = bank[:2].clone()
    query[1, 0] = -query[1, 0]  # cosine -1 on "a" for query 1
    present = torch.tensor([[True, True, False], [True, False, False]])
    similarity, shared = model.similarity(query, present, bank)
    assert similarity[0, 0].item() == pytest.approx(1.0, abs=1e-5)  # itself on a and b
    assert similarity[1, 1].item() == pytest.approx(-1.0, abs=1e-5)  # sample 1, "a" only
    assert shared[0, 0] == 2 and shared[1, 1] == 1
    cos = torch.nn.functional.cosine_similarity
    expected = (cos(bank[0, 0], bank[5, 0], dim=0) + cos(bank[0, 1], bank[5, 1], dim=0)) / 2
    assert similarity[0, 5].item() == pytest.approx(expected.item(), abs=1e-5)


def test_an_empty_bank_uses_the_missing_token():
    data = contract_dataset()
    model = mlmm.create_method("sample-graph", data.specs, data.task).eval()
    batch = mlmm.MultimodalBatch.from_dataset(data, [0, 1])
    batch = batch.with_present(torch.tensor([[True, False, True], [True, True, True]]))
    with torch.no_grad():
        out = model(batch)
    torch.testing.assert_close(out.extras["completed"][0, 1], model.missing_token[1])
    assert out.extras["neighbours"].shape == (2, 3, 0)


def test_fit_stores_the_standardised_training_samples_as_the_bank(tmp_path):
    data = contract_dataset()
    split = mlmm.train_val_test_split(data, seed=0)
    model = mlmm.create_method("sample-graph", data.specs, data.task)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, split.train)
    expected = trained.standardizer.transform(split.train).inputs["a"]
    np.testing.assert_allclose(model.bank.row("a").numpy(), expected, rtol=1e-6)
    trained.save(tmp_path / "m")
    loaded = mlmm.TrainedModel.load(tmp_path / "m")
    assert len(loaded.model.bank) == split.train.n_samples


@pytest.mark.parametrize(
    "params",
    [{"k": 0}, {"k": 2.5}, {"temperature": 0.0}, {"modality_dropout": 1.0}, {"hidden": 0}],
)
def test_bad_hyperparameters_are_rejected(params):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=next(iter(params))):
        mlmm.create_method("sample-graph", data.specs, data.task, **params)


_varlen_data = padded_sequence_dataset  # 40 samples, `s` of 1 to 8 valid steps


def _varlen_trained(data):
    model = mlmm.create_method("sample-graph", data.specs, data.task, embed_dim=8, hidden=8, k=3)
    return mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)


def test_a_bank_sample_is_encoded_as_the_same_sample_is_as_a_query():
    # the bank's variable-length sequences skip their padding, as the query's do: a training
    # sample's bank embedding equals its own embedding as a query (was: padding encoded)
    data = _varlen_data()
    trained = _varlen_trained(data)
    model = trained.model.eval()
    batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(data))
    with torch.no_grad():
        own = model.encode(batch.inputs, batch)  # [N, M, D]
        bank = model.encode_bank()  # [N, M, D]
    s = batch.present[:, 1]
    assert torch.allclose(bank[s, 1], own[s, 1], atol=1e-5)
    assert torch.equal(model.bank_lengths.s, torch.from_numpy(data.lengths["s"]))


def test_garbage_in_a_query_padding_does_not_make_a_sample_its_own_neighbour():
    # in training, self-matches are found on raw inputs: the query's padding is read as zeros,
    # as the bank holds it (was: garbage there hid the match and a sample was its own neighbour)
    trained = _varlen_trained(_varlen_data())
    batch = mlmm.MultimodalBatch.from_dataset(trained.standardizer.transform(_varlen_data()))
    padded = torch.arange(8)[None, :] >= batch.lengths["s"][:, None]  # [N, T]
    inputs = dict(batch.inputs, s=batch.inputs["s"].masked_fill(padded[..., None], 7.0))
    noisy = mlmm.MultimodalBatch(inputs, batch.present, batch.modalities, None, batch.lengths)
    hidden = noisy.with_present(batch.present & torch.tensor([False, True]))  # "a" from "s"
    model = trained.model.train()
    with torch.no_grad():
        out = model(hidden)
    neighbours, weights = out.extras["neighbours"][:, 0], out.extras["neighbour_weights"][:, 0]
    rows = torch.arange(len(batch)).unsqueeze(1)  # [N, 1]
    assert (weights.sum(dim=1)[batch.present[:, 1]] > 0.99).all()
    assert not ((neighbours == rows) & (weights > 0)).any()


def test_artifacts_saved_before_bank_lengths_load_and_encode_the_bank_as_they_did():
    trained = _varlen_trained(_varlen_data())
    old = {k: v for k, v in trained.model.state_dict().items() if "bank_lengths" not in k}
    model = mlmm.create_method(
        "sample-graph",
        _varlen_data().specs,
        mlmm.TaskSpec("classification", 2),
        embed_dim=8,
        hidden=8,
    )
    upgrade_weights(model, old)
    model.load_state_dict(old)
    assert len(model.bank_lengths.s) == 0  # as saved: the bank is encoded without lengths
    with torch.no_grad():
        bank = model.eval().encode_bank()
        rows = {s.name: model.bank.row(s.name).reshape(-1, *s.shape) for s in model.specs}
        unmasked = model.encode(rows)
    assert torch.equal(bank, unmasked)
