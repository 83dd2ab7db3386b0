"""The base class: freezing parts of a model for a stage."""

import torch

from mlmm.methods import create_method
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
