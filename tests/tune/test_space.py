"""Search spaces: declarations, sampling, and the checks that guard them."""

import numpy as np
import pytest

import mlmm
from mlmm.errors import MlmmError
from mlmm.methods import METHODS
from mlmm.tune.space import (
    TRAINER_SPACE,
    Categorical,
    Float,
    Int,
    When,
    check_space,
    corner,
    dimension_from_plain,
    draw,
    method_parameters,
)


def test_draws_stay_in_range_and_follow_the_seed():
    space = {
        "a": Float(1e-4, 1e-2, log=True),
        "b": Int(16, 256, log=True),
        "c": Int(1, 3),
        "d": Categorical(["x", "y"]),
    }
    points = [draw(space, np.random.default_rng(seed)) for seed in range(50)]
    assert all(1e-4 <= p["a"] <= 1e-2 and 16 <= p["b"] <= 256 for p in points)
    assert {p["c"] for p in points} == {1, 2, 3}
    assert {p["d"] for p in points} == {"x", "y"}
    assert draw(space, np.random.default_rng(7)) == draw(space, np.random.default_rng(7))
    # log-uniform: about as many draws in [1e-4, 1e-3] as in [1e-3, 1e-2]
    low = sum(p["a"] < 1e-3 for p in points)
    assert 15 <= low <= 35


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Float(1.0, 1.0), "low < high"),
        (lambda: Float(0.0, 1.0, log=True), "low > 0"),
        (lambda: Int(1.5, 3), "integers"),
        (lambda: Categorical([]), "at least one choice"),
        (lambda: Categorical([[1, 2]]), "None, bool, int, float or str"),
        (lambda: Categorical(["a", "b", "a"]), "choices must differ"),
    ],
)
def test_bad_dimensions_are_refused_with_one_line(build, message):
    with pytest.raises(MlmmError, match=message) as err:
        build()
    assert "\n" not in str(err.value)


def test_choices_equal_in_python_but_of_other_types_differ():
    # 1 == 1.0 == True in Python, but they are three different choices
    assert Categorical([1, 1.0, True, None]).choices == (1, 1.0, True, None)


def test_a_space_naming_an_unknown_parameter_lists_the_methods_parameters():
    cls = METHODS.get("hemis").obj
    with pytest.raises(MlmmError) as err:
        check_space("hemis", {"hiden": Int(8, 64)}, method_parameters(cls))
    message = str(err.value)
    assert "\n" not in message and "'hiden'" in message
    for name in ("embed_dim", "hidden", "depth", "dropout", "modality_dropout"):
        assert name in message
    with pytest.raises(MlmmError, match="Float"):
        check_space("hemis", {"hidden": (8, 64)}, method_parameters(cls))


def test_every_builtin_method_declares_a_space_of_its_own_parameters():
    for name in mlmm.list_methods():
        cls = METHODS.get(name).obj
        if name == "auto-ensemble":  # its members and weights are chosen by fit_auto, not sampled
            assert cls.search_space == {}
            continue
        assert cls.search_space, f"{name} declares no search_space"
        check_space(name, cls.search_space, method_parameters(cls))


def test_the_trainer_space_names_trainer_arguments():
    check_space("trainer", TRAINER_SPACE, method_parameters(mlmm.Trainer))


def test_the_contract_check_catches_a_space_whose_points_do_not_build(monkeypatch):
    from mlmm.testing import check_search_space

    cls = METHODS.get("hemis").obj
    check_search_space("hemis")
    monkeypatch.setattr(cls, "search_space", {"hidden": Int(0, 4)})  # hidden=0 is refused
    with pytest.raises(AssertionError, match="does not build"):
        check_search_space("hemis")
    monkeypatch.setattr(cls, "search_space", {"hiden": Int(8, 64)})
    with pytest.raises(MlmmError, match="not one of its parameters"):
        check_search_space("hemis")


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"low": 1e-4, "high": 1e-2, "log": True}, Float(1e-4, 1e-2, log=True)),
        ({"low": 8, "high": 64}, Int(8, 64)),
        ({"low": 0, "high": 0.5}, Float(0.0, 0.5)),
        (["mean", "cls"], Categorical(["mean", "cls"])),
    ],
)
def test_a_dimension_from_plain_data(value, expected):
    assert dimension_from_plain(value, "x") == expected


@pytest.mark.parametrize("value", [0.3, {"low": 1}, {"low": 1, "high": 2, "step": 1}, "a"])
def test_a_dimension_from_plain_data_that_is_none_is_one_line(value):
    with pytest.raises(MlmmError, match="search space 'x' must be a list of choices"):
        dimension_from_plain(value, "x")


@pytest.mark.parametrize(
    "value, match",
    [
        ({"low:1": None, "high:8": None}, r"got \{'low:1': None, 'high:8': None\}; put a space"),
        ({"low": 8, "high": 2}, r"^search space 'x': Int needs finite bounds with low < high"),
        ({"low": 0.0, "high": 1.0, "log": True}, r"^search space 'x': Float\(log=True\) needs"),
        ([], r"^search space 'x': Categorical needs at least one choice"),
    ],
)
def test_a_range_that_cannot_be_a_dimension_names_its_search_space(value, match):
    # was: "Int needs finite bounds ..." without the name, and for {low:1,high:8} (YAML
    # without a space after the colons) no hint at what was wrong
    with pytest.raises(MlmmError, match=match):
        dimension_from_plain(value, "x")


def test_a_conditional_dimension_is_drawn_only_where_its_condition_holds():
    space = {
        "fusion": Categorical(["concat", "attention"]),
        "n_heads": When(Categorical([2, 4]), {"fusion": "attention"}),
        "width": When(Int(8, 16), {"fusion": ["attention"], "n_heads": 4}),
    }
    points = [draw(space, np.random.default_rng(seed)) for seed in range(30)]
    for point in points:
        assert ("n_heads" in point) == (point["fusion"] == "attention")
        assert ("width" in point) == (point.get("n_heads") == 4)
    assert {len(point) for point in points} == {1, 2, 3}
    assert corner(space, 0) == {"fusion": "concat"}
    assert corner(space, -1) == {"fusion": "attention", "n_heads": 4, "width": 16}
    unfixed = {k: v for k, v in space.items() if k != "fusion"}  # fixed: out of the space
    assert corner(unfixed, 0, {"fusion": "attention"}) == {"n_heads": 2}
    assert repr(space["width"]) == (
        "When(Int(low=8, high=16, log=False), {'fusion': ['attention'], 'n_heads': [4]})"
    )


@pytest.mark.parametrize(
    "space, message",
    [
        ({"n_heads": When(Int(2, 4), {"fusion": "attention"})}, "not a dimension before it"),
        (
            {
                "fusion": Categorical(["concat", "attention"]),
                "n_heads": When(Int(2, 4), {"fusion": "atention"}),
            },
            "fusion='atention', which is not one of its choices",
        ),
        (  # these never held: the dimension was silently never searched
            {"fusion": Int(1, 3), "n_heads": When(Int(2, 4), {"fusion": [2, 5]})},
            r"fusion=5, which Int\(low=1, high=3, log=False\) never takes",
        ),
        (
            {"fusion": Int(1, 3), "n_heads": When(Int(2, 4), {"fusion": 2.0})},
            "fusion=2.0, which Int",
        ),
        (
            {"fusion": Float(0.0, 1.0), "n_heads": When(Int(2, 4), {"fusion": 0.5})},
            "a range of reals .* that takes no given value",
        ),
    ],
)
def test_a_condition_on_a_later_or_impossible_value_is_one_line(space, message):
    with pytest.raises(MlmmError, match=message) as err:
        check_space("m", space, ["fusion", "n_heads"])
    assert "\n" not in str(err.value)


def test_a_conditional_dimension_from_plain_data():
    assert dimension_from_plain({"low": 2, "high": 8, "when": {"fusion": "attention"}}, "h") == (
        When(Int(2, 8), {"fusion": "attention"})
    )
    assert dimension_from_plain({"choices": [2, 4], "when": {"f": ["a", "b"]}}, "h") == When(
        Categorical([2, 4]), {"f": ["a", "b"]}
    )
    with pytest.raises(MlmmError, match="search space 'h': When needs a condition"):
        dimension_from_plain({"choices": [2, 4], "when": {}}, "h")
