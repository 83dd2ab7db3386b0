"""Small shared helpers: seeds, devices, atomic writes, output-path checks."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import re
import shutil
import socket
import sys
import tempfile
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from mlmm.errors import MlmmError, OutputWriteError


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


#: Longest file name (bytes) most file systems take (NAME_MAX of ext4, XFS, APFS, NTFS).
_NAME_MAX = 255
#: Windows' file systems (NTFS, exFAT, FAT) count a name's UTF-16 code units, not its bytes
_NAMES_IN_UTF16 = os.name == "nt"
#: ``.NAME.p<pid>-h<host>.<random>.tmp``: what :func:`atomic_write` writes beside ``NAME``
_TEMPORARY = ".{stem}.p{pid}-h{host}."
#: what follows its writer in the name of a temporary file or folder (``<random>.tmp``)
_TEMPORARY_REST = re.compile(r"[a-z0-9_]+\.tmp")


def _temporary_stem(name: str) -> str:
    """``name`` as it appears in its temporary file's name: whole, or, for a name so long that
    the temporary one would pass :data:`_NAME_MAX`, its start and a hash of the whole name."""
    if len(name.encode()) <= _NAME_MAX - 48:
        return name
    start = name.encode()[:160].decode(errors="ignore")  # not cut inside a character
    return f"{start}~{zlib.crc32(name.encode()):08x}"


#: Files that tell machines (and boots) apart where the host name does not: machines cloned
#: from one image share /etc/machine-id, and containers of one image their host name too
_HOST_FILES = ("/etc/machine-id", "/proc/sys/kernel/random/boot_id")
#: macOS has neither file nor /proc: its boot time (``kern.boottime``) stands for the boot id
_IS_MACOS = sys.platform == "darwin"


@functools.cache  # the boot time does not change while this process runs
def _macos_boot_time() -> str | None:
    """The seconds of macOS's ``kern.boottime`` (when this machine booted), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        when = (ctypes.c_int64 * 2)()  # struct timeval: seconds, then microseconds (padded)
        size = ctypes.c_size_t(ctypes.sizeof(when))
        if libc.sysctlbyname(b"kern.boottime", when, ctypes.byref(size), None, 0) != 0:
            return None
    except (OSError, AttributeError, TypeError):
        return None
    return str(when[0])


def host_tag() -> str:
    """This host (its name, machine id, boot id and PID namespace, where it has them; on
    macOS its name and boot time) as 8 hex digits.

    A writer or owner is judged gone only by a process that sees the same processes under
    the same ids: not by another machine or container of the same name on a shared disk, nor
    after a reboot, when the process ids start again. It names the writer of a temporary file
    (:func:`temporary_prefix`) and the owner of a results store's claim
    (:func:`mlmm.bench.store.this_process`).
    """
    parts = [socket.gethostname()]
    for file in _HOST_FILES:
        with contextlib.suppress(OSError), open(file, "rb") as fh:
            parts.append(fh.read(64).decode(errors="replace").strip())
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid"))
    if _IS_MACOS:
        parts.append(_macos_boot_time() or "")
    return f"{zlib.crc32('|'.join(parts).encode()):08x}"


def temporary_prefix(path: Path) -> str:
    """The start of the name of a temporary file or folder written for ``path`` (beside it):
    ``.NAME.p<pid>-h<host>.``; with a random part and ``.tmp`` after it, the next write of
    ``path`` removes it once its writer is gone (:func:`remove_stale_temporaries`)."""
    return _TEMPORARY.format(stem=_temporary_stem(path.name), pid=os.getpid(), host=host_tag())


def temporary_writer(path: Path, name: str) -> tuple[int, str] | None:
    """``(pid, rest)`` when ``name`` is a temporary file or folder written beside ``path`` by
    process ``pid`` of this host (and boot, and PID namespace): ``.NAME.p<pid>-h<host>.<rest>``
    (:func:`temporary_prefix`); None for any other name, and for another host's. A folder
    may hand names back decomposed (macOS HFS+): they are compared composed."""
    prefix = unicodedata.normalize("NFC", f".{_temporary_stem(path.name)}.p")
    name = unicodedata.normalize("NFC", name)
    if not name.startswith(prefix):
        return None
    match = re.fullmatch(r"(\d+)-h([0-9a-f]{8})\.(.+)", name[len(prefix) :])
    if match is None or match[2] != host_tag():
        return None
    return int(match[1]), match[3]


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists on this machine (False when it cannot tell)."""
    if os.name != "posix":  # os.kill(pid, 0) sends Ctrl-C on Windows; never remove there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, OverflowError):  # another user's: alive
        return False
    return False


def remove_stale_temporaries(path: str | Path, folders: bool = False) -> list[Path]:
    """Remove the temporary files that :func:`atomic_write` calls for ``path`` left behind
    when killed (``kill -9``): those whose writer, named in the file name, is a process of
    this host (and boot) that no longer exists. ``folders``: remove the temporary folders
    (named by :func:`temporary_prefix`) that a :class:`~mlmm.data.lazy.DatasetWriter` left,
    instead of files.

    A temporary file of a live process (another process writing ``path`` right now, or this
    one), of another host sharing the folder, of a previous boot (a power cut), or of a
    version of mlmm that did not name its writer is never removed. Errors (a folder that
    cannot be listed) are ignored: the files are litter, not data.

    Returns
    -------
    list of pathlib.Path
        The files (or folders) removed.
    """
    path = Path(path)
    own = os.getpid()
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        writer = temporary_writer(path, entry.name)
        if writer is None or writer[0] == own or not _TEMPORARY_REST.fullmatch(writer[1]):
            continue
        with contextlib.suppress(OSError):
            ours = entry.is_dir if folders else entry.is_file  # a symlink is neither
            if ours(follow_symlinks=False) and process_gone(writer[0]):
                (shutil.rmtree if folders else os.unlink)(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator:
    """Write a file atomically: to a temporary file in the same folder, fsync, then rename.

    A process killed mid-write leaves the previous file (or none), never a partial one. The
    temporary file (``.NAME.p<pid>-h<host>.<random>.tmp``) names its writer, so that the next
    write of ``path`` removes those of writers killed before they could
    (:func:`remove_stale_temporaries`). An ``OSError`` while writing (a full disk) removes the
    temporary file and is raised as an :class:`~mlmm.errors.OutputWriteError`: one line
    naming ``path``, still an ``OSError``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # first: on a full disk, the space they hold comes back
        fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from err
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, OutputWriteError):
            raise _write_error(path, err) from err
        raise


def _write_error(path: Path, err: OSError) -> OutputWriteError:
    """The one-line error of :func:`atomic_write` for ``err`` while writing ``path``."""
    kept = "the earlier file is unchanged" if path.is_file() else "nothing was written"
    full = err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "free some disk space or choose another path" if full else "choose another path"
    return OutputWriteError(
        f"cannot write {path} ({err.strerror or err}); {fix}; {kept}",
        err.errno,
        err.strerror,
    )


_SQLITE_MAGIC = b"SQLite format 3\x00"

#: How the first bytes of an existing file of each kind look (empty files pass: nothing is lost).
_FILE_KINDS: dict[str, Callable[[bytes], bool]] = {
    "HTML": lambda head: (
        head.lstrip(b"\xef\xbb\xbf \t\r\n").lower().startswith((b"<!doctype html", b"<html"))
    ),
    "CSV": lambda head: b"\x00" not in head,
    "Parquet": lambda head: head.startswith(b"PAR1"),
    "NPZ": lambda head: head.startswith(b"PK\x03\x04"),  # a zip archive, as numpy writes it
    # an ONNX ModelProto: protobuf field 1 (ir_version, a varint) first, as torch writes it
    "ONNX": lambda head: head.startswith(b"\x08"),
    # the YAML of TuneResult.save: its top-level keys (its comment line may have been edited
    # away); a user's YAML with a nested method: and params: is not one
    "parameters": lambda head: (
        b"\x00" not in head
        and re.search(rb"(?m)^method:", head) is not None
        and re.search(rb"(?m)^params:", head) is not None
    ),
}


def check_output_file(
    path: str | Path,
    kind: str | None = None,
    *,
    inputs: Iterable[str | Path] = (),
    what: str = "output",
) -> Path:
    """Refuse, before any work, an output file whose writing would destroy something.

    Refused: a path that is one of ``inputs`` (the same file by any name: symlinks and hard
    links are followed), a directory or other non-regular file, an SQLite database, and an
    existing non-empty file that does not look like ``kind`` (``"HTML"``, ``"CSV"``,
    ``"Parquet"``, ``"NPZ"``, ``"ONNX"`` or ``"parameters"``, a file of
    ``mlmm tune --params-out``; ``None`` checks only the rest). An existing file of the same kind is
    replaced, as an earlier run's output is meant to be.

    Returns
    -------
    pathlib.Path
        ``path`` as a Path.

    Raises
    ------
    MlmmError
        One line naming the path, what it is, and the fix.
    """
    path = Path(path)
    check_name_length(path, what)
    try:
        return _check_output_file(path, kind, inputs, what)
    except OSError as err:  # a folder of the path too long, a symlink loop...
        raise MlmmError(
            f"cannot use {path} as the {what} ({err.strerror or err}); choose another {what} path"
        ) from None


def _check_output_file(
    path: Path, kind: str | None, inputs: Iterable[str | Path], what: str
) -> Path:
    for source in inputs:
        if _same_file(path, Path(source)):
            raise MlmmError(
                f"the {what} {str(path)!r} is the file it is made from ({str(source)!r}); "
                f"writing it would destroy that file; choose another {what} path"
            )
    if not path.exists():
        check_writable_location(path, what)
        return path
    if path.is_dir():
        raise MlmmError(f"the {what} {str(path)!r} is a directory; give a file path")
    if not path.is_file():
        raise MlmmError(f"the {what} {str(path)!r} exists and is not a regular file")
    check_writable_location(path, what)
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return path
    if head.startswith(_SQLITE_MAGIC):
        raise MlmmError(
            f"the {what} {str(path)!r} is an SQLite database (a results store?) and would be "
            f"overwritten; choose another {what} path"
        )
    if kind is not None and not _FILE_KINDS[kind](head):
        raise MlmmError(
            f"the {what} {str(path)!r} exists and is not a {kind} file, so it is not replaced; "
            f"remove it or choose another {what} path"
        )
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (existing or not), by any path."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_name_length(path: Path, what: str, beside: int = 0) -> None:
    """Refuse, in one line, a file name longer than the file system of ``path`` takes (in
    bytes; on Windows in UTF-16 code units, as its file systems count; no refusal where the
    file system tells no limit).

    ``beside``: how many bytes longer a name mlmm writes beside ``path`` is (a model's
    temporary folder, ``.NAME.tmp-`` and 8 hex digits: 14; SQLite's ``NAME-journal``: 8), so
    that a name that fits but whose companion does not is refused before the work, not after
    it. ``what`` names the option in the message (``"--out"``).
    """
    parent = Path(path).parent
    while parent != parent.parent:
        with contextlib.suppress(OSError):  # a folder's own name may be too long
            if parent.exists():
                break
        parent = parent.parent
    longest = _NAME_MAX
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no pathconf on Windows
        longest = os.pathconf(parent, "PC_NAME_MAX")
    if longest < 1:  # -1: no limit, or none the file system tells (0 from some FUSE ones)
        return
    name = Path(path).name
    if _NAMES_IN_UTF16:
        size, unit = len(name.encode("utf-16-le")) // 2, "characters"
    else:
        size, unit = len(os.fsencode(name)), "bytes"
    if size + beside > longest:
        companion = f" (mlmm writes a name {beside} {unit} longer beside it)" if beside else ""
        raise MlmmError(
            f"cannot write {path}: its name is {size} {unit} long, and this file system takes "
            f"names of {longest} {unit} at most{companion}; choose a shorter {what} name (at "
            f"most {longest - beside} {unit})"
        )


def check_writable_location(path: Path, what: str, beside: int = 0) -> None:
    """Refuse a path under a file, in a folder this process cannot write, or with a name too
    long for its file system (:func:`check_name_length`; ``beside`` is passed on), up front.

    ``path`` need not exist: its nearest existing parent must be a directory this process
    can write, since the output is written beside it and renamed. ``what`` names the option
    in the message (``"--out"``). Raises :class:`~mlmm.errors.MlmmError` in one line.
    """
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MlmmError(f"cannot create {path}: {parent} is a file; choose another {what} path")
    if not os.access(parent, os.W_OK | os.X_OK):  # the file is written beside it, then renamed
        raise MlmmError(
            f"cannot write {path}: {parent} is not writable; choose another {what} path or fix "
            f"its permissions"
        )
    check_name_length(path, what, beside)
