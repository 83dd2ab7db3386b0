"""The results store: identity checks, atomic run writes, claims, export."""

import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from mlmm.bench.spec import parse_spec
from mlmm.bench.store import APPLICATION_ID, SCHEMA_VERSION, ResultsStore, this_process
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
    store.finish(key, fake_results(0.5), {"n_parameters": 10, "threads": 1})
    store.finish(key, fake_results(0.7), {"n_parameters": 10, "threads": 1})  # a rerun replaces
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
            "UPDATE runs SET status='running', owner=? WHERE run_key=?", (f"{host}:{live.pid}", key)
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
    other.execute(
        "UPDATE runs SET owner = ? WHERE run_key = ?", (f"{this_process().split(':')[0]}:1", key)
    )
    other.commit()
    assert store.reset([key]) == 0
    assert store.status()[key] == "running"
