"""The base class: freezing parts of a model for a stage; the shared range checks."""

import math

import pytest
import torch

from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.base import check_common, check_range
from mlmm.testing import contract_dataset


def test_a_frozen_part_gets_no_gradient_and_stays_in_eval_mode():
    data = contract_dataset()
    model = create_method("hemis", data.specs, data.task)
    model.set_frozen(True, "encoders")
    model.train()
    assert model.is_frozen("encoders") and not model.encoders.training
    assert model.head.training
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.set_frozen(False, "encoders")
    model.train()
    assert not model.is_frozen("encoders") and model.encoders.training
    assert all(p.requires_grad for p in model.encoders.parameters())


def test_a_frozen_parameter_gets_no_gradient():
    data = contract_dataset()
    model = create_method("masked-attention", data.specs, data.task)
    model.set_frozen(True, "class_token")
    assert isinstance(model.class_token, torch.nn.Parameter)
    assert not model.class_token.requires_grad
    model.train()  # a parameter has no train mode: nothing to do, no error


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_check_range_refuses_non_finite_numbers_whatever_the_bounds(value):
    # NaN compares False with every bound, so a range alone would let it through
    for bounds in ({}, {"low": 0, "high": 1}, {"low": 0, "low_inclusive": False}):
        with pytest.raises(MlmmError, match="dropout must be a finite number, got"):
            check_range("dropout", value, **bounds)
    with pytest.raises(MlmmError, match="dropout must be a finite number"):
        check_common(dropout=value)


def test_check_range_accepts_finite_numbers_and_huge_integers():
    check_range("dropout", 0.5, 0, 1)
    check_range("hidden", 10**30, 1, integer=True)  # an int is finite: no float overflow
    with pytest.raises(MlmmError, match=r"hidden must be in \[1, inf\), got 0"):
        check_range("hidden", 0, 1, integer=True)


def test_a_nan_hyperparameter_is_refused_when_the_method_is_built():
    data = contract_dataset()
    with pytest.raises(MlmmError, match="dropout must be a finite number, got nan"):
        create_method("hemis", data.specs, data.task, dropout=math.nan)
