"""What mvae and mopoe share: imputation, absent rows in the ELBO, validation, learning to impute."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import simulate
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.eval import imputation_scores
from mlmm.nn.multimodal_vae import product_of_experts
from mlmm.testing import contract_dataset
from mlmm.utils import rng_for

METHODS = ["mvae", "mopoe"]
PRESENT = np.array([[True, False, True], [False, True, False], [True, True, True]])


def masked_batch(garbage: float | None = None) -> mlmm.MultimodalBatch:
    """Contract data with a fixed presence pattern; absent rows hold ``garbage`` if given."""
    data = contract_dataset()
    present = PRESENT[np.arange(data.n_samples) % 3]
    batch = mlmm.MultimodalBatch.from_dataset(data.with_presence(present))
    if garbage is None:
        return batch
    inputs = {}
    for j, name in enumerate(batch.modalities):
        x = batch.inputs[name].clone()
        x[~batch.present[:, j]] = garbage
        inputs[name] = x
    return mlmm.MultimodalBatch(inputs, batch.present, batch.modalities, batch.target)


@pytest.mark.parametrize("name", METHODS)
def test_impute_keeps_present_rows_and_decodes_absent_ones(name):
    data = contract_dataset()
    torch.manual_seed(0)
    model = mlmm.create_method(name, data.specs, data.task).eval()
    batch = masked_batch()
    filled = model.impute(batch)
    assert set(filled) == set(batch.modalities)
    mu, logvar = model.vae.encode(batch.inputs, batch.present)
    decoded = model.vae.decode(product_of_experts(mu, logvar, batch.present)[0])
    for j, modality in enumerate(batch.modalities):
        here = batch.present[:, j]
        assert filled[modality].shape == batch.inputs[modality].shape
        assert torch.equal(filled[modality][here], batch.inputs[modality][here])
        expected = decoded[modality][~here].reshape(filled[modality][~here].shape)
        assert torch.allclose(filled[modality][~here], expected, atol=1e-6)
    # absent rows are never read
    again = model.impute(masked_batch(garbage=1e4))
    for modality in batch.modalities:
        assert torch.allclose(again[modality], filled[modality], atol=1e-5)


@pytest.mark.parametrize("name", METHODS)
def test_elbo_ignores_absent_rows_and_is_added_to_the_training_loss(name):
    data = contract_dataset()
    torch.manual_seed(0)
    model = mlmm.create_method(name, data.specs, data.task).train()
    outs = []
    for garbage in (None, 1e4):
        torch.manual_seed(1)  # same modality dropout, subsets and latent samples
        outs.append(model(masked_batch(garbage)))
    clean, noisy = outs
    assert set(clean.aux_losses) == {"reconstruction", "kl"}
    for key in clean.aux_losses:
        assert clean.aux_losses[key] > 0
        assert torch.allclose(clean.aux_losses[key], noisy.aux_losses[key])
    task = model.task_loss(clean.prediction, masked_batch().target)
    assert torch.allclose(clean.loss, task + sum(clean.aux_losses.values()))
    model.eval()
    assert model(masked_batch()).aux_losses == {}  # no sampling at prediction time


def shared_latent_dataset(n: int = 480, seed: int = 0) -> MultimodalDataset:
    """Three vector modalities, each a noisy linear view of one 2-D latent: any one of them
    determines the others, so good imputation is possible and mean filling is not."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    inputs = {}
    for modality, width in (("a", 8), ("b", 6), ("c", 5)):
        inputs[modality] = z @ rng.normal(size=(2, width)) + 0.1 * rng.normal(size=(n, width))
    specs = [ModalitySpec(k, "vector", (v.shape[1],)) for k, v in inputs.items()]
    target = (z[:, 0] > 0).astype(int)
    return MultimodalDataset(specs, TaskSpec("classification", 2), inputs, target, name="shared")


@pytest.mark.parametrize("name", METHODS)
def test_imputation_error_falls_during_training(name):
    data = shared_latent_dataset()
    split = mlmm.train_val_test_split(data, test_size=0.25, val_size=0.1, seed=0)
    train, _ = simulate(split.train, "mcar:0.3", rng_for(0, "train-mask"))
    nrmse = {}
    for epochs in (1, 25):
        trainer = mlmm.Trainer(max_epochs=epochs, batch_size=32, seed=0, progress=False)
        trained = trainer.fit(mlmm.create_method(name, data.specs, data.task), train)
        table = imputation_scores(trained, split.test, "mcar:0.5", seed=0)
        nrmse[epochs] = table[table.metric == "nrmse"].value.mean()
    # mean filling scores about 1 in standardised units; one epoch is still close to it
    assert nrmse[1] > 0.8
    assert nrmse[25] < 0.7 and nrmse[25] < 0.75 * nrmse[1], nrmse


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize(
    "param, value",
    [
        ("latent_dim", 0),
        ("latent_dim", -3),
        ("latent_dim", 2.5),
        ("hidden", 0),
        ("depth", -1),
        ("dropout", 1.0),
        ("beta", -0.1),
        ("elbo_weight", 0.0),
        ("modality_dropout", 1.0),
    ],
)
def test_invalid_hyperparameters_are_refused(name, param, value):
    data = contract_dataset()
    with pytest.raises(MlmmError, match=param):
        mlmm.create_method(name, data.specs, data.task, **{param: value})


def padded_batch(noise: float) -> mlmm.MultimodalBatch:
    """:func:`masked_batch` with variable-length ``s`` (2 to 12 steps); ``noise`` in the padding."""
    batch = masked_batch()
    steps = torch.arange(batch.inputs["s"].shape[0]) % 11 + 2  # [B]
    padded = torch.arange(12)[None, :] >= steps[:, None]  # [B, T]
    fill = noise * torch.randn(batch.inputs["s"].shape, generator=torch.Generator().manual_seed(0))
    inputs = dict(batch.inputs, s=torch.where(padded[..., None], fill, batch.inputs["s"]))
    return mlmm.MultimodalBatch(inputs, batch.present, batch.modalities, batch.target, {"s": steps})


@pytest.mark.parametrize("name", METHODS)
def test_padding_is_neither_encoded_nor_reconstructed_by_the_elbo_or_impute(name):
    data = contract_dataset()
    torch.manual_seed(0)
    model = mlmm.create_method(name, data.specs, data.task).train()
    losses = []
    for noise in (0.0, 10.0):
        torch.manual_seed(1)  # same modality dropout, subsets and latent samples
        losses.append(model(padded_batch(noise)).aux_losses)
    for key in ("reconstruction", "kl"):
        assert torch.allclose(losses[0][key], losses[1][key])
    model.eval()
    clean, noisy = model.impute(padded_batch(0.0)), model.impute(padded_batch(10.0))
    # rows whose "b" is generated, from a and s (a row without "a" has no "s" either: a
    # generated "a" never reads the padding, so comparing it could not fail)
    present = padded_batch(0.0).present
    absent = ~present[:, 1]
    assert bool(present[absent, 2].all())
    assert torch.allclose(clean["b"][absent], noisy["b"][absent], atol=1e-5)
    assert "padded" in model.changes_since(1)[0]  # weights saved before warn on load


@pytest.mark.parametrize("name", METHODS)
def test_weights_from_before_revision_2_warn_only_with_a_sequence_modality(name):
    """Was: every mvae/mopoe artifact from before revision 2 warned that it answers
    differently, though only impute() on variable-length sequences does."""
    from mlmm.train.artifact_schema import outdated_revisions

    with_sequence = contract_dataset()
    vectors = mlmm.load_dataset("synthetic", n_samples=20)
    assert {s.kind for s in vectors.specs} == {"vector"} and "sequence" in {
        s.kind for s in with_sequence.specs
    }
    model = mlmm.create_method(name, with_sequence.specs, with_sequence.task)
    message = outdated_revisions(model, {}, "old")  # an artifact without revisions: at 1
    assert message is not None and "\n" not in message and "impute()" in message
    model = mlmm.create_method(name, vectors.specs, vectors.task)
    assert outdated_revisions(model, {}, "old") is None
