"""Load the models a service answers with, by name, before it starts."""

from __future__ import annotations

from pathlib import Path

from mlmm.errors import MlmmError
from mlmm.train.trained import TrainedModel


def served_name(run: str | Path) -> str:
    """The name ``mlmm serve RUN`` serves ``run`` under: its directory's name."""
    return Path(run).resolve().name or "model"


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
        paths[served_name(run)] = Path(run)
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
    Each address ``host`` resolves to is bound as asyncio's server binds it (``SO_REUSEADDR``,
    IPv6 sockets IPv6-only, an address of a family not enabled here skipped) and released at
    once, so a server that takes it in between still stops the start (then in uvicorn's words).

    Raises
    ------
    MlmmError
        Naming the address and the fix.
    """
    import errno
    import socket

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise MlmmError(f"--port must be an integer in [1, 65535], got {port!r}; e.g. 8000")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    not_here = (
        f"--host {host!r} is not an address of this machine ({{}}); use 127.0.0.1 (this "
        f"machine only) or 0.0.0.0 (every interface)"
    )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as err:
        raise MlmmError(not_here.format(err)) from None
    bound, reason = False, "no address family of it is enabled here"
    for family, kind, proto, _, address in infos:
        try:
            probe = socket.socket(family, kind, proto)
        except OSError:  # a family this machine lacks: asyncio skips it too
            continue
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio binds: IPv4 listeners do not clash
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as err:
                if err.errno == errno.EADDRNOTAVAIL:  # asyncio skips it; fails if all do
                    reason = err.strerror or str(err)
                    continue
                fix = "choose another --port, or stop the process that holds it"
                if err.errno == errno.EACCES:
                    fix = "choose a --port of 1024 or above (lower ones need administrator rights)"
                raise MlmmError(
                    f"cannot listen on {where} ({err.strerror or err}); {fix}"
                ) from None
            bound = True
    if not bound:
        raise MlmmError(not_here.format(reason))
