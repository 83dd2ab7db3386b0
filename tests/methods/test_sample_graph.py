"""sample-graph: a training sample is never its own neighbour, neighbours come from the stored
training bank and have the missing modality, the similarity by hand, and bad hyperparameters."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.errors import MlmmError
from mlmm.testing import contract_dataset


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
