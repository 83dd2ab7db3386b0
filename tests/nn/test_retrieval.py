"""Masked k-NN retrieval blocks: distances on shared modalities, weighted averages, the bank."""

import math

import numpy as np
import pytest
import torch

from mlmm.data.specs import ModalitySpec
from mlmm.errors import MlmmError
from mlmm.nn.retrieval import SampleBank, knn_average, neighbour_distances, overlap_distances

SPECS = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (1,))]


def bank_of(a, b, present):
    bank = SampleBank(SPECS)
    bank.fill({"a": torch.tensor(a), "b": torch.tensor(b)}, torch.tensor(present))
    return bank


def test_distances_average_the_per_feature_squared_difference_over_shared_modalities():
    bank = bank_of(
        a=[[0.0, 0.0], [1.0, 0.0], [9.0, 9.0]],
        b=[[4.0], [0.0], [1.0]],
        present=[[True, True], [True, False], [False, True]],
    )
    query = {"a": torch.tensor([[1.0, 1.0]]), "b": torch.tensor([[2.0]])}
    d = overlap_distances(query, torch.tensor([[True, True]]), bank)
    # sample 0 shares a and b: a gives (1 + 1) / 2 = 1, b gives 4 / 1 = 4, mean 2.5
    # sample 1 shares a only: (0 + 1) / 2; sample 2 shares b only: 1 / 1
    expected = [[math.sqrt(2.5), math.sqrt(0.5), 1.0]]
    np.testing.assert_allclose(d.numpy(), expected, rtol=1e-6)


def test_no_shared_modality_is_infinitely_far_and_absent_rows_are_not_read():
    bank = bank_of(
        a=[[0.0, 0.0], [5.0, 5.0]], b=[[1.0], [3.0]], present=[[True, False], [False, True]]
    )
    present = torch.tensor([[False, True]])  # the query has b only
    clean = {"a": torch.zeros(1, 2), "b": torch.tensor([[2.0]])}
    noisy = {"a": torch.full((1, 2), 1e6), "b": torch.tensor([[2.0]])}
    d = overlap_distances(clean, present, bank)
    assert d[0, 0] == math.inf and d[0, 1] == pytest.approx(1.0)
    assert torch.equal(overlap_distances(noisy, present, bank), d)


def test_identical_rows_are_at_exact_distance_zero_and_the_screen_is_close():
    rows = torch.randn(5, 7, generator=torch.Generator().manual_seed(0)) * 30
    bank = SampleBank([ModalitySpec("x", "vector", (7,))])
    bank.fill({"x": rows}, torch.ones(5, 1, dtype=torch.bool))
    query, present = {"x": rows[[3, 1]]}, torch.ones(2, 1, dtype=torch.bool)
    index = torch.arange(5).repeat(2, 1)  # [2, 5]: every bank row for both queries
    exact = neighbour_distances(query, present, bank, index)
    assert exact[0, 3] == 0 and exact[1, 1] == 0 and (exact[0, [0, 1, 2, 4]] > 0).all()
    expected = ((rows[[3, 1]].unsqueeze(1) - rows).square().mean(-1)).sqrt()
    np.testing.assert_allclose(exact.numpy(), expected.numpy(), rtol=1e-6)
    screen = overlap_distances(query, present, bank)
    np.testing.assert_allclose(screen.numpy(), expected.numpy(), rtol=1e-3, atol=1e-2)


def one_modality_bank(values, has):
    """Bank rows ``a = b = value``; ``has`` says which rows have b (a: all)."""
    v = torch.tensor(values).reshape(-1, 1)
    bank = SampleBank([ModalitySpec("a", "vector", (1,)), ModalitySpec("b", "vector", (1,))])
    bank.fill({"a": v, "b": v * 10}, torch.tensor([[True, h] for h in has]))
    return bank


def average(bank, a, k, **kw):
    query = {"a": torch.tensor(a).reshape(-1, 1), "b": torch.zeros(len(a), 1)}
    present = torch.tensor([[True, False]] * len(a))
    return knn_average(query, present, bank, "b", k, **kw)


def test_knn_average_weights_by_inverse_distance_uniformly_and_exact_matches_take_all():
    bank = one_modality_bank([1.0, 2.0, 3.0, 4.0, 5.0], has=[True, True, True, True, False])
    # query a = 0: distances 1, 2, 3, 4 to the rows with b (b = 10, 20, 30, 40); row 4 has no b
    avg, found = average(bank, [0.0, 2.0, 4.9], k=2)
    assert found.all()
    assert avg[0, 0].item() == pytest.approx((10 / 1 + 20 / 2) / (1 / 1 + 1 / 2))
    assert avg[1, 0].item() == pytest.approx(20.0)  # an exact match takes the whole weight
    assert avg[2, 0].item() == pytest.approx((40 / 0.9 + 30 / 1.9) / (1 / 0.9 + 1 / 1.9))
    avg, _ = average(bank, [0.0], k=2, weighting="uniform")
    assert avg[0, 0].item() == pytest.approx(15.0)
    avg, _ = average(bank, [0.0], k=10)  # k above N: every candidate
    assert avg[0, 0].item() == pytest.approx(40 / (1 + 1 / 2 + 1 / 3 + 1 / 4))


def test_exclude_identical_skips_the_sample_itself_and_keeps_k_neighbours():
    bank = one_modality_bank([1.0, 2.0, 3.5, 5.0], has=[True] * 4)  # b = 10, 20, 35, 50
    avg, _ = average(bank, [2.0], k=2, exclude_identical=True)  # rows 0 and 2, not itself
    assert avg[0, 0].item() == pytest.approx((10 / 1 + 35 / 1.5) / (1 / 1 + 1 / 1.5))
    avg, _ = average(bank, [2.0], k=2, weighting="uniform")  # itself and row 0
    assert avg[0, 0].item() == pytest.approx(15.0)


def test_knn_average_reports_queries_with_no_qualifying_neighbour():
    bank = SampleBank(SPECS)
    bank.fill(
        {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[0.0]])},
        torch.tensor([[True, False]]),
    )
    query = {"a": torch.zeros(2, 2), "b": torch.tensor([[1.0], [2.0]])}
    present = torch.tensor([[False, True], [True, True]])
    avg, found = knn_average(query, present, bank, "a", k=3)
    assert found.tolist() == [False, True]  # the first query shares no modality with row 0
    assert avg.tolist() == [[0.0, 0.0], [1.0, 2.0]]
    with pytest.raises(MlmmError, match="weighting"):
        knn_average(query, present, bank, "a", 2, "cosine")


def test_a_new_bank_loads_a_filled_one_and_other_shape_changes_are_refused():
    filled = bank_of(a=[[1.0, 2.0]] * 3, b=[[3.0]] * 3, present=[[True, True]] * 3)
    fresh = SampleBank(SPECS)
    assert len(fresh) == 0
    fresh.load_state_dict(filled.state_dict())
    assert len(fresh) == 3 and torch.equal(fresh.row("a"), filled.row("a"))
    wider = SampleBank([ModalitySpec("a", "vector", (3,)), SPECS[1]])
    with pytest.raises(RuntimeError, match="size mismatch"):
        wider.load_state_dict(filled.state_dict())
