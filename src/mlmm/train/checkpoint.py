"""Model artifacts: a directory with ``config.json``, ``model.safetensors`` and a manifest.

Layout. An artifact directory holds four files written by mlmm and nothing else of
mlmm's: ``model.safetensors`` (the weights), ``config.json`` (everything else, with the
weights' SHA-256), ``README.md`` (the model card, generated from the config) and
``mlmm-artifact.json``, the manifest: the marker that says "this directory is an mlmm
artifact" and the SHA-256 of the weights and the config, so that an edited or corrupt
``config.json`` is refused as surely as corrupt weights. The card is mlmm's own file (a
save replaces it, with the others) but is not hashed: it is documentation derived from the
config, so editing it changes no answer, and loading never reads it. Artifacts written before
the manifest existed (``config.json`` with ``"format": "mlmm-artifact"`` and
``model.safetensors``) still load, with only the weights hashed. Any other file in the
directory (notes, evaluation tables) belongs to the user and is never touched.

Saving. A new directory is written in full into a hidden ``.NAME.tmp-*`` directory beside
it and renamed into place. An existing artifact (only with ``overwrite=True``) or an
existing empty directory is written in place: the three files are staged under hidden
``.FILE.new-TOKEN`` names, the staged manifest's rename is the commit point, and then each
file is renamed over its old version. A save killed before the commit point leaves the old
artifact; one killed after it is completed by the next load or save. Every file is written
with the user's umask, as ``open()`` would. Saves and loads of one directory lock it, and
the next save removes what killed saves left behind (stale ``.NAME.tmp-*`` and
``.NAME.old-*`` directories that hold only mlmm's files).

Symlinks. An ``--out`` that is a symlink to a directory is followed: the artifact is
written in the link's target and the link stays as it is. A dangling link is refused.

Loading reads only regular files, each with a size bound, checks the manifest, the format,
the version, both hashes and the safetensors header, and fails with a one-line
:class:`~mlmm.errors.ArtifactError` that says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mlmm.errors import ArtifactError, MlmmError
from mlmm.utils import check_writable_location

try:  # POSIX; elsewhere saves and loads of one directory are not serialised
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FORMAT = "mlmm-artifact"
#: The newest artifact format this mlmm writes; it reads every version up to it (a newer one
#: is refused: "uses artifact format N, newer than this mlmm reads; upgrade mlmm"). Bumped with
#: every key ``config.json`` may newly carry: an earlier mlmm's schema forbids unknown keys, so
#: without the bump it would refuse the artifact as "unknown key ...; retrain or restore the
#: model", the wrong fix. 1: the first format. 2: ``resolved_hyperparameters`` and
#: ``revisions`` (first written under 1, which the mlmm before them refused as unknown keys).
#: An artifact is written at the oldest format that carries it (:func:`written_format`).
FORMAT_VERSION = 2
#: The keys each format after the first added to ``config.json``, each with a test of whether
#: its value says nothing more than leaving the key out does (an artifact without
#: ``resolved_hyperparameters`` resolved nothing; without ``revisions``, every method is at
#: revision 1). A new format's keys are added here with the version.
ADDED_KEYS: dict[int, dict[str, Callable[[Any], bool]]] = {
    2: {
        "resolved_hyperparameters": lambda value: value == {},
        "revisions": lambda value: all(r == 1 for r in value.values()),
    },
}
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "mlmm-artifact.json"
CARD_FILE = "README.md"
#: mlmm's own files in an artifact, in the order a save renames them (the manifest last).
OWN_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_FILE, MANIFEST_FILE)
#: The first line of every card mlmm writes: a README.md without it is the user's, and is kept.
CARD_MARKER = (
    "<!-- mlmm model card: rewritten by every save; keep your own notes in another file -->"
)

#: Largest files a load reads; anything bigger is refused before it is read.
MAX_CONFIG_BYTES = 64 << 20
MAX_MANIFEST_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 16 << 30
#: Seconds a load or save waits for another process saving the same directory.
LOCK_TIMEOUT = 60.0

_STAGED = re.compile(
    r"^\.(" + "|".join(re.escape(n) for n in OWN_FILES) + r")\.(new|part)-([0-9a-f]+)$"
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------- small helpers
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_regular(path: Path, limit: int) -> bytes:
    """Read a regular file of at most ``limit`` bytes; anything else is an ``ArtifactError``.

    Opened non-blocking, so a FIFO cannot hang the read, and checked with ``fstat`` on the
    open descriptor, so a device (``/dev/zero``), a directory or a file that is too large is
    refused before a byte is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist; the artifact is incomplete") from None
    except OSError as err:
        raise ArtifactError(f"{path} cannot be opened ({err.strerror}); check it") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ArtifactError(
                f"{path} is {kind}; an artifact holds regular files only, retrain or restore it"
            )
        if info.st_size > limit:
            raise ArtifactError(
                f"{path} is {info.st_size:,} bytes, more than the {limit:,} an artifact file "
                f"may have; it is not an mlmm artifact file"
            )
        chunks, left = [], info.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError as err:
        raise ArtifactError(f"{path} cannot be read ({err.strerror}); check it") from None
    finally:
        os.close(fd)


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ArtifactError(
            f"{path} is not valid JSON (corrupt or truncated); retrain or restore the model"
        ) from None


def _check_version(version: Any, where: Path) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArtifactError(
            f"{where} is not a valid mlmm artifact: format_version must be a positive integer, "
            f"got {version!r}; retrain or restore the model"
        )
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{where} uses artifact format {version!r}, newer than this mlmm reads "
            f"({FORMAT_VERSION}); upgrade mlmm (pip install -U mlmm)"
        )


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist) with the user's umask, write, flush to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    with os.fdopen(os.open(path, flags, 0o666), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _flock(fd: int, exclusive: bool, path: Path) -> None:
    """Lock ``fd`` (shared or exclusive), waiting at most :data:`LOCK_TIMEOUT` seconds."""
    if fcntl is None:  # pragma: no cover
        return
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, mode)
            return
        except OSError as err:
            if not isinstance(err, BlockingIOError):  # a filesystem without locks: go on
                return
            if time.monotonic() > deadline:
                raise ArtifactError(
                    f"{path} is being written by another process for over "
                    f"{LOCK_TIMEOUT:.0f}s; wait for it to finish and try again"
                ) from None
            time.sleep(0.05)


@contextlib.contextmanager
def _locked(path: Path, exclusive: bool) -> Iterator[int]:
    """Hold a lock on directory ``path`` (shared to read, exclusive to write)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        _flock(fd, exclusive, path)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _locked_elsewhere(path: Path) -> bool:
    """True when another live process holds a lock on directory ``path``."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _staged_files(path: Path) -> dict[str, dict[str, Path]]:
    """Files an unfinished save staged in ``path``: token -> {"new:NAME"/"part:NAME": path}."""
    found: dict[str, dict[str, Path]] = {}
    for entry in path.iterdir():
        match = _STAGED.match(entry.name)
        if match:
            name, kind, token = match.groups()
            found.setdefault(token, {})[f"{kind}:{name}"] = entry
    return found


def _finish_interrupted(path: Path) -> bool:
    """Complete or undo the in-place saves that died in ``path`` (under its exclusive lock).

    A save whose manifest was staged (``.mlmm-artifact.json.new-TOKEN``) had all its files
    complete on disk: roll it forward. Anything else it staged is incomplete: delete it.
    Returns True when something was done.
    """
    staged = _staged_files(path)
    for files in staged.values():
        manifest = files.get(f"new:{MANIFEST_FILE}")
        if manifest is None:
            for entry in files.values():
                entry.unlink()
            continue
        for name in OWN_FILES[:-1]:
            entry = files.get(f"new:{name}")
            if entry is not None:
                os.replace(entry, path / name)
        os.replace(manifest, path / MANIFEST_FILE)
        for key, entry in files.items():
            if key.startswith("part:"):
                entry.unlink()
    if staged:
        _fsync_dir(path)
    return bool(staged)


def _has_committed(path: Path) -> bool:
    """True when a save in ``path`` reached its commit point but was not rolled forward."""
    return any(f"new:{MANIFEST_FILE}" in files for files in _staged_files(path).values())


def _recover(path: Path) -> None:
    """If a save by an older mlmm died between its two renames, put the previous artifact back."""
    if path.exists() or path.is_symlink():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.lstat().st_mtime)
    if olds:
        os.rename(olds[-1], path)


def _only_mlmm_files(path: Path) -> bool:
    return all(e.name in OWN_FILES or _STAGED.match(e.name) for e in path.iterdir())


def _clean_leftovers(path: Path) -> None:
    """Remove what killed saves left beside ``path``: stale ``.NAME.tmp-*`` / ``.NAME.old-*``.

    Only directories that hold nothing but mlmm's own files are removed, and none that a
    running save holds locked; a leftover symlink (``.link.old-*``) is unlinked, never followed.
    """
    if not path.parent.is_dir():
        return
    for pattern in (f".{path.name}.tmp-*", f".{path.name}.old-*"):
        for entry in path.parent.glob(pattern):
            if entry.is_symlink():
                entry.unlink()
            elif entry.is_dir() and not _locked_elsewhere(entry) and _only_mlmm_files(entry):
                shutil.rmtree(entry)


# ---------------------------------------------------------------------- what a path is
def is_artifact(path: str | Path) -> bool:
    """True when ``path`` is a directory that mlmm wrote as a model artifact.

    That is: it holds mlmm's manifest (``mlmm-artifact.json``), or, for artifacts written
    before the manifest, a ``config.json`` declaring ``"format": "mlmm-artifact"`` next to a
    ``model.safetensors``. A directory that merely holds some ``config.json`` is not one.
    """
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        manifest = path / MANIFEST_FILE
        if manifest.exists():
            data = _parse_json(_read_regular(manifest, MAX_MANIFEST_BYTES), manifest)
            return isinstance(data, dict) and data.get("format") == FORMAT
        config = _parse_json(_read_regular(path / CONFIG_FILE, MAX_CONFIG_BYTES), path)
        return (
            isinstance(config, dict)
            and config.get("format") == FORMAT
            and "weights_sha256" in config
            and (path / WEIGHTS_FILE).is_file()
        )
    except ArtifactError:
        return False


def _user_entries(path: Path) -> list[str]:
    return sorted(e.name for e in path.iterdir() if not _STAGED.match(e.name))


def check_artifact_path(path: str | Path, overwrite: bool = False) -> Path:
    """Check that a model artifact may be written at ``path``, before any work is done.

    Accepted: a path that does not exist (its nearest existing parent must be a writable
    directory), an empty directory, or an existing mlmm artifact when ``overwrite`` is true.
    Refused, with one line saying why and what to do: a file, a directory holding anything
    else, an artifact without ``overwrite``, a dangling symlink, a read-only location.

    Parameters
    ----------
    path : str or Path
        Where the artifact directory goes (``mlmm train --out``).
    overwrite : bool, default False
        Allow replacing an existing artifact (its own files only; other files stay).

    Returns
    -------
    Path
        The directory the artifact will be written to: ``path`` with symlinks resolved.

    Raises
    ------
    MlmmError
        When the artifact cannot or must not be written there.
    """
    given = Path(path).expanduser()
    try:
        return _check_artifact_path(given, overwrite)
    except OSError as err:
        raise MlmmError(
            f"cannot use {given} for the model ({err.strerror or err}); choose another --out"
        ) from None


def _check_artifact_path(given: Path, overwrite: bool) -> Path:
    if given.is_symlink() and not given.exists():
        raise MlmmError(
            f"{given} is a symlink to {os.readlink(given)!r}, which does not exist; create "
            f"the target directory or choose another --out"
        )
    target = given.resolve()
    _recover(target)
    if target.exists():
        if not target.is_dir():
            raise MlmmError(
                f"{given} exists and is a file, not a model directory; choose another --out"
            )
        entries = _user_entries(target)
        if entries and not is_artifact(target):
            shown = ", ".join(repr(e) for e in entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise MlmmError(
                f"{given} exists and is not an mlmm model directory (it holds {shown}); "
                f"choose another --out or an empty directory, nothing was changed"
            )
        if entries and not overwrite:
            raise MlmmError(
                f"{given} already holds an mlmm model; pass --overwrite (overwrite=True in "
                f"Python) to replace it (only its model files; your other files stay)"
            )
        if not os.access(target, os.W_OK | os.X_OK):
            raise MlmmError(f"{given} is not writable; choose another --out or fix its permissions")
        return target
    # a new artifact is written into a temporary folder beside it, then renamed
    check_writable_location(
        target, "--out", beside=len(_temporary_dir(target).name) - len(target.name)
    )
    return target


def _temporary_dir(target: Path) -> Path:
    """``.NAME.tmp-`` and 8 random hex digits, beside ``target``: a new artifact's folder until
    it is renamed into place (:func:`_clean_leftovers` removes those of killed saves)."""
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------- save
def _save_new(target: Path, files: dict[str, bytes]) -> None:
    """Write a new artifact directory into ``.NAME.tmp-*`` and rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_dir(target)
    tmp.mkdir()
    try:
        with _locked(tmp, exclusive=True):  # a concurrent save's cleanup leaves it alone
            for name in OWN_FILES:
                _write_file(tmp / name, files[name])
            _fsync_dir(tmp)
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _save_in_place(target: Path, files: dict[str, bytes], overwrite: bool) -> None:
    """Replace mlmm's files in an existing directory; the staged manifest is the commit point."""
    with _locked(target, exclusive=True):
        _finish_interrupted(target)
        check_artifact_path(target, overwrite)  # again, now that the directory is ours
        token = uuid.uuid4().hex[:8]
        staged = {name: target / f".{name}.new-{token}" for name in OWN_FILES}
        part = target / f".{MANIFEST_FILE}.part-{token}"
        committed = False
        try:
            for name in OWN_FILES[:-1]:
                _write_file(staged[name], files[name])
            _write_file(part, files[MANIFEST_FILE])
            _fsync_dir(target)
            os.rename(part, staged[MANIFEST_FILE])
            committed = True
            _fsync_dir(target)
            _finish_interrupted(target)
        except BaseException:
            if not committed:
                for entry in (*staged.values(), part):
                    with contextlib.suppress(FileNotFoundError):
                        entry.unlink()
            else:  # the new artifact is complete on disk: finish it now, or at the next load
                with contextlib.suppress(OSError):
                    _finish_interrupted(target)
            raise


def written_format(config: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The oldest format that carries ``config``, and ``config`` as written in it: the keys of
    newer formats left out where they all say nothing (:data:`ADDED_KEYS`), so an mlmm that
    reads only that older format loads the artifact, and answers as this one does (a
    ``late-fusion`` model, say: no size resolved, every revision at 1). A key that says
    something keeps its format: an older mlmm is told to upgrade, not to retrain.
    """
    version = FORMAT_VERSION
    while version > 1 and all(
        key not in config or says_nothing(config[key])
        for key, says_nothing in ADDED_KEYS[version].items()
    ):
        config = {k: v for k, v in config.items() if k not in ADDED_KEYS[version]}
        version -= 1
    return version, config


def artifact_bytes(state_dict: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, bytes]:
    """The bytes of an artifact's hashed files: weights, config and manifest (no card).

    What :func:`save_artifact` writes and :func:`read_artifact_bytes` reads back; also how a
    pickled estimator carries its fitted model (``MissingModalityClassifier.__getstate__``).

    Returns
    -------
    dict of str to bytes
        ``{WEIGHTS_FILE: safetensors, CONFIG_FILE: JSON, MANIFEST_FILE: JSON}``.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    weights = save_safetensors(tensors)
    weights_sha256 = hashlib.sha256(weights).hexdigest()
    version, config = written_format(config)
    full = {
        "format": FORMAT,
        "format_version": version,
        **config,
        "weights_sha256": weights_sha256,
    }
    config_bytes = json.dumps(full, indent=2, sort_keys=False).encode()
    manifest = {
        "format": FORMAT,
        "format_version": version,
        "sha256": {
            WEIGHTS_FILE: weights_sha256,
            CONFIG_FILE: hashlib.sha256(config_bytes).hexdigest(),
        },
    }
    return {
        WEIGHTS_FILE: weights,
        CONFIG_FILE: config_bytes,
        MANIFEST_FILE: json.dumps(manifest, indent=2).encode(),
    }


def save_artifact(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    config: dict[str, Any],
    overwrite: bool = False,
    card: str | None = None,
) -> Path:
    """Write ``state_dict`` and ``config`` as an artifact directory at ``path``, atomically.

    Parameters
    ----------
    path : str or Path
        A new path, an empty directory, or (with ``overwrite=True``) an existing artifact,
        checked by :func:`check_artifact_path` before anything is written. A symlink to a
        directory is followed: the artifact goes into its target and the link stays.
    state_dict : dict of str to Tensor
        The weights, written as ``model.safetensors``.
    config : dict
        JSON-ready data, written as ``config.json`` after the format, version and weights hash.
    overwrite : bool, default False
        Replace an existing artifact. Only mlmm's files are replaced; files a user added to
        the directory stay. The old artifact stays whole until the new one is complete.
    card : str, optional
        The model card, written as ``README.md`` (not hashed: never read by a load). By
        default a line pointing at ``config.json``.

    Returns
    -------
    Path
        ``path`` as given.

    Raises
    ------
    MlmmError
        When ``path`` is refused, or writing fails (disk full, read-only): one line, and
        nothing half-written is left behind.
    """
    given = Path(path)
    target = check_artifact_path(given, overwrite)
    files = artifact_bytes(state_dict, config)
    if card is None:
        card = "# mlmm model artifact\n\nSee `config.json` for what this model is.\n"
    files = {
        WEIGHTS_FILE: files[WEIGHTS_FILE],
        CONFIG_FILE: files[CONFIG_FILE],
        CARD_FILE: _card_bytes(target, card),
        MANIFEST_FILE: files[MANIFEST_FILE],
    }
    try:
        _clean_leftovers(target)
        if target.is_dir():
            _save_in_place(target, files, overwrite)
        else:
            _save_new(target, files)
    except OSError as err:
        hint = (
            "free some disk space"
            if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            else "check the location"
        )
        raise MlmmError(
            f"cannot write the model to {given} ({err.strerror or err}); {hint} or choose "
            f"another --out, nothing was half-written"
        ) from err
    return given


def _card_bytes(target: Path, card: str) -> bytes:
    """The card to write: mlmm's, unless ``target`` holds a README.md of the user's (one
    without :data:`CARD_MARKER`, e.g. notes added to an artifact older than cards), which is
    written back unchanged so that an overwrite never loses it."""
    existing = target / CARD_FILE
    if existing.is_file() and not existing.is_symlink():
        with open(existing, "rb") as fh:
            head = fh.read(len(CARD_MARKER.encode()))
        if head != CARD_MARKER.encode():
            return existing.read_bytes()
    return f"{CARD_MARKER}\n{card}".encode()


# ---------------------------------------------------------------------- load
def _read_manifest(path: Path) -> dict[str, str] | None:
    """The hashes in ``path``'s manifest, or None for an artifact older than manifests."""
    file = path / MANIFEST_FILE
    if not file.exists() and not file.is_symlink():
        return None
    return _manifest_hashes(_read_regular(file, MAX_MANIFEST_BYTES), file)


def _manifest_hashes(manifest: bytes, file: Path) -> dict[str, str]:
    """The hashes in a manifest's bytes (``file`` names it in errors)."""
    data = _parse_json(manifest, file)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"{file} is not an mlmm artifact manifest (no format {FORMAT!r})")
    _check_version(data.get("format_version"), file)
    hashes = data.get("sha256")
    if (
        not isinstance(hashes, dict)
        or set(hashes) != {CONFIG_FILE, WEIGHTS_FILE}
        or not all(isinstance(h, str) and _SHA256.match(h) for h in hashes.values())
    ):
        raise ArtifactError(
            f"{file} is not a valid mlmm artifact manifest (sha256 must give a hash for "
            f"{CONFIG_FILE} and {WEIGHTS_FILE}); retrain or restore the model"
        )
    return hashes


def load_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check an artifact directory; returns ``(config, state_dict)``.

    Raises
    ------
    ArtifactError
        One line naming what is wrong (missing, not a regular file, too large, not JSON,
        another format, a newer version, a hash that does not match, unreadable weights).
    """
    path = Path(path)
    _recover(path)
    if path.is_file() and path.name in OWN_FILES and path.parent.is_dir():
        # config.json or model.safetensors named itself: the artifact is its folder
        raise ArtifactError(
            f"{path} is one file of a model artifact; give its directory, {str(path.parent)!r}"
        )
    if not path.is_dir():
        raise ArtifactError(
            f"no model artifact at {path}; train one first (mlmm train ... --out {path})"
        )
    try:
        with _locked(path, exclusive=False) as fd:
            if _staged_files(path):  # a save died here: complete or undo it first
                _flock(fd, True, path)
                try:
                    _finish_interrupted(path)
                except OSError as err:
                    # only a committed save (its manifest staged) changes what loads; staging
                    # of uncommitted ones that cannot be deleted leaves the old artifact whole
                    if _has_committed(path):
                        raise ArtifactError(
                            f"{path} holds an unfinished save that cannot be completed "
                            f"({err.strerror}); load it from a writable copy"
                        ) from None
            return _load_locked(path)
    except OSError as err:
        raise ArtifactError(f"cannot read the model at {path} ({err.strerror}); check it") from None


def _load_locked(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg_path, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_path.exists() and not cfg_path.is_symlink():
        raise ArtifactError(f"{path} has no {CONFIG_FILE}; it is not an mlmm model directory")
    hashes = _read_manifest(path)
    config = _checked_config(_read_regular(cfg_path, MAX_CONFIG_BYTES), hashes, cfg_path, path)
    if not weights.exists() and not weights.is_symlink():
        raise ArtifactError(f"{path} has no {WEIGHTS_FILE}; the artifact is incomplete, retrain it")
    state = _checked_weights(_read_regular(weights, MAX_WEIGHTS_BYTES), config, hashes, weights)
    return config, state


def read_artifact_bytes(
    files: dict[str, bytes], where: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Check the bytes :func:`artifact_bytes` made as :func:`load_artifact` checks the files;
    returns ``(config, state_dict)``.

    Parameters
    ----------
    files : dict of str to bytes
        ``{WEIGHTS_FILE: ..., CONFIG_FILE: ..., MANIFEST_FILE: ...}``.
    where : str
        What the bytes are, for the error messages (e.g. "the pickled model").

    Raises
    ------
    ArtifactError
        A file missing, not bytes, or failing a check of :func:`load_artifact`.
    """
    if not isinstance(files, dict) or not all(
        isinstance(files.get(name), bytes) for name in (WEIGHTS_FILE, CONFIG_FILE, MANIFEST_FILE)
    ):
        raise ArtifactError(
            f"{where} lacks the bytes of {WEIGHTS_FILE}, {CONFIG_FILE} or {MANIFEST_FILE}; "
            "it was not made by this mlmm, refit the model"
        )
    base = Path(where)
    hashes = _manifest_hashes(files[MANIFEST_FILE], base / MANIFEST_FILE)
    config = _checked_config(files[CONFIG_FILE], hashes, base / CONFIG_FILE, base)
    state = _checked_weights(files[WEIGHTS_FILE], config, hashes, base / WEIGHTS_FILE)
    return config, state


def _checked_config(
    config_bytes: bytes, hashes: dict[str, str] | None, cfg_path: Path, path: Path
) -> dict[str, Any]:
    """``config.json``'s bytes checked against the manifest, parsed, format and version checked."""
    if hashes is not None and hashlib.sha256(config_bytes).hexdigest() != hashes[CONFIG_FILE]:
        raise ArtifactError(
            f"{cfg_path} does not match the hash in {MANIFEST_FILE} (edited or corrupt); "
            f"retrain or restore the model"
        )
    config = _parse_json(config_bytes, cfg_path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{cfg_path} is not an mlmm artifact config (no format {FORMAT!r})")
    _check_version(config.get("format_version"), path)
    return config


def _checked_weights(
    data: bytes, config: dict[str, Any], hashes: dict[str, str] | None, weights: Path
) -> dict[str, torch.Tensor]:
    """``model.safetensors``' bytes checked against both hashes and read."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != config.get("weights_sha256") or (
        hashes is not None and digest != hashes[WEIGHTS_FILE]
    ):
        raise ArtifactError(
            f"{weights} does not match the hash in {CONFIG_FILE} (corrupt or truncated); "
            f"retrain or restore the model"
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ArtifactError(
            f"{weights} cannot be read ({err}); retrain or restore the model"
        ) from None
