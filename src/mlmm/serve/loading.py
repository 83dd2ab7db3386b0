"""Load the models a service answers with, by name, before it starts."""

from __future__ import annotations

from pathlib import Path

from mlmm.errors import MlmmError
from mlmm.train.trained import TrainedModel


def load_models(run: Path | None, named: list[str] | None) -> dict[str, TrainedModel]:
    """Load ``run`` (named after its directory) and every ``NAME=RUN`` of ``named``.

    Every artifact is checked in full (manifest, hashes, config schema) before anything
    is served, so a directory that is not an artifact, or a tampered one, stops the start
    with one line.

    Parameters
    ----------
    run : Path, optional
        One artifact directory; served under its directory name.
    named : list of str, optional
        ``"NAME=RUN"`` entries (``mlmm serve --model fast=runs/lf``).

    Returns
    -------
    dict of str to TrainedModel
    """
    paths: dict[str, Path] = {}
    if run is not None:
        paths[Path(run).resolve().name or "model"] = Path(run)
    for item in named or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise MlmmError(
                f"--model is written NAME=RUN, got {item!r} (e.g. --model fast=runs/lf)"
            )
        if name.strip() in paths:
            raise MlmmError(
                f"model name {name.strip()!r} is given twice; give each model its own name"
            )
        paths[name.strip()] = Path(path.strip())
    if not paths:
        raise MlmmError("no model to serve; give a run directory or --model NAME=RUN")
    return {name: TrainedModel.load(path) for name, path in paths.items()}
