"""Variable-length sequences: padded steps never change an encoder's or a method's output."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.preprocessing import Standardizer
from mlmm.errors import MlmmError
from mlmm.methods import METHODS, create_method
from mlmm.nn import SequenceEncoder
from mlmm.testing import contract_dataset
from mlmm.train.trainer import Trainer

LENGTHS = torch.tensor([8, 5, 3, 1])


def _padded(x: torch.Tensor, steps: int, noise: bool) -> torch.Tensor:
    """``x`` ``[B, T, C]`` cut to each row's length and padded to ``steps`` (noise or zeros)."""
    out = torch.randn(x.shape[0], steps, x.shape[2]) * 5 if noise else torch.zeros(
        x.shape[0], steps, x.shape[2]
    )  # fmt: skip
    for i, n in enumerate(LENGTHS.tolist()):
        out[i, :n] = x[i, :n]
    return out


@pytest.mark.parametrize("architecture", ["conv", "gru"])
def test_extra_padding_of_any_content_gives_the_same_embedding(architecture):
    torch.manual_seed(0)
    encoder = SequenceEncoder(3, 7, hidden=16, depth=2, architecture=architecture).eval()
    x = torch.randn(4, 8, 3)
    with torch.no_grad():
        short = encoder(_padded(x, 8, noise=False), LENGTHS)
        long_noisy = encoder(_padded(x, 20, noise=True), LENGTHS)
        # each row alone, cut to its own length, through the plain (no lengths) path
        alone = torch.cat([encoder(x[i : i + 1, :n]) for i, n in enumerate(LENGTHS.tolist())])
    torch.testing.assert_close(long_noisy, short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("architecture", ["conv", "gru"])
def test_full_lengths_equal_the_plain_path(architecture):
    torch.manual_seed(1)
    encoder = SequenceEncoder(2, 5, hidden=16, architecture=architecture).eval()
    x = torch.randn(3, 6, 2)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(x, torch.full((3,), 6)), encoder(x), atol=1e-5, rtol=1e-5
        )


def _variable_length(n: int = 64) -> MultimodalDataset:
    data = contract_dataset(n_samples=n)
    lengths = np.random.default_rng(0).integers(4, 13, size=n)
    return replace(data, lengths={"s": lengths})


def test_dataset_zeroes_padding_validates_lengths_and_subset_keeps_them():
    data = _variable_length()
    steps = data.lengths["s"]
    padded = np.arange(12)[None, :] >= steps[:, None]
    assert (data.inputs["s"][padded] == 0).all() and (data.inputs["s"][~padded] != 0).any()
    np.testing.assert_array_equal(data.subset([3, 1]).lengths["s"], steps[[3, 1]])
    with pytest.raises(MlmmError, match=r"must be in \[0, 12\]"):
        replace(data, lengths={"s": np.full(64, 13)})
    with pytest.raises(MlmmError, match="lengths are for sequence modalities"):
        replace(data, lengths={"a": np.full(64, 3)})
    with pytest.raises(MlmmError, match="is 0 in 64 row"):
        replace(data, lengths={"s": np.zeros(64, dtype=int)})
    # standardisation statistics come from the valid steps only
    stats = Standardizer().fit(data)
    valid = data.inputs["s"][~padded]  # [n_valid, C]
    np.testing.assert_allclose(stats.mean_["s"][0], valid.mean(axis=0), rtol=1e-5, atol=1e-6)


# every method that learns a model on sequences through encoders; the reference family
# (scikit-learn on flattened features) sees the zeros every dataset holds in padded steps
METHODS_WITH_ENCODERS = [e.name for e in METHODS if e.info.get("family") != "reference"]


@pytest.mark.parametrize("name", METHODS_WITH_ENCODERS)
def test_padding_content_never_changes_a_methods_prediction(name):
    data = _variable_length()
    model = create_method(name, data.specs, data.task)
    trained = Trainer(max_epochs=1, batch_size=32, seed=0, progress=False).fit(model, data)
    module = trained.model.eval()
    scaled = trained.standardizer.transform(data) if trained.standardizer else data
    batch = MultimodalBatch.from_dataset(scaled, with_target=False)
    steps = torch.from_numpy(data.lengths["s"])
    noisy_inputs = dict(batch.inputs)
    padded = torch.arange(12)[None, :] >= steps[:, None]  # [B, T]
    noise = torch.randn(batch.inputs["s"].shape, generator=torch.Generator().manual_seed(0))
    noisy_inputs["s"] = torch.where(padded[..., None], 10 * noise, batch.inputs["s"])
    noisy = replace(batch, inputs=noisy_inputs)
    with torch.no_grad():
        torch.testing.assert_close(
            module(noisy).prediction, module(batch).prediction, atol=1e-4, rtol=1e-4
        )
