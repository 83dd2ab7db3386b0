"""The results store: one embedded SQLite file (WAL) per benchmark, safe to kill at any moment.

Two tables. ``runs`` holds one row per run (its configuration as JSON, the configuration's
hash as key, status, error, timings, parameter count, library version, machine, threads);
``results`` one row per (run, method, test condition, scope, subset, metric) — the tidy table
of :func:`mlmm.evaluate`. A finished run's results and its ``done`` status are written in one
transaction, so a process killed at any point (``kill -9`` included) leaves either the whole
run or none of it, never duplicate rows. Several benchmark processes may share a store: a run
is claimed (status ``running`` with the claiming process as owner) before it starts, and a
claim whose owner died is taken over.

The file identifies itself (``PRAGMA application_id``) and carries its schema version
(``PRAGMA user_version``): opening a file that is not an mlmm store, or one written by a newer
schema, fails with a one-line error before anything is written.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

import mlmm
from mlmm.bench.spec import RunConfig
from mlmm.errors import MlmmError

#: ``PRAGMA application_id`` of an mlmm store (the bytes "mlmm").
APPLICATION_ID = 0x6D6C6D6D
#: Schema version written by this library.
SCHEMA_VERSION = 1

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
)
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
    version TEXT
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
"""


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


def this_process() -> str:
    """The owner tag of a claim: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    """Whether the process that claimed a run still runs (claims from other hosts are trusted)."""
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


class ResultsStore:
    """An mlmm results store (SQLite, WAL journal), created if the file does not exist.

    Parameters
    ----------
    path : str or Path
        The ``.db`` file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> store = ResultsStore(pathlib.Path(tempfile.mkdtemp()) / "results.db")
    >>> store.runs().empty
    True
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise MlmmError(
                f"{self.path} is a folder; give the results file, e.g. {self.path}/results.db"
            )
        existed = self.path.exists() and self.path.stat().st_size > 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            if existed:
                self._check_identity()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            if not existed:  # one script, one transaction: a new store is complete or absent
                self._db.executescript(
                    f"BEGIN IMMEDIATE; PRAGMA application_id={APPLICATION_ID}; "
                    f"PRAGMA user_version={SCHEMA_VERSION}; {_SCHEMA} COMMIT;"
                )
        except sqlite3.DatabaseError as err:
            raise MlmmError(f"{self.path} is not an mlmm results store ({err})") from None

    def _check_identity(self) -> None:
        try:
            app = self._db.execute("PRAGMA application_id").fetchone()[0]
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError:
            app, version = None, None
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

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on error): one writer at a time."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ------------------------------------------------------------------ writing
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

    def claim(self, key: str, retry_failed: bool = True) -> bool:
        """Mark a run ``running`` for this process if nobody else holds it; True if claimed.

        A run is claimable when pending, failed (when ``retry_failed``), or running under an
        owner that has died (a killed benchmark).
        """
        with self._transaction() as db:
            row = db.execute("SELECT status, owner FROM runs WHERE run_key = ?", (key,)).fetchone()
            if row is None:
                raise MlmmError(f"run {key} is not in {self.path}; add it with add_runs first")
            status, owner = row
            if status == "done" or (status == "failed" and not retry_failed):
                return False
            if status == "running" and owner != this_process() and _owner_alive(owner):
                return False
            db.execute(
                "UPDATE runs SET status = 'running', owner = ?, attempts = attempts + 1, "
                "started_at = ?, error = NULL, traceback = NULL WHERE run_key = ?",
                (this_process(), time.time(), key),
            )
            return True

    def finish(self, key: str, results: pd.DataFrame, info: dict[str, Any]) -> None:
        """Write a run's results and mark it ``done``, in one transaction."""
        missing = [c for c in RESULT_FIELDS if c not in results.columns]
        if missing:
            raise MlmmError(f"results of run {key} lack the columns {missing}")
        table = results[list(RESULT_FIELDS)].astype(object).where(results.notna(), None)
        rows = [(key, *row) for row in table.itertuples(index=False, name=None)]
        with self._transaction() as db:
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

    def fail(self, key: str, info: dict[str, Any]) -> None:
        """Record a failed run with ``info["error"]`` (and ``traceback``, ``threads``,
        ``machine``, ``version`` when known); its results, if any, are removed."""
        with self._transaction() as db:
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

    def release(self, key: str) -> None:
        """Give back a claim without a result (interrupted by the user): pending again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = 'pending', owner = NULL "
                "WHERE run_key = ? AND status = 'running' AND owner = ?",
                (key, this_process()),
            )

    def reset(self, keys: Iterable[str]) -> int:
        """Make finished or failed runs ``pending`` again, their results removed, so the next
        benchmark runs them anew (a method changed in a way its key cannot see, timings to
        retake on an idle machine). Runs held by a live process are left alone. Returns how
        many runs were reset."""
        keys = list(keys)
        marks = ", ".join("?" * len(keys))
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT run_key, status, owner FROM runs WHERE run_key IN ({marks})", keys
            ).fetchall()
            chosen = [
                key
                for key, status, owner in rows
                if status != "running" or owner == this_process() or not _owner_alive(owner)
            ]
            marks = ", ".join("?" * len(chosen))
            db.execute(f"DELETE FROM results WHERE run_key IN ({marks})", chosen)
            db.execute(
                f"UPDATE runs SET status = 'pending', owner = NULL, error = NULL, "
                f"traceback = NULL WHERE run_key IN ({marks})",
                chosen,
            )
        return len(chosen)

    def save_spec(self, name: str, text: str, command: str | None = None) -> None:
        """Keep the spec a benchmark ran (its resolved YAML) and the command that ran it, so a
        report can show how to reproduce it. One row per spec name, replaced by a later run.

        The ``specs`` table is created here when missing: stores written before it existed
        gain it on their next benchmark, and read as having no spec until then.
        """
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS specs (name TEXT PRIMARY KEY, spec TEXT NOT NULL, "
                "command TEXT, saved_at REAL NOT NULL)"
            )
            db.execute(
                "INSERT OR REPLACE INTO specs (name, spec, command, saved_at) VALUES (?, ?, ?, ?)",
                (name, text, command, time.time()),
            )

    # ------------------------------------------------------------------ streams
    def _stream_tables(self, db: sqlite3.Connection) -> None:
        """Create the stream tables when missing (stores written before them gain them).
        Statement by statement: ``executescript`` would commit the open transaction."""
        for statement in _STREAM_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)

    def start_stream_run(self, config: dict[str, Any]) -> str:
        """Register a stream replay (``mlmm stream``) as ``running``; returns its key (a hash of
        ``config``). A finished run of the same configuration keeps its results until
        :meth:`finish_stream_run` replaces them."""
        import hashlib

        text = json.dumps(config, sort_keys=True, default=str)
        key = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self._transaction() as db:
            self._stream_tables(db)
            db.execute(
                "INSERT INTO stream_runs (run_key, config, status, owner, started_at) "
                "VALUES (?, ?, 'running', ?, ?) ON CONFLICT(run_key) DO UPDATE SET "
                "owner = excluded.owner, started_at = excluded.started_at, "
                "status = CASE status WHEN 'done' THEN 'done' ELSE 'running' END",
                (key, text, this_process(), time.time()),
            )
        return key

    def finish_stream_run(
        self, key: str, table: pd.DataFrame, steps: pd.DataFrame, info: dict[str, Any]
    ) -> None:
        """Write a stream run's scores (``model, scope, key, n, metric, value``) and its steps
        (``model, time, prediction, truth, live, latency_ms``) and mark it ``done``, all in one
        transaction: a process killed while writing leaves the previous state whole."""
        scores = table[list(STREAM_RESULT_FIELDS)].astype(object).where(table.notna(), None)
        step_rows = steps[list(STREAM_STEP_FIELDS)].astype(object).where(steps.notna(), None)
        with self._transaction() as db:
            self._stream_tables(db)
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

    def _has_table(self, name: str) -> bool:
        return bool(
            self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
        )

    def stream_runs(self) -> pd.DataFrame:
        """One row per stream replay (``run_key, config, status, ...``); empty if none."""
        if not self._has_table("stream_runs"):
            return pd.DataFrame(columns=["run_key", "config", "status"])
        return pd.read_sql_query("SELECT * FROM stream_runs ORDER BY rowid", self._db)

    def stream_results(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Scores of finished stream runs (all, or those of ``keys``)."""
        columns = ["run_key", *STREAM_RESULT_FIELDS]
        if not self._has_table("stream_results"):
            return pd.DataFrame(columns=columns)
        query = (
            f"SELECT {', '.join('r.' + c for c in columns)} FROM stream_results r JOIN "
            f"stream_runs u ON u.run_key = r.run_key WHERE u.status = 'done' ORDER BY r.rowid"
        )
        out = pd.read_sql_query(query, self._db)
        return out if keys is None else out[out.run_key.isin(set(keys))].reset_index(drop=True)

    def stream_steps(self, key: str) -> pd.DataFrame:
        """The answers of one finished stream run, for a timeline."""
        columns = ["run_key", *STREAM_STEP_FIELDS]
        if not self._has_table("stream_steps"):
            return pd.DataFrame(columns=columns)
        query = f"SELECT {', '.join(columns)} FROM stream_steps WHERE run_key = ? ORDER BY rowid"
        return pd.read_sql_query(query, self._db, params=(key,))

    # ------------------------------------------------------------------ reading
    def status(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """``run_key -> status`` (of the given runs, or all)."""
        rows = self._db.execute("SELECT run_key, status, owner FROM runs").fetchall()
        wanted = None if keys is None else set(keys)
        out = {}
        for key, status, owner in rows:
            if wanted is not None and key not in wanted:
                continue
            if status == "running" and not _owner_alive(owner):
                status = "pending"  # its process died: it will be run again
            out[key] = status
        return out

    def runs(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """One row per run (all, or those of ``keys``), with its method's family and subtype."""
        runs = pd.read_sql_query("SELECT * FROM runs ORDER BY rowid", self._db)
        if keys is not None:
            runs = runs[runs.run_key.isin(set(keys))].reset_index(drop=True)
        from mlmm.methods import METHODS

        def taxonomy(name: str, what: str) -> str:
            return METHODS.get(name).info[what] if name in METHODS else "unknown"

        runs["family"] = [taxonomy(m, "family") for m in runs["method"]]
        runs["subtype"] = [taxonomy(m, "subtype") for m in runs["method"]]
        return runs

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
        results = pd.read_sql_query(query, self._db)
        if keys is not None:
            results = results[results.run_key.isin(set(keys))].reset_index(drop=True)
        return results

    def specs(self) -> pd.DataFrame:
        """The specs benchmarks ran on this store (``name, spec, command, saved_at``), the
        latest first; empty for a store that holds none."""
        columns = ["name", "spec", "command", "saved_at"]
        exists = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'specs'"
        ).fetchone()
        if not exists:
            return pd.DataFrame(columns=columns)
        query = f"SELECT {', '.join(columns)} FROM specs ORDER BY saved_at DESC"
        return pd.read_sql_query(query, self._db)

    def table(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """:meth:`results` with each run's costs (parameters, times, threads, machine...)."""
        runs = self.runs(keys)
        cost = ["run_key", *RUN_FIELDS, "family", "subtype"]
        table = self.results(keys).merge(runs[cost], on="run_key", how="left")
        reference = table.method != table.run_method  # the Bayes rows cost nothing to train
        table.loc[reference, ["n_parameters", "n_models", "train_seconds"]] = 0
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
