"""Graph blocks: bipartite message passing along present edges only, neighbour attention,
the cross-view contrastive loss and the self-match test, on hand-computed cases."""

import math

import pytest
import torch

from mlmm.data.specs import ModalitySpec
from mlmm.nn.graph import (
    BipartiteSageLayer,
    bank_self_matches,
    cross_view_contrastive,
    neighbour_attention,
)
from mlmm.nn.retrieval import SampleBank, overlap_distances


def test_bipartite_layer_sends_messages_only_along_present_edges():
    torch.manual_seed(0)
    layer = BipartiteSageLayer(node_dim=4, edge_dim=3).eval()
    samples, modalities = torch.randn(3, 4), torch.randn(2, 4)
    edges = torch.randn(3, 2, 3)
    present = torch.tensor([[True, False], [False, True], [True, True]])
    noisy = edges.clone()
    noisy[~present] = 1e3 * torch.randn(int((~present).sum()), 3)  # garbage on absent edges

    for e in (edges, noisy):
        aggregate, seen = layer.modality_messages(samples, e, present)
        new_samples, new_modalities, new_edges = layer(samples, modalities, e, present, aggregate)
        if e is edges:
            reference = (aggregate, new_samples, new_modalities, new_edges[present])
    torch.testing.assert_close(aggregate, reference[0])
    torch.testing.assert_close(new_samples, reference[1])
    torch.testing.assert_close(new_modalities, reference[2])
    torch.testing.assert_close(new_edges[present], reference[3])
    assert seen.tolist() == [True, True]


def test_modality_aggregate_is_the_mean_message_of_the_samples_that_have_it():
    layer = BipartiteSageLayer(node_dim=2, edge_dim=1)
    with torch.no_grad():  # message = gelu(identity on the node state; edge ignored)
        layer.to_modality.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        layer.to_modality.bias.zero_()
    samples = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    present = torch.tensor([[True, False], [True, False], [False, False]])
    aggregate, seen = layer.modality_messages(samples, torch.zeros(3, 2, 1), present)
    gelu = torch.nn.functional.gelu
    expected = (gelu(samples[0]) + gelu(samples[1])) / 2  # modality 0: samples 0 and 1 only
    torch.testing.assert_close(aggregate[0], expected)
    torch.testing.assert_close(aggregate[1], torch.zeros(2))  # nobody has modality 1
    assert seen.tolist() == [True, False]


def test_cross_view_contrastive_by_hand():
    z = torch.eye(2)  # two orthogonal samples, identical in both views
    tau = 0.5
    # unsupervised: l_i = -log(e^{1/tau} / (e^{1/tau} + e^0)) = log(1 + e^{-1/tau})
    assert cross_view_contrastive(z, z, tau).item() == pytest.approx(math.log1p(math.exp(-2)))
    # same label: both second-view rows are positives, each with weight 1/2
    expected = math.log(1 + math.exp(2)) - 1.0  # -(1/2)(1/tau - 2 log(e^{1/tau} + 1))
    same = cross_view_contrastive(z, z, tau, labels=torch.tensor([1, 1]))
    assert same.item() == pytest.approx(expected)
    # different labels: the same as unsupervised
    different = cross_view_contrastive(z, z, tau, labels=torch.tensor([0, 1]))
    assert different.item() == pytest.approx(math.log1p(math.exp(-2)))


def test_neighbour_attention_softmax_over_the_best_candidates():
    scores = torch.tensor([[0.0, math.log(3.0), 5.0], [1.0, 2.0, 3.0]])
    candidates = torch.tensor([[True, True, False], [False, False, False]])
    values = torch.tensor([[1.0], [2.0], [100.0]])
    aggregate, found, index, weights = neighbour_attention(scores, candidates, values, k=2)
    # row 0: candidates 0 and 1, weights softmax(0, ln 3) = (1/4, 3/4); row 2 is no candidate
    assert aggregate[0].item() == pytest.approx(0.25 * 1 + 0.75 * 2)
    assert index[0].tolist() == [1, 0]
    torch.testing.assert_close(weights[0], torch.tensor([0.75, 0.25]))
    # row 1: no candidate: zero, not found, zero weights
    assert aggregate[1].item() == 0.0 and not found[1] and weights[1].sum() == 0
    assert found[0]


def test_neighbour_attention_with_fewer_candidates_than_k_and_an_empty_bank():
    scores = torch.tensor([[1.0, 2.0]])
    aggregate, found, index, weights = neighbour_attention(
        scores, torch.tensor([[True, False]]), torch.tensor([[4.0], [8.0]]), k=5
    )
    assert aggregate.item() == 4.0 and weights.tolist() == [[1.0, 0.0]]
    aggregate, found, index, weights = neighbour_attention(
        torch.zeros(2, 0), torch.zeros(2, 0, dtype=torch.bool), torch.zeros(0, 3), k=3
    )
    assert aggregate.shape == (2, 3) and not found.any() and index.shape == (2, 0)


def test_bank_self_matches_finds_rows_identical_on_shared_modalities():
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (1,))]
    bank = SampleBank(specs)
    bank.fill(
        {
            "a": torch.tensor([[0.1, 0.2], [0.1, 0.2], [5.0, 5.0]]),
            "b": torch.tensor([[1.0], [2.0], [3.0]]),
        },
        torch.tensor([[True, True], [True, True], [True, True]]),
    )
    inputs = {"a": torch.tensor([[0.1, 0.2], [0.1, 0.2]]), "b": torch.tensor([[1.0], [7.0]])}
    present = torch.tensor([[True, True], [True, False]])  # query 1 has a only
    screen = overlap_distances(inputs, present, bank)
    matches = bank_self_matches(inputs, present, bank, screen)
    # query 0 equals bank row 0 on a and b; query 1 equals rows 0 and 1 on a (b not shared)
    assert matches.tolist() == [[True, False, False], [True, True, False]]
