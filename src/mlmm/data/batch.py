"""``MultimodalBatch``: zero-filled tensors plus a boolean presence mask, and how to make them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mlmm.data.dataset import MultimodalDataset


@dataclass
class MultimodalBatch:
    """A mini-batch: every modality has a tensor (zero where absent) so shapes are static.

    Attributes
    ----------
    inputs : dict of str to Tensor
        ``inputs[name]`` is ``[B, *shape]``; rows where the modality is absent are zero.
    present : Tensor of bool, shape [B, M]
        True = observed; columns follow ``modalities``. The only truth about presence.
    modalities : tuple of str
        The fixed modality order.
    target : Tensor or None
        ``[B]`` int64 class labels or float32 values; None at prediction time.
    lengths : dict of str to Tensor, optional
        Variable-length sequence modalities: ``[B]`` int64 valid steps per row (the rest of
        ``inputs[name]`` is padding, which encoders ignore: :func:`mlmm.nn.encode_modality`).
    """

    inputs: dict[str, torch.Tensor]
    present: torch.Tensor
    modalities: tuple[str, ...]
    target: torch.Tensor | None = None
    lengths: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])

    @property
    def batch_size(self) -> int:
        return len(self)

    def to(self, device: torch.device | str) -> MultimodalBatch:
        """Move every tensor to ``device``."""
        return MultimodalBatch(
            inputs={k: v.to(device) for k, v in self.inputs.items()},
            present=self.present.to(device),
            modalities=self.modalities,
            target=None if self.target is None else self.target.to(device),
            lengths=None
            if self.lengths is None
            else {k: v.to(device) for k, v in self.lengths.items()},
        )

    def rows(self, idx: torch.Tensor) -> MultimodalBatch:
        """The batch restricted to rows ``idx`` (indices or a boolean mask), every field kept."""
        return MultimodalBatch(
            inputs={k: v[idx] for k, v in self.inputs.items()},
            present=self.present[idx],
            modalities=self.modalities,
            target=None if self.target is None else self.target[idx],
            lengths=None if self.lengths is None else {k: v[idx] for k, v in self.lengths.items()},
        )

    def without_target(self) -> MultimodalBatch:
        """The same batch with no target (prediction time)."""
        return MultimodalBatch(self.inputs, self.present, self.modalities, None, self.lengths)

    def zero_padding(self) -> MultimodalBatch:
        """The same batch with the padded steps of variable-length sequences set to zero, as
        every dataset stores them: for code that reads raw inputs rather than encoding them
        (distances between samples, flattened features)."""
        if self.lengths is None:
            return self
        inputs = dict(self.inputs)
        for name, steps in self.lengths.items():
            x = inputs[name]  # [B, T, C]
            padded = torch.arange(x.shape[1], device=x.device)[None, :] >= steps[:, None]
            inputs[name] = x.masked_fill(padded[..., None], 0.0)
        return MultimodalBatch(inputs, self.present, self.modalities, self.target, self.lengths)

    def with_present(self, present: torch.Tensor) -> MultimodalBatch:
        """Same batch with a narrower presence mask; newly absent rows are zeroed."""
        inputs = {}
        for j, name in enumerate(self.modalities):
            keep = present[:, j].reshape(-1, *([1] * (self.inputs[name].dim() - 1)))
            inputs[name] = torch.where(keep, self.inputs[name], torch.zeros_like(self.inputs[name]))
        return MultimodalBatch(inputs, present, self.modalities, self.target, self.lengths)

    @classmethod
    def from_dataset(
        cls,
        dataset: MultimodalDataset,
        indices: Sequence[int] | np.ndarray | None = None,
        with_target: bool = True,
    ) -> MultimodalBatch:
        """Build one batch from rows of a dataset (all rows by default)."""
        idx = slice(None) if indices is None else np.asarray(indices)
        return cls(
            inputs={
                k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in dataset.inputs.items()
            },
            present=torch.from_numpy(np.ascontiguousarray(dataset.observed[idx])),
            modalities=dataset.modality_names,
            target=_target_tensor(dataset.targets[idx]) if with_target else None,
            lengths=None
            if dataset.lengths is None
            else {k: torch.from_numpy(v[idx]) for k, v in dataset.lengths.items()},
        )


def _target_tensor(targets: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(targets))


class TorchMultimodalDataset(Dataset):
    """A ``torch.utils.data.Dataset`` over a :class:`MultimodalDataset`; use with :func:`collate`.

    Each item is ``(inputs: dict[name, Tensor], present: Tensor[M], target: Tensor)``, plus
    ``lengths: dict[name, Tensor]`` (valid steps) when the dataset has variable-length sequences.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> loader = DataLoader(TorchMultimodalDataset(ds), batch_size=32, collate_fn=collate)  # doctest: +SKIP
    """

    def __init__(self, dataset: MultimodalDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return self.dataset.n_samples

    def __getitem__(self, i: int):
        ds = self.dataset
        inputs = {k: torch.from_numpy(v[i]) for k, v in ds.inputs.items()}
        item = inputs, torch.from_numpy(ds.observed[i]), torch.as_tensor(ds.targets[i])
        if ds.lengths is None:
            return item
        return (*item, {k: torch.as_tensor(v[i]) for k, v in ds.lengths.items()})

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.dataset.modality_names


def collate(
    items: Sequence[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]],
) -> MultimodalBatch:
    """Stack items of :class:`TorchMultimodalDataset` into a :class:`MultimodalBatch`.

    Modality order is the key order of the first item's inputs (the dataset's order).
    """
    names = tuple(items[0][0].keys())
    lengths = None
    if len(items[0]) > 3:  # variable-length sequences
        lengths = {k: torch.stack([it[3][k] for it in items]) for k in items[0][3]}
    return MultimodalBatch(
        inputs={k: torch.stack([it[0][k] for it in items]) for k in names},
        present=torch.stack([it[1] for it in items]),
        modalities=names,
        target=torch.stack([it[2] for it in items]),
        lengths=lengths,
    )


def iterate_batches(
    batch: MultimodalBatch,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[MultimodalBatch]:
    """Slice a whole-dataset batch into mini-batches (fast path used by the trainer).

    Tabular datasets fit in memory; slicing pre-built tensors avoids a per-item collate.
    ``batch`` may also be the :class:`~mlmm.data.lazy.StreamedBatches` of an out-of-core
    dataset: its mini-batches are then read through a DataLoader, in the same order.
    """
    if not isinstance(batch, MultimodalBatch):
        yield from batch.iterate(batch_size, shuffle=shuffle, generator=generator)
        return
    n = len(batch)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield batch.rows(order[start : start + batch_size])
