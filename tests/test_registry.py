"""The generic name → object registry and the user-facing error helpers."""

from __future__ import annotations

import pytest

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
        MlmmError, match=r"Choose from: hemis, late-concat, late-fusion, zero-impute\.$"
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
