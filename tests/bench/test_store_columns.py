"""The runs table's newer columns (time_limited, condition_errors, active_parameters): written
with every run, and added to a store created before they existed."""

import sqlite3

import pandas as pd

from mlmm.bench import store as store_module
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore


def old_store(path, columns) -> str:
    """Write an empty store whose ``runs`` table lacks ``columns``; return its schema."""
    schema = store_module._SCHEMA
    for name in columns:
        schema = schema.replace(f",\n    {name} {store_module.ADDED_RUN_COLUMNS[name]}", "")
        assert f" {name} " not in schema
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        f"PRAGMA application_id={store_module.APPLICATION_ID}; "
        f"PRAGMA user_version={store_module.SCHEMA_VERSION}; {schema}"
    )
    db.close()
    return schema


def test_a_store_without_the_new_columns_gets_them(tmp_path):
    path = tmp_path / "old.db"
    old_store(path, store_module.ADDED_RUN_COLUMNS)
    with ResultsStore(path, readonly=True) as results:  # read as they are, nothing added
        assert set(store_module.ADDED_RUN_COLUMNS) <= set(results.runs().columns)
    run = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 200}},
            "methods": {"zero-impute": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
        }
    ).runs()[0]
    with ResultsStore(path) as results:
        results.add_runs("old", [run])
        assert results.claim(run.key)
        table = pd.DataFrame(
            [dict.fromkeys(store_module.RESULT_FIELDS, "x") | {"value": 0.5, "n": 1}]
        )
        info = {"time_limited": 1, "condition_errors": '{"mcar:0.9": "too high"}'}
        results.finish(run.key, table, info | {"active_parameters": 123})
        runs = results.runs()
    assert runs.active_parameters.tolist() == [123]
    assert runs.time_limited.tolist() == [1]
    assert runs.condition_errors.tolist() == ['{"mcar:0.9": "too high"}']


def test_a_store_another_process_has_only_begun_to_create_is_opened(tmp_path):
    # the creating process has written the WAL header but not yet committed the schema: a
    # second process opening the file then must not call it "not an mlmm results store"
    path = tmp_path / "new.db"
    creator = sqlite3.connect(path, isolation_level=None)
    creator.execute("PRAGMA journal_mode=WAL")
    assert path.stat().st_size > 0
    with ResultsStore(path) as results:
        assert results.runs().empty
    creator.close()


def test_device_and_precision_are_added_to_an_older_store_and_stored_per_run(tmp_path):
    path = tmp_path / "before-precision.db"
    old_store(path, ["device", "precision"])
    runs = parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 200}},
            "methods": {"zero-impute": {}, "hemis": {}},
            "missing": ["mcar:0.5"],
            "seeds": [0],
        }
    ).runs()
    table = pd.DataFrame([dict.fromkeys(store_module.RESULT_FIELDS, "x") | {"value": 0.5, "n": 1}])
    with ResultsStore(path) as results:
        results.add_runs("old", runs)
        for run, info in zip(
            runs, [{}, {"device": "cuda:0", "precision": "bf16-mixed"}], strict=True
        ):
            assert results.claim(run.key)
            results.finish(run.key, table, info)
        stored = results.runs().set_index("method")
        costs = results.table()
    assert stored.loc["zero-impute", ["device", "precision"]].isna().all()  # not recorded
    assert stored.loc["hemis", "device"] == "cuda:0"
    assert stored.loc["hemis", "precision"] == "bf16-mixed"
    assert {"device", "precision"} <= set(costs.columns)
