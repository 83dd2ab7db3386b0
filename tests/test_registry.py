"""The generic name → object registry and the user-facing error helpers."""

from __future__ import annotations

import pytest

import mlmm
from mlmm.errors import ArtifactError, MlmmError, did_you_mean, unknown_name_error
from mlmm.registry import Entry, Registry


def registry() -> Registry:
    reg = Registry("method")
    for name, family in (("hemis", "representation"), ("late-fusion", "combination"),
                         ("zero-impute", "imputation"), ("late-concat", "combination")):  # fmt: skip
        reg.register(name, family=family, year=2016 if name == "hemis" else 1998)(object())
    return reg


def test_register_returns_the_object_and_stores_its_info():
    reg = Registry("thing")

    class Thing:
        pass

    assert reg.register("thing", family="f", paper="p")(Thing) is Thing
    entry = reg.get("thing")
    assert entry == Entry("thing", Thing, {"family": "f", "paper": "p"})
    assert "thing" in reg and "other" not in reg and len(reg) == 1


def test_duplicate_name_raises_and_keeps_the_first():
    reg = registry()
    first = reg.get("hemis").obj
    with pytest.raises(MlmmError, match="method 'hemis' is already registered; pick another name"):
        reg.register("hemis", family="x")(object())
    assert reg.get("hemis").obj is first and len(reg) == 4


def test_unknown_name_suggests_the_closest():
    with pytest.raises(MlmmError, match=r"^unknown method 'hemsi'\. Did you mean 'hemis'\?$"):
        registry().get("hemsi")
    with pytest.raises(MlmmError, match="Did you mean 'late-fusion' or 'late-concat'"):
        registry().get("late-fusio")


def test_unknown_name_without_close_matches_lists_the_choices():
    with pytest.raises(
        MlmmError, match=r"Choose from: hemis, late-concat, late-fusion, zero-impute\. A method"
    ):
        registry().get("transformer")


def test_names_are_sorted_and_filtered_by_pattern_and_info():
    reg = registry()
    assert reg.names() == ["hemis", "late-concat", "late-fusion", "zero-impute"]
    assert reg.names("late-*") == ["late-concat", "late-fusion"]
    assert reg.names("*i*", family="combination") == ["late-fusion"]
    assert reg.names(family="combination", year=1998) == ["late-concat", "late-fusion"]
    assert reg.names(family=None) == reg.names()  # None means "no filter"
    assert reg.names(family="nope") == []
    assert reg.names("gan*") == []


def test_iteration_is_sorted_by_name():
    assert [e.name for e in registry()] == ["hemis", "late-concat", "late-fusion", "zero-impute"]


def test_did_you_mean_and_unknown_name_error():
    assert did_you_mean("mcr", ["mcar", "mar", "none"]) == " Did you mean 'mcar' or 'mar'?"
    assert did_you_mean("zzz", ["b", "a"]) == " Choose from: a, b."
    err = unknown_name_error("dataset", "handwriten", ["handwritten", "synthetic"])
    assert isinstance(err, MlmmError)
    assert str(err) == "unknown dataset 'handwriten'. Did you mean 'handwritten'?"


def test_error_hierarchy_lets_callers_catch_value_error():
    assert issubclass(ArtifactError, MlmmError) and issubclass(MlmmError, ValueError)


def test_a_plugin_module_registers_its_methods(plugin_module):
    from mlmm.registry import load_plugins

    assert "plugin-fusion" not in mlmm.list_methods()
    load_plugins([plugin_module])
    assert "plugin-fusion" in mlmm.list_methods(family="combination")
    load_plugins([plugin_module])  # imported once: no "already registered" on a second load


@pytest.mark.parametrize(
    "module, message",
    [
        ("no_such_plugin_module", "plugin 'no_such_plugin_module' could not be imported"),
        ("", "a plugin is a module name"),
        ("../evil", "a plugin is a module name such as 'my_lab.methods', got '../evil'"),
        ("my_lab/methods.py", "a plugin is a module name"),
    ],
)
def test_a_plugin_that_cannot_be_imported_is_one_line(module, message):
    from mlmm.registry import load_plugins

    with pytest.raises(MlmmError, match=message) as err:
        load_plugins([module])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, source, fix",
    [  # was "install it, or put its folder on PYTHONPATH" for each
        ("raising_plugin_q1", "raise RuntimeError('boom')\n", "own code raised it; fix it"),
        ("needy_plugin_q1", "import no_such_dependency_q1\n", "install 'no_such_dependency_q1'"),
        ("file_plugin_q1.py", "VALUE = 1\n", "give the module's name, 'file_plugin_q1', not"),
    ],
)
def test_a_plugin_that_fails_to_import_is_told_the_right_fix(name, source, fix, tmp_path):
    from mlmm.registry import load_plugins

    (tmp_path / f"{name.removesuffix('.py')}.py").write_text(source)
    with pytest.raises(MlmmError, match=f"plugin '{name}' could not be imported") as err:
        load_plugins([name], folders=[tmp_path])
    assert fix in str(err.value) and "\n" not in str(err.value)
    assert "PYTHONPATH" not in str(err.value)


def test_an_unknown_name_far_from_every_known_one_mentions_plugins():
    registry = Registry("method")
    registry.register("hemis")(object)
    with pytest.raises(MlmmError, match="Did you mean 'hemis'") as typo:
        registry.get("hemsi")
    assert "plugin" not in str(typo.value)  # a typo gets the suggestion alone
    with pytest.raises(MlmmError, match="Choose from: hemis. .*mlmm --plugin MODULE"):
        registry.get("my-lab-method")


def test_plugins_in_a_folder_import_without_joining_sys_path(tmp_path, monkeypatch):
    import json
    import os
    import sys

    from mlmm.registry import PLUGIN_FOLDERS_ENV, load_plugins

    monkeypatch.delenv(PLUGIN_FOLDERS_ENV, raising=False)
    (tmp_path / "folder_plugin_a.py").write_text("VALUE = 'a'\n")
    (tmp_path / "folder_plugin_b.py").write_text("VALUE = 'b'\n")
    (tmp_path / "folder_ns_lab").mkdir()  # a namespace package: a folder without __init__.py
    (tmp_path / "folder_ns_lab" / "methods.py").write_text("VALUE = 'ns'\n")
    names = ("folder_plugin_a", "folder_plugin_b", "folder_ns_lab", "folder_ns_lab.methods")
    try:
        load_plugins(["folder_plugin_a", "folder_ns_lab.methods"], folders=[tmp_path])
        assert sys.modules["folder_plugin_a"].VALUE == "a"
        assert sys.modules["folder_ns_lab.methods"].VALUE == "ns"
        assert str(tmp_path) not in sys.path
        # the folder served the modules named with it, nothing else
        with pytest.raises(MlmmError, match="'folder_plugin_b' could not be imported"):
            load_plugins(["folder_plugin_b"])
        recorded = json.loads(os.environ[PLUGIN_FOLDERS_ENV])
        assert recorded == {"folder_plugin_a": str(tmp_path), "folder_ns_lab": str(tmp_path)}
    finally:
        for name in names:
            sys.modules.pop(name, None)


def test_a_bare_folder_yields_to_an_installed_package(tmp_path, monkeypatch):
    import sys

    from mlmm.registry import PLUGIN_FOLDERS_ENV, load_plugins

    monkeypatch.delenv(PLUGIN_FOLDERS_ENV, raising=False)
    (tmp_path / "mlmm_doc_pkg_test").mkdir()
    installed = tmp_path / "site"
    (installed / "mlmm_doc_pkg_test").mkdir(parents=True)
    (installed / "mlmm_doc_pkg_test" / "__init__.py").write_text("VALUE = 'installed'\n")
    monkeypatch.syspath_prepend(str(installed))
    try:
        load_plugins(["mlmm_doc_pkg_test"], folders=[tmp_path])
        assert sys.modules["mlmm_doc_pkg_test"].VALUE == "installed"
    finally:
        sys.modules.pop("mlmm_doc_pkg_test", None)
