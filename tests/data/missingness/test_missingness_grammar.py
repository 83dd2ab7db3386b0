"""Spec grammar: canonical round trips, one-line errors, conditions and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.missingness import (
    MAR,
    MCAR,
    MISSINGNESS,
    MNAR,
    Burst,
    Condition,
    Fixed,
    MissingnessModel,
    NoMissingness,
    parse_condition,
    parse_missingness,
    split_specs,
)
from mlmm.errors import MlmmError

CANONICAL = [
    "none",
    "mcar:0.5",
    "mcar:0",
    "mcar:0.5:unit=samples",
    "mcar:0.5:allow_empty",
    "mcar:pix=0.8,fou=0.2",
    "mcar:pix=0.8,fou=0.2:allow_empty",
    "mar:0.3",
    "mar:0.3:driver=pix:strength=3",
    "mar:0.3:strength=-1.5:unit=samples:allow_empty",
    "mnar:0.3",
    "mnar:0.3:mode=high",
    "mnar:0.3:mode=low:strength=0.5:unit=samples:allow_empty",
    "fixed:-pix",
    "fixed:-pix-fou",
    "fixed:+fou+pix:allow_empty",
    "burst:0.3:len=20",
    "burst:0.3:len=2.5:allow_empty",
]


@pytest.mark.parametrize("spec", CANONICAL)
def test_canonical_specs_round_trip(spec):
    model = parse_missingness(spec)
    assert model.to_string() == spec
    assert str(model) == spec
    assert parse_missingness(model.to_string()) == model


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("MCAR:0.50", "mcar:0.5"),
        (" mcar:.5 ", "mcar:0.5"),
        ("mar:0.3:unit=slots", "mar:0.3"),
        ("mar:0.3:allow_empty:driver=pix", "mar:0.3:driver=pix:allow_empty"),
        ("mar:0.3:strength=2.0", "mar:0.3"),
        ("mnar:0.3:mode=extreme", "mnar:0.3"),
        ("mcar:0.5:allow_empty=true", "mcar:0.5:allow_empty"),
        ("mcar:0.5:allow_empty=false", "mcar:0.5"),
        ("burst:0.3:len=20.0", "burst:0.3:len=20"),
    ],
)
def test_equivalent_spellings_normalise(text, canonical):
    assert parse_missingness(text).to_string() == canonical


def test_parsed_models_have_the_right_fields():
    assert parse_missingness("none") == NoMissingness()
    assert parse_missingness("mcar:pix=0.8,fou=0.2").rates == {"pix": 0.8, "fou": 0.2}
    assert parse_missingness("mar:0.3:driver=fou:strength=3") == MAR(0.3, "fou", 3.0)
    assert parse_missingness("mnar:0.2:mode=low") == MNAR(0.2, mode="low")
    assert parse_missingness("fixed:+fou+pix") == Fixed(("fou", "pix"), keep=True)
    assert parse_missingness("burst:0.3:len=20") == Burst(0.3, 20)
    assert parse_missingness("mcar:0.5:unit=samples").unit == "samples"
    assert parse_missingness("mcar:0.5:allow_empty").allow_empty
    assert parse_missingness("mcar:0.5") != parse_missingness("mcar:0.5:unit=samples")


@pytest.mark.parametrize(
    "text, message",
    [
        ("mcar:1.5", r"missing rate must be in \[0, 1\), got 1.5 in 'mcar:1.5'"),
        ("mcar:-0.1", r"missing rate must be in \[0, 1\), got -0.1"),
        ("mcar:1", r"must be in \[0, 1\), got 1 in"),
        ("mcar:", r"mcar needs a missing rate"),
        ("mcar", r"mcar needs a missing rate .* e.g. 'mcar:0.5'; got 'mcar'"),
        ("mcar:unit=samples", r"mcar needs a missing rate.* as its first field"),
        ("mcar:nan", r"missing rate must be a number, got 'nan'"),
        ("foo:0.3", r"unknown missingness kind 'foo' in 'foo:0.3'\. Choose from: burst, fixed"),
        ("mcr:0.3", r"unknown missingness kind 'mcr'.*Did you mean 'mcar'"),
        ("", r"a missingness spec is a string such as"),
        ("mcar:pix=abc", r"missing rate for 'pix' must be a number, got 'abc'"),
        ("mcar:pix=1.2", r"missing rate for 'pix' must be in \[0, 1\), got 1.2"),
        ("mcar:pix=0.5,pix=0.2", r"modality 'pix' is given twice"),
        ("mcar:pix=0.5,=0.2", r"name=rate pairs separated by ','"),
        ("mcar:pix=0.5:unit=samples", r"per-modality rates count slots.*unit=samples"),
        (
            "mcar:0.5:colour=red",
            r"unknown option 'colour' for mcar .*Choose from: allow_empty, unit",
        ),
        ("mcar:0.5:unti=samples", r"Did you mean 'unit'"),
        ("mcar:0.5:unit=rows", r"unit must be 'slots' or 'samples', got 'rows'"),
        ("mcar:0.5:unit", r"option 'unit' needs a value"),
        ("mcar:0.5:allow_empty=maybe", r"allow_empty is a flag: write ':allow_empty'"),
        ("mcar:0.5::allow_empty", r"empty field in 'mcar:0.5::allow_empty'"),
        ("mcar:0.5:", r"empty field"),
        ("mcar:0.5:unit=samples:unit=slots", r"option 'unit' is given twice"),
        ("mar:0.3:strength=x", r"strength must be a number, got 'x'"),
        ("mar:0.3:driver=1x", r"driver must be a modality name"),
        ("mnar:0.3:mode=weird", r"mode must be one of extreme, high, low, got 'weird'"),
        ("none:0.3", r"'none' takes no rate or options"),
        ("fixed:pix", r"\+name\.\.\. \(keep only these\) or -name\.\.\. \(remove these\)"),
        ("fixed:", r"fixed needs a pattern"),
        ("fixed:-pix+fou", r"either \+ \(keep only\) or - \(remove\), not both"),
        ("fixed:-pix-pix", r"named twice"),
        ("fixed:-pix:unit=samples", r"unknown option 'unit' for fixed"),
        ("burst:0.3", r"burst needs a mean outage length, e.g. burst:0.3:len=20"),
        ("burst:0.3:len=-5", r"len must be at least 1 step, got -5"),
        ("burst:0.3:len=abc", r"len must be a number, got 'abc'"),
        ("burst:0.9:len=2", r"len=2 is too short for outage rate 0.9.*len >= 9"),
        ("burst:0.3:len=20:unit=samples", r"unknown option 'unit' for burst"),
        # a condition where one spec is expected (mlmm evaluate --missing): was "unknown
        # missingness kind 'none=>mcar'" and "unknown option '0.2' for mcar"
        ("none=>mcar:0.5", r"got the condition 'none=>mcar:0.5' \(TRAIN=>TEST\); give one si"),
        ("mcar:0.5=>mcar:0.2", r"one missingness spec .* e\.g\. the test side 'mcar:0\.2'"),
    ],
)
def test_malformed_specs_raise_one_line(text, message):
    with pytest.raises(MlmmError, match=message) as info:
        parse_missingness(text)
    assert "\n" not in str(info.value)


def test_constructors_validate_like_the_parser():
    with pytest.raises(MlmmError, match=r"got 1.5 in 'mcar:1.5'"):
        MCAR(1.5)
    with pytest.raises(MlmmError, match="mode must be one of"):
        MNAR(0.3, mode="sideways")
    with pytest.raises(MlmmError, match="too short"):
        Burst(0.9, 2)
    with pytest.raises(MlmmError, match="unit must be"):
        MAR(0.3, unit="rows")


def test_condition_mismatch_and_same():
    condition = parse_condition("none=>mcar:0.5")
    assert condition.train == NoMissingness() and condition.test == MCAR(0.5)
    assert condition.is_mismatch and condition.to_string() == "none=>mcar:0.5"
    assert parse_condition(condition.to_string()) == condition
    same = parse_condition("mcar:0.5")
    assert same.train == same.test == MCAR(0.5)
    assert not same.is_mismatch and str(same) == "mcar:0.5"
    assert parse_condition("mcar:0.5=>mcar:0.50").to_string() == "mcar:0.5"
    assert Condition("none", MCAR(0.5)) == condition


@pytest.mark.parametrize("text", ["a=>b=>c", "=>mcar:0.5", "none=>", "none=>mcar:1.5"])
def test_malformed_conditions_raise(text):
    with pytest.raises(MlmmError):
        parse_condition(text)


def test_registry_lists_every_kind_with_a_working_example(full_data):
    assert MISSINGNESS.names() == ["burst", "fixed", "mar", "mcar", "mnar", "none"]
    for entry in MISSINGNESS:
        assert issubclass(entry.obj, MissingnessModel) and entry.obj.kind == entry.name
        assert entry.info["description"]
        model = parse_missingness(entry.info["example"])
        result = model.apply(full_data, seed=0)
        assert not (result.present & ~full_data.observed).any()
        assert np.array_equal(result.present, model.apply(full_data, seed=0).present)


def test_split_specs_keeps_per_modality_rates_whole():
    text = "mcar:0, mcar:pix=0.8,fou=0.2,none,burst:0.3:len=20,mcar:0.5:allow_empty"
    assert split_specs(text) == [
        "mcar:0",
        "mcar:pix=0.8,fou=0.2",
        "none",
        "burst:0.3:len=20",
        "mcar:0.5:allow_empty",
    ]
    assert split_specs("") == [] and split_specs("mnar:0.3") == ["mnar:0.3"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("mcar:1.0", r"got 1 in 'mcar:1\.0'; give a fraction below 1 such as 0\.5"),
        ("mcar:-0.2", r"got -0\.2 in 'mcar:-0\.2'; give a fraction below 1 such as 0\.5"),
        ("mcar:pix=1", r"for 'pix' must be in \[0, 1\), got 1 .*; give a fraction below 1"),
        ("mnar:1", r"; give a fraction below 1 such as 0\.5"),
        ("burst:1:len=5", r"outage rate|; give a fraction below 1 such as 0\.5"),
    ],
)
def test_out_of_range_rates_name_the_fix(text, message):
    # was "missing rate must be in [0, 1), got 1 in 'mcar:1.0'" with no fix named
    with pytest.raises(MlmmError, match=message) as info:
        parse_missingness(text)
    assert "\n" not in str(info.value) and "give a fraction below 1" in str(info.value)


@pytest.mark.parametrize(
    "rates, message",
    [
        ({"pix:x": 0.5}, r"keyed by modality names .*got 'pix:x'"),
        ({"a,b": 0.5}, r"got 'a,b'"),
        ((("pix", 0.5), ("pix", 0.2)), r"modality 'pix' is given twice"),
        # were Python's TypeError / ValueError from unpacking
        ([0.1, 0.2, 0.3], r"dict of modality name -> rate .*got \[0\.1, 0\.2, 0\.3\]; e\.g\."),
        (("pix", 0.5), r"dict of modality name -> rate .*got \('pix', 0\.5\)"),
        ([("pix", 0.5, 1)], r"dict of modality name -> rate"),
    ],
)
def test_mcar_constructor_refuses_names_the_spec_cannot_carry(rates, message):
    # the constructor accepted them (duplicates silently kept the last rate), giving a
    # to_string() that parse_missingness refuses or reads as another model
    with pytest.raises(MlmmError, match=message):
        MCAR(rates)


def test_mcar_per_modality_rates_survive_the_round_trip():
    model = MCAR({"pix": 0.8, "fou": 0.2})
    assert parse_missingness(model.to_string()) == model
    assert parse_condition(Condition(model, "none").to_string()).train == model


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: MCAR("half"), r"missing rate must be a number, got 'half'; e\.g\. MCAR\(0\.5\)"),
        (lambda: MCAR(None), r"missing rate must be a number, got None"),
        (lambda: MCAR({"pix": "x"}), r"missing rate for 'pix' must be a number, got 'x'"),
        (lambda: MAR(None), r"missing rate must be a number, got None; e\.g\. MAR\(0\.3\)"),
        (lambda: MNAR(0.3, strength="x"), r"strength must be a number, got 'x'"),
        (lambda: Burst(0.3, "x"), r"len must be a number, got 'x'; e\.g\. Burst\(0\.3, 20\)"),
        (lambda: Burst("x", 20), r"outage rate must be a number, got 'x'"),
    ],
)
def test_constructors_refuse_non_numbers_in_one_line(build, message):
    # were Python's ValueError / TypeError from float()
    with pytest.raises(MlmmError, match=message):
        build()
    assert MCAR("0.5") == MCAR(0.5) and MNAR(0.3, strength=3) == MNAR(0.3, strength=3.0)


@pytest.mark.parametrize("value", [None, ["none", "mcar:0.3"]])
def test_split_specs_refuses_a_non_string(value):
    # was AttributeError: 'NoneType' / 'list' object has no attribute 'split'
    with pytest.raises(MlmmError, match="one comma-separated string such as 'none,mcar:0.3'"):
        split_specs(value)


def test_a_non_number_array_is_named_in_one_line(full_data):
    # the array's repr spans lines; the error must not
    with pytest.raises(MlmmError, match=r"missing rate must be a number, got array") as info:
        MCAR(np.array([[0.1, 0.2], [0.3, 0.4]]))
    assert "\n" not in str(info.value)
    with pytest.raises(MlmmError, match=r"seed must be a non-negative int") as info:
        MCAR(0.3).apply(full_data, seed=np.zeros((2, 40)))
    assert "\n" not in str(info.value)
