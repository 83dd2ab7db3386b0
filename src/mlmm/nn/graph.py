"""Graph blocks for missing modalities: a sample-modality bipartite layer, neighbour attention
over a bank of samples, a cross-view contrastive loss, and the self-match test of a bank.

Absent (sample, modality) entries are never read: messages travel only along present edges
(selected with ``torch.where`` before any arithmetic), and bank rows that lack a modality are
never candidates for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.nn.fusion import masked_mean
from mlmm.nn.retrieval import SampleBank, neighbour_distances


class BipartiteSageLayer(nn.Module):
    """One GraphSAGE layer with edge features on a sample-modality bipartite graph.

    Sample ``i`` and modality ``m`` are joined by an edge only where ``present[i, m]``; the
    edge carries a feature ``e_im`` (the encoded input). As in GRAPE (You et al., NeurIPS
    2020), which MUSE (Wu et al., ICLR 2024) builds on::

        sample:   h_i' = act(U_s [h_i ; mean_{m present in i} act(P_s [h_m ; e_im])])
        modality: h_m' = act(U_m [h_m ; a_m]),   a_m = mean_{i with m} act(P_m [h_i ; e_im])
        edge:     e_im' = act(U_e [e_im ; h_i' ; h_m'])

    The modality aggregate ``a_m`` is computed by :meth:`modality_messages` and passed to
    :meth:`forward` by the caller, who may replace it (by a running average at prediction time,
    so that a sample's output does not depend on the other samples of its batch).

    Parameters
    ----------
    node_dim : int
        Size of the sample and modality states.
    edge_dim : int
        Size of the edge features.
    dropout : float
        Dropout on the new sample states.

    Notes
    -----
    A sample with no present modality receives a zero message; a modality with no present
    sample in the batch gets a zero aggregate from :meth:`modality_messages` (and ``seen`` False).
    Absent edges are computed on whatever they hold and never read.
    """

    def __init__(self, node_dim: int, edge_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.to_sample = nn.Linear(node_dim + edge_dim, node_dim)
        self.to_modality = nn.Linear(node_dim + edge_dim, node_dim)
        self.update_sample = nn.Linear(2 * node_dim, node_dim)
        self.update_modality = nn.Linear(2 * node_dim, node_dim)
        self.update_edge = nn.Linear(edge_dim + 2 * node_dim, edge_dim)
        self.norm = nn.LayerNorm(node_dim)
        self.drop = nn.Dropout(dropout)

    def modality_messages(
        self, samples: torch.Tensor, edges: torch.Tensor, present: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``a_m``: the mean message from the samples that have modality ``m``.

        ``samples [B, H], edges [B, M, E], present [B, M] -> ([M, H], seen [M] bool)``.
        """
        b, m, _ = edges.shape
        nodes = samples.unsqueeze(1).expand(b, m, -1)  # [B, M, H]
        messages = F.gelu(self.to_modality(torch.cat([nodes, edges], dim=-1)))  # [B, M, H]
        aggregate = masked_mean(messages.transpose(0, 1), present.T)  # [M, H]
        return aggregate, present.any(dim=0)

    def forward(
        self,
        samples: torch.Tensor,
        modalities: torch.Tensor,
        edges: torch.Tensor,
        present: torch.Tensor,
        modality_aggregate: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``samples [B, H], modalities [M, H], edges [B, M, E], present [B, M], modality_aggregate
        [M, H] -> (samples [B, H], modalities [M, H], edges [B, M, E])``."""
        b, m, _ = edges.shape
        neighbours = modalities.unsqueeze(0).expand(b, m, -1)  # [B, M, H]
        messages = F.gelu(self.to_sample(torch.cat([neighbours, edges], dim=-1)))  # [B, M, H]
        received = masked_mean(messages, present)  # [B, H]; only present edges carry messages
        new_samples = self.drop(
            F.gelu(self.norm(self.update_sample(torch.cat([samples, received], dim=-1))))
        )  # [B, H]
        new_modalities = F.gelu(
            self.update_modality(torch.cat([modalities, modality_aggregate], dim=-1))
        )  # [M, H]
        ends = torch.cat(
            [
                new_samples.unsqueeze(1).expand(b, m, -1),
                new_modalities.unsqueeze(0).expand(b, m, -1),
            ],
            dim=-1,
        )  # [B, M, 2H]
        new_edges = F.gelu(self.update_edge(torch.cat([edges, ends], dim=-1)))  # [B, M, E]
        return new_samples, new_modalities, new_edges


def cross_view_contrastive(
    first: torch.Tensor,
    second: torch.Tensor,
    temperature: float = 0.1,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric contrastive loss between two views of the same samples.

    With L2-normalised rows and ``s_ij = z_i . z'_j / temperature``, the anchor ``z_i`` of the
    first view has as positives ``P(i)`` the second-view rows of the same sample and, when
    ``labels`` are given, of every sample with the same label (supervised contrastive, Khosla
    et al. 2020); every second-view row is a candidate::

        l_i = -mean_{p in P(i)} log softmax_j(s_ij)[p]

    The loss is the mean of ``l_i`` over the anchors of both directions (first -> second and
    second -> first). Without labels and with one sample the loss is 0.

    Parameters
    ----------
    first, second : Tensor, shape [B, D]
    temperature : float
    labels : Tensor of int64, shape [B], optional

    Returns
    -------
    Tensor, scalar.
    """
    z1, z2 = F.normalize(first, dim=-1), F.normalize(second, dim=-1)  # [B, D]
    logits = z1 @ z2.T / temperature  # [B, B]
    eye = torch.eye(len(z1), dtype=torch.bool, device=z1.device)
    positives = eye if labels is None else eye | (labels.unsqueeze(0) == labels.unsqueeze(1))
    weights = positives.to(logits.dtype) / positives.sum(dim=1, keepdim=True)  # [B, B]
    forward = -(weights * F.log_softmax(logits, dim=1)).sum(dim=1)  # [B]
    backward = -(weights * F.log_softmax(logits.T, dim=1)).sum(dim=1)  # [B]; P is symmetric
    return (forward.mean() + backward.mean()) / 2


def neighbour_attention(
    scores: torch.Tensor, candidates: torch.Tensor, values: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention over the ``k`` best-scoring candidate rows of a bank.

    Per query, the ``k`` candidates with the highest ``scores`` (fewer when fewer qualify) are
    weighted by the softmax of their scores and their ``values`` averaged.

    Parameters
    ----------
    scores : Tensor, shape [B, N]
        Attention logits (a similarity divided by a temperature).
    candidates : Tensor of bool, shape [B, N]
        Which bank rows may be neighbours of each query.
    values : Tensor, shape [N, D]
    k : int

    Returns
    -------
    aggregate : Tensor, shape [B, D]
        Zero for queries with no candidate.
    found : Tensor of bool, shape [B]
    index : Tensor of int64, shape [B, k']
        The chosen bank rows, ``k' = min(k, N)``; entries with zero weight are not neighbours.
    weights : Tensor, shape [B, k']
        The attention weights (0 for non-candidates), summing to 1 where ``found``.
    """
    b, n = scores.shape
    chosen = min(k, n)
    if chosen == 0:
        empty = torch.zeros(b, 0, dtype=torch.long, device=scores.device)
        return (
            values.new_zeros((b, values.shape[1])),
            torch.zeros(b, dtype=torch.bool, device=scores.device),
            empty,
            scores.new_zeros((b, 0)),
        )
    masked = scores.masked_fill(~candidates, -torch.inf)  # [B, N]
    top, index = torch.topk(masked, chosen, dim=1)  # [B, k]
    valid = torch.isfinite(top)  # [B, k]
    found = valid.any(dim=1)  # [B]
    # rows without any candidate get zero logits (not all -inf, which would give NaN)
    logits = torch.where(found.unsqueeze(1), top, torch.zeros_like(top))  # [B, k]
    weights = torch.where(valid, torch.softmax(logits, dim=1), torch.zeros_like(logits))
    aggregate = (weights.unsqueeze(-1) * values[index]).sum(dim=1)  # [B, D]
    return aggregate, found, index, weights


@torch.no_grad()
def bank_self_matches(
    inputs: Mapping[str, torch.Tensor],
    present: torch.Tensor,
    bank: SampleBank,
    screen: torch.Tensor,
    candidates: int = 2,
) -> torch.Tensor:
    """Bank rows identical to each query on every modality both have: ``[B, N]`` bool.

    A training sample is such a row for itself, so excluding these keeps a sample from being
    its own neighbour while it trains. Only the ``candidates`` rows closest by ``screen``
    (:func:`mlmm.nn.retrieval.overlap_distances`, which is off by rounding) are checked, exactly
    (:func:`mlmm.nn.retrieval.neighbour_distances`); rows sharing no modality never match.
    """
    b, n = screen.shape
    matches = torch.zeros(b, n, dtype=torch.bool, device=screen.device)
    chosen = min(candidates, n)
    if chosen == 0:
        return matches
    _, index = torch.topk(screen, chosen, dim=1, largest=False)  # [B, c]
    exact = neighbour_distances(inputs, present, bank, index) == 0  # [B, c]; inf never 0
    return matches.scatter(1, index, exact)
