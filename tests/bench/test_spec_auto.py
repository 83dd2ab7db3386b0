"""``method: auto`` in benchmark specs: fit_auto's settings, validated, run like any method."""

import pytest
import yaml

from mlmm.bench.execute import run_benchmark
from mlmm.bench.spec import auto_settings, parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

SPEC = """\
name: auto-in-a-spec
datasets:
  synthetic: {n_samples: 240}
methods:
  auto: {budget: fast, folds: 2, portfolio: [per-modality-logistic, logistic-mean-impute]}
missing: [mcar:0.3]
seeds: [0]
budget: {max_epochs: 2}
tune: {trials: 1}
"""


def spec(**methods):
    data = yaml.safe_load(SPEC)
    if methods:
        data["methods"] = methods
    return parse_spec(data)


def test_auto_takes_fit_autos_settings_resolved_against_their_defaults():
    (run,) = spec().runs()
    assert run.method == "auto"
    assert set(run.method_params) == set(auto_settings())
    assert run.method_params["budget"] == "fast" and run.method_params["folds"] == 2
    assert "seed" not in auto_settings() and "cache_dir" not in auto_settings()


def test_an_unknown_auto_setting_names_the_accepted_ones():
    with pytest.raises(MlmmError, match="method 'auto' has no hyperparameter 'budgett'.*budget"):
        spec(auto={"budgett": "fast"})


def test_an_auto_run_is_stored_done_with_the_ensembles_taxonomy(tmp_path):
    outcome = run_benchmark(spec(), tmp_path / "s.db", threads=1)
    assert outcome.failed == 0 and outcome.ran == 1
    with ResultsStore(tmp_path / "s.db") as db:
        runs, results, studies = db.runs(), db.results(), db.studies()
    assert list(runs.status) == ["done"]
    assert studies.empty  # the tune block does not apply: auto chooses by its own inner CV
    assert runs.family.iloc[0] == "combination"
    acc = results.query("method == 'auto' and metric == 'accuracy' and scope == 'overall'")
    assert acc.value.iloc[0] > 0.6  # 2 balanced classes: chance is 0.5


def test_auto_with_a_mixed_precision_stops_before_any_run_in_one_line(tmp_path):
    data = yaml.safe_load(SPEC)
    data["budget"] = {"max_epochs": 2, "precision": "bf16-mixed"}
    with pytest.raises(MlmmError, match="method 'auto' trains in float32") as err:
        run_benchmark(parse_spec(data), tmp_path / "s.db", threads=1)
    assert "\n" not in str(err.value)
    # none ran or failed, and none was registered to stay pending for ever
    assert not (tmp_path / "s.db").exists()
