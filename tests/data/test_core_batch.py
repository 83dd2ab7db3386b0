"""MultimodalBatch: building from a dataset, narrowing presence, collate, slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mlmm.data.batch import MultimodalBatch, TorchMultimodalDataset, collate, iterate_batches
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec

CLF = TaskSpec("classification", 2)
OBSERVED = np.array([[1, 1], [0, 1], [1, 0], [1, 1], [1, 1], [0, 1], [1, 1]], dtype=bool)


def dataset(task: TaskSpec = CLF) -> MultimodalDataset:
    n = len(OBSERVED)
    targets = np.arange(n) % 2 if task.is_classification else np.linspace(-1.0, 1.0, n)
    return MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (3,)), ModalitySpec("img", "image", (1, 2, 2))],
        task=task,
        inputs={
            "a": np.arange(n * 3, dtype=float).reshape(n, 3) + 1,
            "img": np.arange(n * 4, dtype=float).reshape(n, 1, 2, 2) + 1,
        },
        targets=targets,
        observed=OBSERVED,
    )


def assert_batches_equal(x: MultimodalBatch, y: MultimodalBatch) -> None:
    assert x.modalities == y.modalities
    assert set(x.inputs) == set(y.inputs)
    for k in x.inputs:
        assert x.inputs[k].dtype == y.inputs[k].dtype
        assert torch.equal(x.inputs[k], y.inputs[k]), k
    assert torch.equal(x.present, y.present)
    assert x.target.dtype == y.target.dtype
    assert torch.equal(x.target, y.target)


def test_from_dataset_copies_values_mask_and_target():
    ds = dataset()
    batch = MultimodalBatch.from_dataset(ds)
    assert len(batch) == batch.batch_size == 7
    assert batch.modalities == ("a", "img")
    assert batch.present.dtype == torch.bool
    np.testing.assert_array_equal(batch.present.numpy(), OBSERVED)
    assert batch.inputs["img"].shape == (7, 1, 2, 2) and batch.inputs["a"].dtype == torch.float32
    assert (batch.inputs["a"][1] == 0).all() and (batch.inputs["img"][2] == 0).all()
    assert torch.equal(batch.inputs["a"][0], torch.tensor([1.0, 2.0, 3.0]))
    assert batch.target.dtype == torch.int64
    assert batch.target.tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_from_dataset_with_indices_and_without_target():
    ds = dataset()
    batch = MultimodalBatch.from_dataset(ds, [4, 1], with_target=False)
    assert batch.target is None
    assert batch.present.tolist() == [[True, True], [False, True]]
    assert torch.equal(batch.inputs["a"][0], torch.from_numpy(ds.inputs["a"][4]))


def test_with_present_zeroes_newly_absent_rows_only():
    batch = MultimodalBatch.from_dataset(dataset())
    narrower = batch.present.clone()
    narrower[0, 1] = False  # hide img in row 0
    narrower[3, 0] = False  # hide a in row 3
    out = batch.with_present(narrower)
    assert torch.equal(out.present, narrower)
    assert (out.inputs["img"][0] == 0).all() and (out.inputs["a"][3] == 0).all()
    assert torch.equal(out.inputs["a"][0], batch.inputs["a"][0])
    assert torch.equal(out.inputs["img"][3], batch.inputs["img"][3])
    assert torch.equal(out.target, batch.target)
    assert (batch.inputs["img"][0] != 0).all(), "the original batch must not change"


def test_to_moves_every_tensor():
    batch = MultimodalBatch.from_dataset(dataset()).to("cpu")
    assert batch.present.device.type == "cpu" and batch.target.device.type == "cpu"
    assert MultimodalBatch.from_dataset(dataset(), with_target=False).to("cpu").target is None


@pytest.mark.parametrize(
    "task", [TaskSpec("classification", 2), TaskSpec("regression")], ids=["clf", "reg"]
)
def test_collate_with_a_dataloader_equals_from_dataset(task):
    ds = dataset(task)
    loader = DataLoader(TorchMultimodalDataset(ds), batch_size=3, collate_fn=collate)
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert_batches_equal(batches[1], MultimodalBatch.from_dataset(ds, [3, 4, 5]))
    assert_batches_equal(batches[2], MultimodalBatch.from_dataset(ds, [6]))


def test_torch_dataset_items():
    torch_ds = TorchMultimodalDataset(dataset())
    assert len(torch_ds) == 7 and torch_ds.modalities == ("a", "img")
    inputs, present, target = torch_ds[1]
    assert present.tolist() == [False, True] and int(target) == 1
    assert inputs["a"].shape == (3,) and (inputs["a"] == 0).all()


def tagged_batch(n: int = 7) -> MultimodalBatch:
    """Row i holds i in its input and i in its target; presence alternates."""
    rows = torch.arange(n)
    return MultimodalBatch(
        inputs={"x": rows.float()[:, None].repeat(1, 2)},
        present=(rows % 2 == 0)[:, None],
        modalities=("x",),
        target=rows,
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_batches_covers_every_row_once_and_keeps_rows_aligned(shuffle):
    whole = tagged_batch()
    gen = torch.Generator().manual_seed(0)
    parts = list(iterate_batches(whole, 3, shuffle=shuffle, generator=gen))
    assert [len(p) for p in parts] == [3, 3, 1]
    seen = torch.cat([p.target for p in parts])
    assert sorted(seen.tolist()) == list(range(7))
    for p in parts:
        assert torch.equal(p.inputs["x"][:, 0].long(), p.target)
        assert torch.equal(p.present[:, 0], p.target % 2 == 0)
    if not shuffle:
        assert seen.tolist() == list(range(7))


def test_iterate_batches_passes_a_missing_target_through():
    whole = tagged_batch()
    whole.target = None
    assert all(p.target is None for p in iterate_batches(whole, 4))


def test_seeded_shuffle_is_reproducible_and_seed_dependent():
    whole = tagged_batch(20)

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([p.target for p in iterate_batches(whole, 6, True, gen)]).tolist()

    assert order(5) == order(5)
    assert order(5) != list(range(20))
    assert order(5) != order(6)
