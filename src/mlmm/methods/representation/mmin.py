"""MMIN: imagine the missing modalities' embeddings with a cascade residual autoencoder.

J. Zhao, R. Li, Q. Jin, "Missing Modality Imagination Network for Emotion Recognition with
Uncertain Missing Modalities", ACL-IJCNLP 2021,
doi:10.18653/v1/2021.acl-long.203. Authors' code: github.com/AIM3-RUC/MMIN (read for
reference, not copied).

Per-modality encoders map each modality to an embedding; the embeddings of the visible
modalities are concatenated with zeros in the slots of missing ones, and the *forward
imagination* module, a cascade residual autoencoder (CRA), outputs the whole concatenation
with the missing slots imagined. A *backward imagination* CRA maps the imagined missing part
back to the visible modalities' embeddings (cycle consistency). The classifier reads the
joint representation: the concatenated bottlenecks of the forward CRA's autoencoders (as in
the paper; ``classifier_input="completed"`` reads the completed embeddings instead).
Training simulates missing conditions: from each training sample, a uniformly random
non-empty proper subset of its present modalities is hidden, and the imagination of the hidden
ones is supervised by their true embeddings. Loss = cross-entropy
+ ``forward_weight`` * MSE(imagined, true embeddings of the hidden modalities)
+ ``cycle_weight`` * MSE(backward imagination, visible embeddings).

Training in stages, as the paper (``encoder_training``): first the encoders and a
classifier on the concatenated embeddings are trained on the data as they come (the paper's
full-modality pretraining; absent modalities are zero slots), then MMIN. The true embeddings
that supervise the imagination come from the pretrained encoders: with
``"pretrained-frozen"`` (the default) the encoders stay frozen in the second stage, so targets
are exactly the pretrained embeddings; with ``"pretrained-finetuned"`` the encoders keep
training (as in the authors' code) and the targets are the current encoders' embeddings,
detached; ``"joint"`` skips the pretraining (one stage, detached targets).

Differences from the paper: the missing modalities' *embeddings* are zeroed (the paper zeroes
the raw input and encodes it), so absent rows are never read; encoders are those of each
modality's kind; the autoencoders use LayerNorm and GELU; imagination is supervised only on
the hidden slots and the cycle only on the visible slots (the authors' code regresses the
whole concatenation, visible slots towards the embedding of a zero input); the authors' final
"transition" MLP after the cascade is left out; the pretraining sees the training data with
its own missingness, not complete samples only; the random subset is drawn per sample and per
step (``simulate_missing`` < 1 leaves some samples whole, which the paper never does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import (
    MethodOutput,
    MissingModalityModel,
    check_choice,
    check_common,
    check_range,
)
from mlmm.methods.registry import register_method
from mlmm.nn import ConcatFusion, MLPHead, build_encoder, encode_modality
from mlmm.nn.embedding_completion import CascadeResidualAutoencoder, masked_mse
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory

ENCODER_TRAINING = ("pretrained-frozen", "pretrained-finetuned", "joint")
CLASSIFIER_INPUTS = ("latents", "completed")


def hide_random_subset(
    present: torch.Tensor, probability: float = 1.0, max_draws: int = 64
) -> torch.Tensor:
    """Simulate a missing condition per row: the modalities left visible, ``[B, M]`` bool.

    Each row with at least two present modalities is, with ``probability``, given a uniformly
    random non-empty proper subset of its present modalities to hide (so at least one stays
    visible and at least one is hidden); other rows stay as they are. Uses the global torch
    random state (seeded by the trainer).
    """
    B, M = present.shape
    n_present = present.sum(dim=1)  # [B]
    todo = (n_present >= 2) & (torch.rand(B, device=present.device) < probability)  # [B]
    hidden = torch.zeros_like(present)  # [B, M]
    # rejection sampling: a fair coin per present modality, redrawn until the subset is valid,
    # is uniform over the valid subsets; each draw succeeds with probability >= 1/2
    for _ in range(max_draws):
        if not todo.any():
            break
        draw = present & (torch.rand(B, M, device=present.device) < 0.5)  # [B, M]
        n_drawn = draw.sum(dim=1)
        valid = todo & (n_drawn > 0) & (n_drawn < n_present)
        hidden = torch.where(valid.unsqueeze(1), draw, hidden)
        todo = todo & ~valid
    if todo.any():  # after max_draws failures (probability < 2**-64 per row): hide one
        score = torch.rand(B, M, device=present.device).masked_fill(~present, -1.0)
        one = torch.zeros_like(present)
        one[torch.arange(B, device=present.device), score.argmax(dim=1)] = True
        hidden = torch.where(todo.unsqueeze(1), one, hidden)
    return present & ~hidden


class _EncoderPretraining(MissingModalityModel):
    """Stage 1 of MMIN: the encoders and a classifier on the concatenated embeddings (zeros
    for absent modalities), trained with the task loss. Shares its modules with the MMIN."""

    method_name = "mmin"

    def __init__(self, parent: MMIN) -> None:
        super().__init__(parent.specs, parent.task)
        self.encoders = parent.encoders
        self.head = parent.pretrain_head
        self.concat = ConcatFusion()

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        embeddings = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]
        return self.output(batch, self.head(self.concat(embeddings, present)))


@register_method(
    "mmin",
    family="representation",
    subtype="generation",
    paper="Zhao, Li & Jin, MMIN, ACL 2021",
)
class MMIN(MissingModalityModel):
    """Missing Modality Imagination Network: a cascade residual autoencoder imagines the
    missing modalities' embeddings; a backward one maps them back (cycle consistency).

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    embed_dim : int, default 32
        Size of each modality's embedding (the CRA works on ``M * embed_dim``).
    hidden : int, default 128
        Width of the encoders', autoencoders' and classifier's hidden layers.
    depth : int, default 1
        Hidden layers in each encoder and in the classifier.
    dropout : float, default 0.3
        Dropout in the encoders and the classifier (none inside the autoencoders, as the
        authors' code).
    n_blocks : int, default 3
        Autoencoders in each cascade (the paper's scripts use 5).
    bottleneck : int, default 32
        Latent size of each autoencoder; the classifier reads ``n_blocks * bottleneck``
        features with ``classifier_input="latents"``.
    forward_weight : float, default 4.0
        Weight of the forward imagination loss (MSE to the hidden modalities' true
        embeddings); 4.0 as in the authors' IEMOCAP script.
    cycle_weight : float, default 2.0
        Weight of the backward (cycle) imagination loss; 2.0 as in the authors' script.
        0 turns the backward module off.
    simulate_missing : float, default 1.0
        Probability that a training sample with two or more present modalities gets a
        simulated missing condition (a uniformly random non-empty proper subset of its present
        modalities hidden). 1.0 as the paper, which trains on missing conditions only.
    classifier_input : {"latents", "completed"}, default "latents"
        The joint representation the classifier reads: the concatenated bottlenecks of the
        forward cascade (the paper), or the completed embeddings (visible ones as encoded,
        missing ones imagined), ``M * embed_dim``.
    encoder_training : str, default "pretrained-frozen"
        ``"pretrained-frozen"``: pretrain the encoders (stage 1), then freeze them in the MMIN
        stage (in evaluation mode, so without dropout); ``"pretrained-finetuned"``: pretrain,
        then keep training them;
        ``"joint"``: one stage, everything trained together. Targets of the imagination are the
        encoders' embeddings, detached.

    Attributes
    ----------
    encoders : nn.ModuleDict
        One encoder per modality.
    imagination, backward_imagination : CascadeResidualAutoencoder
        The forward and backward imagination modules, on ``M * embed_dim`` vectors.
    classifier : MLPHead
        Reads the joint representation (see ``classifier_input``).
    pretrain_head : MLPHead or None
        Stage-1 classifier on the concatenated embeddings (None with ``"joint"``); unused at
        prediction time.

    The output's ``embedding`` is the classifier's input; ``extras["completed"]`` holds the
    completed embeddings ``[B, M, embed_dim]`` (visible ones as encoded, the others imagined).

    References
    ----------
    J. Zhao, R. Li, Q. Jin. "Missing Modality Imagination Network for Emotion Recognition with
    Uncertain Missing Modalities." ACL-IJCNLP 2021.
    doi:10.18653/v1/2021.acl-long.203

    L. Tran, X. Liu, J. Zhou, R. Jin. "Missing Modalities Imputation via Cascaded Residual
    Autoencoder." CVPR 2017.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> model = mlmm.create_method("mmin", ds.specs, ds.task)
    >>> out = model(mlmm.MultimodalBatch.from_dataset(ds))
    >>> out.embedding.shape, out.extras["completed"].shape, sorted(out.aux_losses)
    (torch.Size([200, 96]), torch.Size([200, 3, 32]), ['cycle', 'imagination'])
    """

    search_space = {
        "embed_dim": Int(16, 128, log=True),
        "hidden": Int(64, 256, log=True),
        "dropout": Float(0.0, 0.5),
        "n_blocks": Int(1, 4),
        "bottleneck": Int(8, 64, log=True),
        "forward_weight": Float(0.5, 10.0, log=True),
        "cycle_weight": Float(0.5, 10.0, log=True),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        embed_dim: int = 32,
        hidden: int = 128,
        depth: int = 1,
        dropout: float = 0.3,
        n_blocks: int = 3,
        bottleneck: int = 32,
        forward_weight: float = 4.0,
        cycle_weight: float = 2.0,
        simulate_missing: float = 1.0,
        classifier_input: str = "latents",
        encoder_training: str = "pretrained-frozen",
    ) -> None:
        super().__init__(specs, task)
        check_common(embed_dim=embed_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("n_blocks", n_blocks, 1, integer=True)
        check_range("bottleneck", bottleneck, 1, integer=True)
        check_range("forward_weight", forward_weight, 0)
        check_range("cycle_weight", cycle_weight, 0)
        check_range("simulate_missing", simulate_missing, 0, 1)
        check_choice("classifier_input", classifier_input, CLASSIFIER_INPUTS)
        check_choice("encoder_training", encoder_training, ENCODER_TRAINING)
        self.embed_dim, self.hidden, self.depth, self.dropout = embed_dim, hidden, depth, dropout
        self.n_blocks, self.bottleneck = n_blocks, bottleneck
        self.forward_weight, self.cycle_weight = forward_weight, cycle_weight
        self.simulate_missing = simulate_missing
        self.classifier_input, self.encoder_training = classifier_input, encoder_training

        joint_dim = len(self.specs) * embed_dim
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, embed_dim, hidden, depth, dropout) for s in self.specs}
        )
        self.imagination = CascadeResidualAutoencoder(joint_dim, n_blocks, bottleneck, hidden)
        self.backward_imagination = CascadeResidualAutoencoder(
            joint_dim, n_blocks, bottleneck, hidden
        )
        classifier_dim = n_blocks * bottleneck if classifier_input == "latents" else joint_dim
        self.classifier = MLPHead(classifier_dim, task.output_dim, hidden, depth, dropout)
        self.pretrain_head = (
            None
            if encoder_training == "joint"
            else MLPHead(joint_dim, task.output_dim, hidden, depth, dropout)
        )

    # ------------------------------------------------------------------ training
    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> list[TrainHistory]:
        """Stage ``"pretrain"`` (encoders + concatenation classifier), then stage
        ``"imagination"`` (MMIN); one stage with ``encoder_training="joint"``."""
        if self.encoder_training == "joint":
            return [trainer.fit_module(self, train, val, stage="imagination")]
        pretrain = trainer.fit_module(_EncoderPretraining(self), train, val, stage="pretrain")
        frozen = self.encoder_training == "pretrained-frozen"
        self.set_frozen(frozen, "encoders")
        try:
            imagination = trainer.fit_module(self, train, val, stage="imagination")
        finally:
            self.set_frozen(False, "encoders")
        return [pretrain, imagination]

    # ------------------------------------------------------------------ forward
    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        B, M = present.shape
        embeddings = torch.stack(
            [encode_modality(self.encoders[m], batch, m) for m in self.modalities], dim=1
        )  # [B, M, D]; absent rows are computed on zeros and never used
        visible = present
        if self.training and self.simulate_missing > 0:
            visible = hide_random_subset(present, self.simulate_missing)  # [B, M]
        hidden = present & ~visible  # [B, M]: present, hidden by the simulation
        slots = visible.unsqueeze(-1)  # [B, M, 1]
        observed = torch.where(slots, embeddings, torch.zeros_like(embeddings))  # [B, M, D]
        imagined, latents = self.imagination(observed.flatten(1))  # [B, M*D], [B, n*bottleneck]
        imagined = imagined.view(B, M, -1)  # [B, M, D]
        completed = torch.where(slots, embeddings, imagined)  # [B, M, D]
        features = latents if self.classifier_input == "latents" else completed.flatten(1)
        prediction = self.classifier(features)

        aux: dict[str, torch.Tensor] = {}
        if batch.target is not None:
            # the true embeddings supervise, they are not pulled towards the imagination
            truth = embeddings.detach()  # [B, M, D]
            aux["imagination"] = self.forward_weight * masked_mse(imagined, truth, hidden)
            if self.cycle_weight > 0:
                # backward imagination: from the imagined missing part alone back to the
                # visible embeddings, on rows where something is missing
                missing_part = torch.where(slots, torch.zeros_like(imagined), imagined)
                recovered, _ = self.backward_imagination(missing_part.flatten(1))  # [B, M*D]
                rows = (~visible).any(dim=1, keepdim=True)  # [B, 1]
                aux["cycle"] = self.cycle_weight * masked_mse(
                    recovered.view(B, M, -1), truth, visible & rows
                )
        return self.output(
            batch, prediction, aux_losses=aux, embedding=features, completed=completed
        )
