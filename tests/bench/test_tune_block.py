"""The ``tune:`` block of benchmark specs: each run tunes on its own training split first."""

import json

import pytest
import yaml

from mlmm.bench.execute import run_benchmark
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

SPEC = """\
name: tuned
datasets:
  synthetic: {n_samples: 160}
methods:
  logistic-mean-impute: {}
  zero-impute: {hidden: 32}
missing: [mcar:0.5]
seeds: [0]
budget: {max_epochs: 2}
"""


def spec(**extra):
    data = yaml.safe_load(SPEC)
    data.update(extra)
    return parse_spec(data)


def test_the_block_is_validated_and_only_tuned_runs_change_key():
    plain = spec()
    tuned = spec(tune={"trials": 5, "seed": 100})
    assert tuned.tune.trials == 5 and tuned.tune.folds is None and tuned.tune.timeout is None
    assert all(r.tune is None and "tune" not in r.to_dict() for r in plain.runs())
    assert all(
        r.tune == {"trials": 5, "timeout": None, "folds": None, "seed": 100} for r in tuned.runs()
    )
    assert not {r.key for r in plain.runs()} & {r.key for r in tuned.runs()}
    with pytest.raises(MlmmError, match=r"tune\.trials: .*greater than or equal to 1"):
        spec(tune={"trials": 0})
    with pytest.raises(MlmmError, match=r"tune\.budget: unknown field"):
        spec(tune={"budget": 3})


def test_a_tuned_benchmark_records_each_runs_study(tmp_path):
    store = tmp_path / "r.db"
    outcome = run_benchmark(spec(tune={"trials": 2, "seed": 100}), store, threads=1)
    assert outcome.failed == 0 and outcome.ran == 2
    with ResultsStore(store) as db:
        runs, studies = db.runs(), db.studies()
        trials = {row.run_key: db.study_trials(row.study_key) for row in studies.itertuples()}
    assert set(studies.run_key) == set(runs.run_key)
    for run in runs.itertuples():
        config = json.loads(run.config)
        assert config["tune"]["trials"] == 2  # the budget, with the run
        assert (
            len(trials[run.run_key]) == 2
            and studies.set_index("run_key").n_trials[run.run_key] == 2
        )
    by_method = studies.set_index("method")
    # the spec's own hyperparameter (hidden: 32) is held fixed, the others tuned
    zero = json.loads(by_method.config["zero-impute"])
    assert zero["fixed"] == {"hidden": 32} and "hidden" not in zero["space"]
    assert "trainer.lr" in json.dumps(trials[by_method.run_key["zero-impute"]][0]["params"])
    reference = json.loads(by_method.config["logistic-mean-impute"])
    assert reference["trainer_space"] == {}  # fitted by scikit-learn: no trainer to tune
    # a rerun finds every run done and tunes nothing again
    again = run_benchmark(spec(tune={"trials": 2, "seed": 100}), store, threads=1)
    assert again.ran == 0 and again.skipped == 2
