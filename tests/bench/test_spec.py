"""Benchmark specs: YAML validated before any run, with the field and line of every error."""

import re

import pytest

from mlmm.bench.spec import BenchSpec, builtin_suites, load_spec, load_suite, parse_spec
from mlmm.errors import MlmmError
from mlmm.methods import METHODS, TAXONOMY

BASE = {
    "datasets": {"synthetic": {"n_samples": 300}},
    "methods": {"hemis": {}},
    "missing": ["mcar:0.5"],
    "seeds": [0],
}


def test_builtin_suites_load_and_quick_covers_every_family():
    assert {"quick", "standard"} <= set(builtin_suites())
    quick = load_suite("quick")
    families = {METHODS.get(m).info["family"] for m in quick.methods}
    assert families == set(TAXONOMY), f"quick suite misses {set(TAXONOMY) - families}"
    assert set(quick.datasets) == {"handwritten", "synthetic"} and len(quick.seeds) == 1
    tests = {t for _, ts in quick.conditions("synthetic") for t in ts}
    assert tests == {"none", "mcar:0.5"}


def test_standard_suite_runs_every_method_and_dataset_under_every_mechanism():
    standard = load_suite("standard")
    assert set(standard.methods) == set(METHODS.names())
    runs = standard.runs()
    assert {r.dataset for r in runs} == {"handwritten", "synthetic", "basicmotions"}
    mechanisms = {t.split(":")[0] for r in runs for t in r.test_missing}
    assert {"mcar", "mar", "mnar", "fixed", "none"} <= mechanisms
    assert any(r.train_missing == "none" and r.test_missing != ("none",) for r in runs)
    assert {r.seed for r in runs} == {0, 1, 2}


def test_runs_expand_the_grid_with_stable_distinct_keys():
    spec = parse_spec({**BASE, "methods": {"hemis": {}, "late-fusion": {}}, "seeds": [0, 1]})
    runs = spec.runs()
    assert len(runs) == 4 and len({r.key for r in runs}) == 4
    assert [r.key for r in runs] == [r.key for r in parse_spec(spec.model_dump()).runs()]
    changed = parse_spec({**BASE, "methods": {"hemis": {"hidden": 32}}})
    assert changed.runs()[0].key != parse_spec(BASE).runs()[0].key


def test_run_keys_cover_the_resolved_defaults(monkeypatch):
    from mlmm.methods import registry

    spec = parse_spec(BASE)
    assert spec.methods["hemis"]["hidden"] == registry.method_hyperparameters("hemis")["hidden"]
    real = registry.method_hyperparameters
    monkeypatch.setattr(
        registry, "method_hyperparameters", lambda name: {**real(name), "hidden": 7}
    )
    changed = parse_spec(BASE)  # the same spec after a default changed
    assert changed.runs()[0].key != spec.runs()[0].key


def test_entries_train_once_and_test_under_a_list():
    spec = parse_spec(
        {**BASE, "missing": ["none=>mcar:0.5", {"train": "mcar:0.5", "test": ["none", "mcar:0.7"]}]}
    )
    assert spec.conditions("synthetic") == [
        ("none", ["mcar:0.5"]),
        ("mcar:0.5", ["none", "mcar:0.7"]),
    ]


def test_an_entry_limited_to_a_dataset_applies_only_there():
    spec = parse_spec(
        {
            **BASE,
            "datasets": {"synthetic": {}, "handwritten": {}},
            "missing": [{"train": "none", "test": ["fixed:+pix"], "datasets": ["handwritten"]}],
        }
    )
    assert {r.dataset for r in spec.runs()} == {"handwritten"}


def test_all_expands_to_the_registries():
    spec = parse_spec({**BASE, "methods": "all", "datasets": "all"})
    assert set(spec.methods) == set(METHODS.names())
    assert "basicmotions" in spec.datasets


# the base file: datasets on lines 1-2, missing on 3, methods on 4-5, seeds on 6, extras from 7
BAD = [
    ("methods:\n  hemsi: {}\n", 4, "Did you mean 'hemis'"),
    ("datasets:\n  synthetc: {}\n", 1, "Did you mean 'synthetic'"),
    ("missing: [mcar:2]\n", 3, "[0, 1)"),
    ("missing: [mcra:0.5]\n", 3, "mcra"),
    ("seeds: [0, -1]\n", 6, "non-negative"),
    ("methods:\n  hemis: {colour: 1}\n", 4, "no hyperparameter 'colour'"),
    ("budget:\n  max_epochs: 0\n", 8, "budget.max_epochs"),
    ("colour: red\n", 7, "colour: unknown field"),
    ("metrics: [acuracy]\n", 7, "Did you mean 'accuracy'"),
]


@pytest.mark.parametrize("change, line, phrase", BAD)
def test_bad_specs_name_the_field_and_line(tmp_path, change, line, phrase):
    parts = {
        "datasets": "datasets:\n  synthetic: {n_samples: 300}\n",
        "missing": "missing: [mcar:0.5]\n",
        "methods": "methods:\n  hemis: {}\n",
        "seeds": "seeds: [0]\n",
    }
    key = change.split(":")[0]
    extra = "" if key in parts else change
    parts[key] = change
    path = tmp_path / "bad.yaml"
    path.write_text("".join(parts[k] for k in ("datasets", "missing", "methods", "seeds")) + extra)
    with pytest.raises(MlmmError, match=re.escape(phrase)) as err:
        load_spec(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"line {line}:" in message, message


def test_yaml_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("datasets:\n  synthetic: {n_samples: 300\nmethods: {}\n")
    with pytest.raises(MlmmError, match=r"line \d+: not valid YAML"):
        load_spec(path)


def test_unknown_suite_and_missing_file_are_clear():
    with pytest.raises(MlmmError, match="Did you mean 'quick'"):
        load_suite("quik")
    with pytest.raises(MlmmError, match="no benchmark spec"):
        load_spec("no/such/spec.yaml")


def test_a_spec_is_a_mapping():
    with pytest.raises(MlmmError, match="is a mapping"):
        parse_spec(["hemis"])
    assert isinstance(parse_spec(BASE), BenchSpec)


def test_the_documented_spec_is_valid():
    from pathlib import Path

    import yaml

    page = (Path(__file__).parents[2] / "docs" / "benchmarks.md").read_text()
    block = re.search(r"^```yaml\n(.*?)^```", page, flags=re.DOTALL | re.MULTILINE).group(1)
    spec = parse_spec(yaml.safe_load(block))
    # entries sharing a training condition merge: mcar:0.5 (three entries) and none
    assert [t for t, _ in spec.conditions("handwritten")] == ["mcar:0.5", "none"]
    assert len(spec.conditions("synthetic")) == 2
    assert "fixed:+pix" in spec.conditions("handwritten")[0][1]
    assert spec.budget.time_limit is None  # budgets in epochs; time_limit is an optional cap
