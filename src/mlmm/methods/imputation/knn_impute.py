"""k-NN imputation: fill each absent modality from the nearest training samples that have it.

Retrieval-based composition, as in the k-NN imputation of UIMC (M. Xie, Z. Han, C. Zhang,
Y. Bai, Q. Hu, "Exploring and Exploiting Uncertainty for Incomplete Multi-View
Classification", CVPR 2023, arXiv:2304.05165) and KNNimpute (O. Troyanskaya, M. Cantor,
G. Sherlock, P. Brown, T. Hastie, R. Tibshirani, D. Botstein, R. B. Altman, "Missing value
estimation methods for DNA microarrays", Bioinformatics 17(6):520-525, 2001,
doi:10.1093/bioinformatics/17.6.520). The standardised training inputs are kept as a bank;
for every absent modality of a sample, the ``k`` nearest training samples that have that
modality, at a distance measured on the modalities both samples have present, give their
distance-weighted average. The completed inputs go to ``mean-impute``'s classifier.

Deliberate differences from UIMC: UIMC retrieves neighbours separately in each available
view, fits a Gaussian to the neighbours' values of the missing view, draws 30 imputations and
takes the majority vote of its evidential classifier over them, and at training time draws
missing views from class-conditional Gaussians. Here one neighbour set per (sample, missing
modality) is found on all shared modalities jointly (as KNNimpute does with shared
coordinates), its weighted *average* is the single imputation, training uses the same
retrieval as test time (minus the sample itself), and the classifier is an MLP, not an
evidential fusion. A training sample sharing no present modality with the query is never a
neighbour; when no training sample qualifies, the modality is filled with its training mean
(as in ``mean-impute``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.methods.base import check_choice, check_range
from mlmm.methods.imputation.mean_impute import MeanImpute
from mlmm.methods.registry import register_method
from mlmm.nn.retrieval import BankLengths, SampleBank, knn_average, overlap_distances
from mlmm.tune.space import Categorical, Float, Int

if TYPE_CHECKING:
    from mlmm.data.dataset import MultimodalDataset


@register_method(
    "knn-impute",
    family="imputation",
    subtype="composition",
    paper="k-NN retrieval (Xie et al., UIMC, CVPR 2023; Troyanskaya et al., 2001)",
)
class KnnImpute(MeanImpute):
    """Impute absent modalities from the k nearest training samples, then classify.

    The standardised training inputs and their presence mask are stored as buffers (saved in
    the model's weights). For a sample missing modality ``t``, candidates are the training
    samples that have ``t`` and share at least one present modality with the sample; the
    distance is the root-mean-square per-feature difference over the shared modalities (each
    modality weighted equally, see :func:`mlmm.nn.retrieval.overlap_distances`). The ``k``
    nearest candidates' values of ``t`` are averaged, weighted by ``1 / distance`` or
    uniformly. No qualifying candidate: the training mean. During training, a training sample
    is never its own neighbour: candidates identical to the query on every shared modality
    (distance exactly 0) are excluded, which matters when ``modality_dropout`` hides a
    modality the sample has. At prediction time an exact match takes the whole weight.

    Cost: every imputed sample is compared with every training sample (candidates ranked by
    one matrix product per modality, the chosen ones' distances recomputed exactly), so time
    grows with ``N_train x`` the total input width, and the artifact holds the standardised
    training set.

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    k : int, default 10
        Neighbours averaged per absent modality (fewer when fewer qualify).
    weighting : {"distance", "uniform"}, default "distance"
        ``"distance"``: weights ``1 / d``; ``"uniform"``: plain mean of the neighbours.
    hidden : int, default 256
        Width of the classifier's hidden layers (and of the sequence/image encoders).
    depth : int, default 2
        Hidden layers of the classifier.
    dropout : float, default 0.2
    embed_dim : int, default 64
        Embedding size for sequence and image modalities (vectors are not encoded).
    modality_dropout : float, default 0.0
        Probability of hiding (then imputing) each present modality during training.
    indicators : bool, default False
        Also feed the presence mask to the classifier (the missing-indicator method).

    Attributes
    ----------
    bank : SampleBank
        The standardised training samples (``bank.rows.<name>`` ``[N, D]``, ``bank.present``
        ``[N, M]``); empty until :meth:`fit_imputer` runs.
    bank_lengths : BankLengths
        One int64 buffer per ``sequence`` modality, ``bank_lengths.<name>`` ``[N]``: the bank
        samples' valid steps when the training data had variable lengths for it, else empty.
        An absent variable-length sequence is then imputed step by step from the neighbours
        that have the step, with the longest neighbour's length (:meth:`impute_with_lengths`).
    train_mean, train_length
        Per-modality training means and imputed sequence lengths, the fallback fill (as in
        ``mean-impute``).
    encoders, head
        The classifier, as in ``mean-impute``.

    References
    ----------
    M. Xie, Z. Han, C. Zhang, Y. Bai, Q. Hu. "Exploring and Exploiting Uncertainty for
    Incomplete Multi-View Classification." CVPR 2023. arXiv:2304.05165.

    O. Troyanskaya, M. Cantor, G. Sherlock, P. Brown, T. Hastie, R. Tibshirani, D. Botstein,
    R. B. Altman. "Missing value estimation methods for DNA microarrays." Bioinformatics
    17(6), 520-525, 2001. doi:10.1093/bioinformatics/17.6.520.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    >>> model = mlmm.create_method("knn-impute", ds.specs, ds.task, k=5)
    >>> trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, train, split.val)
    >>> len(trained.model.bank) == int(train.observed.any(axis=1).sum())  # the training samples
    True
    >>> filled = trained.model.impute(mlmm.MultimodalBatch.from_dataset(split.test))
    >>> sorted(filled) == sorted(ds.modality_names)
    True
    """

    supports_data_parallel = False
    data_parallel_reason = (
        "its bank of training samples must hold every process's rows "
        "(kNN needs an all-gather mlmm does not do)"
    )
    search_space = {
        "k": Int(1, 50, log=True),
        "weighting": Categorical(["distance", "uniform"]),
        "hidden": Int(64, 512, log=True),
        "depth": Int(1, 3),
        "dropout": Float(0.0, 0.6),
        "modality_dropout": Float(0.0, 0.5),
    }

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        k: int = 10,
        weighting: str = "distance",
        hidden: int = 256,
        depth: int = 2,
        dropout: float = 0.2,
        embed_dim: int = 64,
        modality_dropout: float = 0.0,
        indicators: bool = False,
    ) -> None:
        super().__init__(
            specs, task, hidden, depth, dropout, embed_dim, modality_dropout, indicators
        )
        check_range("k", k, 1, integer=True)
        check_choice("weighting", weighting, ("distance", "uniform"))
        self.k, self.weighting = k, weighting
        self.bank = SampleBank(self.specs)
        self.bank_lengths = BankLengths(self.specs, "knn-impute", "fit_imputer")

    @torch.no_grad()
    def fit_imputer(self, train: MultimodalDataset) -> None:
        """Store the training means and the standardised training samples (the bank) with
        the valid steps of their variable-length sequences (``bank_lengths``)."""
        super().fit_imputer(train)
        inputs = {name: torch.from_numpy(x) for name, x in train.inputs.items()}
        self.bank.fill(inputs, torch.from_numpy(train.observed))
        self.bank_lengths.fill(
            None
            if train.lengths is None
            else {n: torch.from_numpy(v) for n, v in train.lengths.items()}
        )

    @torch.no_grad()
    def impute(self, batch: MultimodalBatch) -> dict[str, torch.Tensor]:
        """Every modality with absent rows filled from the nearest training samples (the
        training mean where none qualifies); present rows unchanged."""
        return self.impute_with_lengths(batch)[0]

    @torch.no_grad()
    def impute_with_lengths(
        self, batch: MultimodalBatch
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`impute`, and the valid steps ``[B]`` of each variable-length sequence.

        Present rows keep their lengths; an absent row filled from neighbours takes, at each
        step, the weighted average over the neighbours that have that step, and the longest
        neighbour's length; an absent row filled with the training mean takes its length
        (:meth:`MeanImpute.impute_with_lengths`). Every absent row is all steps in an artifact
        saved before these lengths were stored (empty buffers). Sequence modalities
        with neither ``batch.lengths`` nor stored lengths are left out.
        """
        present = self.present_mask(batch)
        # absent rows: the training mean and its length, the fallback
        filled, lengths = super().impute_with_lengths(batch)
        stepped = {name for name, steps in self.bank_lengths.named_buffers() if len(steps) > 0}
        for name in stepped - set(lengths):  # no batch lengths, no train_length (saved before)
            x = batch.inputs[name]  # [B, T, C]
            lengths[name] = torch.full(
                (x.shape[0],), x.shape[1], dtype=torch.int64, device=x.device
            )
        missing = ~present  # [B, M]
        if len(self.bank) == 0 or not missing.any():
            return filled, lengths
        inputs = batch.zero_padding().inputs  # raw distances: padding as the bank holds it
        screen = overlap_distances(inputs, present, self.bank)  # [B, N]
        for j, name in enumerate(self.modalities):
            rows = missing[:, j]  # [B]
            if not rows.any():
                continue
            values, found = knn_average(
                {m: x[rows] for m, x in inputs.items()},
                present[rows],
                self.bank,
                name,
                self.k,
                self.weighting,
                screen=screen[rows],
                exclude_identical=self.training,  # a training sample is not its own neighbour
            )  # [R, D], [R]
            if name in stepped:  # per step, over the neighbours that have the step
                share, imputed_steps = self._step_shares(inputs, present, screen, rows, name)
                values = torch.where(share > 0, values / share.clamp_min(1e-12), 0.0)
                steps = lengths[name].clone()
                steps[rows] = torch.where(found, imputed_steps, steps[rows])
                lengths[name] = steps
            x = filled[name].clone()  # [B, *shape]
            guess = torch.where(found.unsqueeze(1), values, x[rows].flatten(1))
            x[rows] = guess.to(x.dtype).reshape(-1, *x.shape[1:])
            filled[name] = x
        return filled, lengths

    def _step_shares(
        self,
        inputs: dict[str, torch.Tensor],
        present: torch.Tensor,
        screen: torch.Tensor,
        rows: torch.Tensor,
        name: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For the queries ``rows`` lacking ``name``: the neighbours' weight share holding
        each value ``[R, T * C]`` and the longest neighbour's length ``[R]``. The same
        neighbours and weights as the values' (the queries lack ``name``, so its rows enter no
        distance): a bank whose ``name`` rows are the valid-step masks."""
        spec = self.specs[self.modalities.index(name)]
        steps = self.bank_lengths.stored(name, len(self.bank))  # [N] (only stepped names come)
        valid = torch.arange(spec.shape[0], device=steps.device)[None, :] < steps[:, None]
        masks = SampleBank(self.specs).to(steps.device)
        masks.present = self.bank.present
        for m in self.modalities:
            masks.rows.register_buffer(m, self.bank.row(m))
        channels = valid.unsqueeze(-1).expand(-1, -1, spec.shape[1])  # [N, T, C]
        masks.rows.register_buffer(name, channels.reshape(len(steps), -1).float())
        share, _ = knn_average(
            {m: x[rows] for m, x in inputs.items()},
            present[rows],
            masks,
            name,
            self.k,
            self.weighting,
            screen=screen[rows],
            exclude_identical=self.training,
        )  # [R, T * C]
        held = share.reshape(-1, *spec.shape)[..., 0] > 0  # [R, T]: a neighbour has the step
        return share, held.sum(dim=1)
