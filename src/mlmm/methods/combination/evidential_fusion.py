"""Evidential fusion: per-modality Dirichlet opinions combined by the reduced Dempster–Shafer rule.

Paper: Z. Han, C. Zhang, H. Fu, J. T. Zhou, "Trusted Multi-View Classification", ICLR 2021
(arXiv:2102.02051), extended as "Trusted Multi-View Classification with Dynamic Evidential
Fusion", IEEE TPAMI 45(2):2551-2566, 2023 (doi:10.1109/TPAMI.2022.3171983). Each modality
outputs non-negative evidence ``e = softplus(...)``; with ``alpha = e + 1`` and
``S = sum(alpha)`` its subjective-logic opinion is the belief masses ``b = e / S`` and the
uncertainty ``u = K / S``. The opinions of the modalities that are present are combined
pairwise by the reduced Dempster–Shafer rule (associative, so the order does not matter);
the loss is the per-modality plus fused adjusted cross-entropy (digamma form) with a KL term
towards the uniform Dirichlet, annealed over ``annealing_epochs``. A missing modality is
skipped, which is what UIMC (Xie et al., CVPR 2023) does after imputation; an absent opinion
is the vacuous one (b = 0, u = 1), the identity of the rule.

Deliberate differences: encoders are those of each modality's kind with a one-layer head
(TMC uses fully connected views on pre-extracted features); each modality's loss is averaged
over the rows where it is present; the annealing counts optimiser steps, converted to epochs
from the training-set size and the batches the training loop makes of it, so the KL weight
is the paper's ``min(1, epoch / annealing_epochs)``, constant within an epoch. The paper is
classification only; for regression each modality outputs a Normal-Inverse-Gamma opinion,
combined by the NIG summation of MoNIG (H. Ma, Z. Han, C. Zhang, H. Fu, J. T. Zhou, Q. Hu,
"Trustworthy Multimodal Regression with Mixture of Normal-inverse Gamma Distributions",
NeurIPS 2021, arXiv:2111.08456), trained with the NIG negative log-likelihood plus its
evidence regulariser (Amini et al., NeurIPS 2020).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.methods.registry import register_method
from mlmm.nn import build_encoder, encode_modality
from mlmm.train import distributed
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


def ds_combine(
    belief_1: torch.Tensor, u_1: torch.Tensor, belief_2: torch.Tensor, u_2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduced Dempster–Shafer combination of two opinions (TMC, eq. 5).

    ``belief_*`` are ``[B, K]`` belief masses and ``u_*`` are ``[B]`` uncertainties with
    ``sum(b) + u = 1``. Conflict ``C = sum_{i != j} b1_i b2_j``; the result is
    ``b = (b1 * b2 + b1 u2 + b2 u1) / (1 - C)`` and ``u = u1 u2 / (1 - C)``. The vacuous
    opinion (b = 0, u = 1) is the identity.
    """
    total = belief_1.sum(-1) * belief_2.sum(-1)  # [B] all pairs i, j
    conflict = total - (belief_1 * belief_2).sum(-1)  # [B] pairs with i != j
    scale = 1.0 / (1.0 - conflict)  # [B]
    belief = (
        belief_1 * belief_2 + belief_1 * u_2.unsqueeze(-1) + belief_2 * u_1.unsqueeze(-1)
    ) * scale.unsqueeze(-1)  # [B, K]
    return belief, u_1 * u_2 * scale


def nig_combine(
    nig_1: tuple[torch.Tensor, ...], nig_2: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, ...]:
    """NIG summation of MoNIG (Ma et al., 2021, eq. 9) of two ``(mu, nu, alpha, beta)``, each ``[B]``."""
    mu_1, nu_1, alpha_1, beta_1 = nig_1
    mu_2, nu_2, alpha_2, beta_2 = nig_2
    nu = nu_1 + nu_2  # [B]
    mu = (nu_1 * mu_1 + nu_2 * mu_2) / nu
    alpha = alpha_1 + alpha_2 + 0.5
    beta = beta_1 + beta_2 + 0.5 * nu_1 * (mu_1 - mu) ** 2 + 0.5 * nu_2 * (mu_2 - mu) ** 2
    return mu, nu, alpha, beta


def _fold_present(opinions: list[tuple[torch.Tensor, ...]], present: torch.Tensor, combine):
    """Combine the present modalities' opinions in modality order (the rules are associative).

    Starts from the first modality's opinion, which is finite for every row, so no branch of
    a ``torch.where`` ever holds NaN (its gradient would poison training).
    """
    fused = opinions[0]
    have = present[:, 0]  # [B] a present opinion is already in ``fused``
    for j in range(1, len(opinions)):
        merged = combine(fused, opinions[j])
        fused = _select(have & present[:, j], merged, fused)
        fused = _select(~have & present[:, j], opinions[j], fused)
        have = have | present[:, j]
    return fused, have


def _select(rows: torch.Tensor, new: tuple, old: tuple) -> tuple:
    """Per row ``[B]``: the tensors of ``new`` where ``rows`` is True, else those of ``old``."""
    return tuple(
        torch.where(rows.reshape(-1, *([1] * (o.dim() - 1))), n, o)
        for n, o in zip(new, old, strict=True)
    )


def _edl_loss(alpha: torch.Tensor, target: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """TMC's per-row loss ``[B]``: adjusted cross-entropy plus the annealed KL term."""
    n_classes = alpha.shape[-1]
    one_hot = F.one_hot(target, n_classes).to(alpha.dtype)  # [B, K]
    strength = alpha.sum(-1, keepdim=True)  # [B, 1]
    ace = (one_hot * (torch.digamma(strength) - torch.digamma(alpha))).sum(-1)  # [B]
    # KL(Dir(alpha_tilde) || Dir(1)): the evidence of the wrong classes only
    tilde = (alpha - 1.0) * (1.0 - one_hot) + 1.0  # [B, K]
    tilde_sum = tilde.sum(-1, keepdim=True)  # [B, 1]
    kl = (
        torch.lgamma(tilde_sum).squeeze(-1)
        - math.lgamma(n_classes)
        - torch.lgamma(tilde).sum(-1)
        + ((tilde - 1.0) * (torch.digamma(tilde) - torch.digamma(tilde_sum))).sum(-1)
    )  # [B]
    return ace + kl_weight * kl


def _nig_loss(nig: tuple[torch.Tensor, ...], target: torch.Tensor, coef: float) -> torch.Tensor:
    """NIG negative log-likelihood plus ``coef * |y - mu| * (2 nu + alpha)`` per row ``[B]``."""
    mu, nu, alpha, beta = nig
    omega = 2.0 * beta * (1.0 + nu)
    nll = (
        0.5 * torch.log(math.pi / nu)
        - alpha * torch.log(omega)
        + (alpha + 0.5) * torch.log(nu * (target - mu) ** 2 + omega)
        + torch.lgamma(alpha)
        - torch.lgamma(alpha + 0.5)
    )
    return nll + coef * (target - mu).abs() * (2.0 * nu + alpha)


def _loop_steps(n_samples: int, batch_size: int) -> int:
    """The optimiser steps one epoch of :meth:`Trainer.fit_module` takes on ``n_samples`` rows.

    The loop's batches are ``ceil(n / batch_size)``, less a trailing batch it skips: a lone
    row (in one process, when there are two rows or more), or a global batch with fewer than
    two rows for each of ``world_size`` processes (data-parallel).
    """
    ddp = distributed.current()
    full, rest = divmod(n_samples, batch_size)
    if ddp is None:
        kept = rest >= 2 or (rest == 1 and n_samples < 2)
    else:
        kept = rest >= 2 * ddp.world_size
    return max(1, full + int(kept))


@register_method(
    "evidential-fusion",
    family="combination",
    subtype="ensemble",
    paper="Han et al., Trusted Multi-View Classification (TMC), ICLR 2021",
)
class EvidentialFusion(MissingModalityModel):
    """Per-modality Dirichlet evidence, fused over present modalities by Dempster–Shafer.

    The prediction is the log of the fused Dirichlet's expected probabilities,
    ``log(alpha / S)``; ``out.extras["uncertainty"]`` is the fused uncertainty ``u = K / S``
    ``[B]`` (1 for a row with nothing present), ``out.extras["per_modality_uncertainty"]``
    each modality's ``[B, M]`` and ``out.extras["evidence"]`` each modality's ``[B, M, K]``.
    For regression the prediction is the fused NIG mean and the uncertainty its epistemic
    variance ``beta / (nu (alpha - 1))``.

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
    annealing_epochs : int, default 50
        The KL term's weight grows linearly to 1 over this many epochs (TMC's ``lambda_epochs``).
    nig_regularizer : float, default 0.01
        Regression only: weight of the NIG evidence regulariser.

    Attributes
    ----------
    encoders, heads : nn.ModuleDict
        Per-modality encoder and evidence head (K evidence values, or 4 NIG parameters).

    References
    ----------
    Z. Han, C. Zhang, H. Fu, J. T. Zhou. "Trusted Multi-View Classification." ICLR 2021.
    arXiv:2102.02051.

    Z. Han, C. Zhang, H. Fu, J. T. Zhou. "Trusted Multi-View Classification with Dynamic
    Evidential Fusion." IEEE TPAMI 45(2):2551-2566, 2023. doi:10.1109/TPAMI.2022.3171983.

    H. Ma, Z. Han, C. Zhang, H. Fu, J. T. Zhou, Q. Hu. "Trustworthy Multimodal Regression with
    Mixture of Normal-inverse Gamma Distributions." NeurIPS 2021. arXiv:2111.08456.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("evidential-fusion", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.extras["uncertainty"].shape
    torch.Size([200])
    """

    #: multilabel is refused: Dirichlet evidence is over exclusive classes
    supported_tasks = ("classification", "regression")

    revision = 2
    revision_notes = {
        2: "the KL annealing counts an epoch as the batches the training loop makes (floor(n / "
        "batch_size) before: it annealed too fast, twice as fast when n < 2 * batch_size)",
    }
    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "annealing_epochs": Int(5, 100, log=True),
        "nig_regularizer": Float(1e-3, 0.1, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 128,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.2,
        annealing_epochs: int = 50,
        nig_regularizer: float = 0.01,
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("annealing_epochs", annealing_epochs, 1, integer=True)
        check_range("nig_regularizer", nig_regularizer, 0)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.annealing_epochs, self.nig_regularizer = annealing_epochs, nig_regularizer
        width = task.n_classes if task.is_classification else 4
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.heads = nn.ModuleDict(
            {
                s.name: nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(embed_dim, width))
                for s in self.specs
            }
        )
        self.steps_per_epoch = 1  # set by fit from the training-set size
        # training progress for the KL annealing: a buffer, so a training checkpoint keeps it
        # and a resumed training anneals on from where it stopped (not needed to predict)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    def reset_parameters(self) -> None:
        """A fresh training starts its KL annealing again."""
        self.train_steps.zero_()

    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Weights saved before the step count was a buffer: none taken (it does not change
        predictions)."""
        state.setdefault(f"{prefix}train_steps", torch.zeros_like(self.train_steps))

    def changes_since(self, revision: int) -> list[str]:
        """None: revision 2 changed training only (the KL annealing), so weights saved before
        it load and answer as they did; the revision keeps a checkpoint written before it from
        being resumed under the new annealing."""
        return []

    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> TrainHistory:
        """The shared loop, after telling the annealing how many steps make an epoch."""
        self.steps_per_epoch = _loop_steps(train.n_samples, trainer.batch_size)
        self.train_steps.zero_()  # a resumed training loads its count from the checkpoint
        return trainer.fit_module(self, train, val)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        raw = torch.stack(
            [self.heads[m](encode_modality(self.encoders[m], batch, m)) for m in self.modalities],
            dim=1,
        )  # [B, M, K] (or [B, M, 4])
        if self.task.is_classification:
            return self._classify(batch, present, raw)
        return self._regress(batch, present, raw)

    def _classify(self, batch, present, raw) -> MethodOutput:
        n_classes = raw.shape[-1]
        evidence = F.softplus(raw)  # [B, M, K]
        strength = evidence.sum(-1) + n_classes  # [B, M]
        belief = evidence / strength.unsqueeze(-1)  # [B, M, K]
        u = n_classes / strength  # [B, M]
        opinions = [(belief[:, j], u[:, j]) for j in range(len(self.modalities))]
        (fused_belief, fused_u), have = _fold_present(
            opinions, present, lambda a, b: ds_combine(a[0], a[1], b[0], b[1])
        )
        fused_belief = torch.where(have.unsqueeze(-1), fused_belief, torch.zeros_like(fused_belief))
        fused_u = torch.where(have, fused_u, torch.ones_like(fused_u))  # [B] vacuous if empty
        fused_strength = n_classes / fused_u  # [B]
        fused_alpha = fused_belief * fused_strength.unsqueeze(-1) + 1.0  # [B, K]
        prediction = fused_alpha.log() - fused_strength.log().unsqueeze(-1)  # [B, K] log E[p]
        task_loss = None
        if batch.target is not None:
            if self.training:
                self.train_steps.add_(1)
            epoch = (int(self.train_steps) - 1) // self.steps_per_epoch + 1
            kl_weight = min(1.0, epoch / self.annealing_epochs)
            per_row = torch.stack(
                [
                    _edl_loss(evidence[:, j] + 1.0, batch.target, kl_weight)
                    for j in range(raw.shape[1])
                ],
                dim=1,
            )  # [B, M]
            task_loss = (
                self._present_mean(per_row, present)
                + _edl_loss(fused_alpha, batch.target, kl_weight).mean()
            )
        return self.output(
            batch,
            prediction,
            task_loss=task_loss,
            uncertainty=fused_u,
            per_modality_uncertainty=u,
            evidence=evidence,
        )

    def _regress(self, batch, present, raw) -> MethodOutput:
        mu = raw[..., 0]  # [B, M]
        nu = F.softplus(raw[..., 1]) + 1e-6
        alpha = F.softplus(raw[..., 2]) + 1.0 + 1e-6
        beta = F.softplus(raw[..., 3]) + 1e-6
        opinions = [(mu[:, j], nu[:, j], alpha[:, j], beta[:, j]) for j in range(mu.shape[1])]
        fused, have = _fold_present(opinions, present, nig_combine)
        prediction = torch.where(have, fused[0], torch.zeros_like(fused[0]))  # [B]
        epistemic = fused[3] / (fused[1] * (fused[2] - 1.0))  # [B]
        uncertainty = torch.where(have, epistemic, torch.full_like(epistemic, math.inf))
        task_loss = None
        if batch.target is not None:
            y = batch.target.to(mu.dtype)
            per_row = torch.stack(
                [_nig_loss(o, y, self.nig_regularizer) for o in opinions], dim=1
            )  # [B, M]
            fused_loss = torch.where(have, _nig_loss(fused, y, self.nig_regularizer), 0.0)
            task_loss = self._present_mean(per_row, present) + fused_loss.mean()
        return self.output(batch, prediction, task_loss=task_loss, uncertainty=uncertainty)

    @staticmethod
    def _present_mean(per_row: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Each modality's loss averaged over its present rows, summed over modalities."""
        masked = torch.where(present, per_row, torch.zeros_like(per_row))  # [B, M]
        return (masked.sum(0) / present.sum(0).clamp_min(1)).sum()
