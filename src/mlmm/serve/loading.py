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


def check_address(host: str, port: int) -> None:
    """Refuse, in one line and before any model is loaded, a port out of range, a host that
    is not an address here, or an address already in use.

    Without this, uvicorn logs the failure after mlmm has announced the service (``serving
    ... on http://host:port``) and exits with status 3; a port over 65535 was even accepted.
    The address is bound and released at once, so a server that takes it in between still
    stops the start (then in uvicorn's words).

    Raises
    ------
    MlmmError
        Naming the address and the fix.
    """
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MlmmError(f"--port must be an integer in [1, 65535], got {port!r}; e.g. 8000")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as err:
        raise MlmmError(
            f"--host {host!r} is not an address of this machine ({err}); use 127.0.0.1 (this "
            f"machine only) or 0.0.0.0 (every interface)"
        ) from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise MlmmError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); choose another "
                f"--port, or stop the process that holds it"
            ) from None
