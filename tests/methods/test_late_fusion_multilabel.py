"""Late fusion on a multilabel task: each label combined as its own binary classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.registry import create_method

SPECS = [ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))]
TASK = TaskSpec("multilabel", n_labels=2)


def test_the_product_rule_adds_log_odds_and_divides_the_prior_out_once():
    model = create_method("late-fusion", SPECS, TASK, rule="sum_logprob")
    model.prior_log_odds.copy_(torch.tensor([math.log(1 / 3), 0.0]))  # rates 0.25 and 0.5
    outs = torch.tensor([[[1.0, -2.0], [0.5, 3.0]], [[1.0, -2.0], [0.5, 3.0]]])  # [B, M, L]
    present = torch.tensor([[True, True], [False, True]])
    got = model._combine_labels(outs, present)
    # both present: 1 + 0.5 - log(1/3); only b: b's own logits
    expected = torch.tensor([[1.5 - math.log(1 / 3), 1.0], [0.5, 3.0]])
    torch.testing.assert_close(got, expected)


def test_the_sum_rule_averages_probabilities():
    model = create_method("late-fusion", SPECS, TASK, rule="mean_prob")
    outs = torch.tensor([[[0.0, 2.0], [2.0, -2.0]]])  # [1, 2, 2]
    got = torch.sigmoid(model._combine_labels(outs, torch.tensor([[True, True]])))
    s = 1 / (1 + math.exp(-2))
    torch.testing.assert_close(got, torch.tensor([[(0.5 + s) / 2, 0.5]]))


def test_fit_sets_each_labels_smoothed_training_log_odds():
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train import Trainer

    targets = np.array([[1, 0]] * 3 + [[0, 0]] * 5)  # label 0 on 3 of 8, label 1 never
    data = MultimodalDataset(
        SPECS, TASK, {"a": np.random.default_rng(0).normal(size=(8, 3)), "b": np.ones((8, 2))},
        targets,
    )  # fmt: skip
    model = create_method("late-fusion", SPECS, TASK)
    Trainer(max_epochs=1, progress=False).fit(model, data)
    rates = np.array([3.5 / 9, 0.5 / 9])
    np.testing.assert_allclose(model.prior_log_odds.numpy(), np.log(rates / (1 - rates)), rtol=1e-6)
    assert np.isfinite(model.prior_log_odds.numpy()).all()


def test_the_classification_state_is_unchanged():
    model = create_method("late-fusion", SPECS, TaskSpec("classification", 3))
    assert "prior_log_odds" not in model.state_dict() and "log_prior" in model.state_dict()
    with pytest.raises(Exception, match="not multilabel"):
        create_method("learned-weight-ensemble", SPECS, TASK)
