"""Distillation: a teacher that sees every available modality teaches a student that sees fewer.

Papers: logit distillation with temperature from G. Hinton, O. Vinyals, J. Dean, "Distilling
the Knowledge in a Neural Network", NIPS 2014 Deep Learning Workshop, arXiv:1503.02531; the
missing-modality setting from M. Hu, M. Maillard, Y. Zhang, T. Ciceri, G. La Barbera,
I. Bloch, P. Gori, "Knowledge Distillation from Multi-modal to Mono-modal Segmentation
Networks" (KD-Net), MICCAI 2020, doi:10.1007/978-3-030-59710-8_75, arXiv:2106.09564; feature
distillation on the present modalities in the spirit of ACN (Y. Wang, Y. Zhang, Y. Liu, Z. Lin,
J. Tian, C. Zhong, Z. Shi, J. Fan, Z. He, "ACN: Adversarial Co-training Network for
Brain Tumor Segmentation with Missing Modalities", MICCAI 2021, arXiv:2106.14591).

Two fit stages: ``"teacher"`` trains the teacher (per-modality encoders, mean over the present
modalities' embeddings, MLP head) on the training samples chosen by ``teacher_samples``; then
``"student"`` freezes it and trains a student of the same architecture on the training samples
with extra, simulated missingness (each present modality hidden with ``simulate_missing``, at
least one kept). The student's loss is its task loss, plus ``kd_weight * T^2 * KL(teacher_T ||
student_T)`` between the temperature-softened outputs (the teacher sees all the modalities the
sample has, the student only the visible ones), plus ``feature_weight`` times the mean squared
difference between the student's fused embedding, from the modalities it sees, and the
teacher's fused embedding, from every modality the sample has: KD-Net's cross-modal transfer,
which pulls the student's representation of a partial input towards what the full input
gives. Only the student predicts; the teacher stays a (frozen) submodule and is saved with it.

Deliberate differences: KD-Net distils a multimodal U-Net into a mono-modal one for one fixed
missing modality (one student per missing situation, like ACN); here one student learns every
subset from simulated missingness. KD-Net matches the bottleneck features with a KL term; here
the fused embeddings (the head's input) are matched with a mean squared error. With ``teacher_samples="all"``
(the default) the teacher learns from every training sample with whatever it has, because
under MCAR few samples are complete (14 of 1,440 on ``handwritten`` under ``mcar:0.5``);
``"complete"`` is the papers' full-modality teacher and fails with a clear error when no
training sample is complete.
Regression distils the prediction with a squared error instead of the softened KL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import (
    MethodOutput,
    MissingModalityModel,
    check_choice,
    check_common,
    check_range,
)
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, build_encoder, encode_padded, masked_mean, modality_dropout
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

TEACHER_SAMPLES = ("all", "complete", "most-complete")


def teacher_rows(observed: np.ndarray, rule: str) -> np.ndarray:
    """Indices of the samples a teacher trains on, from the ``[N, M]`` presence mask.

    ``"all"``: every sample; ``"complete"``: samples with every modality (empty when there is
    none); ``"most-complete"``: samples with the largest number of present modalities found.
    """
    check_choice("teacher_samples", rule, TEACHER_SAMPLES)
    counts = observed.sum(axis=1)  # [N]
    if rule == "all":
        return np.arange(len(observed))
    if rule == "complete":
        return np.flatnonzero(counts == observed.shape[1])
    return np.flatnonzero(counts == counts.max()) if len(counts) else np.arange(0)


class _Branch(nn.Module):
    """Encoders, mean over the present modalities' embeddings, head (teacher or student)."""

    def __init__(
        self,
        specs: tuple[ModalitySpec, ...],
        output_dim: int,
        embed_dim: int,
        hidden: int,
        depth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.modalities = tuple(s.name for s in specs)
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in specs}
        )
        self.head = MLPHead(embed_dim, output_dim, hidden, depth, dropout)

    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeddings = torch.stack(
            [
                encode_padded(
                    self.encoders[name],
                    inputs[name],
                    None if lengths is None else lengths.get(name),
                    present[:, j],
                )
                for j, name in enumerate(self.modalities)
            ],
            dim=1,
        )  # [B, M, D]; absent rows are computed on zeros and never used
        fused = masked_mean(embeddings, present)  # [B, D]
        return self.head(fused), embeddings, fused  # [B, K], [B, M, D], [B, D]


class _TeacherStage(MissingModalityModel):
    """Stage 1: the teacher branch alone, trained with the task loss on the samples it sees."""

    method_name = "distill"

    def __init__(self, parent: Distill) -> None:
        super().__init__(parent.specs, parent.task)
        self.teacher = parent.teacher

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        prediction, _, fused = self.teacher(batch.inputs, present, batch.lengths)
        return self.output(batch, prediction, embedding=fused)


@register_method(
    "distill",
    family="architecture",
    subtype="distillation",
    paper="Hinton et al., 2015; Hu et al., KD-Net, MICCAI 2020 (logit + feature KD)",
)
class Distill(MissingModalityModel):
    """A teacher on the most complete inputs distils its outputs and features into a student.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 64
        Size of each modality's embedding (teacher and student).
    hidden : int, default 256
        Width of the encoders' and heads' hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and head.
    dropout : float, default 0.4
        Dropout in the encoders and heads.
    temperature : float, default 2.0
        Softening temperature ``T`` of the logit distillation (Hinton et al.); the term is
        scaled by ``T^2`` so its gradients keep their size as ``T`` changes.
    kd_weight : float, default 1.0
        Weight of the logit distillation term (0 turns it off).
    feature_weight : float, default 1.0
        Weight of the feature distillation term: the mean squared difference between the
        student's fused embedding of the modalities it sees and the teacher's fused embedding
        of all the modalities the sample has (cross-modal transfer, as in KD-Net).
    simulate_missing : float, default 0.5
        Probability of hiding each present modality from the student in a training batch (at
        least one kept); the teacher still sees it.
    teacher_samples : {"all", "complete", "most-complete"}, default "all"
        Which training samples teach the teacher: all of them (with what each has),
        only complete ones (the papers' setting; a clear error when there is none), or those
        with the most modalities present in the training data.

    Attributes
    ----------
    teacher : nn.Module
        Encoders ``teacher.encoders``, head ``teacher.head``; frozen after stage 1, saved in the
        artifact, not used at prediction time.
    student : nn.Module
        Encoders ``student.encoders``, head ``student.head``; what predicts.

    References
    ----------
    G. Hinton, O. Vinyals, J. Dean. "Distilling the Knowledge in a Neural Network." NIPS 2014
    Deep Learning Workshop. arXiv:1503.02531, 2015.

    M. Hu, M. Maillard, Y. Zhang, T. Ciceri, G. La Barbera, I. Bloch, P. Gori. "Knowledge
    Distillation from Multi-modal to Mono-modal Segmentation Networks." MICCAI 2020.
    doi:10.1007/978-3-030-59710-8_75.

    Y. Wang et al. "ACN: Adversarial Co-training Network for Brain Tumor Segmentation with
    Missing Modalities." MICCAI 2021. arXiv:2106.14591.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("distill", ds.specs, ds.task)
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    >>> [h.stage for h in trained.histories]
    ['teacher', 'student']
    """

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 512, log=True),
        "dropout": Float(0.0, 0.6),
        "temperature": Float(1.0, 8.0, log=True),
        "kd_weight": Float(0.1, 10.0, log=True),
        "feature_weight": Float(0.01, 10.0, log=True),
        "simulate_missing": Float(0.2, 0.8),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.4,
        temperature: float = 2.0,
        kd_weight: float = 1.0,
        feature_weight: float = 1.0,
        simulate_missing: float = 0.5,
        teacher_samples: str = "all",
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("temperature", temperature, 0, low_inclusive=False)
        check_range("kd_weight", kd_weight, 0)
        check_range("feature_weight", feature_weight, 0)
        check_range("simulate_missing", simulate_missing, 0, 1, high_inclusive=False)
        check_choice("teacher_samples", teacher_samples, TEACHER_SAMPLES)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.temperature, self.kd_weight, self.feature_weight = (
            temperature,
            kd_weight,
            feature_weight,
        )
        self.simulate_missing, self.teacher_samples = simulate_missing, teacher_samples
        branch = (self.specs, task.output_dim, embed_dim, hidden, depth, dropout)
        self.teacher = _Branch(*branch)
        self.student = _Branch(*branch)

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Stage ``"teacher"`` on the samples ``teacher_samples`` selects, then stage
        ``"student"`` (teacher frozen) on every training sample."""
        self.set_frozen(False, "teacher")  # a second fit trains the teacher again
        rows = teacher_rows(train.observed, self.teacher_samples)
        if len(rows) == 0:
            raise MlmmError(
                f"distill: no training sample has all {len(self.modalities)} modalities "
                f"{list(self.modalities)}, so teacher_samples='complete' has nothing to teach "
                "the teacher; use teacher_samples='most-complete' or 'all'"
            )
        teacher_val = None
        if val is not None:
            val_rows = teacher_rows(val.observed, self.teacher_samples)
            teacher_val = val.subset(val_rows) if len(val_rows) else None
        teacher = trainer.fit_module(
            _TeacherStage(self), train.subset(rows), teacher_val, stage="teacher"
        )
        self.set_frozen(True, "teacher")
        student = trainer.fit_module(self, train, val, stage="student")
        return [teacher, student]

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        visible = present
        if self.training and self.simulate_missing > 0:
            visible = modality_dropout(present, self.simulate_missing)  # [B, M]
        prediction, _, fused = self.student(
            batch.inputs, visible, batch.lengths
        )  # [B, K], _, [B, D]
        aux: dict[str, torch.Tensor] = {}
        if self.training and batch.target is not None and self.is_frozen("teacher"):
            with torch.no_grad():
                # the teacher sees every modality the sample has, the student only the visible
                teacher_prediction, _, teacher_fused = self.teacher(
                    batch.inputs, present, batch.lengths
                )
            if self.kd_weight > 0:
                aux["distill_logits"] = self.kd_weight * self.logit_distillation(
                    prediction, teacher_prediction
                )
            if self.feature_weight > 0:
                aux["distill_features"] = self.feature_weight * F.mse_loss(fused, teacher_fused)
        return self.output(batch, prediction, aux_losses=aux, embedding=fused)

    def logit_distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch
        (classification); the KL between each label's tempered Bernoulli, summed over labels
        (multilabel); the squared error between the predictions (regression)."""
        t = self.temperature
        if self.task.is_multilabel:  # [B, L] logits: KL = cross-entropy - teacher entropy
            p_teacher = torch.sigmoid(teacher / t)  # [B, L]
            cross = F.binary_cross_entropy_with_logits(student / t, p_teacher, reduction="none")
            entropy = F.binary_cross_entropy_with_logits(teacher / t, p_teacher, reduction="none")
            return t * t * (cross - entropy).sum(-1).mean()
        if not self.task.is_classification:
            return F.mse_loss(student.reshape(-1), teacher.reshape(-1))
        log_student = F.log_softmax(student / t, dim=-1)  # [B, K]
        log_teacher = F.log_softmax(teacher / t, dim=-1)  # [B, K]
        kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")
        return t * t * kl
