"""Stream runs in the results store: written whole or not at all, even under kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pandas as pd

from mlmm.bench.store import ResultsStore

CONFIG = {"stream": "synthetic", "method": "late-fusion", "seed": 0}


def tables(n_steps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = pd.DataFrame(
        {
            "model": ["m", "m"],
            "scope": ["overall", "live"],
            "key": ["all", "a+b"],
            "n": [3, 2],
            "metric": ["accuracy", "accuracy"],
            "value": [0.5, float("nan")],
        }
    )
    steps = pd.DataFrame(
        {
            "model": "m",
            "time": range(n_steps),
            "prediction": 1.0,
            "truth": 1.0,
            "live": "a",
            "latency_ms": 0.1,
        }
    )
    return table, steps


def test_stream_run_round_trip_and_rerun_replaces(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.stream_runs().empty and store.stream_results().empty
        key = store.start_stream_run(CONFIG)
        assert store.stream_results().empty  # running: nothing to read yet
        table, steps = tables(5)
        store.finish_stream_run(key, table, steps, {"seconds": 1.0})
        assert store.start_stream_run(CONFIG) == key  # same configuration, same key
        store.finish_stream_run(key, table, steps, {"seconds": 1.0})
        results = store.stream_results()
        assert len(results) == 2 and results.value.isna().sum() == 1
        assert len(store.stream_steps(key)) == 5
        assert store.stream_runs().status.tolist() == ["done"]
        assert store.runs().empty  # benchmark tables untouched


def test_outage_length_keys_of_older_runs_read_under_todays_names(tmp_path):
    """Runs written before the open last bin was named ">=4s" stored "SENSOR:4-infs"."""
    from mlmm.stream.experiment import OUTAGE_BINS, outage_bin_label

    assert outage_bin_label(OUTAGE_BINS[-2], OUTAGE_BINS[-1]) == ">=4s"
    assert outage_bin_label(0.5, 1.0) == "0.5-1s"
    old_keys = ["trunk:2-4s", "trunk:4-infs", "left-leg:0.5-infs"]
    table = pd.DataFrame(
        {
            "model": "m",
            "scope": ["outage_length"] * 3 + ["sensor"],
            "key": [*old_keys, "odd-infs"],  # another scope's key is left as stored
            "n": 1,
            "metric": "nrmse",
            "value": [0.1, 0.2, 0.3, 0.4],
        }
    )
    with ResultsStore(tmp_path / "r.db") as store:
        key = store.start_stream_run(CONFIG)
        store.finish_stream_run(key, table, tables(1)[1], {"seconds": 1.0})
        read = store.stream_results()
        raw = sqlite3.connect(store.path).execute("SELECT key FROM stream_results").fetchall()
    assert read.key.tolist() == ["trunk:2-4s", "trunk:>=4s", "left-leg:>=0.5s", "odd-infs"]
    assert read.value.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert sorted(k for (k,) in raw) == sorted([*old_keys, "odd-infs"])  # the file untouched


def test_kill_9_while_writing_leaves_the_store_consistent(tmp_path):
    path = tmp_path / "r.db"
    with ResultsStore(path) as store:  # a finished run of the same configuration first
        key = store.start_stream_run(CONFIG)
        table, steps = tables(3)
        store.finish_stream_run(key, table, steps, {})
    marker = tmp_path / "writing"
    script = textwrap.dedent(
        f"""
        import pathlib, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_stream_store import CONFIG, tables
        from mlmm.bench.store import ResultsStore
        store = ResultsStore({str(path)!r})
        key = store.start_stream_run(CONFIG)
        table, steps = tables(3_000_000)
        pathlib.Path({str(marker)!r}).write_text("x")
        store.finish_stream_run(key, table, steps, {{}})
        pathlib.Path({str(marker)!r}).write_text("done")
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)  # inside the insert of three million steps
    assert marker.read_text() == "x", "the write finished before the kill; enlarge it"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with ResultsStore(path) as store:
        assert store.stream_runs().status.tolist() == ["done"]
        assert len(store.stream_steps(key)) == 3  # the old run, whole
        assert len(store.stream_results()) == 2
