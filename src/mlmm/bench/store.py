"""The results store: one embedded SQLite file (WAL) per benchmark, safe to kill at any moment.

Two tables. ``runs`` holds one row per run (its configuration as JSON, the configuration's
hash as key, status, error, timings, parameter count, library version, machine, threads);
``results`` one row per (run, method, test condition, scope, subset, metric) — the tidy table
of :func:`mlmm.evaluate`. A finished run's results and its ``done`` status are written in one
transaction, so a process killed at any point (``kill -9`` included) leaves either the whole
run or none of it, never duplicate rows. Several benchmark processes may share a store: a run
is claimed (status ``running`` with the claiming process as owner) before it starts. The owner
beats a heartbeat while it holds claims; a claim whose owner died, or whose owner has not beaten
for :data:`CLAIM_EXPIRY_SECONDS` (a reused pid, a vanished host), is taken over.

The file identifies itself (``PRAGMA application_id``) and carries its schema version
(``PRAGMA user_version``): opening a file that is not an mlmm store, or one written by a newer
schema, fails with a one-line error before anything is written. The schema is created under
SQLite's write lock, so processes opening a new store at once all see it whole; a lock held by
another process is waited for (:data:`BUSY_TIMEOUT_SECONDS`). SQLite's failures (disk full,
I/O error, read-only file, corrupt file, a lock held too long) become one-line errors
(:class:`~mlmm.errors.MlmmError`) naming the store and the fix.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

import mlmm
from mlmm.bench.spec import RunConfig
from mlmm.errors import MlmmError

#: ``PRAGMA application_id`` of an mlmm store (the bytes "mlmm").
APPLICATION_ID = 0x6D6C6D6D
#: Schema version written by this library.
SCHEMA_VERSION = 1
#: Seconds an open or a write waits for a lock another process holds before giving up.
BUSY_TIMEOUT_SECONDS = 60.0
#: Seconds between the heartbeats of a process that holds claims.
HEARTBEAT_SECONDS = 15.0
#: A claim whose owner has not beaten for this long is stale: another process takes it over.
CLAIM_EXPIRY_SECONDS = 120.0

#: Columns of ``runs`` besides the key and configuration (filled when a run ends).
RUN_FIELDS = (
    "n_parameters",
    "n_models",
    "epochs",
    "train_seconds",
    "run_seconds",
    "latency_ms_per_sample",
    "threads",
    "machine",
    "version",
    "time_limited",
    "condition_errors",
    "device",
    "precision",
    "active_parameters",
)
#: Columns added to ``runs`` after schema 1 was first written, with their SQL types: a store
#: that lacks them gets them when opened (older readers ignore them). ``device`` (where the
#: model trained, e.g. ``cpu``, ``cuda:0``) and ``precision`` (the one it trained in: ``32``
#: for a method that trains outside the shared loop) are NULL for runs written before them.
ADDED_RUN_COLUMNS = {
    "time_limited": "INTEGER",
    "condition_errors": "TEXT",
    "device": "TEXT",
    "precision": "TEXT",
    "active_parameters": "INTEGER",  # per sample: see mlmm.bench.execute.active_parameters
}
#: Columns of ``results`` besides ``run_key``.
RESULT_FIELDS = (
    "method",
    "condition",
    "rate_unit",
    "slot_rate",
    "sample_rate",
    "scope",
    "subset",
    "n",
    "metric",
    "value",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    dataset TEXT NOT NULL,
    method TEXT NOT NULL,
    train_condition TEXT NOT NULL,
    seed INTEGER NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    traceback TEXT,
    started_at REAL,
    finished_at REAL,
    n_parameters INTEGER,
    n_models INTEGER,
    epochs INTEGER,
    train_seconds REAL,
    run_seconds REAL,
    latency_ms_per_sample REAL,
    threads INTEGER,
    machine TEXT,
    version TEXT,
    time_limited INTEGER,
    condition_errors TEXT,
    device TEXT,
    precision TEXT,
    active_parameters INTEGER
);
CREATE TABLE IF NOT EXISTS results (
    run_key TEXT NOT NULL REFERENCES runs(run_key),
    method TEXT NOT NULL,
    condition TEXT NOT NULL,
    rate_unit TEXT,
    slot_rate REAL,
    sample_rate REAL,
    scope TEXT NOT NULL,
    subset TEXT NOT NULL,
    n INTEGER,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_key, method, condition, scope, subset, metric)
);
CREATE TABLE IF NOT EXISTS heartbeats (
    owner TEXT PRIMARY KEY,
    beat_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS specs (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    command TEXT,
    saved_at REAL NOT NULL
);
"""
#: Tables every store has had since schema 1, with their columns: one missing is damage
#: ("corrupt or incomplete"). Tables and columns added to the schema later are not listed
#: here: :meth:`ResultsStore._upgrade` adds them to older stores.
_REQUIRED_COLUMNS = {
    "runs": (
        "run_key",
        "spec",
        "dataset",
        "method",
        "train_condition",
        "seed",
        "config",
        "status",
        "owner",
        "attempts",
        "error",
        "traceback",
        "started_at",
        "finished_at",
        *(name for name in RUN_FIELDS if name not in ADDED_RUN_COLUMNS),
    ),
    "results": ("run_key", *RESULT_FIELDS),
}


#: Columns of ``stream_results`` besides ``run_key`` (``mlmm stream``).
STREAM_RESULT_FIELDS = ("model", "scope", "key", "n", "metric", "value")
#: Columns of ``stream_steps`` besides ``run_key``.
STREAM_STEP_FIELDS = ("model", "time", "prediction", "truth", "live", "latency_ms")

_STREAM_SCHEMA = """
CREATE TABLE IF NOT EXISTS stream_runs (
    run_key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    owner TEXT,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    machine TEXT,
    version TEXT
);
CREATE TABLE IF NOT EXISTS stream_results (
    run_key TEXT NOT NULL REFERENCES stream_runs(run_key),
    model TEXT NOT NULL,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER,
    metric TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_key, model, scope, key, metric)
);
CREATE TABLE IF NOT EXISTS stream_steps (
    run_key TEXT NOT NULL REFERENCES stream_runs(run_key),
    model TEXT NOT NULL,
    time REAL NOT NULL,
    prediction REAL,
    truth REAL,
    live TEXT,
    latency_ms REAL
);
"""

#: Tuning tables (:mod:`mlmm.tune`): one row per study (its configuration as JSON, keyed by the configuration's hash) and one per
#: finished trial. A trial is written whole when it ends, so a study killed at any point
#: resumes from its finished trials. ``tune_claims`` holds the trials running now, claimed as
#: runs are (owner ``host:pid@tag/tTHREAD``, its heartbeat, a dead owner's claim taken over), so
#: processes sharing a study run each trial once.
_TUNING_SCHEMA = """
CREATE TABLE IF NOT EXISTS tune_studies (
    study_key TEXT PRIMARY KEY,
    run_key TEXT,
    dataset TEXT NOT NULL,
    method TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tune_trials (
    study_key TEXT NOT NULL REFERENCES tune_studies(study_key),
    number INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('complete', 'pruned', 'failed')),
    value REAL,
    params TEXT NOT NULL,
    intermediate TEXT NOT NULL,
    attrs TEXT NOT NULL,
    error TEXT,
    seconds REAL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (study_key, number)
);
CREATE TABLE IF NOT EXISTS tune_claims (
    study_key TEXT NOT NULL REFERENCES tune_studies(study_key),
    number INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (study_key, number)
);
"""
#: One row per ended attempt of a run: its number (``runs.attempts`` when it began), who ran it,
#: and how it ended: ``done``, ``failed``, ``lost`` (its worker or node died, or its claim
#: expired; the run was tried again) or ``released`` (given back unfinished). A run ends
#: ``done`` exactly once: :meth:`ResultsStore.finish` writes only under this process's claim.
_ATTEMPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_attempts (
    run_key TEXT NOT NULL REFERENCES runs(run_key),
    attempt INTEGER NOT NULL,
    owner TEXT,
    started_at REAL,
    ended_at REAL NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('done', 'failed', 'lost', 'released')),
    error TEXT,
    PRIMARY KEY (run_key, attempt)
);
"""
#: Columns of ``run_attempts``.
ATTEMPT_FIELDS = ("run_key", "attempt", "owner", "started_at", "ended_at", "outcome", "error")

#: Columns of ``tune_trials`` besides ``study_key`` (JSON columns: params, intermediate, attrs).
TRIAL_FIELDS = (
    "number",
    "state",
    "value",
    "params",
    "intermediate",
    "attrs",
    "error",
    "seconds",
    "finished_at",
)


#: A claim's owner: ``host:pid@tag/tTHREAD`` (this library), or ``host:pid`` (stores written
#: by mlmm before it named the machine: read as before, by host name and pid)
_OWNER = re.compile(r"(?P<host>.*):(?P<pid>\d+)(?:@(?P<tag>[0-9a-f]{8})(?:/t(?P<thread>\d+))?)?")


def this_process() -> str:
    """The owner of a claim made by this thread: ``host:pid@tag/tTHREAD``.

    ``tag`` is :func:`mlmm.utils.host_tag` (host name, machine id, boot id and PID namespace),
    so that two containers of one host name sharing a store never take each other's claims
    for their own, nor judge each other's processes gone; ``THREAD`` (the thread's native id)
    tells apart two threads of one process claiming in one store. Its heartbeat is beaten
    under :func:`owner_process` of it.
    """
    from mlmm.utils import host_tag  # as atomic_write: mlmm.utils is not imported with the store

    return f"{socket.gethostname()}:{os.getpid()}@{host_tag()}/t{threading.get_native_id()}"


#: This process's threads that claim through a benchmark or study (native id -> how many of
#: their :class:`~mlmm.bench.execute.ClaimHeartbeat` run; 0: that work ended, and a claim it
#: left, the store failing on the way out, is stale though the thread lives on, e.g. in a
#: thread pool). A thread absent (claims made through the API alone) is judged by its life.
_CLAIMING: dict[int, int] = {}
_CLAIMING_LOCK = threading.Lock()


def claiming(thread: int, begins: bool) -> None:
    """Record that ``thread`` (a native id of this process) begins or ends a benchmark's or
    study's claims (:class:`~mlmm.bench.execute.ClaimHeartbeat` calls it)."""
    with _CLAIMING_LOCK:
        _CLAIMING[thread] = max(0, _CLAIMING.get(thread, 0) + (1 if begins else -1))
        if not begins:  # those of threads gone: their claims are stale anyway
            alive = {t.native_id for t in threading.enumerate()}
            for other in [t for t, n in _CLAIMING.items() if n == 0 and t not in alive]:
                del _CLAIMING[other]


def _claims_again() -> None:
    """This thread claimed anew: its claims bind again, whatever work it ended before."""
    with _CLAIMING_LOCK:
        if _CLAIMING.get(threading.get_native_id()) == 0:
            del _CLAIMING[threading.get_native_id()]


def owner_process(owner: str) -> str:
    """The process part of a claim's owner (``host:pid@tag``), under which it beats its
    heartbeat; an owner of the older ``host:pid`` form is returned as it is."""
    return re.sub(r"/t\d+$", "", owner)


def _owner_alive(owner: str) -> bool | None:
    """Whether ``owner``'s process (and thread) runs: True or False where this process can
    tell, None where only its heartbeat tells (another machine, container or boot, or a live
    pid that may have been reused since it claimed). A thread of this process whose
    benchmark or study ended (:func:`claiming`) holds nothing, though it lives on.

    An owner of the older ``host:pid`` form is judged as before: gone when its host name is
    this one's and no process ``pid`` exists here.
    """
    from mlmm.utils import host_tag, process_gone

    match = _OWNER.fullmatch(owner)
    if match is None:
        return None
    pid = int(match["pid"])
    if match["tag"] is None:
        return False if match["host"] == socket.gethostname() and process_gone(pid) else None
    if match["tag"] != host_tag():
        return None  # another machine, container or boot: only its heartbeat tells
    if pid != os.getpid():
        return False if process_gone(pid) else None
    if match["thread"] is None:
        return True
    # this process (its pid, in this PID namespace and boot): the thread tells, and whether
    # the benchmark or study it claimed for has ended
    thread = int(match["thread"])
    with _CLAIMING_LOCK:
        ended = _CLAIMING.get(thread) == 0
    return not ended and thread in {t.native_id for t in threading.enumerate()}


def _schema_statements() -> list[str]:
    """Every ``CREATE TABLE`` of this schema: benchmark, attempt, stream and tuning tables."""
    text = _SCHEMA + _ATTEMPT_SCHEMA + _STREAM_SCHEMA + _TUNING_SCHEMA
    return [part.strip() for part in text.split(";") if part.strip()]


def _error_kind(err: sqlite3.Error) -> str:
    """``busy``, ``full``, ``io``, ``readonly``, ``corrupt``, ``notadb``, ``cantopen`` or
    ``other`` (SQLite's result code where Python gives it, else its message)."""
    name = getattr(err, "sqlite_errorname", "") or ""
    text = str(err).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "busy"
    if name == "SQLITE_FULL" or "disk is full" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return "readonly"
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        return "io"
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return "corrupt"
    if name == "SQLITE_NOTADB" or "not a database" in text:
        return "notadb"
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return "cantopen"
    return "other"


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _user_errors(method: _Method) -> _Method:
    """Turn SQLite's exceptions in a store method into one-line user errors."""

    @functools.wraps(method)
    def wrapper(self: ResultsStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            raise self._user_error(err) from err

    return wrapper  # type: ignore[return-value]


class ResultsStore:
    """An mlmm results store (SQLite, WAL journal), created if the file does not exist.

    Parameters
    ----------
    path : str or Path
        The ``.db`` file.
    readonly : bool, default False
        Open for reading only (reports, exports): a missing or empty file is refused instead
        of becoming a store, nothing is written, a store in a read-only folder opens, and no
        empty ``-wal``/``-shm`` file is left beside a store (and folder) you may write once it
        is closed.
    busy_timeout : float, optional
        Seconds to wait for a lock another process holds before failing with "busy"
        (default :data:`BUSY_TIMEOUT_SECONDS`).
    claim_expiry : float, optional
        Seconds without a heartbeat after which another process's claim is stale (default
        :data:`CLAIM_EXPIRY_SECONDS`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = ResultsStore(pathlib.Path(tempfile.mkdtemp()) / "results.db")
    >>> store.runs().empty
    True
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        busy_timeout: float | None = None,
        claim_expiry: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.busy_timeout = BUSY_TIMEOUT_SECONDS if busy_timeout is None else busy_timeout
        self.claim_expiry = CLAIM_EXPIRY_SECONDS if claim_expiry is None else claim_expiry
        try:
            is_dir, exists, is_file = (self.path.is_dir(), self.path.exists(), self.path.is_file())
        except OSError as err:  # a name too long for the file system, a symlink loop...
            raise MlmmError(
                f"cannot use {self.path} as a results store ({err.strerror or err}); give "
                f"another path"
            ) from None
        if is_dir:
            raise MlmmError(
                f"{self.path} is a folder; give the results file, e.g. {self.path}/results.db"
            )
        if exists and not is_file:  # SQLite said "disk I/O error"
            raise MlmmError(
                f"{self.path} is not a regular file (a pipe, a device or a socket); give the "
                f"results file, e.g. results.db"
            )
        if readonly:
            self._db = self._open_for_reading()
        else:
            self._db = self._open_for_writing()

    # ------------------------------------------------------------------ opening
    def _open_for_reading(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise MlmmError(f"no results store at {str(self.path)!r}; run mlmm bench first")
        if self.path.stat().st_size == 0:
            raise MlmmError(
                f"{self.path} is empty (0 bytes), not an mlmm results store; give a store that "
                f"mlmm bench wrote"
            )
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        try:
            try:
                db = self._checked(self._connect_reader())
            except sqlite3.OperationalError as err:
                if _error_kind(err) not in ("cantopen", "readonly", "io"):
                    raise
                # A WAL store in a read-only folder: SQLite cannot create the shared-memory
                # file beside it. Nobody can write there either, so it is read as immutable,
                # which ignores a write-ahead log: one left by a killed benchmark holds
                # committed runs, and reading without it would silently lose them.
                wal = self.path.with_name(self.path.name + "-wal")
                if wal.exists() and wal.stat().st_size > 0:
                    raise MlmmError(
                        f"{self.path} cannot be read in its read-only folder: its write-ahead "
                        f"log {wal.name} holds changes not yet merged into it; copy both files to "
                        f"a writable folder and read the copy there"
                    ) from None
                db = self._checked(self._connect(uri + "&immutable=1", uri=True))
        except sqlite3.Error as err:
            raise self._user_error(err) from err
        return db

    def _checked(self, db: sqlite3.Connection) -> sqlite3.Connection:
        """``db`` once :meth:`_check_store` accepts it; closed when it does not."""
        try:
            self._check_store(db)
        except BaseException:
            db.close()
            raise
        return db

    def _connect_reader(self) -> sqlite3.Connection:
        """A connection that reads and leaves the folder as it found it.

        SQLite gives every connection to a WAL store a ``-wal`` and a ``-shm`` file beside it,
        and only a connection allowed to write removes them, when it is the last to close: a
        ``mode=ro`` reader would leave both behind, empty, next to a store it only read. So a
        store in a writable place is read through a read-write connection with ``query_only``
        (any write is refused, as on a read-only file): reading changes nothing, and on close
        SQLite's own housekeeping runs as for any connection (the last
        to close merges a log into the store, crash-safe, and removes the two files; a writer
        still open keeps them). ``mode=rw`` never creates the file. A store that cannot be
        written (file or folder read-only) is opened ``mode=ro``.
        """
        writable = all(os.access(p, os.W_OK) for p in (self.path, self.path.parent))
        mode = "rw" if writable else "ro"
        db = self._connect(f"{self.path.resolve().as_uri()}?mode={mode}", uri=True)
        if writable:
            db.execute("PRAGMA query_only=ON")
        return db

    def _open_for_writing(self) -> sqlite3.Connection:
        parent = self.path.parent
        for folder in (parent, *parent.parents):
            if folder.exists() and not folder.is_dir():
                raise MlmmError(
                    f"cannot create the store {self.path}: {folder} is a file, not a folder; "
                    f"give a --store path inside a folder"
                )
            if folder.exists():
                break
        if not self.path.exists():  # SQLite writes NAME-journal beside it, and NAME-wal
            from mlmm.utils import check_name_length

            check_name_length(self.path, "--store", beside=len("-journal"))
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MlmmError(
                f"cannot create the folder {parent} for the store ({err.strerror}); give a "
                f"--store path in a writable folder"
            ) from None
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                db = self._connect(str(self.path))
                try:
                    self._initialise(db)
                except BaseException:
                    db.close()
                    raise
                return db
            except sqlite3.Error as err:
                # SQLite's busy handler does not cover every lock taken while a new store's
                # schema or journal mode is being set: retry those until the deadline.
                if _error_kind(err) == "busy" and time.monotonic() < deadline:
                    time.sleep(0.02 + 0.08 * random.random())
                    continue
                raise self._user_error(err) from err

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        return sqlite3.connect(target, timeout=self.busy_timeout, isolation_level=None, uri=uri)

    def _initialise(self, db: sqlite3.Connection) -> None:
        """Create the schema of a new store, or check an existing one, under the write lock."""
        try:  # BEGIN and COMMIT inside: see _transaction
            db.execute("BEGIN IMMEDIATE")
            app = db.execute("PRAGMA application_id").fetchone()[0]
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            new = app == 0 and tables == 0  # a new (or empty) file: ours to create
            if new:
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            else:  # an existing store: its identity checked before anything is written
                self._check_identity(db)
            self._upgrade(db, new)
            self._check_tables(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")

    def _upgrade(self, db: sqlite3.Connection, new: bool) -> None:
        """Create the schema of a new store; bring an existing one up to this schema.

        An existing store gets the tables added to the schema after it was written (a missing
        required table is damage, reported by :meth:`_check_tables`, never recreated empty).
        A column added to an existing table later needs its ``ALTER TABLE`` here.
        """
        for statement in _schema_statements():
            table = statement.split("(", 1)[0].split()[-1]
            if new or table not in _REQUIRED_COLUMNS:
                db.execute(statement)
        if not new:  # columns added to ``runs`` after schema 1
            have = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            for name, kind in ADDED_RUN_COLUMNS.items():
                if have and name not in have:
                    db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def _check_store(self, db: sqlite3.Connection) -> None:
        self._check_identity(db)
        self._check_tables(db)

    def _check_identity(self, db: sqlite3.Connection) -> None:
        app = db.execute("PRAGMA application_id").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID:
            raise MlmmError(
                f"{self.path} is not an mlmm results store; give a new path or a file that "
                f"mlmm bench wrote"
            )
        if version > SCHEMA_VERSION:
            raise MlmmError(
                f"{self.path} was written by a newer mlmm (store schema {version}, this mlmm "
                f"{mlmm.__version__} reads up to {SCHEMA_VERSION}); upgrade mlmm to read it"
            )

    def _check_tables(self, db: sqlite3.Connection) -> None:
        """Refuse a store whose tables or columns were removed (it would fail mid-benchmark)."""
        for table, columns in _REQUIRED_COLUMNS.items():
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            lacking = [c for c in columns if c not in have]
            if lacking:
                what = f"table {table!r}" if not have else f"columns {lacking} of {table!r}"
                raise MlmmError(
                    f"{self.path} is a corrupt or incomplete mlmm results store: {what} missing; "
                    f"restore it from a backup or give a new --store path"
                )

    def _user_error(self, err: sqlite3.Error) -> MlmmError:
        """The one-line error for a failure of SQLite on this store."""
        kind, path = _error_kind(err), self.path
        if kind == "busy":
            holders = self._claim_owners_quietly()
            held = f"; its runs are claimed by {', '.join(holders)}" if holders else ""
            return MlmmError(
                f"{path} is busy: another process held its lock for more than "
                f"{self.busy_timeout:g} s{held}; wait for that process or give another --store"
            )
        if kind == "full":
            return MlmmError(
                f"the disk holding {path} is full ({err}); every finished run is kept: free "
                f"space and run the same command again to resume"
            )
        if kind == "io":
            return MlmmError(
                f"disk I/O error on {path} ({err}); every finished run is kept: check the disk "
                f"(space, quota, a removed drive) and run the same command again to resume"
            )
        unwritable = (path.exists() and not os.access(path, os.W_OK)) or (
            path.parent.exists() and not os.access(path.parent, os.W_OK)
        )
        if kind == "cantopen" and unwritable and not path.exists():
            return MlmmError(
                f"cannot create the store {path}: its folder is read-only; give a --store path "
                f"in a writable folder"
            )
        if kind == "readonly" or (kind == "cantopen" and unwritable):
            return MlmmError(
                f"{path} is read-only ({err}): a benchmark writes to the file and creates files "
                f"beside it; make the file and its folder writable, or give another --store"
            )
        if kind == "corrupt":
            return MlmmError(
                f"{path} is a corrupt or incomplete mlmm results store ({err}); restore it "
                f"from a backup or give a new --store path"
            )
        if kind == "notadb":
            return MlmmError(
                f"{path} is not an mlmm results store ({err}); give a new path or a file that "
                f"mlmm bench wrote"
            )
        return MlmmError(f"cannot use the results store {path}: SQLite says {err!s}")

    def _claim_owners_quietly(self) -> list[str]:
        """Owners of the store's running claims, read without waiting (for a "busy" error)."""
        try:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            with closing(sqlite3.connect(uri, uri=True, timeout=0.5)) as raw:
                rows = raw.execute(
                    "SELECT DISTINCT owner FROM runs WHERE status = 'running' AND owner IS NOT NULL"
                ).fetchall()
            return sorted(r[0] for r in rows)
        except sqlite3.Error:
            return []

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error): one writer at a time."""
        if self.readonly:  # SQLite's refusal would blame the file's permissions, not the mode
            raise MlmmError(
                f"{self.path} is open read-only (readonly=True) and this call writes to it; "
                f"open it with ResultsStore(path) to write"
            )
        # BEGIN and COMMIT inside the try: a Ctrl-C or SIGTERM (a KeyboardInterrupt, mlmm.cli)
        # arriving just after BEGIN or just before COMMIT would otherwise leave the connection
        # inside a transaction, and the claims given back on the way out would fail
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ writing
    @_user_errors
    def add_runs(self, spec_name: str, runs: Iterable[RunConfig]) -> None:
        """Register runs as ``pending`` (runs already known keep their status)."""
        rows = [
            (
                r.key,
                spec_name,
                r.dataset,
                r.method,
                r.train_missing,
                r.seed,
                json.dumps(r.to_dict(), sort_keys=True),
            )
            for r in runs
        ]
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO runs (run_key, spec, dataset, method, train_condition, "
                "seed, config, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                rows,
            )

    @_user_errors
    def claim(self, key: str, retry_failed: bool = True) -> bool:
        """Mark a run ``running`` for this process if nobody else holds it; True if claimed.

        A run is claimable when pending, failed (when ``retry_failed``), or running under a
        stale claim: its owner died, or has not beaten its heartbeat for ``claim_expiry``
        seconds (a reused pid, another host that went away).
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, owner, started_at FROM runs WHERE run_key = ?", (key,)
            ).fetchone()
            if row is None:
                raise MlmmError(f"run {key} is not in {self.path}; add it with add_runs first")
            status, owner, started_at = row
            if status == "done" or (status == "failed" and not retry_failed):
                return False
            if status == "running" and self._claim_live(owner, started_at, self._beats()):
                return False
            if status == "running":  # a stale claim: that attempt is lost
                self._end_attempt(
                    db,
                    key,
                    "lost",
                    f"the claim of {owner} expired (its process ended or "
                    f"stopped beating its heartbeat); taken over by {this_process()}",
                )
            db.execute(
                "UPDATE runs SET status = 'running', owner = ?, attempts = attempts + 1, "
                "started_at = ?, error = NULL, traceback = NULL WHERE run_key = ?",
                (this_process(), time.time(), key),
            )
        _claims_again()
        return True

    def _holds(self, db: sqlite3.Connection, key: str) -> bool:
        """Whether this process holds the claim of run ``key`` (status ``running``)."""
        row = db.execute("SELECT status, owner FROM runs WHERE run_key = ?", (key,)).fetchone()
        return row is not None and row[0] == "running" and row[1] == this_process()

    @staticmethod
    def _end_attempt(db: sqlite3.Connection, key: str, outcome: str, error: str | None) -> None:
        """Record how the current attempt of run ``key`` ended (in ``run_attempts``)."""
        db.execute(
            "INSERT OR REPLACE INTO run_attempts (run_key, attempt, owner, started_at, "
            "ended_at, outcome, error) SELECT run_key, attempts, owner, started_at, ?, ?, ? "
            "FROM runs WHERE run_key = ?",
            (time.time(), outcome, error, key),
        )

    @_user_errors
    def finish(self, key: str, results: pd.DataFrame, info: dict[str, Any]) -> bool:
        """Write a run's results and mark it ``done``, in one transaction; True if written.

        Only under this process's claim: a result that arrives once the run is no longer held
        here (done already, or its claim expired and another process took it over) is
        dropped and False returned, so a run ends ``done`` exactly once.
        """
        missing = [c for c in RESULT_FIELDS if c not in results.columns]
        if missing:
            raise MlmmError(f"results of run {key} lack the columns {missing}")
        table = results[list(RESULT_FIELDS)].astype(object).where(results.notna(), None)
        rows = [(key, *row) for row in table.itertuples(index=False, name=None)]
        with self._transaction() as db:
            if not self._holds(db, key):
                return False
            self._end_attempt(db, key, "done", None)
            db.execute("DELETE FROM results WHERE run_key = ?", (key,))
            db.executemany(
                f"INSERT INTO results (run_key, {', '.join(RESULT_FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(RESULT_FIELDS) + 1))})",
                rows,
            )
            db.execute(
                f"UPDATE runs SET status = 'done', finished_at = ?, owner = NULL, "
                f"{', '.join(f'{f} = ?' for f in RUN_FIELDS)} WHERE run_key = ?",
                (time.time(), *(info.get(f) for f in RUN_FIELDS), key),
            )
        return True

    @_user_errors
    def fail(self, key: str, info: dict[str, Any], lost: bool = False) -> bool:
        """Record a failed run with ``info["error"]`` (and ``traceback``, ``threads``,
        ``machine``, ``version`` when known); its results, if any, are removed. Only under
        this process's claim, as :meth:`finish`; True if written. ``lost``: its last attempt
        is recorded as lost (its worker died) rather than failed."""
        with self._transaction() as db:
            if not self._holds(db, key):
                return False
            self._end_attempt(db, key, "lost" if lost else "failed", info["error"])
            db.execute("DELETE FROM results WHERE run_key = ?", (key,))
            db.execute(
                "UPDATE runs SET status = 'failed', finished_at = ?, owner = NULL, error = ?, "
                "traceback = ?, threads = ?, machine = ?, version = ? WHERE run_key = ?",
                (
                    time.time(),
                    info["error"],
                    info.get("traceback"),
                    info.get("threads"),
                    info.get("machine"),
                    info.get("version"),
                    key,
                ),
            )
        return True

    @_user_errors
    def retry(self, key: str, error: str) -> int:
        """Record the current attempt of a run this process holds as lost (``error``: why)
        and start its next attempt under the same claim. Returns the new attempt's number,
        0 when this process does not hold the run (nothing is written)."""
        with self._transaction() as db:
            if not self._holds(db, key):
                return 0
            self._end_attempt(db, key, "lost", error)
            db.execute(
                "UPDATE runs SET attempts = attempts + 1, started_at = ? WHERE run_key = ?",
                (time.time(), key),
            )
            return db.execute("SELECT attempts FROM runs WHERE run_key = ?", (key,)).fetchone()[0]

    @_user_errors
    def release(self, key: str) -> None:
        """Give back a claim without a result (interrupted by the user): pending again."""
        with self._transaction() as db:
            if self._holds(db, key):
                self._end_attempt(db, key, "released", "given back unfinished")
            db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL "
                "WHERE run_key = ? AND status = 'running' AND owner = ?",
                (key, this_process()),
            )

    @_user_errors
    def reset(self, keys: Iterable[str]) -> int:
        """Make finished or failed runs ``pending`` again, their results removed, so the next
        benchmark runs them anew (a method changed in a way its key cannot see, timings to
        retake on an idle machine). Stale claims are released too; runs held by a live
        process are left alone. Returns how many runs were reset."""
        keys = list(keys)
        marks = ", ".join("?" * len(keys))
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT run_key, status, owner, started_at FROM runs WHERE run_key IN ({marks})",
                keys,
            ).fetchall()
            beats = self._beats()
            chosen = [
                key
                for key, status, owner, started_at in rows
                if status != "running"
                or owner == this_process()
                or not self._claim_live(owner, started_at, beats)
            ]
            for key, status, *_ in rows:  # a claim reset here ends its attempt
                if status == "running" and key in chosen:
                    self._end_attempt(db, key, "released", "reset by hand")
            marks = ", ".join("?" * len(chosen))
            db.execute(f"DELETE FROM results WHERE run_key IN ({marks})", chosen)
            db.execute(
                f"UPDATE runs SET status = 'pending', owner = NULL, error = NULL, "
                f"traceback = NULL WHERE run_key IN ({marks})",
                chosen,
            )
        return len(chosen)

    @_user_errors
    def save_spec(self, name: str, text: str, command: str | None = None) -> None:
        """Keep the spec a benchmark ran (its resolved YAML) and the command that ran it, so a
        report can show how to reproduce it. One row per spec name, replaced by a later run.
        """
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO specs (name, spec, command, saved_at) VALUES (?, ?, ?, ?)",
                (name, text, command, time.time()),
            )

    # ------------------------------------------------------------------ streams
    @_user_errors
    def start_stream_run(self, config: dict[str, Any]) -> str:
        """Register a stream replay (``mlmm stream``) as ``running``; returns its key (a hash of
        ``config``). A finished run of the same configuration keeps its results until
        :meth:`finish_stream_run` replaces them."""
        import hashlib

        text = json.dumps(config, sort_keys=True, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self._transaction() as db:
            db.execute(
                "INSERT INTO stream_runs (run_key, config, status, owner, started_at) "
                "VALUES (?, ?, 'running', ?, ?) ON CONFLICT(run_key) DO UPDATE SET "
                "owner = excluded.owner, started_at = excluded.started_at, "
                "status = CASE status WHEN 'done' THEN 'done' ELSE 'running' END",
                (key, text, this_process(), time.time()),
            )
        return key

    @_user_errors
    def finish_stream_run(
        self, key: str, table: pd.DataFrame, steps: pd.DataFrame, info: dict[str, Any]
    ) -> None:
        """Write a stream run's scores (``model, scope, key, n, metric, value``) and its steps
        (``model, time, prediction, truth, live, latency_ms``) and mark it ``done``, all in one
        transaction: a process killed while writing leaves the previous state whole."""
        scores = table[list(STREAM_RESULT_FIELDS)].astype(object).where(table.notna(), None)
        step_rows = steps[list(STREAM_STEP_FIELDS)].astype(object).where(steps.notna(), None)
        with self._transaction() as db:
            db.execute("DELETE FROM stream_results WHERE run_key = ?", (key,))
            db.execute("DELETE FROM stream_steps WHERE run_key = ?", (key,))
            db.executemany(
                f"INSERT INTO stream_results (run_key, {', '.join(STREAM_RESULT_FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(STREAM_RESULT_FIELDS) + 1))})",
                [(key, *row) for row in scores.itertuples(index=False, name=None)],
            )
            db.executemany(
                f"INSERT INTO stream_steps (run_key, {', '.join(STREAM_STEP_FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(STREAM_STEP_FIELDS) + 1))})",
                [(key, *row) for row in step_rows.itertuples(index=False, name=None)],
            )
            db.execute(
                "UPDATE stream_runs SET status = 'done', owner = NULL, finished_at = ?, "
                "seconds = ?, machine = ?, version = ? WHERE run_key = ?",
                (time.time(), info.get("seconds"), info.get("machine"), mlmm.__version__, key),
            )

    @_user_errors
    def stream_runs(self) -> pd.DataFrame:
        """One row per stream replay (``run_key, config, status, ...``); empty if none."""
        if not self._has_table("stream_runs"):
            return pd.DataFrame(columns=["run_key", "config", "status"])
        return self._frame("SELECT * FROM stream_runs ORDER BY rowid")

    @_user_errors
    def stream_results(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Scores of finished stream runs (all, or those of ``keys``)."""
        columns = ["run_key", *STREAM_RESULT_FIELDS]
        if not self._has_table("stream_results"):
            return pd.DataFrame(columns=columns)
        query = (
            f"SELECT {', '.join('r.' + c for c in columns)} FROM stream_results r JOIN "
            f"stream_runs u ON u.run_key = r.run_key WHERE u.status = 'done' ORDER BY r.rowid"
        )
        out = self._frame(query)
        # runs stored before mlmm named the open last outage-length bin ">=4s" keep its old
        # key "SENSOR:4-infs" in the file; read it under today's name, so that old and new
        # runs compare (see mlmm.stream.experiment.outage_bin_label)
        old = (out.scope == "outage_length") & out.key.str.endswith("-infs")
        out.loc[old, "key"] = out.key[old].str.replace(r"([^:]+)-infs$", r">=\1s", regex=True)
        return out if keys is None else out[out.run_key.isin(set(keys))].reset_index(drop=True)

    @_user_errors
    def stream_steps(self, key: str) -> pd.DataFrame:
        """The answers of one finished stream run, for a timeline."""
        columns = ["run_key", *STREAM_STEP_FIELDS]
        if not self._has_table("stream_steps"):
            return pd.DataFrame(columns=columns)
        query = f"SELECT {', '.join(columns)} FROM stream_steps WHERE run_key = ? ORDER BY rowid"
        return self._frame(query, (key,))

    # ------------------------------------------------------------------ claims
    @_user_errors
    def heartbeat(self) -> None:
        """Record that this process, and so every claim it holds, is alive now.

        The beat is written under :func:`owner_process` of :func:`this_process`, and under
        each owner name of this process's threads that holds claims, which a version of
        mlmm that reads the beat of a claim's exact owner finds too."""
        process = owner_process(this_process())
        now, threads = time.time(), f"{process}/t"
        with self._transaction() as db:
            upsert = " ON CONFLICT(owner) DO UPDATE SET beat_at = excluded.beat_at"
            db.execute(
                "INSERT INTO heartbeats (owner, beat_at) VALUES (?, ?)" + upsert, (process, now)
            )
            held = [("runs", "status = 'running' AND ")]
            if self._has_table("tune_claims", db):
                held.append(("tune_claims", ""))
            for table, running in held:
                db.execute(
                    f"INSERT INTO heartbeats (owner, beat_at) SELECT DISTINCT owner, ? FROM {table} "
                    f"WHERE {running}substr(owner, 1, ?) = ?" + upsert,
                    (now, len(threads), threads),
                )

    @_user_errors
    def end_heartbeat(self) -> None:
        """Remove this process's heartbeat once none of its threads holds a claim (another
        thread of it may still run a study or benchmark on this store)."""
        process = owner_process(this_process())
        threads = f"{process}/t"
        mine = "substr(owner, 1, ?) = ?"
        with self._transaction() as db:
            held = [f"SELECT 1 FROM runs WHERE status = 'running' AND {mine}"]
            if self._has_table("tune_claims", db):
                held.append(f"SELECT 1 FROM tune_claims WHERE {mine}")
            if db.execute(" UNION ALL ".join(held), (len(threads), threads) * len(held)).fetchone():
                return
            db.execute(
                f"DELETE FROM heartbeats WHERE owner = ? OR {mine}",
                (process, len(threads), threads),
            )

    def _beats(self) -> dict[str, float]:
        try:
            return dict(self._db.execute("SELECT owner, beat_at FROM heartbeats").fetchall())
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # a store written before heartbeats, read-only
                return {}
            raise

    def _claim_live(self, owner: str | None, started_at: float | None, beats: dict) -> bool:
        """Whether a ``running`` claim still binds: its owner is this thread, or it is a live
        thread of this process, or it is not known gone (:func:`_owner_alive`) and its
        process has beaten (or claimed) within ``claim_expiry`` seconds."""
        if not owner:
            return False
        if owner == this_process():
            return True
        alive = _owner_alive(owner)
        if alive is not None:
            return alive
        return time.time() - self._last_sign(owner, started_at, beats) <= self.claim_expiry

    @staticmethod
    def _last_sign(owner: str, started_at: float | None, beats: dict) -> float:
        """When ``owner`` last showed it lives: its process's heartbeat (or, from an older
        mlmm, the owner's own), or its claim."""
        beat = max(beats.get(owner_process(owner)) or 0.0, beats.get(owner) or 0.0)
        return max(beat, started_at or 0.0)

    @_user_errors
    def claims(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The ``running`` claims (all, or of ``keys``): ``run_key``, ``owner``,
        ``seconds_since_beat`` (since the owner's last heartbeat, or the claim) and ``live``
        (False: stale, the next benchmark takes it over)."""
        rows = self._db.execute(
            "SELECT run_key, owner, started_at FROM runs WHERE status = 'running' ORDER BY rowid"
        ).fetchall()
        wanted = None if keys is None else set(keys)
        beats, now = self._beats(), time.time()
        out = [
            {
                "run_key": key,
                "owner": owner,
                "seconds_since_beat": now - self._last_sign(owner, started_at, beats),
                "live": self._claim_live(owner, started_at, beats),
            }
            for key, owner, started_at in rows
            if wanted is None or key in wanted
        ]
        return pd.DataFrame(out, columns=["run_key", "owner", "seconds_since_beat", "live"])

    @_user_errors
    def running_claims(self) -> pd.DataFrame:
        """Every claim held now, of runs and of tuning trials: ``kind`` (``run`` or
        ``trial``), ``key`` (the run key, or ``STUDY_KEY#NUMBER``), ``owner``,
        ``age_seconds`` (since the claim; NaN for a claim without a start time, from an
        older store), ``seconds_since_beat`` (since its owner last showed it lives: a
        heartbeat, or the claim) and ``live`` (False: stale, the next process takes it
        over)."""
        rows = [
            ("run", key, owner, at)
            for key, owner, at in self._db.execute(
                "SELECT run_key, owner, started_at FROM runs WHERE status = 'running' "
                "ORDER BY started_at, rowid"
            )
        ]
        if self._has_table("tune_claims"):
            rows += [
                ("trial", f"{study}#{number}", owner, at)
                for study, number, owner, at in self._db.execute(
                    "SELECT c.study_key, c.number, c.owner, c.started_at FROM tune_claims c "
                    "WHERE NOT EXISTS (SELECT 1 FROM tune_trials t WHERE t.study_key = "
                    "c.study_key AND t.number = c.number) ORDER BY c.started_at, c.number"
                )
            ]
        beats, now = self._beats(), time.time()
        columns = ["kind", "key", "owner", "age_seconds", "seconds_since_beat", "live"]
        out = [
            (
                kind,
                key,
                owner,
                math.nan if at is None else now - at,  # a float column, whatever the rows
                now - self._last_sign(owner or "", at, beats),
                self._claim_live(owner, at, beats),
            )
            for kind, key, owner, at in rows
        ]
        return pd.DataFrame(out, columns=columns)

    @_user_errors
    def release_claims(self, force: bool = False) -> int:
        """Make claimed runs ``pending`` again: the stale claims, or every claim with
        ``force`` (the user knows their owners are gone). Returns how many were released."""
        with self._transaction() as db:
            rows = db.execute(
                "SELECT run_key, owner, started_at FROM runs WHERE status = 'running'"
            ).fetchall()
            beats = self._beats()
            chosen = [
                (key,)
                for key, owner, started_at in rows
                if force or not self._claim_live(owner, started_at, beats)
            ]
            for (key,) in chosen:
                self._end_attempt(db, key, "released", "claim released by hand")
            db.executemany(
                "UPDATE runs SET status = 'pending', owner = NULL WHERE run_key = ?", chosen
            )
        return len(chosen)

    @_user_errors
    def release_failed(self) -> int:
        """Make every failed run ``pending`` again (its error cleared), so that the next
        benchmark runs it even with ``retry_failed=False``. Returns how many were released."""
        with self._transaction() as db:
            count = db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL, error = NULL, "
                "traceback = NULL WHERE status = 'failed'"
            ).rowcount
        return count

    # ------------------------------------------------------------------ reading
    def _frame(self, query: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        """The rows of ``query``; SQLite's own errors propagate (pandas' ``read_sql_query``
        would wrap them in its ``DatabaseError``, past :func:`_user_errors`)."""
        cursor = self._db.execute(query, tuple(params))
        return pd.DataFrame(cursor.fetchall(), columns=[d[0] for d in cursor.description])

    @_user_errors
    def status(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``run_key -> status`` (of the given runs, or all); a stale claim reads ``pending``."""
        rows = self._db.execute("SELECT run_key, status, owner, started_at FROM runs").fetchall()
        wanted = None if keys is None else set(keys)
        beats = self._beats()
        out = {}
        for key, status, owner, started_at in rows:
            if wanted is not None and key not in wanted:
                continue
            if status == "running" and not self._claim_live(owner, started_at, beats):
                status = "pending"  # its process died or went silent: it will be run again
            out[key] = status
        return out

    @_user_errors
    def counts(self) -> pd.DataFrame:
        """Runs per spec and status (``spec``, ``status``, ``runs``), for ``mlmm store``."""
        return self._frame(
            "SELECT spec, status, count(*) AS runs FROM runs GROUP BY spec, status "
            "ORDER BY spec, status"
        )

    @_user_errors
    def runs(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per run (all, or those of ``keys``), with its method's family and subtype."""
        runs = self._frame("SELECT * FROM runs ORDER BY rowid")
        for name in ADDED_RUN_COLUMNS:  # an older store opened read-only lacks them
            if name not in runs.columns:
                runs[name] = None
        if keys is not None:
            runs = runs[runs.run_key.isin(set(keys))].reset_index(drop=True)
        from mlmm.methods import METHODS

        def taxonomy(name: str, what: str) -> str:
            name = "auto-ensemble" if name == "auto" else name  # what method="auto" builds
            return METHODS.get(name).info[what] if name in METHODS else "unknown"

        runs["family"] = [taxonomy(m, "family") for m in runs["method"]]
        runs["subtype"] = [taxonomy(m, "subtype") for m in runs["method"]]
        return runs

    @_user_errors
    def results(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """The tidy results of finished runs (all, or those of ``keys``), with each run's
        dataset, training condition and seed. The ``method`` column is the row's:
        ``bayes-optimal`` rows are the reference scored with the run named in ``run_method``."""
        query = (
            "SELECT r.run_key, u.dataset, r.method, u.method AS run_method, u.train_condition, "
            "u.seed, " + ", ".join(f"r.{c}" for c in RESULT_FIELDS if c != "method") + " "
            "FROM results r JOIN runs u ON u.run_key = r.run_key WHERE u.status = 'done' "
            "ORDER BY u.rowid, r.rowid"
        )
        results = self._frame(query)
        if keys is not None:
            results = results[results.run_key.isin(set(keys))].reset_index(drop=True)
        return results

    @_user_errors
    def attempts(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """How each ended attempt of the runs (all, or those of ``keys``) ended, in order:
        :data:`ATTEMPT_FIELDS`; empty for a store written before attempts were recorded."""
        if not self._has_table("run_attempts"):
            return pd.DataFrame(columns=list(ATTEMPT_FIELDS))
        query = f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM run_attempts ORDER BY run_key, attempt"
        out = self._frame(query)
        return out if keys is None else out[out.run_key.isin(set(keys))].reset_index(drop=True)

    @_user_errors
    def specs(self) -> pd.DataFrame:
        """The specs benchmarks ran on this store (``name, spec, command, saved_at``), the
        latest first; empty for a store that holds none."""
        columns = ["name", "spec", "command", "saved_at"]
        if not self._has_table("specs"):  # a store written before specs, opened read-only
            return pd.DataFrame(columns=columns)
        query = f"SELECT {', '.join(columns)} FROM specs ORDER BY saved_at DESC"
        return self._frame(query)

    def table(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """:meth:`results` with each run's costs (parameters, times, threads, machine...)."""
        runs = self.runs(keys)
        cost = ["run_key", *(f for f in RUN_FIELDS if f != "condition_errors"), "family"]
        cost.append("subtype")
        table = self.results(keys).merge(runs[cost], on="run_key", how="left")
        reference = table.method != table.run_method  # the Bayes rows cost nothing to train
        table.loc[reference, ["n_parameters", "n_models", "train_seconds", "time_limited"]] = 0
        table.loc[reference, ["family", "subtype"]] = "oracle"
        return table

    def export(self, path: str | Path, keys: Iterable[str] | None = None) -> Path:
        """Write :meth:`table` to a ``.csv`` or ``.parquet`` file (atomically)."""
        from mlmm.utils import atomic_write

        path = Path(path)
        table = self.table(keys)
        if path.suffix == ".csv":
            with atomic_write(path) as fh:
                table.to_csv(fh, index=False)
        elif path.suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise MlmmError(
                    "Parquet export needs pyarrow: pip install 'mlmm[parquet]' (or export to .csv)"
                ) from None
            with atomic_write(path, "wb") as fh:
                table.to_parquet(fh, index=False)
        else:
            raise MlmmError(f"export to .csv or .parquet, got {path.name!r}")
        return path

    # ------------------------------------------------------------------ tuning
    @staticmethod
    def _insert_study(
        db: sqlite3.Connection,
        study_key: str,
        config: dict[str, Any],
        dataset: str,
        method: str,
        run_key: str | None,
    ) -> None:
        db.execute(
            "INSERT OR IGNORE INTO tune_studies (study_key, run_key, dataset, method, config, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (study_key, run_key, dataset, method, json.dumps(config, sort_keys=True), time.time()),
        )

    @staticmethod
    def _insert_trials(
        db: sqlite3.Connection, study_key: str, trials: Iterable[dict[str, Any]]
    ) -> None:
        rows = []
        for trial in trials:
            row = dict(trial)
            for name in ("params", "intermediate", "attrs"):
                row[name] = json.dumps(row.get(name) or {}, sort_keys=True)
            rows.append((study_key, *(row.get(name) for name in TRIAL_FIELDS)))
        db.executemany(
            f"INSERT OR REPLACE INTO tune_trials (study_key, {', '.join(TRIAL_FIELDS)}) "
            f"VALUES ({', '.join('?' * (len(TRIAL_FIELDS) + 1))})",
            rows,
        )

    @_user_errors
    def open_study(
        self,
        study_key: str,
        config: dict[str, Any],
        dataset: str,
        method: str,
        run_key: str | None = None,
    ) -> list[dict[str, Any]]:
        """Register a tuning study (if new) and return its finished trials, by number.

        Each trial is a dict with :data:`TRIAL_FIELDS` (``params``, ``intermediate`` and
        ``attrs`` decoded from JSON; ``intermediate`` keys are epochs as ints).
        """
        with self._transaction() as db:
            self._insert_study(db, study_key, config, dataset, method, run_key)
        return self.study_trials(study_key)

    @_user_errors
    def add_trial(self, study_key: str, trial: dict[str, Any]) -> None:
        """Write one finished trial (a dict with :data:`TRIAL_FIELDS`) and end its claim, in
        one transaction; a trial of the same number is replaced."""
        with self._transaction() as db:
            self._insert_trials(db, study_key, [trial])
            db.execute(
                "DELETE FROM tune_claims WHERE study_key = ? AND number = ?",
                (study_key, trial["number"]),
            )

    @_user_errors
    def claim_trial(self, study_key: str, number: int) -> bool:
        """Claim trial ``number`` of a study for this process if it is neither finished nor
        held by a live claim of another process (as :meth:`claim`: a claim whose owner died or
        stopped beating its heartbeat is taken over); True if claimed."""
        with self._transaction() as db:
            done = db.execute(
                "SELECT 1 FROM tune_trials WHERE study_key = ? AND number = ?", (study_key, number)
            ).fetchone()
            if done is not None:
                return False
            row = db.execute(
                "SELECT owner, started_at FROM tune_claims WHERE study_key = ? AND number = ?",
                (study_key, number),
            ).fetchone()
            if row is not None and row[0] != this_process():
                if self._claim_live(row[0], row[1], self._beats()):
                    return False
            db.execute(
                "INSERT OR REPLACE INTO tune_claims (study_key, number, owner, started_at) "
                "VALUES (?, ?, ?, ?)",
                (study_key, number, this_process(), time.time()),
            )
        _claims_again()
        return True

    @_user_errors
    def trial_claims(self, study_key: str) -> dict[int, bool]:
        """``trial number -> live`` for a study's claimed trials that are not finished: live
        when held by another process, or another thread of this one, that is alive (see
        :meth:`claims`). A claim under this thread's own name is not: a study runs its trials
        one at a time and ends its claim with the trial, so such a claim was left by an
        earlier call of this thread stopped on a store error, or by a dead process that had
        the same name, and waiting on it would wait forever."""
        if not self._has_table("tune_claims"):
            return {}
        rows = self._db.execute(
            "SELECT c.number, c.owner, c.started_at FROM tune_claims c WHERE c.study_key = ? "
            "AND NOT EXISTS (SELECT 1 FROM tune_trials t WHERE t.study_key = c.study_key "
            "AND t.number = c.number) ORDER BY c.number",
            (study_key,),
        ).fetchall()
        beats = self._beats()
        return {
            number: owner != this_process() and self._claim_live(owner, at, beats)
            for number, owner, at in rows
        }

    @_user_errors
    def release_trials(self, study_key: str) -> None:
        """Give back this process's claims on a study's trials (interrupted: another process
        runs them)."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM tune_claims WHERE study_key = ? AND owner = ?",
                (study_key, this_process()),
            )

    @_user_errors
    def save_study(
        self,
        study_key: str,
        config: dict[str, Any],
        dataset: str,
        method: str,
        trials: Iterable[dict[str, Any]],
        run_key: str | None = None,
    ) -> None:
        """Register a study and write all its trials in one transaction (a benchmark run's
        study, tuned in a worker and sent back whole): a process killed meanwhile leaves the
        whole study or none of it."""
        with self._transaction() as db:
            self._insert_study(db, study_key, config, dataset, method, run_key)
            self._insert_trials(db, study_key, trials)

    @_user_errors
    def study_trials(self, study_key: str) -> list[dict[str, Any]]:
        """The finished trials of a study, by number (empty for an unknown study)."""
        if not self._has_table("tune_trials"):
            return []
        rows = self._db.execute(
            f"SELECT {', '.join(TRIAL_FIELDS)} FROM tune_trials WHERE study_key = ? "
            "ORDER BY number",
            (study_key,),
        ).fetchall()
        trials = []
        for row in rows:
            trial = dict(zip(TRIAL_FIELDS, row, strict=True))
            for name in ("params", "attrs"):
                trial[name] = json.loads(trial[name])
            trial["intermediate"] = {
                int(k): v for k, v in json.loads(trial["intermediate"]).items()
            }
            trials.append(trial)
        return trials

    @_user_errors
    def studies(self) -> pd.DataFrame:
        """One row per tuning study: key, run (for a benchmark run's study), dataset, method,
        configuration, trials finished and failed, the best trial and its validation score."""
        columns = [
            "study_key", "run_key", "dataset", "method", "config", "created_at",
            "n_trials", "n_failed", "best_trial", "best_value",
        ]  # fmt: skip
        if not self._has_table("tune_studies"):
            return pd.DataFrame(columns=columns)
        query = (
            "SELECT s.study_key, s.run_key, s.dataset, s.method, s.config, s.created_at, "
            "COUNT(t.number) AS n_trials, "
            "COALESCE(SUM(t.state = 'failed'), 0) AS n_failed, "
            "(SELECT b.number FROM tune_trials b WHERE b.study_key = s.study_key AND "
            " b.state = 'complete' ORDER BY b.value, b.number LIMIT 1) AS best_trial, "
            "(SELECT MIN(b.value) FROM tune_trials b WHERE b.study_key = s.study_key AND "
            " b.state = 'complete') AS best_value "
            "FROM tune_studies s LEFT JOIN tune_trials t ON t.study_key = s.study_key "
            "GROUP BY s.study_key ORDER BY s.rowid"
        )
        return self._frame(query)[columns]

    def _has_table(self, name: str, db: sqlite3.Connection | None = None) -> bool:
        row = (
            (db or self._db)
            .execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
            .fetchone()
        )
        return row is not None
