"""A sparse mixture of experts over tokens: top-k routing, an optional forced top-1 expert per
token, and the load-balancing loss of Shazeer et al. (ICLR 2017).

Used by ``flex-moe``. Each token goes through ``top_k`` of ``n_experts`` feed-forward experts;
only those run (the compute and the parameters a token touches do not grow with the number of
experts). A caller may force a token's top-1 expert (Flex-MoE's specialised routing): the other
``top_k - 1`` experts are the router's best among the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.errors import MlmmError


def cv_squared(values: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation ``var / mean**2`` of a vector (population variance).

    0 when every entry is equal (a balanced load); ``1e-10`` in the denominator keeps an
    all-zero vector at 0. A vector of one entry is at 0.
    """
    if values.numel() < 2:
        return values.sum() * 0.0
    mean = values.mean()
    return values.var(unbiased=False) / (mean.square() + 1e-10)


def load_balancing_loss(gates: torch.Tensor) -> torch.Tensor:
    """``cv²(importance) + cv²(load)`` of dense gates ``[T, E]`` (zero where not selected).

    ``importance_e`` is the sum of expert ``e``'s gate values over the tokens (differentiable),
    ``load_e`` the number of tokens that selected ``e``. Both are 0 for perfectly balanced
    routing. No tokens: 0.
    """
    if gates.shape[0] == 0:
        return gates.sum() * 0.0
    importance = gates.sum(dim=0)  # [E]
    load = (gates > 0).to(gates.dtype).sum(dim=0)  # [E]
    return cv_squared(importance) + cv_squared(load)


class SparseMoE(nn.Module):
    """Top-k routed feed-forward experts on tokens ``[..., D]``.

    Parameters
    ----------
    dim : int
        Token width (input and output).
    n_experts : int
        Number of experts (each ``Linear(dim, hidden) -> GELU -> Dropout -> Linear(hidden,
        dim)``).
    top_k : int
        Experts per token, ``1 <= top_k <= n_experts``.
    hidden : int
        Width of each expert's hidden layer.
    dropout : float

    Notes
    -----
    ``forward(x, forced)`` with ``x`` ``[T, D]`` and ``forced`` ``[T]`` int64 (``-1`` = no forced
    expert) returns ``(y [T, D], logits [T, E], index [T, k], gates [T, k])``. The router's
    logits are a linear map of the token; the selected experts are the top ``k`` logits, except
    that a forced expert always takes the first slot. The gate values are the softmax of the
    selected experts' logits, so they sum to 1 per token. Each expert runs only on the tokens
    that selected it; with :attr:`dense` set, every expert runs on every token and is weighted
    by its gate (0 where not selected): the same answer, in a form an ONNX trace keeps whole
    (the sparse loop's set of experts depends on the data, and a trace would freeze the set
    its example inputs chose, silently dropping any other expert a later input selects).
    """

    #: Run every expert on every token (see the Notes); set on the copy ONNX export traces.
    dense: bool = False

    def __init__(self, dim: int, n_experts: int, top_k: int, hidden: int, dropout: float) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise MlmmError(
                f"top_k must be between 1 and the number of experts ({n_experts}), got {top_k}; "
                f"lower top_k or raise n_experts"
            )
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(dim, n_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
            )
            for _ in range(n_experts)
        )

    def expert_size(self) -> int:
        """Parameters of one expert."""
        return sum(p.numel() for p in self.experts[0].parameters())

    def route(
        self, logits: torch.Tensor, forced: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Selected experts ``[T, k]`` and their gate values ``[T, k]`` from logits ``[T, E]``."""
        # the forced expert ranks first (-1 matches no expert); a mask, not an index of rows:
        # traced for ONNX, arange(len(logits)) froze the batch size and larger ones failed
        experts = torch.arange(logits.shape[1], device=logits.device)  # [E]
        forced_slot = experts.unsqueeze(0) == forced.unsqueeze(1)  # [T, E]
        ranking = logits.detach().masked_fill(forced_slot, torch.inf)  # selection: no gradient
        index = torch.topk(ranking, self.top_k, dim=1).indices  # [T, k]
        gates = torch.softmax(logits.gather(1, index), dim=1)  # [T, k]
        return index, gates

    def forward(
        self, x: torch.Tensor, forced: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.router(x)  # [T, E]
        index, gates = self.route(logits, forced)  # [T, k], [T, k]
        out = torch.zeros_like(x)  # [T, D]
        if self.dense:
            # [T, E], 0 where not selected (sized from logits: a traced len() is a constant)
            weights = torch.zeros_like(logits).scatter(1, index, gates)
            for e, expert in enumerate(self.experts):
                out = out + weights[:, e : e + 1] * expert(x).to(out.dtype)  # [T, D]
            return out, logits, index, gates
        for e in torch.unique(index).tolist():
            token, slot = (index == e).nonzero(as_tuple=True)  # tokens that chose e, and where
            routed = gates[token, slot].unsqueeze(1) * self.experts[e](x[token])  # [t, D]
            # under autocast the experts answer in bfloat16/float16; the sum keeps x's dtype
            out = out.index_add(0, token, routed.to(out.dtype))
        return out, logits, index, gates

    @staticmethod
    def dense_gates(index: torch.Tensor, gates: torch.Tensor, n_experts: int) -> torch.Tensor:
        """The gates as a dense ``[T, E]`` matrix (zero for unselected experts)."""
        return torch.zeros(len(index), n_experts, dtype=gates.dtype, device=gates.device).scatter(
            1, index, gates
        )

    @staticmethod
    def specialisation_loss(logits: torch.Tensor, forced: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the router's logits ``[T, E]`` towards the forced experts (tokens
        with ``forced >= 0`` only; 0 when there are none)."""
        rows = forced >= 0
        if not rows.any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits[rows], forced[rows])
