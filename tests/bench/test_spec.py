"""Benchmark specs: YAML validated before any run, with the field and line of every error."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

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
    assert set(quick.datasets) == {"handwritten", "synthetic", "synthetic-interaction"}
    assert len(quick.seeds) == 1
    tests = {t for _, ts in quick.conditions("synthetic") for t in ts}
    assert tests == {"none", "mcar:0.5"}
    # the interaction variant: one training condition, MCAR 0.3, small
    assert quick.conditions("synthetic-interaction") == [("mcar:0.3", ["none", "mcar:0.3"])]
    assert quick.datasets["synthetic-interaction"]["n_samples"] <= 2000


def test_standard_suite_runs_every_method_and_dataset_under_every_mechanism():
    standard = load_suite("standard")
    assert set(standard.methods) == set(METHODS.names())
    runs = standard.runs()
    assert {r.dataset for r in runs} == {
        "handwritten",
        "synthetic",
        "synthetic-interaction",
        "basicmotions",
    }
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
    ("datasets:\n  synthetic: {n_sample: 9}\n", 1, "no parameter 'n_sample'. Did you mean"),
    ("missing: [mcar:2]\n", 3, "[0, 1)"),
    ("missing: [mcra:0.5]\n", 3, "mcra"),
    ("seeds: [0, -1]\n", 6, "non-negative"),
    ("methods:\n  hemis: {colour: 1}\n", 4, "no hyperparameter 'colour'"),
    ("budget:\n  max_epochs: 0\n", 8, "budget.max_epochs"),
    ("colour: red\n", 7, "colour: unknown field"),
    ("metrics: [acuracy]\n", 7, "Did you mean 'accuracy'"),
    ("seeds: [true]\n", 6, "seeds are non-negative integers, got True"),
    ("seeds: [100000000000000000000000000000]\n", 6, "non-negative integers below 2**63"),
    ("metrics: [mae]\n", 7, "'mae' scores regression tasks, but the spec's datasets are synthetic"),
    ("methods:\n  hemis: {dropout: .nan}\n", 4, "hyperparameter 'dropout' of method 'hemis'"),
    ("datasets:\n  synthetic: {snr: [.inf]}\n", 1, "must be finite, got [inf]"),
    ("budget:\n  lr: .nan\n", 8, "budget.lr: Input should be a finite number"),
    ("budget:\n  time_limit: .inf\n", 8, "budget.time_limit: Input should be a finite number"),
    ("test_size: .nan\n", 7, "test_size: Input should be a finite number"),
    ("seeds: [0]\nseeds: [1]\n", 7, "key 'seeds' is given twice (lines 6 and 7); keep one"),
    ("methods:\n  hemis: {hidden: 8, hidden: 9}\n", 5, "key 'hidden' is given twice"),
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


def test_a_misspelt_required_key_is_named_with_the_closest_field(tmp_path):
    # 'seed:' for 'seeds:' said only "seeds: required field is missing", not what was wrong
    path = tmp_path / "typo.yaml"
    path.write_text(
        "datasets:\n  synthetic: {}\nmissing: [none]\nmethods:\n  hemis: {}\nseed: [0]\n"
    )
    with pytest.raises(MlmmError, match=r"line 6: seed: unknown field\. Did you mean 'seeds'\?"):
        load_spec(path)


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


def write(tmp_path, content: str | bytes):
    path = tmp_path / "spec.yaml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(c + 1)}: &{chr(c + 1)} [{', '.join([f'*{chr(c)}'] * 10)}]\n"
    for c in range(ord("a"), ord("i"))
)


def test_an_alias_bomb_is_refused_before_anything_is_expanded(tmp_path):
    # 10**9 leaves once expanded; refused while composing, at its first anchor
    path = write(tmp_path, BILLION_LAUGHS)
    assert path.stat().st_size < 1000
    with pytest.raises(MlmmError, match=r"line 1: not valid YAML: anchors \(&name\) and aliases"):
        load_spec(path)


def test_an_alias_alone_is_refused_too(tmp_path):
    body = "datasets:\n  synthetic: &p {n_samples: 300}\n  handwritten: *p\n"
    with pytest.raises(MlmmError, match="line 2: not valid YAML: anchors"):
        load_spec(write(tmp_path, body))


def test_a_spec_larger_than_the_cap_is_refused_unread(tmp_path):
    from mlmm.plain_yaml import MAX_BYTES

    path = write(tmp_path, "# padding\n" * (MAX_BYTES // 10 + 1))
    with pytest.raises(MlmmError, match="at most 1,000,000 bytes"):
        load_spec(path)


def test_deep_nesting_is_refused_in_one_line(tmp_path):
    path = write(tmp_path, "seeds: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(MlmmError, match="nested more than 64 levels deep") as err:
        load_spec(path)
    assert "\n" not in str(err.value)


def test_a_spec_that_is_not_utf8_is_one_line(tmp_path):
    path = write(tmp_path, "name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(MlmmError, match=r"not UTF-8 text \(byte 0xe9 at offset 9\)"):
        load_spec(path)


def test_a_utf8_bom_is_accepted(tmp_path):
    body = "datasets: {synthetic: {}}\nmethods: {hemis: {}}\nmissing: [none]\nseeds: [0]\n"
    assert load_spec(write(tmp_path, "\ufeff" + body)).seeds == [0]


def test_exponents_without_a_dot_are_numbers(tmp_path):
    body = (
        "datasets: {synthetic: {}}\nmethods: {hemis: {dropout: 1e-1}}\nmissing: [none]\n"
        "seeds: [0]\nbudget: {lr: 1E-3}\n"
    )
    spec = load_spec(write(tmp_path, body))
    assert spec.methods["hemis"]["dropout"] == 0.1 and spec.budget.lr == 0.001


def test_metrics_must_score_the_datasets_task():
    assert parse_spec({**BASE, "metrics": ["accuracy", "ece"]}).metrics == ["accuracy", "ece"]
    with pytest.raises(MlmmError, match="'rmse' scores regression tasks.*use accuracy, macro_f1"):
        parse_spec({**BASE, "metrics": ["accuracy", "rmse"]})


_side_ids = itertools.count()


@pytest.fixture
def plugin_beside_spec(tmp_path, monkeypatch):
    """A spec folder holding ``side_plugin_N.py``, which registers the method ``side-fusion``
    and writes ``imported.txt`` when imported; the registration is undone after the test."""
    from mlmm.methods import METHODS
    from mlmm.registry import PLUGIN_FOLDERS_ENV

    name = f"side_plugin_{next(_side_ids)}"
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / f"{name}.py").write_text(
        "import pathlib\n"
        "from mlmm.methods.combination.late_fusion import LateFusion\n"
        "from mlmm.methods.registry import register_method\n"
        "pathlib.Path(__file__).with_name('imported.txt').write_text('ran')\n"
        "@register_method('side-fusion', family='combination', subtype='ensemble', paper='-')\n"
        "class SideFusion(LateFusion):\n"
        "    '''late-fusion under another name.'''\n"
    )
    (folder / "spec.yaml").write_text(
        f"plugins: [{name}]\ndatasets: {{synthetic: {{}}}}\nmethods: {{side-fusion: {{}}}}\n"
        "missing: [none]\nseeds: [0]\n"
    )
    monkeypatch.delenv(PLUGIN_FOLDERS_ENV, raising=False)
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    yield name, folder
    sys.modules.pop(name, None)


def test_spec_plugins_are_refused_unless_allowed(plugin_beside_spec):
    name, folder = plugin_beside_spec
    with pytest.raises(MlmmError, match=rf"line 1: plugins: the spec lists plugins \['{name}'\]"):
        load_spec(folder / "spec.yaml")
    with pytest.raises(MlmmError, match="--allow-spec-plugins"):
        load_spec(folder / "spec.yaml", allow_plugins=["other_module"])
    with pytest.raises(MlmmError, match="--allow-spec-plugins"):
        load_spec(folder / "spec.yaml", allow_plugins=name + "x")  # a string is one name
    assert not (folder / "imported.txt").exists()


def test_allowed_spec_plugins_resolve_from_the_spec_folder_in_workers_too(plugin_beside_spec):
    name, folder = plugin_beside_spec
    spec = load_spec(folder / "spec.yaml", allow_plugins=[name])
    assert (folder / "imported.txt").read_text() == "ran"
    assert spec.plugins == [name] and "side-fusion" in spec.methods
    assert not any(Path(p or ".").resolve() == folder for p in sys.path)  # not on sys.path
    # a spawned benchmark worker inherits the environment and imports the same file
    code = (
        f"from mlmm.registry import load_plugins; load_plugins([{name!r}]); "
        "from mlmm.methods import METHODS; print('side-fusion' in METHODS)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True
    )
    assert out.stdout.strip() == "True", out.stderr


def test_budget_device_and_precision_reach_the_trainer_and_keep_old_keys():
    default = parse_spec({**BASE, "budget": {"max_epochs": 5}}).runs()[0]
    same = parse_spec(
        {**BASE, "budget": {"max_epochs": 5, "device": "cpu", "precision": 32}}
    ).runs()[0]
    # the defaults are left out of the run's budget, so stores written before them resume
    assert "device" not in default.budget and "precision" not in default.budget
    assert same.key == default.key
    mixed = parse_spec(
        {**BASE, "budget": {"max_epochs": 5, "device": "cuda:1", "precision": "bf16-mixed"}}
    ).runs()[0]
    assert mixed.budget["device"] == "cuda:1" and mixed.budget["precision"] == "bf16-mixed"
    assert mixed.key != default.key


@pytest.mark.parametrize(
    "budget, message",
    [
        ({"precision": "fp16"}, "budget.precision: precision must be one of ['32', 'bf16-mixed'"),
        ({"device": "gpu"}, "budget.device: unknown device 'gpu'; use 'cpu', 'cuda'"),
        ({"precision": "16-mixed"}, "'16-mixed' needs a CUDA GPU, got device 'cpu'"),
    ],
)
def test_a_bad_device_or_precision_in_the_budget_is_one_line(budget, message):
    with pytest.raises(MlmmError) as err:
        parse_spec({**BASE, "budget": budget})
    assert message in str(err.value) and "\n" not in str(err.value)
    # a GPU is checked where the run trains, not where the spec is read (a Ray head has none)
    parse_spec({**BASE, "budget": {"device": "cuda", "precision": "16-mixed"}})
