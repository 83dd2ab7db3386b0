"""Small shared helpers: seeds, devices, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mlmm.errors import MlmmError


def derive_seed(seed: int, *keys: str | int) -> np.random.SeedSequence:
    """A seed sequence for one purpose (``derive_seed(0, "train-mask")``), stable across runs.

    Different keys give independent streams, so the train mask, the test mask and the
    weights of one run never share random numbers, and adding a test condition does not
    change the others.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed!r}")
    words = [zlib.crc32(str(k).encode()) for k in keys]
    return np.random.SeedSequence([int(seed), *words])


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """NumPy generator for ``derive_seed(seed, *keys)``."""
    return np.random.default_rng(derive_seed(seed, *keys))


def torch_seed_for(seed: int, *keys: str | int) -> int:
    """A 63-bit integer seed for torch, derived like :func:`derive_seed`."""
    return int(derive_seed(seed, *keys).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available) → a device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MlmmError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MlmmError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device cpu"
        )
    return dev


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator:
    """Write a file atomically: to a temporary file in the same folder, fsync, then rename.

    A process killed mid-write leaves the previous file (or none), never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_output_file(path: str | Path) -> Path:
    """Check, before any work, that a result file can be written at ``path``.

    Refused in one line: an existing directory, something that is not a regular file
    (a device, a FIFO), a location under a file, or one that is not writable.

    Parameters
    ----------
    path : str or Path
        The file a command will write (``mlmm evaluate --out``).

    Returns
    -------
    Path
        ``path`` unchanged.

    Raises
    ------
    MlmmError
        Saying what is wrong and what to do.
    """
    path = Path(path)
    if path.is_dir():
        raise MlmmError(f"{path} is a directory; give --out a file path such as {path}/table.csv")
    if path.exists() and not path.is_file():
        raise MlmmError(f"{path} exists and is not a regular file; choose another --out")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MlmmError(f"cannot create {path}: {parent} is a file; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):  # the file is written beside it, then renamed
        raise MlmmError(
            f"cannot write {path}: {parent} is not writable; choose another --out or fix its "
            f"permissions"
        )
    return path
