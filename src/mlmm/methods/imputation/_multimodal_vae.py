"""The body ``mvae`` and ``mopoe`` share: a multimodal VAE that fills absent inputs, then a
classifier on the completed inputs. Not a method (the leading ``_`` keeps it out of method
discovery); each method subclasses it and defines its own ELBO in ``elbo_losses``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import MethodOutput, MissingModalityModel, check_common, check_range
from mlmm.nn import modality_dropout
from mlmm.nn.multimodal_vae import InputLevelHead, MultimodalVAE


class MultimodalVAEImputer(MissingModalityModel):
    """A :class:`~mlmm.nn.multimodal_vae.MultimodalVAE` generates absent inputs; an
    :class:`~mlmm.nn.multimodal_vae.InputLevelHead` classifies the completed inputs.

    Training adds the subclass's ELBO terms (computed on every present modality) to the task
    loss, and hides random present modalities from the classifier (``modality_dropout``) so it
    learns on generated inputs. The generated inputs are computed without gradient: the task
    loss trains the classifier, and the VAE stays a generator of inputs. Subclasses validate
    and store their own extra hyperparameters and implement :meth:`elbo_losses`.
    """

    imputes = True
    revision = 2
    revision_notes = {
        2: "on variable-length sequences only: impute() no longer encodes the padded steps "
        "(predict() was already unaffected; the training ELBO skips them too)",
    }

    def __init__(
        self,
        specs: Sequence[ModalitySpec],
        task: TaskSpec,
        latent_dim: int,
        hidden: int,
        depth: int,
        dropout: float,
        beta: float,
        elbo_weight: float,
        modality_dropout: float,
    ) -> None:
        super().__init__(specs, task)
        check_common(latent_dim=latent_dim, hidden=hidden, depth=depth, dropout=dropout)
        check_range("beta", beta, 0)
        check_range("elbo_weight", elbo_weight, 0, low_inclusive=False)
        check_common(modality_dropout=modality_dropout)
        self.latent_dim, self.hidden, self.depth, self.dropout = latent_dim, hidden, depth, dropout
        self.beta, self.elbo_weight, self.modality_dropout = beta, elbo_weight, modality_dropout
        self.vae = MultimodalVAE(self.specs, latent_dim, hidden, depth)
        self.classifier = InputLevelHead(
            self.specs, task.output_dim, hidden, depth, dropout, latent_dim
        )

    def changes_since(self, revision: int) -> list[str]:
        """Revision 2 changed :meth:`impute` on variable-length sequences only: a model without
        a sequence modality answers as it did."""
        has_sequence = any(s.kind == "sequence" for s in self.specs)
        return super().changes_since(revision) if has_sequence else []

    @abc.abstractmethod
    def elbo_losses(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        lengths: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{"reconstruction": ..., "kl": ...}``: the negative ELBO per input feature; the
        padded steps of variable-length sequences (``lengths``) are neither encoded nor
        reconstructed."""

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        # the ELBO needs random draws: training only, so prediction stays deterministic
        aux = self.elbo_losses(batch.inputs, present, batch.lengths) if self.training else {}
        seen = present
        if self.training and self.modality_dropout > 0:
            seen = modality_dropout(present, self.modality_dropout)  # [B, M]
        with torch.no_grad():  # the task loss trains the classifier, not the generator
            completed, joint_mu = self.vae.complete(batch.inputs, seen, batch.lengths)
        prediction = self.classifier(completed, seen, batch.lengths)  # [B, K]
        return self.output(batch, prediction, aux_losses=aux, embedding=joint_mu)

    @torch.no_grad()
    def impute(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        """Present rows unchanged; absent rows decoded from the mean of the product of the
        present modalities' experts and the prior."""
        completed, _ = self.vae.complete(batch.inputs, self.present_mask(batch), batch.lengths)
        return completed
