"""``mlmm store``: the claims running now, of runs and of tuning trials."""

import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from mlmm import cli, utils
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_the_store_command_lists_run_and_trial_claims_with_owner_age_and_state(
    monkeypatch, capsys, tmp_path
):
    spec = parse_spec(
        {
            "datasets": {"synthetic": {}},
            "methods": {"hemis": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
        }
    )
    path = tmp_path / "s.db"
    (key,) = (r.key for r in spec.runs())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = f"{socket.gethostname()}:{child.pid}@{utils.host_tag()}/t1"  # gone, on this machine
    with ResultsStore(path) as db:
        db.add_runs("demo", spec.runs())
        db.open_study("study0123456789ab", {"s": 1}, "synthetic", "hemis")
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "UPDATE runs SET status='running', owner='node7:42@0badc0de/t9', started_at=? "
        "WHERE run_key=?",
        (time.time() - 30, key),
    )
    raw.executemany(
        "INSERT INTO tune_claims (study_key, number, owner, started_at) VALUES (?, ?, ?, ?)",
        [("study0123456789ab", 5, dead, time.time() - 600), ("study0123456789ab", 6, "x:1", 0)],
    )
    raw.close()
    code, out, err = run(monkeypatch, capsys, "store", str(path))
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.count("│") > 3]  # the tables' rows

    def row(text: str) -> str:
        (found,) = [line for line in rows if text in line]
        return found

    assert "node7:42@0badc0de/t9" in row(key) and " 30 " in row(key) and "live" in row(key)
    assert dead in row("#5") and " 600 " in row("#5")
    # its owner is dead on this machine: stale at once
    assert "stale (taken over by the next tune on its study)" in row("#5")
    assert "stale" in row("#6")  # an older store's owner, silent since 1970
    assert "--release-claims --force" in out  # a live run claim: how to free it


def test_the_store_command_says_when_nothing_is_claimed(monkeypatch, capsys, tmp_path):
    path = tmp_path / "s.db"
    ResultsStore(path).close()
    code, out, _ = run(monkeypatch, capsys, "store", str(path))
    assert code == 0 and "no claims: no process is running a run or tuning trial" in out


def test_a_run_claim_without_a_start_time_shows_its_age_as_unknown(monkeypatch, capsys, tmp_path):
    # runs.started_at may be NULL (an older store, a claim written by hand): shown as "?",
    # the listing was a TypeError when every claim lacked it
    spec = parse_spec(
        {
            "datasets": {"synthetic": {}},
            "methods": {"hemis": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
        }
    )
    path = tmp_path / "s.db"
    (key,) = (r.key for r in spec.runs())
    with ResultsStore(path) as db:
        db.add_runs("demo", spec.runs())
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "UPDATE runs SET status='running', owner='node7:42', started_at=NULL WHERE run_key=?",
        (key,),
    )
    raw.close()
    with ResultsStore(path, readonly=True) as db:
        claims = db.running_claims()
    assert claims.age_seconds.dtype.kind == "f" and claims.age_seconds.isna().all()
    code, out, err = run(monkeypatch, capsys, "store", str(path))
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if key in line and line.count("│") > 3]
    assert " ? " in row and "stale" in row  # no start, no heartbeat: nothing keeps it
