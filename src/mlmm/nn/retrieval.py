"""Retrieval from a bank of training samples that have missing modalities: masked k-NN.

A :class:`SampleBank` keeps training samples as buffers (so they are saved with a model's
weights); :func:`overlap_distances` measures query-to-bank distances on the modalities both
sides have present, and :func:`knn_average` averages the nearest qualifying bank rows. Absent
rows, on either side, are never read: they are replaced by zeros with ``torch.where`` before
any arithmetic, and a pair that shares no present modality is at distance ``inf`` (never a
neighbour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError

if TYPE_CHECKING:
    from mlmm.data.batch import MultimodalBatch


class ResizableBuffers(nn.Module):
    """A module whose buffers take the number of rows of the state dict they load from.

    Buffers that hold data (a bank of training samples) have a first axis that depends on the
    data, not on the constructor; a freshly built module starts with zero rows. Loading resizes
    such a buffer when only its first axis differs, so a state dict (or artifact) saved after
    training loads into a new instance. Any other shape difference is left for
    :meth:`torch.nn.Module.load_state_dict` to report.
    """

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        for name, buffer in self._buffers.items():
            stored = state_dict.get(prefix + name)
            if (
                buffer is not None
                and isinstance(stored, torch.Tensor)
                and stored.dim() == buffer.dim() >= 1
                and stored.shape[1:] == buffer.shape[1:]
                and stored.shape[0] != buffer.shape[0]
            ):
                self._buffers[name] = torch.empty(
                    stored.shape, dtype=buffer.dtype, device=buffer.device
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )


class BankLengths(ResizableBuffers):
    """The valid steps of each bank sample: one int64 buffer ``<name>`` of shape ``[N]`` per
    ``sequence`` modality, filled when the bank's data have variable lengths for it and empty
    (``[0]``: every step is real) otherwise. It sits beside a :class:`SampleBank` whose rows
    hold zeros in the padding, or holds one length ``[1]`` per modality, a bank of one
    imputed sequence (``mean-impute``'s ``train_length``).

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities; a buffer for each ``sequence`` one.
    owner : str
        The method that keeps the bank, for errors.
    fill_with : str
        The method's call that fills bank and lengths together, for errors.
    """

    def __init__(self, specs: Sequence[ModalitySpec], owner: str, fill_with: str) -> None:
        super().__init__()
        self.owner, self.fill_with = owner, fill_with
        for spec in specs:
            if spec.kind == "sequence":
                self.register_buffer(spec.name, torch.zeros(0, dtype=torch.int64))

    def fill(self, lengths: Mapping[str, torch.Tensor] | None) -> None:
        """Store ``lengths`` (modality -> ``[N]`` valid steps; ``None`` or a missing name:
        fixed-length data, stored empty)."""
        for name, old in list(self.named_buffers()):
            steps = None if lengths is None else lengths.get(name)
            stored = torch.zeros(0, dtype=torch.int64) if steps is None else torch.as_tensor(steps)
            self.register_buffer(name, stored.to(device=old.device, dtype=torch.int64))

    def stored(self, name: str, n_bank: int) -> torch.Tensor | None:
        """``name``'s valid steps ``[N]``, or ``None`` for fixed-length data; refused in one
        line when they do not number ``n_bank`` (the bank was refilled without them)."""
        steps = self.get_buffer(name)
        if len(steps) == 0:
            return None
        if len(steps) != n_bank:
            raise MlmmError(
                f"{self.owner}: the bank holds {n_bank} samples but {len(steps)} lengths of "
                f"{name!r}; fill it with {self.fill_with}, not bank.fill"
            )
        return steps

    def lookup(self, n_bank: int, rows: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The valid steps of bank ``rows`` (all rows by default) per variable-length modality;
        empty for fixed-length data."""
        found = {}
        for name, _ in self.named_buffers():
            steps = self.stored(name, n_bank)
            if steps is not None:
                found[name] = steps if rows is None else steps[rows]
        return found

    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Weights saved before the bank kept lengths: empty buffers (the bank read as
        fixed-length, as it was then). ``prefix``: these buffers' key prefix in ``state``."""
        for name, _ in self.named_buffers():
            state.setdefault(f"{prefix}{name}", torch.zeros(0, dtype=torch.int64))


class SampleBank(ResizableBuffers):
    """Training samples as buffers: flattened rows per modality and their presence mask.

    Parameters
    ----------
    specs : sequence of ModalitySpec
        The modalities, in the fixed order of the presence columns.

    Attributes
    ----------
    present : Tensor of bool, shape [N, M]
        Which modalities each stored sample has.
    rows : nn.Module
        One buffer per modality, ``rows.<name>`` of shape ``[N, D_m]`` (the sample flattened),
        zero where the modality is absent.

    Notes
    -----
    A new bank has ``N = 0`` rows: every query then finds no neighbour. Fill it with
    :meth:`fill`; loading a state dict resizes it (:class:`ResizableBuffers`).
    """

    def __init__(self, specs: Sequence[ModalitySpec]) -> None:
        super().__init__()
        self.modalities = tuple(s.name for s in specs)
        self.widths = {s.name: math.prod(s.shape) for s in specs}
        self.register_buffer("present", torch.zeros(0, len(self.modalities), dtype=torch.bool))
        self.rows = ResizableBuffers()
        for name in self.modalities:
            self.rows.register_buffer(name, torch.zeros(0, self.widths[name]))

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def row(self, name: str) -> torch.Tensor:
        """The stored ``[N, D]`` rows of modality ``name`` (zero where absent)."""
        return self.rows.get_buffer(name)

    @torch.no_grad()
    def fill(self, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> None:
        """Replace the bank's content with ``inputs`` (``name -> [N, *shape]``) and ``present``
        (``[N, M]`` bool); absent rows are stored as zeros, whatever they held."""
        if present.dim() != 2 or present.shape[1] != len(self.modalities):
            raise MlmmError(
                f"present must be [N, {len(self.modalities)}], got {list(present.shape)}"
            )
        device = self.present.device
        present = present.to(device=device, dtype=torch.bool)
        n = present.shape[0]
        for j, name in enumerate(self.modalities):
            x = inputs[name].to(device=device, dtype=torch.float32).reshape(n, -1)  # [N, D]
            if x.shape[1] != self.widths[name]:
                raise MlmmError(
                    f"modality {name!r} has {x.shape[1]} values per sample, expected "
                    f"{self.widths[name]}"
                )
            self.rows.register_buffer(name, torch.where(present[:, j : j + 1], x, 0.0))
        self.present = present.clone()


def overlap_distances(
    inputs: Mapping[str, torch.Tensor], present: torch.Tensor, bank: SampleBank
) -> torch.Tensor:
    """Distance from each query to each bank sample on the modalities both have present.

    For query ``q`` and bank sample ``n`` sharing the present modalities ``O``,
    ``d(q, n) = sqrt(mean over m in O of ||x_qm - x_nm||^2 / D_m)``: the root-mean-square
    per-feature difference, with every shared modality weighted equally whatever its width, so
    distances over different overlaps are on one scale. Pairs with no shared modality are at
    ``inf``.

    Computed for all pairs by the expansion ``|q|^2 + |n|^2 - 2 q.n`` (one matrix product per
    modality): fast, but off by about ``1e-7`` times the squared norms, so identical samples
    are not exactly at 0. Use it to rank candidates; :func:`neighbour_distances` recomputes
    the distances of the chosen ones exactly.

    Parameters
    ----------
    inputs : mapping of str to Tensor
        Query inputs ``name -> [B, *shape]``; absent rows are not read.
    present : Tensor of bool, shape [B, M]
    bank : SampleBank

    Returns
    -------
    Tensor, shape [B, N]
    """
    total = present.new_zeros((present.shape[0], len(bank)), dtype=torch.float32)  # [B, N]
    shared = torch.zeros_like(total)  # [B, N] count of modalities present on both sides
    for j, name in enumerate(bank.modalities):
        keep = present[:, j : j + 1]  # [B, 1]
        if not keep.any():  # absent from the whole batch: nothing to add
            continue
        query = torch.where(keep, inputs[name].flatten(1).float(), 0.0)  # [B, D]
        rows = bank.row(name)  # [N, D]
        sq = query.square().sum(1, keepdim=True) + rows.square().sum(1) - 2 * query @ rows.T
        both = keep & bank.present[:, j].unsqueeze(0)  # [B, N]
        total = total + torch.where(both, sq.clamp_min(0) / bank.widths[name], 0.0)
        shared = shared + both
    return _root_mean(total, shared)


def neighbour_distances(
    inputs: Mapping[str, torch.Tensor],
    present: torch.Tensor,
    bank: SampleBank,
    index: torch.Tensor,
) -> torch.Tensor:
    """The distance of :func:`overlap_distances`, computed exactly for chosen bank samples.

    Differences are taken feature by feature (no expansion), so a query identical to a bank
    sample on their shared modalities is at distance exactly 0.

    Parameters
    ----------
    inputs, present
        The queries, as in :func:`overlap_distances`.
    bank : SampleBank
    index : Tensor of int64, shape [B, K]
        Bank rows to measure, per query.

    Returns
    -------
    Tensor, shape [B, K]
    """
    total = torch.zeros(index.shape, dtype=torch.float32, device=index.device)  # [B, K]
    shared = torch.zeros_like(total)
    for j, name in enumerate(bank.modalities):
        keep = present[:, j : j + 1]  # [B, 1]
        query = torch.where(keep, inputs[name].flatten(1).float(), 0.0)  # [B, D]
        rows = bank.row(name)[index]  # [B, K, D]
        sq = (query.unsqueeze(1) - rows).square().sum(-1)  # [B, K]
        both = keep & bank.present[index, j]  # [B, K]
        total = total + torch.where(both, sq / bank.widths[name], 0.0)
        shared = shared + both
    return _root_mean(total, shared)


def _root_mean(total: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """``sqrt(total / shared)``, ``inf`` where nothing is shared."""
    return torch.where(shared > 0, (total / shared.clamp_min(1)).sqrt(), torch.inf)


def knn_average(
    inputs: Mapping[str, torch.Tensor],
    present: torch.Tensor,
    bank: SampleBank,
    target: str,
    k: int,
    weighting: str = "distance",
    screen: torch.Tensor | None = None,
    exclude_identical: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the weighted average of ``target`` over its ``k`` nearest bank samples.

    Candidates are the bank samples that have ``target`` and share a present modality with
    the query. They are ranked by ``screen`` (:func:`overlap_distances`), and the distances of
    the best ``k`` (``k + 1`` with ``exclude_identical``) are recomputed exactly
    (:func:`neighbour_distances`) for the weights.

    Parameters
    ----------
    inputs, present
        The queries, as in :func:`overlap_distances`.
    bank : SampleBank
    target : str
        The modality to average (its rows are read only from bank samples that have it).
    k : int
        Neighbours per query; fewer are used when fewer qualify.
    weighting : {"distance", "uniform"}
        ``"distance"`` weights each neighbour by ``1 / d``; when some neighbours are at
        distance 0, they share the whole weight equally (scikit-learn's convention).
        ``"uniform"`` weights them equally.
    screen : Tensor, shape [B, N], optional
        Precomputed :func:`overlap_distances` of these queries (computed when None).
    exclude_identical : bool
        Skip bank samples identical to the query on every shared modality (distance exactly
        0): a training sample is then not its own neighbour. One more candidate is screened
        so that ``k`` remain when the sample itself is among them.

    Returns
    -------
    average : Tensor, shape [B, D_target]
        Zero for queries with no qualifying neighbour.
    found : Tensor of bool, shape [B]
        Whether any neighbour qualified.
    """
    if weighting not in ("distance", "uniform"):
        raise MlmmError(f"weighting must be 'distance' or 'uniform', got {weighting!r}")
    values = bank.row(target)  # [N, D]
    b, n = present.shape[0], len(bank)
    chosen = min(k + int(exclude_identical), n)
    if chosen == 0:
        return values.new_zeros((b, values.shape[1])), torch.zeros(
            b, dtype=torch.bool, device=present.device
        )
    if screen is None:
        screen = overlap_distances(inputs, present, bank)
    has_target = bank.present[:, bank.modalities.index(target)].unsqueeze(0)  # [1, N]
    screen = torch.where(has_target, screen, torch.inf)  # [B, N]
    rough, index = torch.topk(screen, chosen, dim=1, largest=False)  # [B, chosen]
    distance = neighbour_distances(inputs, present, bank, index)
    distance = torch.where(torch.isfinite(rough), distance, torch.inf)
    if exclude_identical:
        distance = torch.where(distance > 0, distance, torch.inf)
    distance, order = torch.sort(distance, dim=1, stable=True)
    distance, index = distance[:, :k], index.gather(1, order)[:, :k]  # [B, k]
    valid = torch.isfinite(distance)  # [B, k]
    if weighting == "uniform":
        weights = valid.to(values.dtype)
    else:
        exact = valid & (distance == 0)  # [B, k]
        inverse = torch.where(valid & ~exact, distance.reciprocal(), 0.0)
        weights = torch.where(exact.any(dim=1, keepdim=True), exact.to(values.dtype), inverse)
    total = weights.sum(dim=1, keepdim=True)  # [B, 1]
    found = total[:, 0] > 0
    average = (weights.unsqueeze(-1) * values[index]).sum(dim=1) / total.clamp_min(1e-12)  # [B, D]
    return torch.where(found.unsqueeze(1), average, 0.0), found


def fill_bank(bank: SampleBank, lengths: BankLengths, batch: MultimodalBatch) -> None:
    """Replace ``bank`` and ``lengths`` with the samples of ``batch``: their inputs (padded
    steps of variable-length sequences stored as zeros, as queries are compared after
    :meth:`~mlmm.data.batch.MultimodalBatch.zero_padding`), their presence, and the valid steps
    of each variable-length modality. ``batch`` holds standardised samples; its target is not
    used."""
    batch = batch.zero_padding()
    bank.fill(batch.inputs, batch.present)
    lengths.fill(batch.lengths)
