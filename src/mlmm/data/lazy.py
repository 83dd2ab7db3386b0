"""Out-of-core datasets: inputs read on demand from memory-mapped ``.npy``/``.npz``, HDF5 or Parquet.

An :class:`OutOfCoreDataset` has the interface the trainer and prediction need (``specs``,
``task``, ``observed``, ``targets``, ``subset``...) but keeps the per-modality inputs on
disk: only the presence mask and the targets (one bool per modality and one value per
sample) are held in memory. The trainer reads it through a ``torch.utils.data.DataLoader``
one mini-batch at a time (:class:`StreamedBatches`), in the same seeded order as the
in-memory path, so a small data set gives the same model either way.

Storage formats (:func:`open_dataset` picks one from the path):

- a folder written by :class:`DatasetWriter` (``mlmm-dataset.json``, ``inputs/<name>.npy``,
  ``observed.npy``, ``targets.npy``, and ``groups.npy`` for a grouped dataset): each input is
  memory-mapped (``np.load(mmap_mode="r")``);
- an ``.npz`` written by ``np.savez`` (not ``savez_compressed``: a compressed member cannot be
  memory-mapped) with keys ``input_<name>``, ``observed``, ``targets``, optionally ``groups``,
  and ``mlmm`` (the JSON metadata, or pass ``specs``/``task``);
- an HDF5 file (``.h5``/``.hdf5``, needs h5py: ``pip install 'mlmm[formats]'``) with datasets
  ``inputs/<name>``, ``observed``, ``targets``, optionally ``groups``, and the JSON metadata
  in the attribute ``mlmm``;
- a Parquet file or folder of files (needs pyarrow: ``pip install 'mlmm[parquet]'``): one
  list column per modality (flattened sample, null = absent), a ``target`` column, optionally
  a ``group`` column, and the JSON metadata under the schema key ``mlmm``. Rows are read by
  row group.
"""

from __future__ import annotations

import abc
import contextlib
import json
import mmap
import os
import re
import shutil
import struct
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset, _as_groups, as_observed
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.utils import (
    check_name_length,
    process_gone,
    remove_stale_temporaries,
    temporary_prefix,
    temporary_writer,
)

MANIFEST = "mlmm-dataset.json"
FORMAT = "mlmm-out-of-core"
_VERSION = 1
#: Bytes of mapped pages a read may leave resident before they are released (``_MappedSource``).
_RELEASE_BYTES = 64 * 2**20
#: A page fault on a file mapping maps up to this much around the page (Linux's default
#: ``fault_around_bytes``), so a read of scattered rows may map this much per row.
_FAULT_AROUND_BYTES = 64 * 2**10
_CHUNK_BYTES = 64 * 2**20


def _metadata(
    specs: Sequence[ModalitySpec], task: TaskSpec, name: str, n: int, grouped: bool = False
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": _VERSION,
        "name": name,
        "n_samples": int(n),
        "specs": [s.to_dict() for s in specs],
        "task": task.to_dict(),
        # folders written before groups were kept have no key and no groups.npy: ungrouped
        "groups": grouped,
    }


def _parse_metadata(
    raw: str | bytes | None, path: Path, specs: Any, task: Any, name: str | None
) -> tuple[tuple[ModalitySpec, ...], TaskSpec, str]:
    """Specs, task and name from a file's metadata, or from the caller when it has none."""
    meta: dict[str, Any] = {}
    if raw is not None:
        try:
            meta = json.loads(raw)
        except (TypeError, ValueError):
            raise MlmmError(
                f"{path}: its mlmm metadata is not valid JSON; rewrite the file"
            ) from None
    if specs is None:
        if "specs" not in meta:
            raise MlmmError(
                f"{path}: no mlmm metadata (specs, task) found; pass specs=[ModalitySpec...] and "
                f"task=TaskSpec(...) to open_dataset, or write the file with DatasetWriter"
            )
        specs = [ModalitySpec.from_dict(d) for d in meta["specs"]]
    if task is None:
        if "task" not in meta:
            raise MlmmError(f"{path}: no task in its mlmm metadata; pass task=TaskSpec(...)")
        task = TaskSpec.from_dict(meta["task"])
    # the metadata's own form (ModalitySpec.to_dict(), TaskSpec.to_dict()) is taken too
    try:
        specs = [ModalitySpec.from_dict(s) if isinstance(s, dict) else s for s in specs]
        task = TaskSpec.from_dict(task) if isinstance(task, dict) else task
        valid = all(isinstance(s, ModalitySpec) for s in specs) and isinstance(task, TaskSpec)
    except (KeyError, TypeError, ValueError):  # a dict without 'name', 'kind', 'shape'...
        valid = False
    if not valid:
        raise MlmmError(
            f"{path}: specs must be ModalitySpec objects (or their to_dict()) and task a "
            f"TaskSpec (or its to_dict()), got specs={specs!r:.120} and task={task!r:.80}"
        )
    return tuple(specs), task, name or meta.get("name") or path.stem


# ---------------------------------------------------------------------- sources
class _Source(abc.ABC):
    """Where the inputs live. ``read(name, rows)`` takes sorted, unique source rows."""

    path: Path
    specs: tuple[ModalitySpec, ...]
    task: TaskSpec
    name: str
    observed: np.ndarray
    targets: np.ndarray
    #: One group id per stored row (numbers or strings), or None for an ungrouped dataset.
    groups: np.ndarray | None = None

    @abc.abstractmethod
    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` of modality ``name``, as stored (raw, not standardised)."""

    def release(self) -> None:  # noqa: B027 - optional hook, a no-op unless a source caches
        """Drop whatever pages or caches reading has made resident (no-op by default)."""

    def _shape(self, name: str) -> tuple[int, ...]:
        return next(s.shape for s in self.specs if s.name == name)

    def _check_array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        expected = (len(self.targets), *self._shape(name))
        if tuple(shape) != expected:
            raise MlmmError(
                f"{self.path}: input {name!r} has shape {tuple(shape)}, expected {expected} "
                f"(n_samples, *spec.shape); fix the file or the ModalitySpec"
            )
        if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
            raise MlmmError(f"{self.path}: input {name!r} must be numeric, got dtype {dtype}")


class _MappedSource(_Source):
    """Inputs as memory-mapped arrays (a folder of ``.npy`` or an uncompressed ``.npz``).

    Pages a read touches count in this process's resident memory until released, and a
    fault on a cached file page maps up to 64 KiB around it, so a shuffled mini-batch of
    1,024 scattered rows can map 64 MB per modality. :meth:`read` therefore counts what a
    read may have mapped (at least 64 KiB per row) and releases the pages
    (``madvise(MADV_DONTNEED)``; the kernel keeps them in its page cache) once that reaches
    ``_RELEASE_BYTES``: resident memory stays bounded however large the files are.
    """

    def __init__(
        self,
        path: Path,
        meta: tuple[tuple[ModalitySpec, ...], TaskSpec, str],
        observed: np.ndarray,
        targets: np.ndarray,
        arrays: dict[str, np.memmap],
    ) -> None:
        self.path, (self.specs, self.task, self.name) = path, meta
        self.observed, self.targets = np.asarray(observed), np.asarray(targets)
        self.arrays, self._since_release = arrays, 0
        for name, arr in arrays.items():
            self._check_array(name, arr.shape, arr.dtype)

    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        out = np.asarray(self.arrays[name][rows], dtype=np.float32)
        self._since_release += out.nbytes + len(rows) * _FAULT_AROUND_BYTES
        if self._since_release >= _RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        self._since_release = 0
        for arr in self.arrays.values():
            handle = getattr(arr, "_mmap", None)
            if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
                handle.madvise(mmap.MADV_DONTNEED)


def _open_npy_folder(path: Path, specs: Any, task: Any, name: str | None) -> _MappedSource:
    manifest = path / MANIFEST
    try:
        raw = manifest.read_text()
    except OSError as exc:
        raise MlmmError(
            f"{path}: cannot read {MANIFEST} ({exc.strerror}); write it with DatasetWriter"
        ) from None
    meta = _parse_metadata(raw, path, specs, task, name)
    arrays = {s.name: _load_npy(path / "inputs" / f"{s.name}.npy", mmap=True) for s in meta[0]}
    observed = _load_npy(path / "observed.npy", mmap=False)
    targets = _load_npy(path / "targets.npy", mmap=False)
    source = _MappedSource(path, meta, observed, targets, arrays)
    grouped = (path / "groups.npy").exists()
    manifest_meta = json.loads(raw)
    if isinstance(manifest_meta, dict) and manifest_meta.get("groups") and not grouped:
        raise MlmmError(
            f"{path}: its manifest says the rows are grouped but groups.npy is missing; "
            f"restore the file or rewrite the folder with write_dataset"
        )
    if grouped:  # numbers or fixed-width strings, never objects (allow_pickle=False)
        source.groups = _load_npy(path / "groups.npy", mmap=False)
    return source


def _load_npy(file: Path, mmap: bool) -> np.ndarray:
    from mlmm.data.formats._common import NUMPY_FILE_ERRORS, numpy_file_reason

    try:
        return np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise MlmmError(f"{file}: file not found; the out-of-core folder is incomplete") from None
    except NUMPY_FILE_ERRORS as exc:  # a corrupt header: tokenize.TokenError
        raise MlmmError(
            f"{file}: not a readable .npy file ({numpy_file_reason(exc)}); rewrite it"
        ) from None


def _open_npz(path: Path, specs: Any, task: Any, name: str | None) -> _MappedSource:
    """Memory-map each stored (uncompressed) member of an ``.npz`` at its offset in the zip."""
    from mlmm.data.formats._common import NUMPY_FILE_ERRORS, numpy_file_reason

    try:
        return _map_npz(path, specs, task, name)
    except MlmmError:
        raise
    except (*NUMPY_FILE_ERRORS, struct.error) as exc:  # a member's corrupt header, a cut zip
        raise MlmmError(
            f"{path}: not a readable .npz archive ({numpy_file_reason(exc)}); rewrite it"
        ) from None


def _map_npz(path: Path, specs: Any, task: Any, name: str | None) -> _MappedSource:
    with zipfile.ZipFile(path) as archive:  # not a zip: BadZipFile, named by _open_npz
        infos = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        raw = None
        if "mlmm" in infos:
            with archive.open(infos["mlmm"]) as fh:
                raw = str(np.lib.format.read_array(fh, allow_pickle=False))
        meta = _parse_metadata(raw, path, specs, task, name)
        small = {}
        for key in ("observed", "targets", "groups"):
            if key not in infos:
                if key == "groups":  # optional: an ungrouped dataset
                    continue
                raise MlmmError(f"{path}: no {key!r} array in the archive; add it (np.savez)")
            with archive.open(infos[key]) as fh:
                try:
                    small[key] = np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise  # damaged, not objects: _open_npz names the archive and why
                    raise MlmmError(
                        f"{path}: member {key!r} holds Python objects; store numbers or strings"
                    ) from None
    arrays = {}
    with open(path, "rb") as fh:
        for spec in meta[0]:
            key = f"input_{spec.name}"
            if key not in infos:
                raise MlmmError(f"{path}: no {key!r} array for modality {spec.name!r}; add it")
            info = infos[key]
            if info.compress_type != zipfile.ZIP_STORED:
                raise MlmmError(
                    f"{path}: member {key!r} is compressed and cannot be memory-mapped; save "
                    f"with np.savez (not savez_compressed) or write a folder with DatasetWriter"
                )
            fh.seek(info.header_offset)
            header = fh.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise MlmmError(f"{path}: member {key!r} holds Python objects; store numbers")
            arrays[spec.name] = np.memmap(
                path, dtype=dtype, mode="r", offset=fh.tell(), shape=shape,
                order="F" if fortran else "C",
            )  # fmt: skip
    source = _MappedSource(path, meta, small["observed"], small["targets"], arrays)
    source.groups = small.get("groups")
    return source


class _HDF5Source(_Source):
    """Inputs in an HDF5 file; the file is reopened in each DataLoader worker process."""

    def __init__(self, path: Path, specs: Any, task: Any, name: str | None) -> None:
        self.path = path
        file = self._file()
        raw = file.attrs.get("mlmm")
        self.specs, self.task, self.name = _parse_metadata(raw, path, specs, task, name)
        for key in ("observed", "targets"):
            if key not in file:
                raise MlmmError(f"{path}: no {key!r} dataset in the HDF5 file; add it")
        self.observed, self.targets = file["observed"][()], file["targets"][()]
        if "groups" in file:  # optional: one group id per row
            import h5py  # _file() has checked that it is installed

            stored = file["groups"]
            if not isinstance(stored, h5py.Dataset):
                raise MlmmError(f"{path}: 'groups' must be a dataset of one id per row")
            strings = h5py.check_string_dtype(stored.dtype) is not None
            self.groups = stored.asstr()[()] if strings else stored[()]
        for spec in self.specs:
            key = f"inputs/{spec.name}"
            if key not in file:
                raise MlmmError(f"{path}: no {key!r} dataset for modality {spec.name!r}; add it")
            self._check_array(spec.name, file[key].shape, file[key].dtype)

    def _file(self):
        pid = os.getpid()
        if getattr(self, "_pid", None) != pid:  # h5py handles must not cross a fork
            from mlmm.data.formats._common import require

            h5py = require("h5py", "reading an HDF5 data set")
            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as exc:
                raise MlmmError(
                    f"{self.path}: not a readable HDF5 file ({exc}); is it truncated?"
                ) from None
            self._pid = pid
        return self._handle

    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._file()[f"inputs/{name}"][rows], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_handle", "_pid")}


class _ParquetSource(_Source):
    """Inputs in Parquet: one list column per modality (a flattened sample; null = absent)."""

    _CACHE = 4  # row groups kept decoded

    def __init__(self, path: Path, specs: Any, task: Any, name: str | None) -> None:
        from mlmm.data.formats._common import require

        pq = require("pyarrow.parquet", "reading a Parquet data set")
        self.path = path
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise MlmmError(f"{path}: no .parquet files in the folder")
        try:
            handles = [pq.ParquetFile(f) for f in files]
        except Exception as exc:  # pyarrow raises its own error types
            raise MlmmError(f"{path}: not a readable Parquet file ({exc})") from None
        raw = (handles[0].schema_arrow.metadata or {}).get(b"mlmm")
        self.specs, self.task, self.name = _parse_metadata(raw, path, specs, task, name)
        self.files = files
        self.row_groups: list[tuple[int, int]] = []  # (file, row group)
        starts, observed, targets, groups = [0], [], [], []
        columns = [s.name for s in self.specs]
        # an optional "group" column (one id per row) holds the group ids, in every file or none
        grouped = "group" not in columns and any("group" in h.schema_arrow.names for h in handles)
        extra = ["target", "group"] if grouped else ["target"]
        for f, handle in enumerate(handles):
            missing = [c for c in [*columns, *extra] if c not in handle.schema_arrow.names]
            if missing:
                raise MlmmError(
                    f"{files[f]}: no column(s) {missing}; expected {[*columns, *extra]} in "
                    f"every file of {path}"
                )
            for g in range(handle.num_row_groups):
                table = handle.read_row_group(g, columns=[*columns, *extra])
                observed.append(
                    np.stack(
                        [
                            table.column(c).is_valid().to_numpy(zero_copy_only=False)
                            for c in columns
                        ],
                        1,
                    )
                )
                targets.append(table.column("target").to_numpy())
                if grouped:
                    groups.append(table.column("group").to_numpy(zero_copy_only=False))
                self.row_groups.append((f, g))
                starts.append(starts[-1] + table.num_rows)
        self.starts = np.asarray(starts)
        self.observed = np.concatenate(observed).astype(bool)
        self.targets = np.concatenate(targets)
        if grouped:
            self.groups = np.concatenate(groups)
        self._cache: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        self._handles: dict[int, Any] = {}

    def _group(self, g: int, name: str) -> np.ndarray:
        key = (g, name)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        import pyarrow.parquet as pq

        f, group = self.row_groups[g]
        if os.getpid() != self._handles.get(-1):
            self._handles = {-1: os.getpid()}
        if f not in self._handles:
            self._handles[f] = pq.ParquetFile(self.files[f])
        column = (
            self._handles[f].read_row_group(group, columns=[name]).column(name).combine_chunks()
        )
        shape = self._shape(name)
        out = np.zeros((len(column), *shape), dtype=np.float32)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        values = column.filter(column.is_valid()).flatten().to_numpy(zero_copy_only=False)
        size = int(np.prod(shape))
        if values.size != valid.sum() * size:
            raise MlmmError(
                f"{self.files[f]}: column {name!r} has lists of the wrong length; each present "
                f"row must hold {size} values (spec shape {shape} flattened)"
            )
        out[valid] = values.astype(np.float32).reshape(-1, *shape)
        self._cache[key] = out
        while len(self._cache) > self._CACHE * len(self.specs):
            self._cache.popitem(last=False)
        return out

    def read(self, name: str, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self._shape(name)), dtype=np.float32)
        group_of = np.searchsorted(self.starts, rows, side="right") - 1
        for g in np.unique(group_of):
            take = group_of == g
            out[take] = self._group(int(g), name)[rows[take] - self.starts[g]]
        return out

    def release(self) -> None:
        self._cache.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"], state["_handles"] = OrderedDict(), {}
        return state


# ---------------------------------------------------------------------- dataset
@dataclass(frozen=True, eq=False)
class OutOfCoreDataset:
    """A dataset whose inputs stay on disk; open one with :func:`open_dataset`.

    It has the interface of :class:`~mlmm.data.MultimodalDataset` that training and
    prediction use (``specs``, ``task``, ``observed``, ``targets``, ``n_samples``,
    ``subset``, ``with_presence``...), but no ``inputs``: rows are read on demand with
    :meth:`read`, and :meth:`to_memory` loads rows into a ``MultimodalDataset``. Hand it to
    :meth:`mlmm.Trainer.fit` or :meth:`mlmm.TrainedModel.predict` like an in-memory dataset.

    Attributes
    ----------
    observed : ndarray of bool, shape (N, M)
        Presence, held in memory (one bool per sample and modality).
    targets : ndarray, shape (N,)
        Held in memory.
    groups : ndarray, shape (N,), or None
        Group ids (patient or subject), held in memory: splits and inner folds keep each
        group on one side, as for :class:`~mlmm.data.MultimodalDataset`. Stored in the folder
        by :func:`write_dataset`; None for an ungrouped dataset.
    num_workers : int
        DataLoader worker processes used when this dataset is read in mini-batches.
    """

    source: _Source
    rows: np.ndarray
    observed: np.ndarray
    targets: np.ndarray
    name: str = "custom"
    allow_empty: bool = False
    num_workers: int = 0
    standardizer: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None

    #: Marks datasets whose inputs are not in memory (``Trainer.fit`` checks it).
    out_of_core = True
    #: No per-row sequence lengths (every sequence is full length): ``to_memory()`` and
    #: ``MultimodalDataset(..., lengths=)`` for those.
    lengths = None

    def __post_init__(self) -> None:
        if self.groups is not None:  # also checks ids given by dataclasses.replace
            object.__setattr__(self, "groups", _as_groups(self.groups, len(self.rows)))

    # ------------------------------------------------------------------ views
    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        return self.source.specs

    @property
    def task(self) -> TaskSpec:
        return self.source.task

    @property
    def n_samples(self) -> int:
        return len(self.rows)

    # the in-memory dataset's lookups by modality name (they read only ``specs``), and its
    # narrower presence mask (a view here too: it replaces only ``observed``)
    modality_names = MultimodalDataset.modality_names
    n_modalities = MultimodalDataset.n_modalities
    spec = MultimodalDataset.spec
    modality_index = MultimodalDataset.modality_index
    with_presence = MultimodalDataset.with_presence

    def __len__(self) -> int:
        return self.n_samples

    def subset(self, indices: Sequence[int] | np.ndarray) -> OutOfCoreDataset:
        """A view of the rows ``indices`` (in that order); nothing is read."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            rows=self.rows[idx],
            observed=self.observed[idx],
            targets=self.targets[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def with_workers(self, num_workers: int) -> OutOfCoreDataset:
        """The same view read by ``num_workers`` DataLoader worker processes."""
        if not isinstance(num_workers, int) or num_workers < 0:
            raise MlmmError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        return replace(self, num_workers=num_workers)

    def with_standardizer(self, standardizer: Any, targets: np.ndarray) -> OutOfCoreDataset:
        """A view whose reads are standardised by ``standardizer`` (used by its ``transform``)."""
        return replace(self, standardizer=standardizer, targets=targets)

    def describe(self) -> dict[str, Any]:
        """Counts and rates, for listings and reports."""
        return {
            "name": self.name,
            "n_samples": self.n_samples,
            "modalities": {s.name: f"{s.kind}{list(s.shape)}" for s in self.specs},
            "task": self.task.kind,
            "n_classes": self.task.n_classes,
            "observed_rate": {
                s.name: float(self.observed[:, j].mean()) for j, s in enumerate(self.specs)
            },
            "storage": str(self.source.path),
        }

    def __repr__(self) -> str:
        mods = ", ".join(f"{s.name}:{s.kind}{list(s.shape)}" for s in self.specs)
        return (
            f"OutOfCoreDataset(name={self.name!r}, n={self.n_samples}, modalities=[{mods}], "
            f"path={str(self.source.path)!r})"
        )

    # ------------------------------------------------------------------ reads
    def read(self, indices: Sequence[int] | np.ndarray, raw: bool = False) -> dict[str, np.ndarray]:
        """Read rows ``indices`` of every modality as float32 ``(k, *shape)`` arrays.

        Absent rows are zero and are never read from storage (a modality absent from every
        row asked for is not read at all). Unless ``raw``, rows are standardised when this
        view came from :meth:`Standardizer.transform <mlmm.data.Standardizer.transform>`. Rows
        are read in storage order (sorted) and returned in the order asked for.
        """
        idx = np.asarray(indices, dtype=np.int64)
        observed = self.observed[idx]
        every_row = None  # np.unique of all rows asked for, shared by fully present modalities
        out = {}
        for j, spec in enumerate(self.specs):
            present = observed[:, j]
            if present.all():  # the common case: no zero-filled copy, one np.unique per read
                if every_row is None:
                    every_row = np.unique(self.rows[idx], return_inverse=True)
                taken, (rows, inverse) = idx, every_row
            elif present.any():
                taken = idx[present]
                rows, inverse = np.unique(self.rows[taken], return_inverse=True)
            else:
                out[spec.name] = np.zeros((len(idx), *spec.shape), dtype=np.float32)
                continue
            values = self.source.read(spec.name, rows)[inverse]  # [p, *shape]
            bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if bad.any():
                first = self.rows[taken[bad]][:5].tolist()
                raise MlmmError(
                    f"{self.source.path}: modality {spec.name!r} has NaN or inf in rows "
                    f"{first} marked present; clean them or mark them absent"
                )
            if self.standardizer is not None and not raw:
                every = np.ones(len(values), dtype=bool)
                values = self.standardizer.transform_array(spec.name, values, every)
            if len(taken) == len(idx):
                out[spec.name] = values
            else:
                x = np.zeros((len(idx), *spec.shape), dtype=np.float32)  # [k, *shape]
                x[present] = values
                out[spec.name] = x
        return out

    def chunks(
        self, chunk_rows: int | None = None
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Consecutive chunks of raw rows: ``(positions, inputs)``, for streaming passes."""
        if chunk_rows is None:
            row_bytes = sum(4 * int(np.prod(s.shape)) for s in self.specs)
            chunk_rows = max(1, _CHUNK_BYTES // row_bytes)
        try:
            for start in range(0, self.n_samples, chunk_rows):
                positions = np.arange(start, min(start + chunk_rows, self.n_samples))
                yield positions, self.read(positions, raw=True)
        finally:
            self.source.release()

    def to_memory(self, indices: Sequence[int] | np.ndarray | None = None) -> MultimodalDataset:
        """Load rows (all by default) into an in-memory :class:`MultimodalDataset` (raw values)."""
        view = self if indices is None else self.subset(indices)
        inputs = view.read(np.arange(view.n_samples), raw=True)
        self.source.release()
        return MultimodalDataset(
            specs=view.specs,
            task=view.task,
            inputs=inputs,
            targets=view.targets,
            observed=view.observed,
            name=view.name,
            allow_empty=view.allow_empty,
            meta=dict(view.meta),
            groups=view.groups,
        )


def is_out_of_core(dataset: object) -> bool:
    """True for a dataset whose inputs are read from disk on demand."""
    return bool(getattr(dataset, "out_of_core", False))


def open_dataset(
    path: str | Path,
    *,
    specs: Sequence[ModalitySpec] | None = None,
    task: TaskSpec | None = None,
    name: str | None = None,
    num_workers: int = 0,
    allow_empty: bool = False,
) -> OutOfCoreDataset:
    """Open an out-of-core dataset without loading its inputs.

    Parameters
    ----------
    path : str or Path
        A folder written by :class:`DatasetWriter`, an ``.npz`` (uncompressed), an HDF5 file
        (``.h5``/``.hdf5``) or a Parquet file or folder (``.parquet``); layouts in the module
        docstring.
    specs, task : optional
        Needed only when the file carries no mlmm metadata.
    name : str, optional
        Dataset name (default: from the metadata, else the file name).
    num_workers : int, default 0
        DataLoader worker processes reading mini-batches (0: read in the training process).
    allow_empty : bool
        Accept samples with no modality present.

    Examples
    --------
    >>> import mlmm
    >>> from mlmm.data.lazy import open_dataset, write_dataset
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> folder = write_dataset(ds, tmp_path / "synthetic")  # doctest: +SKIP
    >>> lazy = open_dataset(folder)  # doctest: +SKIP
    """
    path = Path(path)
    finish_interrupted_replace(path)  # a writer killed between its two renames
    if not path.exists():
        raise MlmmError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if path.is_dir() and (path / MANIFEST).exists():
        source: _Source = _open_npy_folder(path, specs, task, name)
    elif suffix == ".npz":
        source = _open_npz(path, specs, task, name)
    elif suffix in (".h5", ".hdf5"):
        source = _HDF5Source(path, specs, task, name)
    elif suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        source = _ParquetSource(path, specs, task, name)
    else:
        raise MlmmError(
            f"{path}: not an out-of-core dataset; expected a folder with {MANIFEST}, an .npz, "
            f"an .h5/.hdf5 or a .parquet file"
        )
    n = len(source.targets)
    try:
        observed = as_observed(source.observed, n, [s.name for s in source.specs])
    except MlmmError as exc:  # name the file: the message alone did not say which
        raise MlmmError(
            f"{path}: stored {exc}; store 'observed' as booleans, one row per target"
        ) from None
    targets = _check_targets(source.targets, source.task, source.path)
    empty = ~observed.any(axis=1)
    if empty.any() and not allow_empty:
        raise MlmmError(
            f"{path}: {int(empty.sum())} sample(s) have no modality present (first: "
            f"{np.flatnonzero(empty)[:5].tolist()}); pass allow_empty=True"
        )
    groups = None
    if source.groups is not None:
        try:
            groups = _as_groups(source.groups, n)
        except MlmmError as exc:
            raise MlmmError(f"{path}: stored {exc}") from None
    dataset = OutOfCoreDataset(
        source=source,
        rows=np.arange(n),
        observed=observed,
        targets=targets,
        name=source.name,
        allow_empty=allow_empty,
        groups=groups,
    )
    return dataset.with_workers(num_workers)


def _check_targets(targets: np.ndarray, task: TaskSpec, path: Path) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise MlmmError(f"{path}: targets must be 1-D, got shape {targets.shape}")
    if task.is_classification:
        if not np.issubdtype(targets.dtype, np.integer):
            raise MlmmError(f"{path}: classification targets must be integers, got {targets.dtype}")
        bad = (targets < 0) | (targets >= task.n_classes)
        if bad.any():
            raise MlmmError(
                f"{path}: labels must be in 0..{task.n_classes - 1}, got "
                f"{np.unique(targets[bad])[:5].tolist()}; fix the labels or TaskSpec.n_classes"
            )
        return targets.astype(np.int64)
    targets = targets.astype(np.float32)
    if not np.isfinite(targets).all():
        raise MlmmError(f"{path}: regression targets contain NaN or inf; drop those samples")
    return targets


# ---------------------------------------------------------------------- mini-batches
class _BatchReader(torch.utils.data.Dataset):
    """Map-style dataset whose items are whole mini-batches (an index array in, a batch out)."""

    def __init__(self, dataset: OutOfCoreDataset, with_target: bool) -> None:
        self.dataset, self.with_target = dataset, with_target

    def __len__(self) -> int:
        return self.dataset.n_samples

    def __getitem__(self, indices: np.ndarray) -> MultimodalBatch:
        ds = self.dataset
        inputs = ds.read(indices)
        return MultimodalBatch(
            inputs={k: torch.from_numpy(v) for k, v in inputs.items()},
            present=torch.from_numpy(np.ascontiguousarray(ds.observed[indices])),
            modalities=ds.modality_names,
            target=torch.from_numpy(ds.targets[indices]) if self.with_target else None,
        )


def _keep(item: MultimodalBatch) -> MultimodalBatch:
    return item


class StreamedBatches:
    """Mini-batches of an :class:`OutOfCoreDataset`, read through a ``DataLoader``.

    Stands where the trainer holds a whole-dataset :class:`MultimodalBatch`:
    ``mlmm.data.batch.iterate_batches`` delegates to :meth:`iterate`, which draws the
    same permutation from the same generator as for an in-memory batch, so the epochs
    see the same rows in the same order.

    Attributes
    ----------
    target : Tensor or None
        All targets (in memory), as validation needs them.
    """

    def __init__(
        self,
        dataset: OutOfCoreDataset,
        device: torch.device | str = "cpu",
        with_target: bool = True,
    ) -> None:
        self.dataset, self.device, self.with_target = dataset, torch.device(device), with_target
        self.modalities = dataset.modality_names
        self.target = torch.from_numpy(dataset.targets).to(self.device) if with_target else None

    def __len__(self) -> int:
        return self.dataset.n_samples

    def without_target(self) -> StreamedBatches:
        return StreamedBatches(self.dataset, self.device, with_target=False)

    def iterate(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[MultimodalBatch]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        chunks = [order[s : s + batch_size].numpy() for s in range(0, n, batch_size)]
        workers = self.dataset.num_workers
        loader = torch.utils.data.DataLoader(
            _BatchReader(self.dataset, self.with_target),
            batch_size=None,  # each item is already a mini-batch
            sampler=chunks,
            num_workers=workers,
            collate_fn=_keep,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # its own generator: a DataLoader otherwise draws its worker base seed from the
            # global torch RNG, which would shift dropout draws away from the in-memory path
            generator=torch.Generator().manual_seed(0),
            prefetch_factor=2 if workers else None,
        )
        try:
            for batch in loader:
                yield batch.to(self.device) if self.device.type != "cpu" else batch
        finally:
            self.dataset.source.release()


def batches_for(
    dataset: MultimodalDataset | OutOfCoreDataset,
    device: torch.device | str = "cpu",
    with_target: bool = True,
) -> MultimodalBatch | StreamedBatches:
    """The trainer's view of a dataset: one whole batch in memory, or streamed mini-batches."""
    if is_out_of_core(dataset):
        return StreamedBatches(dataset, device, with_target)
    return MultimodalBatch.from_dataset(dataset, with_target=with_target).to(device)


# ---------------------------------------------------------------------- writing
#: The end of the name a replaced folder has between :meth:`DatasetWriter.close`'s two renames
_REPLACED = "replaced"


def finish_interrupted_replace(path: str | Path) -> list[Path]:
    """Resolve what a :class:`DatasetWriter` killed while replacing the folder ``path`` left.

    Replacing renames the existing folder aside (``.NAME.p<pid>-h<host>.replaced``; in older
    versions of mlmm ``.NAME.old-<pid>``), renames the new, complete folder into place, and
    removes the one put aside. A writer of this host killed between the steps (a process
    that no longer exists) leaves the folder put aside, and maybe no folder at ``path``:

    - ``path`` exists: the replacement was done; the folder put aside is removed;
    - else, the writer's new folder is complete (its manifest written, it opens): it is
      renamed into place, as the writer would have, and the folder put aside removed;
    - else the folder put aside is renamed back into place.

    The folders of live writers, and of other hosts, are left alone (an older version's name
    does not say its host: its pid is judged on this one). Errors are ignored (the next
    write or open tries again).

    Returns
    -------
    list of pathlib.Path
        The folders put aside that were resolved.
    """
    path = Path(path)
    legacy = re.compile(re.escape(f".{path.name}.old-") + r"(\d+)")
    try:
        entries = [(entry.name, entry.path) for entry in os.scandir(path.parent)]
    except OSError:
        return []
    own, resolved = os.getpid(), []
    for name, entry in entries:
        writer = temporary_writer(path, name)
        match = legacy.fullmatch(name)
        if writer is not None and writer[1] == _REPLACED:
            pid = writer[0]
        elif match is not None:
            pid = int(match[1])
        else:
            continue
        aside = Path(entry)
        if pid == own or not aside.is_dir() or not process_gone(pid):
            continue
        try:
            if not path.exists():
                newer = []  # the new folder of the same writer, if it was finished
                for other_name, other in entries:
                    theirs = temporary_writer(path, other_name)
                    if theirs is not None and theirs[0] == pid and theirs[1].endswith(".tmp"):
                        if _complete_folder(Path(other)):
                            newer.append(Path(other))
                os.replace(max(newer, key=os.path.getmtime) if newer else aside, path)
            if aside.exists():
                shutil.rmtree(aside)
        except OSError:
            continue
        resolved.append(aside)
    return resolved


def _complete_folder(folder: Path) -> bool:
    """Whether ``folder``, written by a :class:`DatasetWriter`, holds its whole dataset (its
    manifest is written last, and it opens)."""
    if not (folder / MANIFEST).is_file():
        return False
    try:
        _open_npy_folder(folder, None, None, None)
    except (MlmmError, OSError, ValueError):
        return False
    return True


class DatasetWriter:
    """Write an out-of-core folder chunk by chunk, atomically.

    Rows are written into ``.NAME.p<pid>-h<host>.<random>.tmp`` beside ``path`` (each input
    an ``.npy`` file written sequentially, so memory stays one chunk however large the data)
    and the folder is renamed into place by :meth:`close` once all ``n_samples`` rows are in.
    A writer that fails or is not closed leaves no folder at ``path``; the folder of a writer
    killed (``kill -9``) is removed by the next writer of ``path`` on this host
    (:func:`mlmm.utils.remove_stale_temporaries`), never that of a live one. One killed while
    replacing ``path`` (``overwrite``), between its two renames, is finished or undone by the
    next writer or :func:`open_dataset` of ``path`` (:func:`finish_interrupted_replace`).

    Parameters
    ----------
    path : str or Path
        The folder to create (refused if it exists, unless ``overwrite``, or if its name is
        longer than its file system takes).
    specs, task : ModalitySpec sequence, TaskSpec
    n_samples : int
        Rows the folder will hold.
    name : str
        Dataset name stored in the manifest.
    overwrite : bool
        Replace an existing out-of-core folder at ``path``.

    Examples
    --------
    >>> with DatasetWriter(folder, specs, task, n_samples=1000) as writer:  # doctest: +SKIP
    ...     for inputs, targets, observed in chunks:
    ...         writer.append(inputs, targets, observed)
    """

    def __init__(
        self,
        path: str | Path,
        specs: Sequence[ModalitySpec],
        task: TaskSpec,
        n_samples: int,
        name: str = "custom",
        overwrite: bool = False,
    ) -> None:
        self.path, self.specs, self.task = Path(path), tuple(specs), task
        if task.is_multilabel:  # the folder holds one target per row
            raise MlmmError(
                f"{self.path}: an out-of-core dataset holds one class label or value per row, "
                f"got a multilabel task ({task.n_labels} labels); keep it in memory "
                f"(MultimodalDataset)"
            )
        if not isinstance(n_samples, int) or n_samples < 1:
            raise MlmmError(f"n_samples must be a positive integer, got {n_samples!r}")
        check_name_length(self.path, "folder")  # before the rows, not at the rename after them
        finish_interrupted_replace(self.path)  # a writer killed between its two renames
        if self.path.exists() and not (overwrite and (self.path / MANIFEST).exists()):
            raise MlmmError(
                f"{self.path} exists; choose a new path"
                + ("" if overwrite else " or pass overwrite=True (replaces an out-of-core folder)")
            )
        self.n_samples, self.name, self.written = n_samples, name, 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path, folders=True)  # those of writers killed (kill -9)
        self._tmp = Path(
            tempfile.mkdtemp(
                prefix=temporary_prefix(self.path), suffix=".tmp", dir=self.path.parent
            )
        )
        (self._tmp / "inputs").mkdir()
        # plain sequential writes (not a writable memory map): written pages go to the
        # kernel's page cache and never count in this process's resident memory
        self._inputs = {}
        for spec in self.specs:
            fh = open(self._tmp / "inputs" / f"{spec.name}.npy", "wb")  # noqa: SIM115
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False,
                "shape": (n_samples, *spec.shape),
            }
            np.lib.format.write_array_header_1_0(fh, header)
            self._inputs[spec.name] = fh
        self._observed = np.zeros((n_samples, len(self.specs)), dtype=bool)
        dtype = np.int64 if task.is_classification else np.float32
        self._targets = np.zeros(n_samples, dtype=dtype)
        self._groups: list[np.ndarray] = []  # one array per append, or none at all

    def append(
        self,
        inputs: Mapping[str, np.ndarray],
        targets: np.ndarray,
        observed: np.ndarray | None = None,
        groups: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        """Write the next rows: ``inputs[name]`` ``(k, *shape)``, ``targets`` ``(k,)``,
        ``observed`` ``(k, M)`` (default: all present), ``groups`` ``(k,)`` (group ids:
        give them on every append or on none). Absent rows are stored as zeros."""
        targets = np.asarray(targets)
        k = len(targets)
        if self.written + k > self.n_samples:
            raise MlmmError(
                f"appending {k} rows would exceed n_samples={self.n_samples} "
                f"({self.written} written); pass a larger n_samples"
            )
        if (groups is None) != (not self._groups) and self.written:
            raise MlmmError(
                f"append: groups were {'not ' if groups is not None else ''}given for the "
                f"first {self.written} rows; give group ids on every append or on none"
            )
        group_ids = None if groups is None else _as_groups(groups, k)
        names = [s.name for s in self.specs]
        observed = as_observed(observed, k, names)
        stop = self.written + k
        arrays = {}
        for j, spec in enumerate(self.specs):  # check everything before writing anything
            if spec.name not in inputs:
                raise MlmmError(
                    f"append: no array for modality {spec.name!r}; add inputs[{spec.name!r}]"
                )
            x = np.asarray(inputs[spec.name], dtype=np.float32)
            if x.shape != (k, *spec.shape):
                raise MlmmError(
                    f"append: modality {spec.name!r} has shape {x.shape}, expected {(k, *spec.shape)}"
                )
            arrays[spec.name] = np.where(observed[:, j].reshape(-1, *[1] * len(spec.shape)), x, 0)
        for name, x in arrays.items():
            self._inputs[name].write(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        self._observed[self.written : stop] = observed
        self._targets[self.written : stop] = targets
        if group_ids is not None:
            self._groups.append(group_ids)
        self.written = stop

    def close(self) -> Path:
        """Flush, write the manifest and rename the folder into place; returns its path."""
        if self.written != self.n_samples:
            self.abort()
            raise MlmmError(
                f"{self.path}: {self.written} of {self.n_samples} rows were written; the folder "
                f"was not created"
            )
        old = None  # the folder replaced, once put aside
        try:
            for fh in self._inputs.values():
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
            self._inputs.clear()
            np.save(self._tmp / "observed.npy", self._observed)
            np.save(self._tmp / "targets.npy", self._targets)
            if self._groups:  # numbers or fixed-width strings: np.load needs no pickle
                np.save(self._tmp / "groups.npy", np.concatenate(self._groups))
            meta = _metadata(
                self.specs, self.task, self.name, self.n_samples, grouped=bool(self._groups)
            )
            (self._tmp / MANIFEST).write_text(json.dumps(meta, indent=1))
            if self.path.exists():  # overwrite=True, checked to be an out-of-core folder
                # named by its writer: a writer killed before the next rename is resolved by
                # the next write or open (finish_interrupted_replace)
                old = self.path.with_name(temporary_prefix(self.path) + _REPLACED)
                os.replace(self.path, old)
            os.replace(self._tmp, self.path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            self.abort()
            if old is not None and not self.path.exists():  # the new one could not go in
                with contextlib.suppress(OSError):  # else the next write or open puts it back
                    os.replace(old, self.path)
            raise MlmmError(f"{self.path}: could not write the dataset ({exc.strerror})") from None
        return self.path

    def abort(self) -> None:
        """Remove the temporary folder (nothing appears at ``path``)."""
        for fh in self._inputs.values():
            fh.close()
        self._inputs.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset(
    dataset: MultimodalDataset | OutOfCoreDataset,
    path: str | Path,
    chunk_rows: int = 65536,
    overwrite: bool = False,
) -> Path:
    """Write ``dataset`` as an out-of-core folder (atomically); returns the folder's path.

    An out-of-core dataset is copied chunk by chunk, so it never needs to fit in memory.
    Group ids (``dataset.groups``) are kept (``groups.npy``), so the reopened dataset splits
    by whole groups as the in-memory one does. A dataset with variable-length sequences
    (``lengths``) is refused: the folder has no lengths, and its padding would then be read
    as data.
    """
    if getattr(dataset, "lengths", None):
        raise MlmmError(
            f"{path}: an out-of-core dataset holds full-length sequences, got lengths for "
            f"{sorted(dataset.lengths)}; keep it in memory, or cut the sequences to one length"
        )
    with DatasetWriter(
        path, dataset.specs, dataset.task, dataset.n_samples, dataset.name, overwrite
    ) as writer:
        for start in range(0, dataset.n_samples, chunk_rows):
            stop = min(start + chunk_rows, dataset.n_samples)
            if is_out_of_core(dataset):
                inputs = dataset.read(np.arange(start, stop), raw=True)
            else:
                inputs = {k: v[start:stop] for k, v in dataset.inputs.items()}
            groups = None if dataset.groups is None else dataset.groups[start:stop]
            writer.append(inputs, dataset.targets[start:stop], dataset.observed[start:stop], groups)
        if is_out_of_core(dataset):
            dataset.source.release()
    return Path(path)
