"""benchmarks/auto.py: rows of an earlier run are reused only where the code they measured is
the same (the baselines, and ``auto`` of the same ``AUTO_REVISION``)."""

import json


def _row(method, seed, revision=None, accuracy=90.0):
    key = {
        "part": "small",
        "dataset": "synthetic",
        "dataset_params": {"n_samples": 10300},
        "method": method,
        "params": {"budget": "medium"} if method == "auto" else {},
        "missing": "mcar:0.3:unit=samples",
        "seed": seed,
        "test_size": 1 - 300 / 10300,
    }
    if revision is not None:
        key["auto_revision"] = revision
    return key, {**key, "accuracy": accuracy, "n_train": 300, "train_seconds": 1.0}


def test_reuse_rows_keeps_baselines_and_same_revision_auto_only(auto_script, tmp_path):
    current, older = auto_script.AUTO_REVISION, auto_script.AUTO_REVISION - 1
    rows = {
        "baseline": _row("lda-em", 0),
        "rerun": _row("hemis", 0),
        "auto same": _row("auto", 0, current, 95.0),
        "auto older": _row("auto", 1, older, 80.0),
    }
    earlier = tmp_path / "auto.json"
    earlier.write_text(json.dumps({"runs": [row for _, row in rows.values()]}))
    store = tmp_path / "store"
    store.mkdir()
    auto_script.reuse_rows(store, earlier, rerun={"hemis"})

    def read_back(name):  # None: not in the store, so run() would train it
        return auto_script.cached_run(store, rows[name][0], None)

    assert read_back("baseline")["accuracy"] == 90.0
    assert read_back("auto same")["accuracy"] == 95.0
    assert read_back("rerun") is None
    assert read_back("auto older") is None
    assert len(list(store.iterdir())) == 2
    # a row already in the store is never overwritten by an earlier one; one that differs is
    # named (the ninth round's rerun read stale rows back from a copied store unnoticed)
    assert auto_script.reuse_rows(store, earlier, rerun=set()) == []
    assert read_back("auto same")["accuracy"] == 95.0
    assert read_back("rerun")["accuracy"] == 90.0
    newer = _row("lda-em", 0, accuracy=91.0)[1]
    (tmp_path / "newer.json").write_text(json.dumps({"runs": [newer]}))
    differing = auto_script.reuse_rows(store, tmp_path / "newer.json", rerun=set())
    assert differing == ["small/synthetic/lda-em/0"]
    assert read_back("baseline")["accuracy"] == 90.0


def test_reuse_rows_carries_older_auto_rows_of_the_named_parts_only(auto_script, tmp_path):
    current, older = auto_script.AUTO_REVISION, auto_script.AUTO_REVISION - 1
    key, row = _row("auto", 0, older, 85.0)
    synthetic_key, synthetic = _row("auto", 1, older, 70.0)
    synthetic_key["part"] = synthetic["part"] = "synthetic"
    earlier = tmp_path / "auto.json"
    earlier.write_text(json.dumps({"runs": [row, synthetic]}))
    store = tmp_path / "store"
    store.mkdir()
    auto_script.reuse_rows(store, earlier, rerun=set(), carry={"small"})
    carried = auto_script.cached_run(store, {**key, "auto_revision": current}, None)
    assert carried["accuracy"] == 85.0 and carried["trained_at_revision"] == older
    assert auto_script.cached_run(store, {**key, "auto_revision": older}, None) is None
    synthetic_now = {**synthetic_key, "auto_revision": current}
    assert auto_script.cached_run(store, synthetic_now, None) is None  # not carried: rerun


def test_a_row_carried_twice_keeps_the_revision_it_was_trained_at(auto_script, tmp_path):
    current = auto_script.AUTO_REVISION
    key, row = _row("auto", 0, current - 1, 85.0)
    row["trained_at_revision"] = current - 2  # carried once already
    earlier = tmp_path / "auto.json"
    earlier.write_text(json.dumps({"runs": [row]}))
    store = tmp_path / "store"
    store.mkdir()
    auto_script.reuse_rows(store, earlier, rerun=set(), carry={"small"})
    carried = auto_script.cached_run(store, {**key, "auto_revision": current}, None)
    assert carried["trained_at_revision"] == current - 2
