"""Who owns a claim: machine, process and thread (two containers of one host name sharing a
store, two threads of one process, a dead process of this machine, stores of older mlmm)."""

import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from mlmm import utils
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore, owner_process, this_process

SPEC = parse_spec(
    {
        "datasets": {"synthetic": {"n_samples": 200}},
        "methods": {"hemis": {}},
        "missing": ["mcar:0.5"],
        "seeds": [0],
    }
)
STUDY = {"study": 1}


def fake_results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "method": ["hemis"],
            "condition": ["mcar:0.5"],
            "rate_unit": ["slots"],
            "slot_rate": [0.5],
            "sample_rate": [0.9],
            "scope": ["overall"],
            "subset": ["all"],
            "n": [40],
            "metric": ["accuracy"],
            "value": [0.5],
        }
    )


@pytest.fixture
def store(tmp_path):
    db = ResultsStore(tmp_path / "r.db")
    db.add_runs("test", SPEC.runs())
    yield db
    db.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _set_owner(store: ResultsStore, key: str, owner: str, started_at: float) -> None:
    with sqlite3.connect(store.path, isolation_level=None) as raw:
        raw.execute(
            "UPDATE runs SET status = 'running', owner = ?, started_at = ? WHERE run_key = ?",
            (owner, started_at, key),
        )


def test_the_owner_names_host_pid_machine_and_thread():
    owner = this_process()
    host = f"{socket.gethostname()}:{__import__('os').getpid()}@{utils.host_tag()}"
    assert owner == f"{host}/t{threading.get_native_id()}"
    assert owner_process(owner) == host
    assert owner_process("node7:42") == "node7:42"  # an older store's owner


def test_another_container_with_this_host_name_and_pid_does_not_share_its_claims(
    store, monkeypatch
):
    # containers of one image: the same host name, and pids that start at 1 in each
    key = SPEC.runs()[0].key
    monkeypatch.setattr(utils, "host_tag", lambda: "0badc0de")  # the other container
    assert store.claim(key)
    monkeypatch.undo()
    assert not store.claim(key)  # not taken for this process's own claim
    assert not store.finish(key, fake_results(), {"threads": 1})  # nor written under it
    assert store.status([key])[key] == "running"
    assert store.claims().live.tolist() == [True]


def test_a_claim_of_another_machine_is_not_judged_by_this_machines_processes(store):
    key = SPEC.runs()[0].key
    elsewhere = f"{socket.gethostname()}:{_dead_pid()}@0badc0de/t1"  # no such pid here
    _set_owner(store, key, elsewhere, time.time())
    assert not store.claim(key)  # its process may live there: its heartbeat tells
    _set_owner(store, key, elsewhere, time.time() - 1000)  # silent since: stale
    assert store.claim(key)


def test_a_claim_of_a_dead_process_of_this_machine_is_taken_over(store):
    key = SPEC.runs()[0].key
    owner = f"{socket.gethostname()}:{_dead_pid()}@{utils.host_tag()}/t1"
    _set_owner(store, key, owner, time.time())
    assert store.status([key])[key] == "pending"
    assert store.claims().live.tolist() == [False]
    assert store.claim(key)
    assert store.attempts([key]).owner.tolist() == [owner]  # its attempt ended as lost


def test_an_owner_of_an_older_store_is_read_as_before(store):
    key = SPEC.runs()[0].key
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _set_owner(store, key, f"{socket.gethostname()}:{live.pid}", time.time())
        assert not store.claim(key)
        live.kill()
        live.wait()
        assert store.claim(key)  # its host name is this one's and its pid is gone
    finally:
        live.kill()
    _set_owner(store, key, "other-host:1", time.time())
    with sqlite3.connect(store.path, isolation_level=None) as raw:  # it beats, as it did
        raw.execute("INSERT INTO heartbeats (owner, beat_at) VALUES ('other-host:1', ?)", (0,))
    assert not store.claim(key)
    _set_owner(store, key, "other-host:1", time.time() - 1000)
    assert store.claim(key)


def _in_thread(work) -> None:
    """Run ``work()`` in a new thread of this process; its error is raised here."""
    errors = []

    def target() -> None:
        try:
            work()
        except Exception as err:  # shown by the test
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _with_store(path, action: str):
    """``action`` of a store at ``path`` opened by the calling thread (a connection serves
    the thread that opened it)."""

    def work() -> None:
        with ResultsStore(path) as db:
            getattr(db, action)()

    return work


def test_two_threads_of_one_process_do_not_share_a_trial_claim(tmp_path):
    with ResultsStore(tmp_path / "t.db") as db:
        db.open_study("s", STUDY, "synthetic", "hemis", None)
        holding = threading.Event()
        done = threading.Event()

        def hold() -> None:  # another thread of this process runs trial 0 until told
            with ResultsStore(tmp_path / "t.db") as mine:
                mine.claim_trial("s", 0)
            holding.set()
            done.wait(30)

        other = threading.Thread(target=hold)
        other.start()
        try:
            assert holding.wait(30)
            assert db.trial_claims("s") == {0: True}  # live: not this thread's
            assert not db.claim_trial("s", 0)
            assert db.running_claims().live.tolist() == [True]
        finally:
            done.set()
            other.join()
        assert db.trial_claims("s") == {0: False}  # its thread ended without giving it back
        assert db.claim_trial("s", 0)
        db.release_trials("s")  # only this thread's claims
        assert db.trial_claims("s") == {}


def test_a_thread_gives_back_only_its_own_trial_claims(tmp_path):
    with ResultsStore(tmp_path / "t.db") as db:
        db.open_study("s", STUDY, "synthetic", "hemis", None)
        assert db.claim_trial("s", 0)

        def other() -> None:
            with ResultsStore(tmp_path / "t.db") as theirs:
                assert theirs.claim_trial("s", 1)
                theirs.release_trials("s")

        _in_thread(other)
        assert set(db.trial_claims("s")) == {0}


def test_the_heartbeat_is_read_for_every_thread_of_its_process(store):
    key = SPEC.runs()[0].key
    assert store.claim(key)
    process = owner_process(this_process())
    _in_thread(_with_store(store.path, "heartbeat"))  # from another thread, as ClaimHeartbeat
    beats = dict(store._db.execute("SELECT owner, beat_at FROM heartbeats").fetchall())
    # the process's beat, and the claim's exact owner for an older mlmm reading the store
    assert set(beats) == {process, this_process()}
    assert store.claims().seconds_since_beat.iloc[0] < 5
    # another thread of this process ends: this one still holds a claim, the beat stays
    _in_thread(_with_store(store.path, "end_heartbeat"))
    assert store._db.execute("SELECT count(*) FROM heartbeats").fetchone()[0] == 2
    store.release(key)
    store.end_heartbeat()
    assert store._db.execute("SELECT count(*) FROM heartbeats").fetchone()[0] == 0


def test_macos_tells_boots_apart_by_its_boot_time(monkeypatch):
    monkeypatch.setattr(utils, "_IS_MACOS", True)
    monkeypatch.setattr(utils, "_macos_boot_time", lambda: "1700000000")
    first = utils.host_tag()
    assert utils.host_tag() == first  # stable while the machine runs
    monkeypatch.setattr(utils, "_macos_boot_time", lambda: "1700086400")
    assert utils.host_tag() != first  # rebooted: its old pids are not this boot's


def _left_by_a_live_thread(path, claim, then=None) -> tuple[threading.Thread, threading.Event]:
    """A thread of this process that claims through ``claim(store)`` under its heartbeat, as
    a benchmark or study does, ends that work without giving the claim back (the store
    failed on the way out), calls ``then(store)`` and stays alive (a thread pool's), until
    the event is set."""
    from mlmm.bench.execute import ClaimHeartbeat

    ended, done = threading.Event(), threading.Event()

    def work() -> None:
        with ResultsStore(path) as db:
            db.heartbeat()
            with ClaimHeartbeat(path, 60.0):
                assert claim(db)
            if then is not None:
                then(db)
        ended.set()
        done.wait(30)

    thread = threading.Thread(target=work)
    thread.start()
    assert ended.wait(30)
    return thread, done


def test_a_claim_left_by_a_live_thread_whose_work_ended_is_taken_over(store):
    # the thread lives on, so it was judged to hold its claim: a benchmark in another thread
    # of this process waited on it forever (the process's own beat kept it live for others)
    key = SPEC.runs()[0].key
    thread, done = _left_by_a_live_thread(store.path, lambda db: db.claim(key))
    try:
        assert store.claims().live.tolist() == [False]
        assert store.claim(key)
    finally:
        done.set()
        thread.join()


def test_a_trial_claim_left_by_a_live_thread_whose_study_ended_is_taken_over(tmp_path):
    path = tmp_path / "t.db"
    with ResultsStore(path) as db:
        db.open_study("s", STUDY, "synthetic", "hemis", None)
        thread, done = _left_by_a_live_thread(path, lambda theirs: theirs.claim_trial("s", 0))
        try:
            assert db.trial_claims("s") == {0: False}
            assert db.claim_trial("s", 0)
        finally:
            done.set()
            thread.join()


def test_a_thread_that_claims_again_after_its_work_ended_holds_the_new_claim(tmp_path):
    runs = parse_spec({**SPEC.model_dump(mode="json"), "seeds": [0, 1]}).runs()
    first, second = (r.key for r in runs)
    with ResultsStore(tmp_path / "r.db") as db:
        db.add_runs("test", runs)
        thread, done = _left_by_a_live_thread(
            db.path, lambda theirs: theirs.claim(first), lambda theirs: theirs.claim(second)
        )
        try:
            live = dict(zip(db.claims().run_key, db.claims().live, strict=True))
            assert live == {first: True, second: True}  # claimed anew: it holds its claims again
        finally:
            done.set()
            thread.join()
        assert not db.claims().live.any()  # its thread is gone
