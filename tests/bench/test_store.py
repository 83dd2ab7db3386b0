"""The results store: identity checks, atomic run writes, claims, export."""

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pandas as pd
import pytest

from mlmm.bench.spec import parse_spec
from mlmm.bench.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ResultsStore,
    owner_process,
    this_process,
)
from mlmm.errors import MlmmError

SPEC = parse_spec(
    {
        "datasets": {"synthetic": {"n_samples": 200}},
        "methods": {"hemis": {}, "late-fusion": {}},
        "missing": ["mcar:0.5"],
        "seeds": [0],
    }
)


def fake_results(value: float = 0.5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": ["hemis", "hemis"],
            "condition": ["mcar:0.5", "mcar:0.5"],
            "rate_unit": ["slots", "slots"],
            "slot_rate": [0.5, 0.5],
            "sample_rate": [0.9, 0.9],
            "scope": ["overall", "subset"],
            "subset": ["all", "m0"],
            "n": [40, 40],
            "metric": ["accuracy", "accuracy"],
            "value": [value, value / 2],
        }
    )


@pytest.fixture
def store(tmp_path):
    db = ResultsStore(tmp_path / "r.db")
    db.add_runs("test", SPEC.runs())
    yield db
    db.close()


def test_a_new_store_identifies_itself_and_uses_wal(tmp_path, store):
    raw = sqlite3.connect(store.path)
    assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert set(store.status().values()) == {"pending"}


def test_finish_writes_results_and_status_together_without_duplicates(store):
    key = SPEC.runs()[0].key
    assert store.claim(key)
    assert store.finish(key, fake_results(0.5), {"n_parameters": 10, "threads": 1})
    # a second result for a run no longer held (a late copy) is dropped: done exactly once
    assert not store.finish(key, fake_results(0.7), {"n_parameters": 10, "threads": 1})
    results = store.results()
    assert len(results) == 2 and results.value.max() == pytest.approx(0.5)
    assert store.reset([key]) == 1 and store.claim(key)  # a rerun replaces
    assert store.finish(key, fake_results(0.7), {"n_parameters": 10, "threads": 1})
    results = store.results()
    assert len(results) == 2 and results.value.max() == pytest.approx(0.7)
    runs = store.runs()
    row = runs[runs.run_key == key].iloc[0]
    assert row.status == "done" and row.n_parameters == 10 and row.family == "representation"
    assert not store.claim(key)  # finished runs are never claimed again


def test_failed_runs_keep_their_error_and_are_retried_only_when_asked(store):
    key = SPEC.runs()[1].key
    store.claim(key)
    store.fail(key, {"error": "MlmmError: boom", "traceback": "tb", "threads": 1})
    row = store.runs().set_index("run_key").loc[key]
    assert row.status == "failed" and row.error == "MlmmError: boom"
    assert not store.claim(key, retry_failed=False)
    assert store.claim(key)


def test_a_claim_held_by_a_live_process_is_respected_and_a_dead_ones_is_taken_over(store):
    key = SPEC.runs()[0].key
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = this_process().rpartition(":")[0]
    try:
        raw = sqlite3.connect(store.path, isolation_level=None)
        raw.execute(
            "UPDATE runs SET status='running', owner=?, started_at=? WHERE run_key=?",
            (f"{host}:{live.pid}", time.time(), key),
        )
        assert not store.claim(key)
        assert store.status([key])[key] == "running"
        live.kill()
        live.wait()
        assert store.status([key])[key] == "pending"  # its owner died
        assert store.claim(key)
    finally:
        live.kill()


def test_results_table_and_export_round_trip(tmp_path, store):
    key = SPEC.runs()[0].key
    store.claim(key)
    store.finish(key, fake_results(), {"n_parameters": 10, "train_seconds": 1.5})
    csv = store.export(tmp_path / "out.csv")
    table = pd.read_csv(csv)
    assert len(table) == 2 and {"dataset", "seed", "train_seconds", "family"} <= set(table.columns)
    pytest.importorskip("pyarrow")
    parquet = pd.read_parquet(store.export(tmp_path / "out.parquet"))
    assert parquet.value.tolist() == table.value.tolist()
    with pytest.raises(MlmmError, match=r"\.csv or \.parquet"):
        store.export(tmp_path / "out.xlsx")


def test_a_file_that_is_not_an_mlmm_store_is_refused(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(MlmmError, match="not an mlmm results store"):
        ResultsStore(text)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(MlmmError, match="not an mlmm results store"):
        ResultsStore(other)
    assert text.read_text().startswith("not a database")  # left untouched


def test_a_store_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    ResultsStore(path).close()
    sqlite3.connect(path).execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(MlmmError, match="newer mlmm.*upgrade"):
        ResultsStore(path)


def test_a_folder_is_not_a_store(tmp_path):
    with pytest.raises(MlmmError, match="is a folder"):
        ResultsStore(tmp_path)


def test_reset_makes_finished_and_failed_runs_pending_without_their_results(store):
    done, failed = (r.key for r in SPEC.runs())
    store.claim(done)
    store.finish(done, fake_results(0.5), {"threads": 1})
    store.claim(failed)
    store.fail(failed, {"error": "MlmmError: boom"})
    assert store.reset([done, failed, "not-a-key"]) == 2
    assert store.status() == {done: "pending", failed: "pending"}
    assert store.results().empty
    assert store.runs().error.isna().all()
    assert store.claim(done)  # runs again


def test_reset_leaves_a_run_held_by_a_live_process(store):
    key = SPEC.runs()[0].key
    store.claim(key)
    other = sqlite3.connect(store.path)
    other.execute(  # pid 1 always exists; its claim was just made
        "UPDATE runs SET owner = ?, started_at = ? WHERE run_key = ?",
        (f"{this_process().split(':')[0]}:1", time.time(), key),
    )
    other.commit()
    assert store.reset([key]) == 0
    assert store.status()[key] == "running"


def _open_rounds(paths, barrier, errors) -> None:
    for path in paths:
        barrier.wait()
        try:
            ResultsStore(path).close()
        except Exception as err:  # reported to the test, which shows every failure
            errors.put(f"{type(err).__name__}: {err}")


def test_six_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    paths = [tmp_path / f"new{i}.db" for i in range(20)]
    barrier, errors = context.Barrier(6), context.Queue()
    procs = [context.Process(target=_open_rounds, args=(paths, barrier, errors)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == [] and all(proc.exitcode == 0 for proc in procs)
    for path in paths:
        with ResultsStore(path, readonly=True) as db:
            assert db.runs().empty


def test_a_lock_held_too_long_is_called_busy_not_foreign(tmp_path, store):
    key = SPEC.runs()[0].key
    store.claim(key)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(MlmmError, match="is busy.*more than 0.3 s.*claimed by") as err:
            ResultsStore(store.path, busy_timeout=0.3)
        assert "not an mlmm" not in str(err.value)
    finally:
        holder.execute("ROLLBACK")
    ResultsStore(store.path, busy_timeout=0.3).close()  # free again


def _flip_page(path, page: int) -> None:
    size = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (page - 1) * size
    data[start : start + size] = bytes(b ^ 0xFF for b in data[start : start + size])
    path.write_bytes(bytes(data))


def test_a_store_with_flipped_bytes_is_called_corrupt_in_one_line(tmp_path, store):
    key = SPEC.runs()[0].key
    store.claim(key)
    store.finish(key, fake_results(), {"threads": 1})
    store.close()  # checkpoints the WAL into the file
    _flip_page(store.path, 2)
    with pytest.raises(MlmmError, match="corrupt or incomplete mlmm results store") as err:
        with ResultsStore(store.path) as db:
            db.table()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "damage, phrase",
    [
        ("DROP TABLE results", "table 'results' missing"),
        ("ALTER TABLE runs DROP COLUMN error", "columns ['error'] of 'runs' missing"),
    ],
)
def test_a_store_missing_tables_or_columns_is_called_incomplete(tmp_path, damage, phrase):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute(damage)
    raw.commit()
    raw.close()
    for readonly in (False, True):
        with pytest.raises(MlmmError, match=f"corrupt or incomplete.*{re.escape(phrase)}"):
            ResultsStore(path, readonly=readonly)


def test_a_full_disk_while_writing_is_one_line_and_keeps_finished_runs(store):
    first, second = (r.key for r in SPEC.runs())
    store.claim(first)
    store.finish(first, fake_results(), {"threads": 1})
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk is full"
    store.claim(second)
    big = pd.concat([fake_results()] * 400, ignore_index=True)
    big["subset"] = [f"s{i}" for i in range(len(big))]
    with pytest.raises(MlmmError, match="disk holding .* is full.*run the same command again"):
        store.finish(second, big, {"threads": 1})
    assert store.status()[first] == "done" and len(store.results()) == 2


def test_a_read_only_store_is_called_read_only(store):
    store._db.execute("PRAGMA query_only=1")  # writes now fail as on a read-only file
    with pytest.raises(MlmmError, match="is read-only.*writable"):
        store.add_runs("test", SPEC.runs())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_valid_store_in_a_read_only_folder_is_read_and_not_called_foreign(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with ResultsStore(folder / "r.db") as db:
        db.add_runs("test", SPEC.runs())
    folder.chmod(0o555)
    try:
        with ResultsStore(folder / "r.db", readonly=True) as db:
            assert len(db.runs()) == 2
        with pytest.raises(MlmmError, match="read-only") as err:
            ResultsStore(folder / "r.db")
        assert "not an mlmm" not in str(err.value)
    finally:
        folder.chmod(0o755)


def _folder(path):
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def test_reading_a_store_leaves_its_folder_as_it_found_it(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as db:
        db.add_runs("test", SPEC.runs())
    before = _folder(path)
    assert list(before) == ["r.db"]  # the writer, last to close, removed its -wal and -shm
    with ResultsStore(path, readonly=True) as db:
        assert len(db.runs()) == 2 and db.counts().runs.sum() == 2
        for write in (
            lambda: db.add_runs("test2", SPEC.runs()),
            db.release_failed,
            db.heartbeat,
        ):  # a reader still never writes, and says why: the mode, not the file's permissions
            with pytest.raises(MlmmError, match=r"open read-only \(readonly=True\)") as err:
                write()
            assert "writable" not in str(err.value) and "\n" not in str(err.value)
    assert _folder(path) == before  # no empty r.db-wal / r.db-shm left, same bytes


def test_a_reader_and_a_writer_share_a_store_and_the_last_to_close_tidies(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    reader = ResultsStore(path, readonly=True)
    writer = ResultsStore(path)
    writer.add_runs("test", SPEC.runs())  # a write while a reader is open
    assert len(reader.runs()) == 2  # and the reader sees it
    reader.close()
    assert (tmp_path / "r.db-wal").exists()  # the writer's log, kept while it is open
    second = ResultsStore(path, readonly=True)  # a reader opened beside a live writer
    writer.claim(SPEC.runs()[0].key)
    assert "running" in second.status().values()
    writer.close()
    second.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
    with ResultsStore(path, readonly=True) as db:  # nothing lost on the way
        assert sorted(db.status().values()) == ["pending", "running"]


def test_a_reader_closing_after_a_killed_writer_merges_its_log_and_loses_nothing(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    reader = ResultsStore(path, readonly=True)  # open while the writer below writes and dies
    script = (  # a writer killed before it closed: its committed write is only in the log
        "import os, signal, sqlite3\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('PRAGMA wal_autocheckpoint=0')\n"
        "db.execute(\"INSERT INTO specs VALUES ('s', 'text', NULL, 1.0)\")\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert child.returncode == -9
    assert (tmp_path / "r.db-wal").stat().st_size > 0  # unmerged
    assert reader.specs().name.tolist() == ["s"]
    reader.close()  # the last connection: merges the log into the store, removes the files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.db"]
    with closing(sqlite3.connect(path)) as raw:  # the file alone holds the write
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT name FROM specs").fetchall() == [("s",)]


def test_reading_never_turns_a_missing_or_empty_file_into_a_store(tmp_path):
    with pytest.raises(MlmmError, match="no results store"):
        ResultsStore(tmp_path / "absent.db", readonly=True)
    assert not (tmp_path / "absent.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(MlmmError, match=r"empty \(0 bytes\)"):
        ResultsStore(empty, readonly=True)
    assert empty.stat().st_size == 0


def test_a_store_under_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MlmmError, match="afile is a file, not a folder"):
        ResultsStore(tmp_path / "afile" / "x.db")
    with pytest.raises(MlmmError, match="afile is a file, not a folder"):
        ResultsStore(tmp_path / "afile" / "deeper" / "x.db")


def _claim_as(store, key, owner, started_at, beat_at=None):
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute(
        "UPDATE runs SET status='running', owner=?, started_at=? WHERE run_key=?",
        (owner, started_at, key),
    )
    if beat_at is not None:
        raw.execute("INSERT OR REPLACE INTO heartbeats VALUES (?, ?)", (owner, beat_at))
    raw.close()


@pytest.mark.parametrize(
    "owner",
    [f"{socket.gethostname()}:1", "another-host:4242"],  # pid 1 exists: a reused pid
    ids=["live-pid", "other-host"],
)
def test_a_claim_without_a_recent_heartbeat_is_taken_over(store, owner):
    key = SPEC.runs()[0].key
    now = time.time()
    _claim_as(store, key, owner, started_at=now - 1000, beat_at=now - 5)
    assert not store.claim(key)  # beating: respected
    assert store.claims().live.tolist() == [True]
    _claim_as(store, key, owner, started_at=now - 1000, beat_at=now - 1000)
    assert store.claims().live.tolist() == [False]
    assert store.status([key])[key] == "pending"
    assert store.claim(key)  # stale: taken over
    assert store.runs().set_index("run_key").loc[key, "owner"] == this_process()


def test_claims_are_released_by_hand(store):
    stale, live = (r.key for r in SPEC.runs())
    now = time.time()
    _claim_as(store, stale, "gone-host:1", started_at=now - 1000)
    _claim_as(store, live, "busy-host:2", started_at=now, beat_at=now)
    assert store.release_claims() == 1
    assert store.status() == {stale: "pending", live: "running"}
    assert store.release_claims(force=True) == 1
    assert set(store.status().values()) == {"pending"} and store.claims().empty


def test_failed_runs_are_released_by_hand(store):
    key = SPEC.runs()[0].key
    store.claim(key)
    store.fail(key, {"error": "MlmmError: boom"})
    assert store.release_failed() == 1
    assert store.status()[key] == "pending" and store.runs().error.isna().all()
    assert store.claim(key, retry_failed=False)


def test_the_heartbeat_keeps_a_process_claims_and_ends_with_it(store):
    store.heartbeat()
    beats = dict(sqlite3.connect(store.path).execute("SELECT * FROM heartbeats").fetchall())
    assert time.time() - beats[owner_process(this_process())] < 5  # the process beats
    store.end_heartbeat()
    assert sqlite3.connect(store.path).execute("SELECT * FROM heartbeats").fetchall() == []


def test_a_store_from_before_heartbeats_is_read_and_upgraded(tmp_path):
    path = tmp_path / "old.db"
    with ResultsStore(path) as db:
        db.add_runs("test", SPEC.runs())
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE heartbeats")
    raw.commit()
    raw.close()
    with ResultsStore(path, readonly=True) as db:
        assert set(db.status().values()) == {"pending"} and db.claims().empty
    with ResultsStore(path) as db:
        db.heartbeat()
        assert db.claim(SPEC.runs()[0].key)


def test_a_store_from_before_specs_streams_and_tuning_gains_them_when_opened(tmp_path):
    path = tmp_path / "old.db"
    with ResultsStore(path) as db:
        db.add_runs("test", SPEC.runs())
    raw = sqlite3.connect(path)
    for table in ("specs", "stream_steps", "stream_results", "stream_runs", "tune_trials"):
        raw.execute(f"DROP TABLE {table}")
    raw.execute("DROP TABLE tune_claims")
    raw.execute("DROP TABLE tune_studies")  # after tune_trials, which refers to it
    raw.commit()
    raw.close()
    with ResultsStore(path, readonly=True) as db:  # read as holding none, nothing written
        assert db.specs().empty and db.stream_runs().empty and db.studies().empty
    with ResultsStore(path) as db:
        db.save_spec("test", "name: test\n")
        trial = {"number": 0, "state": "complete", "value": 0.5, "finished_at": 1.0}
        db.save_study("s", {"a": 1}, "synthetic", "hemis", [trial])
        key = db.start_stream_run({"stream": "x"})
        assert db.specs().name.tolist() == ["test"] and db.stream_runs().run_key.tolist() == [key]
        assert db.studies().n_trials.tolist() == [1]
        assert db.claim_trial("s", 1) and db.trial_claims("s") == {1: False}  # ours


def test_a_trial_is_claimed_once_and_a_dead_owners_claim_is_taken_over(store):
    store.save_study("s", {"a": 1}, "synthetic", "hemis", [])
    host = socket.gethostname()
    alive, dead = f"{host}:{os.getppid()}", f"{host}:{2**22 + 7}"  # pids: alive, none
    now = time.time()
    store._db.executemany(
        "INSERT INTO tune_claims (study_key, number, owner, started_at) VALUES (?, ?, ?, ?)",
        [("s", 0, alive, now), ("s", 1, dead, now)],
    )
    assert store.trial_claims("s") == {0: True, 1: False}
    assert not store.claim_trial("s", 0)  # another live process runs it
    assert store.claim_trial("s", 1)  # its owner died: taken over
    assert store.claim_trial("s", 2) and store.claim_trial("s", 2)  # ours, claimed again
    trial = {"number": 2, "state": "complete", "value": 0.5, "finished_at": 1.0}
    store.add_trial("s", trial)  # written and its claim ended in one transaction
    assert not store.claim_trial("s", 2)  # finished: never run again
    assert store.trial_claims("s") == {0: True, 1: False}  # ours now: never waited on
    store.release_trials("s")  # this process's claims given back, not the others'
    assert store.trial_claims("s") == {0: True}


def test_a_study_is_written_whole_or_not_at_all(store):
    good = {"number": 0, "state": "complete", "value": 0.5, "finished_at": 1.0}
    bad = {"number": 1, "state": "unknown", "value": 0.4, "finished_at": 1.0}  # CHECK fails
    with pytest.raises(MlmmError) as err:
        store.save_study("s", {"a": 1}, "synthetic", "hemis", [good, bad])
    assert "\n" not in str(err.value)
    assert store.studies().empty and store.study_trials("s") == []


def _store_with_unmerged_log(folder) -> None:
    """A store whose runs sit in its write-ahead log, as a killed benchmark leaves it."""
    import shutil

    folder.mkdir()
    with ResultsStore(folder.parent / "live.db") as db:
        db._db.execute("PRAGMA wal_autocheckpoint=0")
        db.add_runs("test", SPEC.runs())
        shutil.copy(db.path, folder / "r.db")  # copied while the log is not merged
        shutil.copy(f"{db.path}-wal", folder / "r.db-wal")


def test_a_store_whose_log_cannot_be_read_is_refused_not_read_without_its_runs(
    tmp_path, monkeypatch
):
    folder = tmp_path / "ro"
    _store_with_unmerged_log(folder)
    real = ResultsStore._check_store
    calls = []

    def folder_read_only(self, db):  # SQLite cannot create the -shm file: the first look fails
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return real(self, db)

    monkeypatch.setattr(ResultsStore, "_check_store", folder_read_only)
    with pytest.raises(MlmmError, match="write-ahead log r.db-wal.*writable folder") as err:
        ResultsStore(folder / "r.db", readonly=True)
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    with ResultsStore(folder / "r.db", readonly=True) as db:  # a writable folder: log read
        assert len(db.runs()) == 2


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_a_store_in_a_read_only_folder_with_an_unmerged_log_is_refused(tmp_path):
    folder = tmp_path / "ro"
    _store_with_unmerged_log(folder)
    folder.chmod(0o555)
    try:
        with pytest.raises(MlmmError, match="write-ahead log"):
            ResultsStore(folder / "r.db", readonly=True)
    finally:
        folder.chmod(0o755)


def test_a_read_that_sqlite_refuses_is_one_line_not_a_pandas_error(tmp_path):
    path = tmp_path / "r.db"
    ResultsStore(path).close()
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE specs")
    raw.execute("CREATE TABLE specs (name TEXT)")  # damaged: columns missing
    raw.commit()
    raw.close()
    with ResultsStore(path, readonly=True) as db:
        with pytest.raises(MlmmError, match="no such column") as err:
            db.specs()
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_each_attempt_is_recorded_and_a_late_result_of_a_lost_one_is_dropped(store):
    key = SPEC.runs()[0].key
    assert store.claim(key)
    assert store.retry(key, "NodeDiedError: the node died") == 2  # same claim, attempt 2
    assert store.status([key])[key] == "running"
    assert store.finish(key, fake_results(0.6), {"threads": 1})
    # the lost attempt's result arrives after all: the run stays done once, with attempt 2's
    assert not store.finish(key, fake_results(0.1), {"threads": 1})
    assert not store.fail(key, {"error": "late failure"})
    assert store.retry(key, "too late") == 0
    history = store.attempts([key])
    assert history.attempt.tolist() == [1, 2]
    assert history.outcome.tolist() == ["lost", "done"]
    assert history.error.iloc[0].startswith("NodeDiedError")
    assert store.results().value.max() == pytest.approx(0.6)
    row = store.runs().set_index("run_key").loc[key]
    assert row.status == "done" and row.attempts == 2


def test_a_result_from_a_process_whose_claim_was_taken_over_is_dropped(store, monkeypatch):
    key = SPEC.runs()[0].key
    monkeypatch.setattr("mlmm.bench.store.this_process", lambda: "gone-host:1")
    assert store.claim(key)  # a coordinator that then went silent
    monkeypatch.undo()
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute("UPDATE runs SET started_at = ? WHERE run_key = ?", (time.time() - 1000, key))
    raw.close()
    assert store.claim(key)  # stale: taken over here, the silent one's attempt is lost
    assert store.finish(key, fake_results(0.6), {"threads": 1})
    monkeypatch.setattr("mlmm.bench.store.this_process", lambda: "gone-host:1")
    assert not store.finish(key, fake_results(0.1), {"threads": 1})  # it wakes up: dropped
    monkeypatch.undo()
    history = store.attempts([key])
    assert history.outcome.tolist() == ["lost", "done"]
    assert history.owner.tolist() == ["gone-host:1", this_process()]
    assert "expired" in history.error.iloc[0]
    assert store.results().value.max() == pytest.approx(0.6)


def test_failed_and_released_attempts_are_recorded(store):
    first, second = (r.key for r in SPEC.runs())
    store.claim(first)
    assert store.fail(first, {"error": "MlmmError: boom"})
    store.claim(second)
    store.release(second)
    assert store.attempts().set_index("run_key").outcome.to_dict() == {
        first: "failed",
        second: "released",
    }


def test_a_store_from_before_attempts_is_read_and_upgraded(tmp_path):
    path = tmp_path / "old.db"
    with ResultsStore(path) as db:
        db.add_runs("test", SPEC.runs())
    raw = sqlite3.connect(path)
    raw.execute("DROP TABLE run_attempts")
    raw.commit()
    raw.close()
    with ResultsStore(path, readonly=True) as db:  # read as holding none, nothing written
        assert db.attempts().empty and list(db.attempts().columns)[:2] == ["run_key", "attempt"]
    with ResultsStore(path) as db:
        key = SPEC.runs()[0].key
        assert db.claim(key) and db.finish(key, fake_results(), {"threads": 1})
        assert db.attempts().outcome.tolist() == ["done"]


def test_a_claim_reset_by_hand_ends_its_attempt_in_the_history(store):
    key = SPEC.runs()[0].key
    assert store.claim(key)
    assert store.reset([key]) == 1  # this process's own claim
    assert store.claim(key) and store.finish(key, fake_results(), {"threads": 1})
    history = store.attempts([key])
    assert history.attempt.tolist() == [1, 2]  # attempt 1 was not left out
    assert history.outcome.tolist() == ["released", "done"]


@pytest.mark.parametrize("where", ["after BEGIN", "before COMMIT"])
def test_an_interrupt_at_a_transactions_edge_leaves_no_transaction_open(store, where):
    """Ctrl-C or SIGTERM (a KeyboardInterrupt, mlmm.cli) just after BEGIN or just before COMMIT
    left the connection inside a transaction: the claims given back on the way out failed
    ('cannot start a transaction within a transaction') and stayed claimed."""
    first, second = (r.key for r in SPEC.runs())
    assert store.claim(first)
    real = store._db

    class Interrupted:  # the connection, with a signal arriving at one edge of a transaction
        def execute(self, sql, *args):
            if sql == "COMMIT" and where == "before COMMIT":
                raise KeyboardInterrupt
            cursor = real.execute(sql, *args)
            if sql == "BEGIN IMMEDIATE" and where == "after BEGIN":
                raise KeyboardInterrupt
            return cursor

        def __getattr__(self, name):
            return getattr(real, name)

    store._db = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        store.claim(second)
    store._db = real
    assert not real.in_transaction
    store.release(first)  # what an interrupted benchmark does on its way out
    assert set(store.status().values()) == {"pending"}


def test_a_store_name_too_long_for_sqlites_journal_is_refused_and_leaves_no_file(tmp_path):
    """A spec named with 250 characters made `mlmm bench` fail with "SQLite says unable to
    open database file" and leave an empty NAME.db: SQLite's NAME.db-journal was too long."""
    path = tmp_path / ("s" * 250 + ".db")
    with pytest.raises(MlmmError) as info:
        ResultsStore(path)
    assert str(info.value).endswith("choose a shorter --store name (at most 247 bytes)")
    assert list(tmp_path.iterdir()) == []
    with ResultsStore(tmp_path / ("s" * 244 + ".db")) as db:  # 247 bytes: a store
        db.add_runs(SPEC.name, SPEC.runs())
        assert len(db.runs()) == len(SPEC.runs())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.parametrize("readonly", [False, True])
def test_a_store_path_that_is_a_pipe_or_a_device_is_refused_by_what_it_is(tmp_path, readonly):
    """`--store /dev/null`, or a named pipe, said "disk I/O error ... check the disk" (a
    writer) or "is empty (0 bytes)" (a reader)."""
    fifo = tmp_path / "pipe.db"
    os.mkfifo(fifo)
    for path in (fifo, "/dev/null"):
        with pytest.raises(MlmmError, match=r"is not a regular file \(a pipe, a device or"):
            ResultsStore(path, readonly=readonly)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.db"]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_store_name_or_folder_over_the_file_systems_limit_is_one_line(tmp_path, readonly):
    """A --store name (or a folder on its way) over 255 bytes raised a bare OSError (a
    traceback) from the first look at the path, before the journal-name check."""
    for path in (tmp_path / ("r" * 300 + ".db"), tmp_path / ("d" * 300) / "r.db"):
        with pytest.raises(MlmmError, match=r"^cannot use .* as a results store \(File name too"):
            ResultsStore(path, readonly=readonly)
    assert list(tmp_path.iterdir()) == []
