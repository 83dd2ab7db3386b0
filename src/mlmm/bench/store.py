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

#: Tuning tables (:mod:`mlmm.tune`), created on first use so that older stores gain them: one
#: row per study (its configuration as JSON, keyed by the configuration's hash) and one per
#: finished trial. A trial is written whole when it ends, so a study killed at any point
#: resumes from its finished trials.
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
"""
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

    # ------------------------------------------------------------------ tuning
    def _tuning_tables(self) -> None:
        """Create the tuning tables if this store has none yet (one transaction)."""
        self._db.executescript(f"BEGIN IMMEDIATE; {_TUNING_SCHEMA} COMMIT;")

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
        self._tuning_tables()
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO tune_studies (study_key, run_key, dataset, method, config, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    study_key,
                    run_key,
                    dataset,
                    method,
                    json.dumps(config, sort_keys=True),
                    time.time(),
                ),
            )
        return self.study_trials(study_key)

    def add_trial(self, study_key: str, trial: dict[str, Any]) -> None:
        """Write one finished trial (a dict with :data:`TRIAL_FIELDS`) in one transaction; a
        trial of the same number is replaced."""
        row = dict(trial)
        for name in ("params", "intermediate", "attrs"):
            row[name] = json.dumps(row.get(name) or {}, sort_keys=True)
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO tune_trials (study_key, {', '.join(TRIAL_FIELDS)}) "
                f"VALUES ({', '.join('?' * (len(TRIAL_FIELDS) + 1))})",
                (study_key, *(row.get(name) for name in TRIAL_FIELDS)),
            )

    def save_study(
        self,
        study_key: str,
        config: dict[str, Any],
        dataset: str,
        method: str,
        trials: Iterable[dict[str, Any]],
        run_key: str | None = None,
    ) -> None:
        """Register a study and write all its trials (a benchmark run's study, tuned in a
        worker and sent back whole)."""
        self.open_study(study_key, config, dataset, method, run_key)
        for trial in trials:
            self.add_trial(study_key, trial)

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
        return pd.read_sql_query(query, self._db)[columns]

    def _has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None
