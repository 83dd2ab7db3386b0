"""The process of a local benchmark pool worker (:class:`mlmm.bench.execute.PoolExecutor`).

Only the standard library is imported at the top: a spawned worker arms its parent-death
watch (:func:`watch_parent`) before it spends seconds importing torch and pandas, so a
coordinator killed at any moment leaves no worker behind. Configurations and outcomes travel
as JSON (no pickle), one message per run.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

#: ``prctl`` option: the signal a Linux process receives when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Exit code of a pool worker that ended because its coordinator died.
ORPHAN_EXIT_CODE = 3


def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """End this process as soon as ``parent_pid`` (its coordinator) ends.

    A worker whose coordinator was killed (``kill -9``) would otherwise wait for work forever,
    holding its memory. On Linux the kernel kills it with its parent (``PR_SET_PDEATHSIG``);
    everywhere a daemon thread checks every ``interval`` seconds that the parent is still
    the one that started it (an orphan is adopted by another process).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):  # no prctl here: the watchdog below still acts
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(ORPHAN_EXIT_CODE)

    def watchdog() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watchdog, name="mlmm-parent-watchdog", daemon=True).start()


def worker_main(connection: Connection, threads: int, parent_pid: int) -> None:
    """Run each configuration received on ``connection`` until told to stop (``null``)."""
    watch_parent(parent_pid)
    # Ctrl-C, and a SIGTERM or SIGHUP sent to the whole process group (coreutils timeout, a
    # batch scheduler, a closed terminal), are the coordinator's to handle: it gives the runs
    # back and stops its workers (a worker killed by it first would have its run recorded failed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # not on Windows
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from mlmm.bench.execute import execute_run, pin_threads

    pin_threads(threads)
    while True:
        try:
            config = json.loads(connection.recv_bytes())
        except (EOFError, OSError):  # the coordinator closed the pipe or went away
            return
        if config is None:
            return
        connection.send_bytes(encode_outcome(execute_run(config, threads)))


def encode_outcome(outcome: dict[str, Any]) -> bytes:
    """A run's outcome as JSON (its results table as columns); floats round-trip exactly."""
    outcome = dict(outcome)
    if "results" in outcome:
        outcome["results"] = outcome["results"].to_dict(orient="list")
    return json.dumps(outcome, default=_json_scalar).encode()


def decode_outcome(message: bytes) -> dict[str, Any]:
    """The outcome :func:`encode_outcome` wrote, its results a DataFrame again."""
    import pandas as pd

    outcome = json.loads(message)
    if "results" in outcome:
        outcome["results"] = pd.DataFrame(outcome["results"])
    return outcome


def _json_scalar(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"a worker cannot send a {type(value).__name__}")
