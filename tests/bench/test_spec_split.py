"""``split: official`` in benchmark specs: each dataset's own parts, checked before any run."""

import json

import pytest
import yaml

from mlmm.bench.execute import run_benchmark
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError

SPEC = """\
name: official
datasets:
  basicmotions: {}
methods:
  per-modality-logistic: {}
missing: [none]
seeds: [0]
split: official
"""


def spec(**extra):
    data = yaml.safe_load(SPEC)
    data.update(extra)
    return parse_spec(data)


def test_only_official_runs_change_key_and_a_bad_value_is_refused():
    official, random = spec(), spec(split="random")
    assert [r.split for r in official.runs()] == ["official"]
    assert "split" not in random.runs()[0].to_dict()  # random splits keep their old keys
    assert official.runs()[0].key != random.runs()[0].key
    with pytest.raises(MlmmError, match="split"):
        spec(split="fold-3")


def test_official_runs_train_and_score_on_the_datasets_own_parts(tmp_path):
    outcome = run_benchmark(spec(), tmp_path / "s.db", threads=1)
    assert outcome.failed == 0 and outcome.ran == 1
    with ResultsStore(tmp_path / "s.db") as db:
        runs, results = db.runs(), db.results()
    assert json.loads(runs.config.iloc[0])["split"] == "official"
    n = results.query("scope == 'overall' and metric == 'accuracy'").n.iloc[0]
    assert n == 40  # BasicMotions' official test part: 40 of its 80 recordings


def test_a_dataset_without_an_official_split_stops_the_benchmark_before_any_run(tmp_path):
    bad = spec(datasets={"synthetic": {"n_samples": 200}})
    with pytest.raises(MlmmError, match="split 'official' cannot be made for 'synthetic'") as err:
        run_benchmark(bad, tmp_path / "s.db", threads=1)
    # the fix a spec's author can apply, not only the Python one
    assert str(err.value).endswith("in a spec, 'split: random' splits it")
    with ResultsStore(tmp_path / "s.db") as db:
        assert db.runs().empty or set(db.runs().status) == {"pending"}
