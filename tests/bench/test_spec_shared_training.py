"""A training condition shared by several missing entries trains one model, scored under the
union of their test conditions, with the same scores as separate runs would give."""

import pandas as pd

from mlmm.bench import execute
from mlmm.bench.execute import run_benchmark
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore


def spec(missing):
    return parse_spec(
        {
            "datasets": {"synthetic": {"n_samples": 240}},
            "methods": {"zero-impute": {}},
            "missing": missing,
            "seeds": [0],
            "budget": {"max_epochs": 3},
        }
    )


def test_entries_sharing_a_training_condition_become_one_run():
    merged = spec(["none=>mcar:0.5", {"train": "none", "test": ["none", "mcar:0.5", "mcar:0.25"]}])
    runs = merged.runs()
    assert [(r.train_missing, r.test_missing) for r in runs] == [
        ("none", ("mcar:0.5", "none", "mcar:0.25"))
    ]
    # different training conditions stay different runs
    assert len(spec(["mcar:0.5", "none=>mcar:0.5"]).runs()) == 2


def test_one_training_gives_the_scores_of_separate_runs(tmp_path, monkeypatch):
    trained = []
    real = execute.execute_run
    monkeypatch.setattr(execute, "execute_run", lambda c, t: trained.append(c) or real(c, t))
    both = spec(["none=>mcar:0.5", {"train": "none", "test": ["none", "mcar:0.25"]}])
    run_benchmark(both, tmp_path / "both.db", threads=1)
    assert len(trained) == 1
    run_benchmark(spec(["none=>mcar:0.5"]), tmp_path / "alone.db", threads=1)
    with ResultsStore(tmp_path / "both.db") as db:
        merged = db.results()
    with ResultsStore(tmp_path / "alone.db") as db:
        alone = db.results()
    assert set(merged.condition) >= {"none", "mcar:0.25", "mcar:0.5"}
    key = ["method", "scope", "subset", "metric"]
    pick = merged[merged.condition == "mcar:0.5"].drop(columns="run_key").sort_values(key)
    expected = alone[alone.condition == "mcar:0.5"].drop(columns="run_key").sort_values(key)
    pd.testing.assert_frame_equal(pick.reset_index(drop=True), expected.reset_index(drop=True))
