"""Fusion blocks and prediction combination on small hand-written tensors."""

from __future__ import annotations

import math

import pytest
import torch

from mlmm.errors import MlmmError
from mlmm.nn import ConcatFusion, MeanVarianceFusion, combine_predictions, masked_mean

G = 100.0  # garbage in absent slots: it must never reach an output
EMB = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 4.0], [G, G]],  # a, b present
        [[G, G], [G, G], [5.0, 6.0]],  # only c
        [[G, G], [G, G], [G, G]],  # nothing present
        [[1.0, 2.0], [3.0, 4.0], [8.0, 0.0]],  # all present
    ]
)  # [B=4, M=3, D=2]
PRESENT = torch.tensor(
    [[True, True, False], [False, False, True], [False, False, False], [True, True, True]]
)


def test_masked_mean_by_hand():
    out = masked_mean(EMB, PRESENT)
    expected = torch.tensor([[2.0, 3.0], [5.0, 6.0], [0.0, 0.0], [4.0, 2.0]])
    assert torch.allclose(out, expected)


def test_mean_variance_fusion_by_hand():
    out = MeanVarianceFusion()(EMB, PRESENT)
    assert out.shape == (4, 4)
    expected = torch.tensor(
        [
            [2.0, 3.0, 2.0, 2.0],  # (1-2)^2 + (3-2)^2 over |K| - 1 = 1
            [5.0, 6.0, 0.0, 0.0],  # one present: variance 0
            [0.0, 0.0, 0.0, 0.0],  # none present: zeros
            [4.0, 2.0, 26 / 2, 8 / 2],  # (9 + 1 + 16) / 2 and (4 + 0 + 4) / 2
        ]
    )
    assert torch.allclose(out, expected)


def test_concat_fusion_zeroes_absent_modalities():
    out = ConcatFusion()(EMB, PRESENT)
    assert out.shape == (4, 6)
    assert out[0].tolist() == [1.0, 2.0, 3.0, 4.0, 0.0, 0.0]
    assert out[1].tolist() == [0.0, 0.0, 0.0, 0.0, 5.0, 6.0]
    assert out[2].tolist() == [0.0] * 6
    assert out[3].tolist() == [1.0, 2.0, 3.0, 4.0, 8.0, 0.0]


def _logits(*probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


# per-modality probabilities: a = [0.8, 0.2], b = [0.4, 0.6], c absent but extreme
LOGITS = torch.stack(
    [
        torch.cat([_logits([0.8, 0.2], [0.4, 0.6]), torch.tensor([[50.0, -50.0]])]),
        torch.cat([_logits([0.8, 0.2], [0.4, 0.6]), torch.tensor([[50.0, -50.0]])]),
        torch.cat([_logits([0.8, 0.2], [0.4, 0.6]), torch.tensor([[50.0, -50.0]])]),
    ]
)  # [B=3, M=3, K=2]
PRESENT_K = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])


@pytest.mark.parametrize(
    "rule, first_row",
    [
        ("mean_prob", [0.6, 0.4]),  # (0.8 + 0.4) / 2, (0.2 + 0.6) / 2
        ("sum_logprob", [8 / 11, 3 / 11]),  # 0.8 * 0.4 = 0.32, 0.2 * 0.6 = 0.12, renormalised
    ],
)
def test_combine_predictions_by_hand(rule, first_row):
    out = combine_predictions(LOGITS, PRESENT_K, rule)  # log-probabilities
    assert out.shape == (3, 2)
    probs = out.exp()
    assert torch.allclose(probs[0], torch.tensor(first_row, dtype=probs.dtype))
    assert torch.allclose(probs[1], torch.tensor([0.4, 0.6], dtype=probs.dtype))  # only b
    assert torch.allclose(probs[2], torch.tensor([0.5, 0.5], dtype=probs.dtype))  # uniform
    assert torch.allclose(out.exp().sum(1), torch.ones(3, dtype=probs.dtype))


def test_the_two_rules_differ_and_ignore_unnormalised_logit_offsets():
    shifted = LOGITS + torch.tensor([3.0, -7.0, 0.0])[None, :, None]  # same probabilities
    for rule in ("mean_prob", "sum_logprob"):
        assert torch.allclose(
            combine_predictions(shifted, PRESENT_K, rule),
            combine_predictions(LOGITS, PRESENT_K, rule),
        )
    a = combine_predictions(LOGITS, PRESENT_K, "mean_prob")[0].exp()
    b = combine_predictions(LOGITS, PRESENT_K, "sum_logprob")[0].exp()
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("rule", ["mean_prob", "sum_logprob"])
def test_absent_rows_give_finite_zero_gradients(rule):
    logits = LOGITS.clone().float().requires_grad_(True)
    combine_predictions(logits, PRESENT_K, rule)[:, 0].sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~PRESENT_K] == 0).all()
    assert (logits.grad[0, 0] != 0).all()


def test_unknown_rule():
    with pytest.raises(MlmmError, match="'mean_prob' or 'sum_logprob', got 'vote'"):
        combine_predictions(LOGITS, PRESENT_K, "vote")


def test_mean_prob_of_three_modalities_by_hand():
    logits = torch.tensor([[[0.0, 0.0, math.log(2.0)], [0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0]]])
    # probabilities: [1/4, 1/4, 1/2], [1/3, 1/3, 1/3], [3/5, 1/5, 1/5]
    out = combine_predictions(logits, torch.ones(1, 3, dtype=torch.bool), "mean_prob").exp()
    expected = (
        torch.tensor([1 / 4 + 1 / 3 + 3 / 5, 1 / 4 + 1 / 3 + 1 / 5, 1 / 2 + 1 / 3 + 1 / 5]) / 3
    )
    assert torch.allclose(out[0], expected)


def test_product_rule_with_a_prior_by_hand():
    # prior (0.8, 0.2); heads a and b both say (0.5, 0.5): each is evidence for class 1, so
    # p(y | a, b) is proportional to 0.25 / 0.8 and 0.25 / 0.2, i.e. (0.2, 0.8)
    logits = torch.zeros(3, 2, 2)  # [B=3, M=2, K=2]: every head gives (0.5, 0.5)
    present = torch.tensor([[True, True], [True, False], [False, False]])
    log_prior = torch.log(torch.tensor([0.8, 0.2]))
    probs = combine_predictions(logits, present, "sum_logprob", log_prior).exp()
    assert torch.allclose(probs[0], torch.tensor([0.2, 0.8]))
    assert torch.allclose(probs[1], torch.tensor([0.5, 0.5]))  # one head: its own posterior
    assert torch.allclose(probs[2], torch.tensor([0.8, 0.2]))  # none: the prior
    # a uniform prior changes nothing; the sum rule ignores the prior
    uniform = torch.log(torch.tensor([0.5, 0.5]))
    assert torch.allclose(
        combine_predictions(LOGITS, PRESENT_K, "sum_logprob", uniform[:2]),
        combine_predictions(LOGITS, PRESENT_K, "sum_logprob"),
    )
    assert torch.allclose(
        combine_predictions(LOGITS, PRESENT_K, "mean_prob", log_prior),
        combine_predictions(LOGITS, PRESENT_K, "mean_prob"),
    )


def test_product_rule_divides_no_prior_out_for_a_class_absent_from_training():
    # prior (0.5, 0.5, 0): heads a and b give class 2 probability 0.2 each; dividing by its
    # zero (or a floored) prior would make it win, so it keeps the heads' product 0.04
    heads = torch.log(torch.tensor([0.4, 0.4, 0.2]))
    logits = heads.expand(2, 2, 3)  # [B=2, M=2, K=3]
    present = torch.tensor([[True, True], [False, False]])
    log_prior = torch.log(torch.tensor([0.5, 0.5, 0.0]))  # [K], -inf for class 2
    probs = combine_predictions(logits, present, "sum_logprob", log_prior).exp()
    scores = torch.tensor([0.16 / 0.5, 0.16 / 0.5, 0.04])
    assert torch.allclose(probs[0], scores / scores.sum())
    assert torch.allclose(probs[1], torch.tensor([0.5, 0.5, 0.0]))  # none present: the prior


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_mean_prob_is_unchanged_by_the_float_count(dtype):
    # the count of present modalities became float for ONNX (a Log on int64 is refused); as
    # logp's dtype it rounded log(n) to bfloat16 and returned bfloat16 under bf16-mixed
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 3, 4, generator=g).to(dtype)  # [B, M, K]
    present = torch.rand(200, 3, generator=g) > 0.4  # [B, M]
    logp = torch.log_softmax(logits, dim=-1)
    count = present.sum(dim=1, keepdim=True).clamp_min(1)  # int64, as before
    fused = torch.logsumexp(logp.masked_fill(~present.unsqueeze(-1), -math.inf), 1) - count.log()
    fused = torch.where(present.any(dim=1, keepdim=True), fused, torch.zeros_like(fused))
    expected = torch.log_softmax(fused, dim=-1)
    got = combine_predictions(logits, present, "mean_prob")
    assert got.dtype == expected.dtype and torch.equal(got, expected)
