"""Model artifacts: a directory with ``config.json`` and ``model.safetensors``, written atomically.

A killed process never leaves a half-written artifact: everything is written into a hidden
temporary directory beside the target, flushed to disk, and swapped in by renames. Loading
checks the format, version, method, weights hash and tensor names/shapes, and fails with a
one-line :class:`~mlmm.errors.ArtifactError` that says what is wrong and what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mlmm.errors import ArtifactError, MlmmError

FORMAT = "mlmm-artifact"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_artifact(
    path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``state_dict`` and ``config`` as an artifact directory at ``path``, atomically.

    An existing artifact at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MlmmError(f"{path} exists and is not a directory; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).exists():
        # replacing it would delete whatever the user keeps there
        raise MlmmError(
            f"{path} exists and is not an mlmm model directory; choose another --out "
            f"or an empty directory"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old = None
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **config,
            "weights_sha256": _sha256(tmp / WEIGHTS_FILE),
        }
        with open(tmp / CONFIG_FILE, "w") as fh:
            json.dump(full, fh, indent=2, sort_keys=False)
            fh.flush()
            os.fsync(fh.fileno())
        with open(tmp / WEIGHTS_FILE, "rb+") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not path.exists():
            # died between the renames: put the previous artifact back now, not at next load
            with contextlib.suppress(OSError):
                os.rename(old, path)
        raise
    return path


def _recover(path: Path) -> None:
    """If a save died between its two renames, put the previous artifact back."""
    if path.exists():
        return
    olds = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], path)


def load_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check an artifact directory; returns ``(config, state_dict)``."""
    path = Path(path)
    _recover(path)
    if not path.is_dir():
        raise ArtifactError(
            f"no model artifact at {path}; train one first (mlmm train ... --out {path})"
        )
    cfg_path, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_path.exists():
        raise ArtifactError(f"{path} has no {CONFIG_FILE}; it is not an mlmm model directory")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ArtifactError(
            f"{cfg_path} is not valid JSON (corrupt or truncated); retrain or restore the model"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{cfg_path} is not an mlmm artifact config (no format {FORMAT!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"{path} uses artifact format {version!r}, newer than this mlmm reads "
            f"({FORMAT_VERSION}); upgrade mlmm (pip install -U mlmm)"
        )
    if not weights.exists():
        raise ArtifactError(f"{path} has no {WEIGHTS_FILE}; the artifact is incomplete, retrain it")
    if _sha256(weights) != config.get("weights_sha256"):
        raise ArtifactError(
            f"{weights} does not match the hash in {CONFIG_FILE} (corrupt or truncated); "
            f"retrain or restore the model"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(
            f"{weights} cannot be read ({err}); retrain or restore the model"
        ) from None
    return config, state
