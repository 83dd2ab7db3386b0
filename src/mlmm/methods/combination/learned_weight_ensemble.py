"""Learned-weight ensemble: per-modality heads mixed with weights a gate predicts from the presence mask.

Paper: the gated mixture of experts of R. A. Jacobs, M. I. Jordan, S. J. Nowlan, G. E. Hinton,
"Adaptive Mixtures of Local Experts", Neural Computation 3(1):79-87, 1991
(doi:10.1162/neco.1991.3.1.79): a gating network outputs softmax weights over experts and
the prediction is the weighted mixture of the experts' distributions, trained by the
mixture's likelihood. Here the experts are ``late-fusion``'s per-modality classifiers and the
gate reads only the presence mask, so it learns one set of reliability weights per missing
pattern (which modality to trust more when another is gone), in the spirit of the
pattern-dependent weighting of incomplete-view ensembles.

Deliberate differences: the gate's input is the ``[B, M]`` presence mask, not the sample, so
the weights depend on what is present, never on absent rows; its softmax runs over the
present modalities only (absent ones get weight exactly 0); each expert also keeps
``late-fusion``'s own loss on its present rows (added to the mixture likelihood) so every
modality alone stays a good classifier, which a pure mixture would not guarantee.
Regression mixes the present heads' outputs with the same weights (mean squared error on the
mixture).
"""

from __future__ import annotations

import math

import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.combination.late_fusion import LateFusion
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, encode_modality
from mlmm.tune.space import Float, Int


@register_method(
    "learned-weight-ensemble",
    family="combination",
    subtype="ensemble",
    paper="Jacobs et al., Adaptive Mixtures of Local Experts, Neural Computation 1991",
)
class LearnedWeightEnsemble(LateFusion):
    """Per-modality classifiers mixed by presence-mask gating weights (mixture of experts).

    The gate maps the presence mask to one score per modality; a softmax over the present
    modalities gives the weights ``w [B, M]`` (0 for absent ones, summing to 1). The
    prediction is ``log(sum_m w_m p_m)``, the log of the mixture of the present heads' class
    probabilities. ``out.extras["weights"]`` holds ``w`` and ``out.extras["per_modality"]``
    the heads' logits ``[B, M, K]``. The loss is the mixture's cross-entropy plus each head's
    cross-entropy on its present rows (``aux_losses["per_head"]``).

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 128
        Output size of each modality's encoder.
    hidden : int, default 256
        Width of each encoder's hidden layers.
    depth : int, default 1
        Hidden layers of each encoder.
    dropout : float, default 0.2
    gate_hidden : int, default 32
        Width of the gate's hidden layer (the gate reads the M-dimensional presence mask).

    Attributes
    ----------
    encoders, heads : nn.ModuleDict
        Per-modality encoder and prediction head (as in ``late-fusion``).
    gate : MLPHead
        Presence mask ``[B, M]`` -> one score per modality ``[B, M]``.

    References
    ----------
    R. A. Jacobs, M. I. Jordan, S. J. Nowlan, G. E. Hinton. "Adaptive Mixtures of Local
    Experts." Neural Computation 3(1):79-87, 1991. doi:10.1162/neco.1991.3.1.79

    J. Kittler, M. Hatef, R. P. W. Duin, J. Matas. "On combining classifiers." IEEE TPAMI
    20(3):226-239, 1998. doi:10.1109/34.667881

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("learned-weight-ensemble", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.extras["weights"].shape
    torch.Size([200, 3])
    """

    #: multilabel is refused: the gate mixes class distributions of exclusive classes
    supported_tasks = ("classification", "regression")

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "gate_hidden": Int(8, 128, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 128,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.2,
        gate_hidden: int = 32,
    ) -> None:
        # the mixture is a weighted sum rule; ``rule`` is late-fusion's, not ours. The heads
        # learn through the mixture too, so they are selected together, not one by one
        super().__init__(specs, task, "mean_prob", embed_dim, hidden, depth, dropout, "joint")
        check_range("gate_hidden", gate_hidden, 1, integer=True)
        self.gate_hidden = gate_hidden
        m = len(self.modalities)
        self.gate = MLPHead(m, m, gate_hidden, depth=1, dropout=0.0)

    def log_weights(self, present: torch.Tensor) -> torch.Tensor:
        """Log gating weights ``[B, M]``: log-softmax over present modalities, -inf elsewhere.

        A row with nothing present gets uniform weights (its prediction is discarded).
        """
        scores = self.gate(present.to(torch.get_default_dtype()))  # [B, M]
        any_present = present.any(dim=1, keepdim=True)  # [B, 1]
        usable = present | ~any_present  # [B, M]; every modality for an empty row
        # masked_fill, not a log of zero weights: no NaN gradient from the absent entries
        return torch.log_softmax(scores.masked_fill(~usable, -math.inf), dim=1)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        outs = torch.stack(
            [self.heads[m](encode_modality(self.encoders[m], batch, m)) for m in self.modalities],
            dim=1,
        )  # [B, M, K]
        log_w = self.log_weights(present)  # [B, M]
        weights = torch.where(present, log_w.exp(), torch.zeros_like(log_w))  # [B, M]
        any_present = present.any(dim=1, keepdim=True)  # [B, 1]
        if self.task.is_classification:
            mixture = torch.logsumexp(log_w.unsqueeze(-1) + outs.log_softmax(-1), dim=1)  # [B, K]
            prediction = torch.where(any_present, mixture, torch.zeros_like(mixture))
        else:
            prediction = (weights.unsqueeze(-1) * outs).sum(dim=1).squeeze(-1)  # [B]
        aux = {}
        if batch.target is not None:
            aux["per_head"] = self._per_head_loss(outs, present, batch.target)
        return self.output(batch, prediction, aux_losses=aux, weights=weights, per_modality=outs)
