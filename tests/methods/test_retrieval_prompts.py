"""retrieval-prompts: retrieval on the modalities a sample has, no self-retrieval in training,
the generator fills absent slots from neighbours, the bank cap (seeded subsample with a
warning), the bank in the artifact, and hyperparameter errors."""

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import train_val_test_split
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.architecture.retrieval_prompts import MAX_BANK_SIZE, bank_memory_bytes
from mlmm.testing import contract_dataset, padded_sequence_dataset
from mlmm.train.trainer import Trainer

SMALL = {"embed_dim": 16, "hidden": 32, "k": 3}
NAME = "retrieval-prompts"
SPECS = [ModalitySpec("x", "vector", (2,)), ModalitySpec("y", "vector", (2,))]
TASK = TaskSpec("classification", 2)


def _tiny_model(**params):
    model = create_method(NAME, SPECS, TASK, embed_dim=8, hidden=8, n_heads=2, **params)
    bank_x = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    bank_y = torch.tensor([[9.0, 9.0], [0.0, 0.0], [3.0, 3.0]])
    model.bank.fill({"x": bank_x, "y": bank_y}, torch.tensor([[1, 1], [1, 1], [1, 0]]).bool())
    return model


def test_retrieval_uses_only_the_modalities_the_sample_has():
    model = _tiny_model(k=3).eval()
    inputs = {
        "x": torch.tensor([[0.9, 0.9], [7.0, 7.0]]),
        "y": torch.tensor([[1e6, 1e6], [8.0, 8.0]]),
    }
    present = torch.tensor([[True, False], [False, True]])
    batch = MultimodalBatch(inputs, present, ("x", "y"), None)
    index, distance = model.retrieve(batch, present)
    assert index[0].tolist() == [1, 0, 2]  # by x only: the huge absent y is never read
    assert distance[0, :2].tolist() == pytest.approx([0.1, 0.9], abs=1e-3)
    # by y only: rows 0 and 1 at RMS distances 1 and 8; row 2 lacks y, so never qualifies
    assert index[1, :2].tolist() == [0, 1]
    assert distance[1, :2].tolist() == pytest.approx([1.0, 8.0], abs=1e-3)
    assert torch.isinf(distance[1, 2])


def test_a_sample_never_retrieves_itself_in_training():
    data = contract_dataset(n_samples=90)
    model = create_method(NAME, data.specs, data.task, k=3)
    batch = MultimodalBatch.from_dataset(data)
    model.bank.fill(batch.inputs, batch.present)
    rows = torch.arange(len(batch)).unsqueeze(1)
    model.eval()
    index, distance = model.retrieve(batch, batch.present)
    assert (index[:, 0] == rows[:, 0]).all() and (distance[:, 0] < 1e-3).all()  # itself, first
    model.train()
    index, _ = model.retrieve(batch, batch.present)
    assert not (index == rows).any()
    out = model(batch)  # and through the forward pass, with modality dropout
    assert not (out.extras["neighbours"] == rows).any()


def test_the_generator_fills_an_absent_modality_from_the_neighbours():
    model = _tiny_model(k=1).eval()
    inputs = {"x": torch.tensor([[0.9, 0.9]]), "y": torch.zeros(1, 2)}
    present = torch.tensor([[True, False]])
    out = model(MultimodalBatch(inputs, present, ("x", "y"), None))
    assert out.extras["neighbours"].tolist() == [[1]]
    neighbour = MultimodalBatch(
        {"x": torch.tensor([[1.0, 1.0]]), "y": torch.tensor([[0.0, 0.0]])},
        torch.tensor([[True, True]]),
        ("x", "y"),
        None,
    )
    token = model.adapters["y"](model.embed(neighbour, neighbour.present)["y"])
    expected = model.generators["y"](token) + model.modality_embedding[1]
    assert torch.allclose(out.extras["completed"][:, 1], expected, atol=1e-6)


def test_no_neighbour_with_the_modality_gives_the_missing_token():
    model = _tiny_model(k=1).eval()
    inputs = {"x": torch.tensor([[5.0, 5.0]]), "y": torch.zeros(1, 2)}
    out = model(MultimodalBatch(inputs, torch.tensor([[True, False]]), ("x", "y"), None))
    assert out.extras["neighbours"].tolist() == [[2]]  # the only neighbour lacks y
    expected = model.missing_token[1] + model.modality_embedding[1]
    assert torch.allclose(out.extras["completed"][0, 1], expected)


def test_bank_cap_subsamples_with_the_seed_and_warns():
    data = contract_dataset(n_samples=120)
    split = train_val_test_split(data, test_size=0.2, val_size=0.1, seed=0)
    banks = []
    for seed in (0, 0, 1):
        model = create_method(
            NAME, data.specs, data.task, bank_size=30, k=3, embed_dim=8, hidden=8, n_heads=2
        )
        with pytest.warns(UserWarning, match="more than bank_size=30"):
            trained = Trainer(max_epochs=1, seed=seed, progress=False).fit(model, split.train, None)
        assert len(model.bank) == 30
        banks.append(model.bank.row("a").clone())
    assert torch.equal(banks[0], banks[1]) and not torch.equal(banks[0], banks[2])
    # every bank row is a distinct standardised training row
    train_rows = trained.standardizer.transform(split.train).inputs["a"]
    kept = {tuple(r) for r in banks[2].numpy().tolist()}
    assert len(kept) == 30
    assert kept <= {tuple(r) for r in train_rows.astype(np.float32).tolist()}


def test_bank_is_saved_in_the_artifact(tmp_path):
    data = contract_dataset(n_samples=90)
    split = train_val_test_split(data, test_size=0.2, val_size=0.1, seed=0)
    model = create_method(NAME, data.specs, data.task, k=2)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, split.train, None)
    trained.save(tmp_path / "artifact")
    from mlmm.train.trained import TrainedModel

    loaded = TrainedModel.load(tmp_path / "artifact")
    assert len(loaded.model.bank) == len(model.bank) == split.train.n_samples
    assert torch.equal(loaded.model.bank.present, model.bank.present)


def test_bank_memory_and_bad_hyperparameters():
    data = contract_dataset()
    # 6 + 4 + 24 float32 values, 3 presence flags and the int64 steps of s per sample
    assert bank_memory_bytes(list(data.specs), 10_000) == 10_000 * (4 * 34 + 3 + 8)
    with pytest.raises(MlmmError, match=rf"bank_size must be in \[1, {MAX_BANK_SIZE}\]"):
        create_method(NAME, data.specs, data.task, bank_size=MAX_BANK_SIZE + 1)
    with pytest.raises(MlmmError, match="k must be"):
        create_method(NAME, data.specs, data.task, k=0)
    model = create_method(NAME, data.specs, data.task)
    assert not hasattr(model, "prompts")  # the static prompts of the parent are gone


def test_beats_chance_on_every_subset_of_small_synthetic_data():
    from mlmm.data.missingness import simulate
    from mlmm.eval.protocol import evaluate
    from mlmm.utils import rng_for

    data = contract_dataset(n_samples=240)
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    train, _ = simulate(split.train, "mcar:0.4", rng_for(0, "train-mask"))
    model = create_method(NAME, data.specs, data.task, **SMALL)
    trained = Trainer(max_epochs=15, batch_size=32, seed=0, progress=False).fit(model, train, None)
    table = evaluate(trained, split.test, "none", patterns=False)
    acc = table[(table.scope == "subset") & (table.metric == "accuracy")]
    assert len(acc) == 7  # every non-empty subset of 3 modalities, single ones included
    assert (acc.value > 1 / 3 + 0.25).all(), acc[["subset", "value"]].to_string()


# ---------------------------------------------------------------- variable-length sequences
_varlen_data = padded_sequence_dataset  # 40 samples, `s` of 1 to 8 valid steps


def _varlen_trained(data):
    model = create_method(NAME, data.specs, data.task, embed_dim=8, hidden=8, n_heads=2, k=3)
    return Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)


def _query_tokens(model, batch):
    embeddings = model.embed(batch, batch.present)
    return torch.stack([model.adapters[m](embeddings[m]) for m in model.modalities], dim=1)


def test_a_neighbour_is_encoded_as_the_same_sample_is_as_a_query():
    data = _varlen_data()
    trained = _varlen_trained(data)
    model = trained.model.eval()
    batch = MultimodalBatch.from_dataset(trained.standardizer.transform(data))
    rows = torch.arange(len(batch)).unsqueeze(1)  # [N, 1]: each sample's own bank row
    with torch.no_grad():
        context, context_present = model.neighbour_tokens(rows, torch.ones_like(rows, dtype=bool))
        own = _query_tokens(model, batch)  # [N, M, D]
    assert torch.equal(context_present[:, 0], batch.present)
    assert torch.allclose(context[:, 0], own, atol=1e-5)
    assert torch.equal(model.bank_lengths.s, torch.from_numpy(data.lengths["s"]))


def test_the_bank_holds_zeros_in_padding_and_garbage_there_changes_nothing():
    clean, noisy = _varlen_trained(_varlen_data()), _varlen_trained(_varlen_data(garbage=True))
    steps = torch.from_numpy(_varlen_data().lengths["s"])  # [N]
    padded = torch.arange(8)[None, :] >= steps[:, None]  # [N, T]
    rows = noisy.model.bank.row("s").reshape(-1, 8, 2)  # [N, T, C]
    # zeros, as the query's zero_padding (the dataset and the standardizer zero the padding of
    # the training rows, and fill_bank zeroes it again)
    assert padded.any() and (rows[padded] == 0).all()
    assert torch.equal(noisy.model.bank.row("s"), clean.model.bank.row("s"))
    test = _varlen_data(garbage=True)  # garbage in the queries' padding too
    np.testing.assert_allclose(
        noisy.predict_raw(test), clean.predict_raw(_varlen_data()), atol=1e-6
    )

    # each training sample retrieves its own bank row first, at distance ~0
    model = clean.model.eval()
    batch = MultimodalBatch.from_dataset(clean.standardizer.transform(test))
    index, distance = model.retrieve(batch, batch.present)
    assert torch.equal(index[:, 0], torch.arange(len(batch))) and (distance[:, 0] < 1e-3).all()

    # the neighbours' encoding reads only their valid steps, whatever the padding holds
    chosen = torch.arange(len(batch)).unsqueeze(1)
    valid = torch.ones_like(chosen, dtype=torch.bool)
    with torch.no_grad():
        before, _ = model.neighbour_tokens(chosen, valid)
        model.bank.row("s").view(-1, 8, 2)[padded] = -5e2
        after, _ = model.neighbour_tokens(chosen, valid)
    assert torch.equal(before, after)


def test_the_bank_lengths_are_saved_in_the_artifact(tmp_path):
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    from mlmm.train.checkpoint import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE
    from mlmm.train.trained import TrainedModel

    data = _varlen_data()
    trained = _varlen_trained(data)
    path = trained.save(tmp_path / "artifact")
    loaded = TrainedModel.load(path)
    assert torch.equal(loaded.model.bank_lengths.s, trained.model.bank_lengths.s)
    np.testing.assert_allclose(loaded.predict_raw(data), trained.predict_raw(data), atol=1e-6)

    # an artifact written before the bank kept lengths (its neighbours encoded without them)
    # loads with empty bank lengths and predicts as the model did then
    old_code = trained.model
    old_code.bank_lengths.register_buffer("s", torch.zeros(0, dtype=torch.int64))
    then = trained.predict_raw(data)
    weights = load_file(path / WEIGHTS_FILE)
    del weights["bank_lengths.s"]
    save_file(weights, path / WEIGHTS_FILE)
    digest = hashlib.sha256((path / WEIGHTS_FILE).read_bytes()).hexdigest()
    config = json.loads((path / CONFIG_FILE).read_text())
    config["weights_sha256"] = digest
    (path / CONFIG_FILE).write_text(json.dumps(config))
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["sha256"][WEIGHTS_FILE] = digest
    manifest["sha256"][CONFIG_FILE] = hashlib.sha256((path / CONFIG_FILE).read_bytes()).hexdigest()
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    upgraded = TrainedModel.load(path)
    assert upgraded.model.bank_lengths.s.shape == (0,)
    np.testing.assert_array_equal(upgraded.predict_raw(data), then)
    assert not np.allclose(then, loaded.predict_raw(data), atol=1e-6)  # the lengths matter


def test_fixed_length_sequences_keep_no_bank_lengths():
    data = contract_dataset(n_samples=60)  # "s" is a fixed-length sequence
    model = create_method(NAME, data.specs, data.task, embed_dim=8, hidden=8, n_heads=2, k=2)
    Trainer(max_epochs=1, seed=0, progress=False).fit(model, data, None)
    assert len(model.bank) == 60 and model.bank_lengths.s.shape == (0,)  # every step is real


def test_a_bank_refilled_without_its_lengths_is_refused():
    data = _varlen_data()
    trained = _varlen_trained(data)
    batch = MultimodalBatch.from_dataset(trained.standardizer.transform(data))
    model = trained.model.eval()
    model.bank.fill(batch.rows(torch.arange(5)).inputs, batch.present[:5])
    with pytest.raises(MlmmError, match="40 lengths of 's'; fill it with fill_bank"):
        model(batch)
    first = batch.rows(torch.arange(5))
    first.inputs["s"] = first.inputs["s"].clone().fill_(7.0)  # garbage in the padding too
    model.fill_bank(first)
    assert model(batch).extras["neighbours"].max() < 5
    padded = torch.arange(8)[None, :] >= first.lengths["s"][:, None]  # [5, T]
    rows = model.bank.row("s").reshape(5, 8, 2)
    assert padded.any() and (rows[padded] == 0).all() and (rows[~padded] == 7.0).all()
