"""Mean imputation: fill each absent modality with its training mean, then classify.

Unconditional mean imputation, the textbook baseline for missing data (R. J. A. Little and
D. B. Rubin, "Statistical Analysis with Missing Data", 3rd ed., Wiley, 2019,
doi:10.1002/9781119482260, sections 3.4 and 4.2), applied to whole modalities, with the
missing-indicator method (Little & Rubin, same book; M. P. Jones, "Indicator and
stratification methods for missing explanatory variables in multiple linear regression",
JASA 91(433):222-230, 1996, doi:10.1080/01621459.1996.10476680): the classifier also sees
which modalities were observed. The classifier is that of ``zero-impute`` (input-level fusion
of the filled modalities, an MLP head).

What "mean" means here, honestly: the trainer standardises every input on the present
entries of the training split, so in the model's input space the training mean of each
vector feature is 0 (up to float rounding) and filling it with the mean *is* zero filling.
For sequences and images the standardiser works per channel, so the per-position training
mean (the mean sequence or image) is not zero, and this method fills with it. For a
variable-length sequence (data with ``lengths``) the mean at each step is taken over the
present samples that have that step, never over padding, and the imputed sequence is as long
as the longest present training sequence (``knn-impute``'s rule with every present training
sample as an equally weighted neighbour). With ``indicators=False`` and vector modalities
only, ``mean-impute`` is ``zero-impute``; its default, ``indicators=True``, is what sets it
apart. Its imputations are the reference of the imputation score
(:func:`mlmm.eval.imputation_scores`): a normalised RMSE of about 1 by construction, which
any imputer worth its cost should beat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput
from mlmm.methods.imputation.zero_impute import ZeroImpute
from mlmm.methods.registry import register_method
from mlmm.nn import MLPHead, encode_padded, modality_dropout
from mlmm.nn.retrieval import BankLengths
from mlmm.tune.space import Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.train.trainer import Trainer, TrainHistory


@register_method(
    "mean-impute",
    family="imputation",
    subtype="composition",
    paper="mean imputation + missing indicators (Little & Rubin, 2019)",
)
class MeanImpute(ZeroImpute):
    """Fill absent modalities with their training mean, add missingness indicators, classify.

    Before the classifier trains, :meth:`fit_imputer` stores the mean of every input position
    over the training samples where its modality is present (0 for vector features, which
    the trainer standardises). For a variable-length sequence the mean of a step is over the
    present samples that have the step (their padding is not data), a step no training
    sequence reaches is 0, and the imputed sequence's length is the longest present training
    sequence's (``train_length``): it is encoded over those steps, as a recorded sequence is
    over its own. :meth:`impute` fills absent rows with the mean; the classifier
    (``zero-impute``'s: vectors as they are, sequences and images through their kind's
    encoder, an MLP head) reads the filled modalities and, with ``indicators=True``, the
    ``[B, M]`` presence mask as M extra 0/1 inputs.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    hidden : int, default 256
        Width of the classifier's hidden layers (and of the sequence/image encoders).
    depth : int, default 2
        Hidden layers of the classifier.
    dropout : float, default 0.2
    embed_dim : int, default 64
        Embedding size for sequence and image modalities (vectors are not encoded).
    modality_dropout : float, default 0.0
        Probability of hiding each present modality during training (keeps at least one).
    indicators : bool, default True
        Feed the presence mask to the classifier (the missing-indicator method). False gives
        plain mean imputation, identical to ``zero-impute`` on vector modalities.

    Attributes
    ----------
    train_mean : nn.Module
        One buffer per modality, ``train_mean.<name>`` of the modality's shape: the training
        mean in standardised units (zeros until :meth:`fit_imputer` runs).
    train_length : BankLengths
        One int64 buffer per ``sequence`` modality, ``train_length.<name>``: ``[1]``, the
        imputed sequence's valid steps (the longest present training sequence's), when the
        training data had variable lengths for it; empty (every step, as for fixed-length
        data) otherwise.
    encoders : nn.ModuleDict
        Encoders of the sequence and image modalities.
    head : MLPHead
        The classifier on the concatenated filled inputs (and indicators).

    References
    ----------
    R. J. A. Little, D. B. Rubin. "Statistical Analysis with Missing Data." 3rd ed., Wiley,
    2019. doi:10.1002/9781119482260.

    M. P. Jones. "Indicator and stratification methods for missing explanatory variables in
    multiple linear regression." Journal of the American Statistical Association 91(433),
    222-230, 1996. doi:10.1080/01621459.1996.10476680.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> model = mlmm.create_method("mean-impute", ds.specs, ds.task)
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    >>> trained.predict_proba(split.test).shape
    (40, 4)
    """

    streams_data = False  # the imputer reads every training row (train.inputs)

    search_space = {
        "hidden": Int(64, 512, log=True),
        "depth": Int(1, 3),
        "dropout": Float(0.0, 0.6),
        "embed_dim": Int(16, 128, log=True),
        "modality_dropout": Float(0.0, 0.5),
    }

    imputes = True

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        hidden: int = 256,
        depth: int = 2,
        dropout: float = 0.2,
        embed_dim: int = 64,
        modality_dropout: float = 0.0,
        indicators: bool = True,
    ) -> None:
        super().__init__(specs, task, hidden, depth, dropout, embed_dim, modality_dropout)
        if not isinstance(indicators, bool):
            raise MlmmError(f"indicators must be True or False, got {indicators!r}")
        self.indicators = indicators
        if indicators:  # M more inputs than zero-impute's head reads
            width = self.head.net[0].in_features
            self.head = MLPHead(
                width + len(self.modalities), task.output_dim, hidden, depth, dropout
            )
        self.train_mean = nn.Module()
        for s in self.specs:
            self.train_mean.register_buffer(s.name, torch.zeros(s.shape))
        self.train_length = BankLengths(self.specs, self.method_name, "fit_imputer")

    # ------------------------------------------------------------------ imputer
    @torch.no_grad()
    def fit_imputer(self, train: MultimodalDataset) -> None:
        """Learn what fills absent rows from standardised training data (here: the means, and
        the imputed length of each variable-length sequence)."""
        imputed_lengths = {}
        for j, name in enumerate(self.modalities):
            present = train.observed[:, j]  # [N]
            rows = train.inputs[name][present]  # [N_present, *shape]
            if len(rows) == 0:  # the trainer refuses such data; the standardised mean is 0
                self.train_mean.get_buffer(name).zero_()  # (not an earlier fit's)
                continue
            steps = None if train.lengths is None else train.lengths.get(name)
            if steps is None:
                mean = rows.mean(axis=0, dtype="float64")
            else:  # per step, over the present samples that have the step
                steps = steps[present]  # [N_present]
                valid = np.arange(rows.shape[1])[None, :] < steps[:, None]  # [N_present, T]
                rows[~valid] = 0.0  # padding is not data; rows is a copy (no second one)
                total = rows.sum(axis=0, dtype="float64")  # [T, C]
                held = valid.sum(axis=0)[:, None]  # [T, 1]
                mean = np.divide(total, held, out=np.zeros_like(total), where=held > 0)  # [T, C]
                imputed_lengths[name] = torch.tensor([int(steps.max())])
            buffer = self.train_mean.get_buffer(name)
            buffer.copy_(torch.from_numpy(mean).to(device=buffer.device, dtype=buffer.dtype))
        self.train_length.fill(imputed_lengths)

    def fit(
        self, trainer: Trainer, train: MultimodalDataset, val: MultimodalDataset | None
    ) -> TrainHistory:
        """Fit the imputer on the training data, then train the classifier (shared loop)."""
        self.fit_imputer(train)
        return trainer.fit_module(self, train, val)

    def impute(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        """Every modality with absent rows set to the training mean; present rows unchanged."""
        return self.impute_with_lengths(batch)[0]

    def impute_with_lengths(
        self, batch: MultimodalBatch
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`impute`, and the valid steps ``[B]`` of each variable-length sequence.

        Present rows keep their lengths (all steps without ``batch.lengths``); absent rows
        take ``train_length``, or all steps when it is empty (fixed-length training data, or
        an artifact saved before it existed). Sequence modalities with neither
        ``batch.lengths`` nor ``train_length`` are left out (every step is real).

        The classifier reads this (:meth:`encode_filled`), and :meth:`impute` returns its
        inputs: a subclass that fills otherwise overrides this method (as ``knn-impute``
        does), not :meth:`impute`.
        """
        present = self.present_mask(batch)
        filled = {}
        for j, name in enumerate(self.modalities):
            x = batch.inputs[name]  # [B, *shape]
            keep = present[:, j].reshape(-1, *([1] * (x.dim() - 1)))
            filled[name] = torch.where(keep, x, self.train_mean.get_buffer(name).to(x.dtype))
        lengths = {}
        for name, _ in self.train_length.named_buffers():
            given = None if batch.lengths is None else batch.lengths.get(name)
            stored = self.train_length.stored(name, 1)  # [1], or None: every step
            if given is None and stored is None:  # fixed-length data: every step is real
                continue
            x = batch.inputs[name]  # [B, T, C]
            full = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device)
            recorded = full if given is None else given.to(full)
            imputed = full if stored is None else stored.to(full).expand_as(full)
            keep = present[:, self.modalities.index(name)]  # [B]
            lengths[name] = torch.where(keep, recorded, imputed)  # [B]
        return filled, lengths

    # ------------------------------------------------------------------ model
    def encode_filled(self, batch: MultimodalBatch) -> list[torch.Tensor]:
        """Each modality's part of the fused vector, absent rows imputed
        (:meth:`impute_with_lengths`): encoded where the modality has an encoder (a
        variable-length sequence over its valid steps, recorded or imputed), flattened
        otherwise."""
        filled, lengths = self.impute_with_lengths(batch)
        return [
            encode_padded(self.encoders[name], filled[name], lengths.get(name))
            if name in self.encoders
            else filled[name].flatten(1)
            for name in self.modalities
        ]

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)
        if self.training and self.modality_dropout > 0:
            present = modality_dropout(present, self.modality_dropout)
        batch = batch.with_present(present)
        parts = self.encode_filled(batch)
        if self.indicators:
            parts.append(present.to(parts[0].dtype))  # [B, M]
        fused = torch.cat(parts, dim=1)  # [B, sum of widths (+ M)]
        return self.output(batch, self.head(fused), embedding=fused)
