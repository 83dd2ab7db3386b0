"""Late fusion: one classifier per modality, combined over the modalities that are present.

The classical ensemble answer to missing modalities (a classifier-combination scheme in the
sense of Kittler et al., "On combining classifiers", IEEE TPAMI 1998): each modality has its
own encoder and head, trained only on the rows where that modality is present and
early-stopped on its own validation loss (independent classifiers, as the scheme assumes: a
head's weights are those of the epoch where it alone did best); at prediction time the
outputs of the present modalities are combined by the mean of probabilities (the sum rule) or
the product rule: the sum of log-probabilities minus ``(n - 1)`` times the log of the training
class prior ``p(y)``, for the ``n`` present modalities, since every head's posterior already
holds the prior once. The product rule is the Bayes posterior ``p(y | present modalities)``
only when (1) the modalities are conditionally independent given the class, (2) every head is
calibrated (outputs the true ``p(y | x_i)`` under the training prior) and (3) missingness is
ignorable (which modalities are present says nothing about the class, e.g. MCAR); otherwise it
is a heuristic. Regression averages the present heads. Multilabel treats each label as its own
binary classifier: the product rule sums the present heads' logits and subtracts ``(n - 1)``
times the training log-odds of the label, the sum rule averages their sigmoids.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import (
    MethodOutput,
    MissingModalityModel,
    check_choice,
    check_common,
)
from mlmm.methods.registry import register_method
from mlmm.nn import build_encoder, combine_predictions, encode_modality, masked_mean
from mlmm.tune.space import Categorical, Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


@register_method(
    "late-fusion",
    family="combination",
    subtype="ensemble",
    paper="Kittler et al., On combining classifiers, IEEE TPAMI 1998",
)
class LateFusion(MissingModalityModel):
    """One encoder + head per modality; predictions combined over present modalities.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    rule : {"mean_prob", "sum_logprob"}, default "sum_logprob"
        How class predictions of the present modalities are combined: averaged probabilities
        (sum rule) or summed log-probabilities divided by ``p(y)^(n - 1)``, the training class
        prior (product rule; Bayes-optimal for conditionally independent modalities,
        calibrated heads and ignorable missingness).
    embed_dim : int, default 128
    hidden : int, default 256
    depth : int, default 1
        Hidden layers of each modality's encoder.
    dropout : float, default 0.2
    selection : {"per_head", "joint"}, default "per_head"
        Model selection under early stopping: each modality's encoder and head kept at the
        epoch of its own lowest validation loss (on the validation rows that have the
        modality), or the whole model at the epoch of the lowest combined validation loss.

    Attributes
    ----------
    encoders, heads : nn.ModuleDict
        Per-modality encoder and prediction head.
    log_prior : Tensor, shape (n_classes,)
        Log class frequencies of the training rows (classification; a buffer set by
        :meth:`fit`, uniform before), used by the product rule; ``-inf`` for a class absent
        from the training rows.
    prior_log_odds : Tensor, shape (n_labels,)
        Multilabel: each label's training log-odds ``log(r / (1 - r))`` (a buffer set by
        :meth:`fit`, 0 before), with the rate smoothed to ``(count + 0.5) / (N + 1)`` so a
        label never (or always) on stays finite; used by the product rule.

    References
    ----------
    J. Kittler, M. Hatef, R. P. W. Duin, J. Matas. "On combining classifiers." IEEE TPAMI
    20(3):226-239, 1998. doi:10.1109/34.667881

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("late-fusion", ds.specs, ds.task, rule="mean_prob")
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.extras["per_modality"].shape
    torch.Size([200, 3, 4])
    """

    search_space = {
        "rule": Categorical(["sum_logprob", "mean_prob"]),
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        rule: str = "sum_logprob",
        embed_dim: int = 128,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.2,
        selection: str = "per_head",
    ) -> None:
        super().__init__(specs, task)
        check_choice("rule", rule, ("mean_prob", "sum_logprob"))
        check_choice("selection", selection, ("per_head", "joint"))
        self.selection = selection
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        self.rule, self.embed_dim, self.hidden, self.depth, self.dropout = (
            rule,
            embed_dim,
            hidden,
            depth,
            dropout,
        )
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.heads = nn.ModuleDict(
            {
                s.name: nn.Sequential(
                    nn.GELU(), nn.Dropout(dropout), nn.Linear(embed_dim, task.output_dim)
                )
                for s in self.specs
            }
        )
        if task.is_classification:
            uniform = torch.full((task.output_dim,), -math.log(task.output_dim))
            self.register_buffer("log_prior", uniform)  # [K]
        if task.is_multilabel:
            self.register_buffer("prior_log_odds", torch.zeros(task.output_dim))  # [L]

    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> TrainHistory:
        """Set the training class prior (for the product rule), then the shared loop."""
        if self.task.is_classification:
            counts = np.bincount(train.targets, minlength=self.task.output_dim)
            frequencies = counts / max(counts.sum(), 1)
            # a class absent from training gets -inf: combine_predictions divides no prior out
            # for it (0/0 in Kittler's rule), where a floored prior (1e-12) would add 27.6 per
            # extra modality to its score and make it win every row
            with np.errstate(divide="ignore"):
                log_prior = np.log(frequencies)
            self.log_prior.copy_(torch.as_tensor(log_prior, dtype=self.log_prior.dtype))
        if self.task.is_multilabel:
            rate = (train.targets.sum(axis=0, dtype=np.float64) + 0.5) / (train.n_samples + 1)
            log_odds = torch.as_tensor(np.log(rate / (1 - rate)), dtype=self.prior_log_odds.dtype)
            self.prior_log_odds.copy_(log_odds)
        return super().fit(trainer, train, val)

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        outs = torch.stack(
            [self.heads[m](encode_modality(self.encoders[m], batch, m)) for m in self.modalities],
            dim=1,
        )  # [B, M, K]
        if self.task.is_classification:
            prediction = combine_predictions(
                outs, present, self.rule, self.log_prior
            )  # [B, K] log-probs
        elif self.task.is_multilabel:
            prediction = self._combine_labels(outs, present)  # [B, L] logits
        else:
            prediction = masked_mean(outs, present).squeeze(-1)  # [B]
        task_loss = None
        if batch.target is not None:
            task_loss = self._per_head_loss(outs, present, batch.target)
        return self.output(batch, prediction, task_loss=task_loss, per_modality=outs)

    def upgrade_state_dict(self, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Weights saved before the product rule divided out the training prior (mlmm before
        ``log_prior``): zeros, which divide out nothing, so they predict exactly as saved (a
        uniform ``-log K`` shifts each row by a constant, which changes the float32
        log-probabilities in their last bits)."""
        if self.task.is_classification:
            state.setdefault(f"{prefix}log_prior", torch.zeros_like(self.log_prior))

    def selection_parts(self) -> dict[str, tuple[str, ...]]:
        """With ``selection="per_head"``: each modality's encoder and head, one part."""
        if self.selection == "joint":
            return {}
        return {m: (f"encoders.{m}.", f"heads.{m}.") for m in self.modalities}

    def part_losses(
        self, output: MethodOutput, batch: MultimodalBatch
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each head's loss on every row, counted where its modality is present."""
        per = self._head_losses(output.extras["per_modality"], batch.target)  # [B, M]
        present = self.present_mask(batch)  # [B, M]
        return {m: (per[:, j], present[:, j]) for j, m in enumerate(self.modalities)}

    def _combine_labels(self, outs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Multilabel: each label's logit from the present heads' logits ``[B, M, L]``."""
        weight = present.unsqueeze(-1).to(outs.dtype)  # [B, M, 1]
        n = weight.sum(1)  # [B, 1]
        if self.rule == "sum_logprob":  # Bernoulli product rule in log-odds
            return (outs * weight).sum(1) - (n - 1).clamp_min(0) * self.prior_log_odds  # [B, L]
        mean = (torch.sigmoid(outs) * weight).sum(1) / n.clamp_min(1)  # [B, L]
        return torch.logit(mean, eps=1e-6)

    def _head_losses(self, outs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of every head on every row, ``[B, M]``, from the head outputs ``[B, M, K]``."""
        B, M = outs.shape[:2]
        flat = outs.reshape(B * M, -1)  # [B*M, K]
        tgt = target.repeat_interleave(M, dim=0)  # [B*M] ([B*M, L] for multilabel)
        if self.task.is_classification:
            per = F.cross_entropy(flat, tgt, reduction="none")
        elif self.task.is_multilabel:  # mean over labels
            per = F.binary_cross_entropy_with_logits(
                flat, tgt.to(flat.dtype), reduction="none"
            ).mean(-1)
        else:
            per = F.mse_loss(flat.squeeze(-1), tgt.to(flat.dtype), reduction="none")
        return per.reshape(B, M)

    def _per_head_loss(
        self, outs: torch.Tensor, present: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Each head learns from the rows where its modality is present (mean over them)."""
        per = self._head_losses(outs, target)  # [B, M]
        w = present.to(per.dtype)  # [B, M]
        # average per modality over its present rows, then over modalities that appear
        per_mod = (per * w).sum(0) / w.sum(0).clamp_min(1.0)  # [M]
        return per_mod.sum() / present.any(0).sum().clamp_min(1)
