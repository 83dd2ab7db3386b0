"""The first benchmark runner: validation before running, resume, failures recorded."""

import json

import pytest

from mlmm.bench import runner
from mlmm.bench.runner import BenchConfig, comparison_table, run_bench
from mlmm.errors import MlmmError

TINY = dict(
    datasets={"synthetic": {"n_samples": 300}},
    missing=["mcar:0.5"],
    seeds=[0],
    trainer={"max_epochs": 2},
)


def test_rerun_skips_finished_runs(tmp_path, monkeypatch):
    config = BenchConfig(methods={"late-fusion": {}}, **TINY)
    first = run_bench(config, tmp_path)
    monkeypatch.setattr(runner, "_one_run", lambda run: pytest.fail("a finished run ran again"))
    statuses = []
    second = run_bench(config, tmp_path, lambda i, n, run, status: statuses.append(status))
    assert statuses == ["skipped"]
    assert len(first) == len(second)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    config = BenchConfig(methods={"late-fusion": {}, "hemis": {"hidden": 0}}, **TINY)
    results = run_bench(config, tmp_path)
    assert set(results.method) == {"late-fusion", "bayes-optimal"}
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert failures[0]["run"]["method"] == "hemis" and "hidden" in failures[0]["error"]


@pytest.mark.parametrize(
    "change, phrase",
    [
        ({"methods": {"hemsi": {}}}, "Did you mean 'hemis'"),
        ({"datasets": {"synthetc": {}}}, "Did you mean 'synthetic'"),
        ({"missing": ["mcar:2"]}, "[0, 1)"),
        ({"seeds": [-1]}, "non-negative"),
        ({"methods": {"hemis": {"colour": 1}}}, "no hyperparameter"),
    ],
)
def test_bad_grid_is_rejected_before_any_run(tmp_path, change, phrase):
    config = BenchConfig(**{**dict(methods={"hemis": {}}, **TINY), **change})
    with pytest.raises(MlmmError, match=phrase.replace("[", r"\[").replace(")", r"\)")):
        run_bench(config, tmp_path)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_comparison_table_reports_mean_and_std_over_seeds(tmp_path):
    config = BenchConfig(
        methods={"late-fusion": {}, "zero-impute": {}}, **{**TINY, "seeds": [0, 1]}
    )
    results = run_bench(config, tmp_path)
    table = comparison_table(results)
    row = table[table.method == "late-fusion"].iloc[0]
    assert row.seeds == 2 and "±" in row.accuracy and row.gap_to_bayes != "-"
    # both runs of a seed carry the Bayes reference; the table counts it once per seed
    bayes = results[
        (results.method == "bayes-optimal")
        & (results.scope == "overall")
        & (results.metric == "accuracy")
    ]
    assert len(bayes) == 4 and (table.method == "bayes-optimal").sum() == 1
    values = bayes.drop_duplicates("seed").value
    expected = f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"
    assert table[table.method == "bayes-optimal"].accuracy.iloc[0] == expected
