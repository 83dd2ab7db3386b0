"""The shared multilabel path: BCE-with-logits task loss, supported_tasks refusals, distillation."""

from __future__ import annotations

import math

import pytest
import torch

from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.registry import METHODS, create_method

SPECS = [ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))]
TASK = TaskSpec("multilabel", n_labels=2)


def test_the_task_loss_is_binary_cross_entropy_averaged_over_labels():
    model = create_method("hemis", SPECS, TASK)
    logits = torch.tensor([[0.0, 2.0]])
    target = torch.tensor([[1.0, 0.0]])
    # -log(sigmoid(0)) and -log(1 - sigmoid(2)), averaged
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert model.task_loss(logits, target).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    "name", ["lda-em", "learned-weight-ensemble", "evidential-fusion", "auto-ensemble"]
)
def test_softmax_specific_methods_refuse_multilabel_in_one_line(name):
    assert "multilabel" not in METHODS.get(name).obj.supported_tasks
    with pytest.raises(MlmmError, match=rf"method '{name}' supports .* not multilabel") as err:
        create_method(name, SPECS, TASK)
    assert "\n" not in str(err.value)


def test_distillation_between_bernoullis_is_zero_only_when_they_agree():
    model = create_method("distill", SPECS, TASK, temperature=2.0)
    teacher = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    assert model.logit_distillation(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    # KL(Bernoulli(p) || Bernoulli(1/2)) = log 2 - H(p), times T^2, summed over labels
    p = torch.sigmoid(teacher / 2)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    expected = 4 * (math.log(2) - entropy).sum(1).mean()
    assert model.logit_distillation(student, teacher).item() == pytest.approx(expected.item())
