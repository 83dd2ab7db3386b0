"""One kernel logistic regression per modality (Nyström RBF features), fused by the product rule.

Each modality's classifier is trained on the samples that have it, as in
``per-modality-logistic``, but on Nyström approximations of an RBF kernel (C. K. I. Williams,
M. Seeger, "Using the Nyström Method to Speed Up Kernel Machines", NIPS 13, 2001), so each
view's decision boundary can bend; the present modalities' posteriors are combined by the
product rule (J. Kittler, M. Hatef, R. P. W. Duin, J. Matas, "On combining classifiers", IEEE
TPAMI 20(3):226-239, 1998, doi:10.1109/34.667881), which is the Bayes posterior given the
present modalities when they are independent given the class and each view's classifier is
calibrated:

    log p(y | x_S) = log p(y) + sum_{m in S} [log p_m(y | x_m) - log p_m(y)] + const,

where ``p_m(y)`` is the class frequency among the training samples that have modality ``m``
(so a class prior that differs by presence pattern is not counted twice). ``kernel="linear"``
uses the standardised inputs themselves: per-modality logistic regressions fused by summed
log-probabilities. Regression averages per-modality kernel ridge regressions. Fitted once (the
Nyström map by an eigendecomposition, the models by scikit-learn's ``LogisticRegression`` or
``Ridge``); prediction runs in torch.

Deliberate differences: the product rule assumes the modalities independent given the class;
they rarely are, so its probabilities are over-confident when several correlated modalities
are present (``method="auto"`` weighs it against the other members on out-of-fold log loss).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MethodOutput, check_range
from mlmm.methods.reference._classical import (
    ClassicalReference,
    fit_linear,
    frozen,
    log_class_frequencies,
)
from mlmm.methods.registry import register_method
from mlmm.tune.space import Categorical, Float

KERNELS = ("rbf", "linear")
#: Seeds the landmark draw (a modality with more than ``n_components`` training rows).
LANDMARK_SEED = 0


def nystroem(
    x: np.ndarray, gamma: float, n_components: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Nyström map of the RBF kernel ``exp(-gamma |x - x'|^2)`` from the rows ``x [N, D]``.

    Draws ``L = min(n_components, N)`` landmark rows without replacement and returns them
    ``[L, D]`` with the projection ``P [R, L]`` such that ``k(x, landmarks) @ P.T`` are the
    features, ``P = S^(-1/2) U^T`` from the eigendecomposition ``U S U^T`` of the landmarks'
    kernel matrix. Eigenvalues below ``1e-6`` times the largest are dropped (rank ``R <= L``):
    their directions carry no signal and ``1 / sqrt`` of them would swamp float32 arithmetic.
    """
    rows = np.sort(rng.choice(len(x), size=min(n_components, len(x)), replace=False))
    landmarks = x[rows]  # [L, D]
    sq = (landmarks**2).sum(1)
    gram = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * landmarks @ landmarks.T, 0))
    values, vectors = np.linalg.eigh(gram)  # ascending
    keep = values > 1e-6 * values[-1]
    projection = (vectors[:, keep] / np.sqrt(values[keep])).T  # [R, L]
    return landmarks, projection


@register_method(
    "per-modality-kernel",
    family="reference",
    subtype="classical",
    paper="per-modality Nyström RBF kernel logistic regressions, product rule (Kittler et al., 1998)",
)
class PerModalityKernel(ClassicalReference):
    """A kernel logistic regression per modality, fitted where it is present; product rule.

    For every modality ``m``, :meth:`fit` draws up to ``n_components`` landmark rows among the
    training samples that have ``m`` (a uniform draw from a fixed stream, so the trainer's seed
    changes nothing; :func:`nystroem`), maps the flattened
    inputs to the Nyström features of the RBF kernel ``exp(-gamma / D_m * |x - x'|^2)``
    (``D_m`` the modality's width; the inputs are standardised) and fits scikit-learn's
    ``LogisticRegression`` (L2 penalty ``C``) on them (regression: ``Ridge(alpha=1 / (2 C))``).
    ``forward`` returns ``log p(y) + sum_m [log p_m(y | x_m) - log p_m(y)]`` over the sample's
    present modalities (regression: the mean of their predictions).

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    C : float, default 10.0
        Inverse L2 penalty strength of every per-modality model, as in scikit-learn.
    gamma : float, default 0.5
        RBF width, relative: the kernel is ``exp(-gamma / D_m * |x - x'|^2)`` on standardised
        inputs (``gamma=1`` is scikit-learn's ``gamma="scale"`` for unit-variance features).
    kernel : {"rbf", "linear"}, default "rbf"
        ``"linear"``: logistic regressions on the inputs themselves (no landmarks).
    n_components : int, default 500
        Most landmarks per modality (all training rows that have the modality when fewer).
    max_iter : int, default 1000
        Most lbfgs iterations per model (classification).

    Attributes
    ----------
    landmarks : nn.ParameterDict
        ``landmarks[name]`` ``[L, D_m]``: the Nyström landmark rows (rbf; unused rows zero).
    projection : nn.ParameterDict
        ``projection[name]`` ``[L, L]``: Nyström's ``K_LL^(-1/2)``; features are
        ``k(x, landmarks) @ projection.T`` (rbf).
    coef, intercept : nn.ParameterDict
        ``[K, L]`` (rbf) or ``[K, D_m]`` (linear), and ``[K]``, per modality.
    log_prior : nn.Parameter
        ``[M + 1, K]``: log class frequencies among the training rows that have each modality,
        and last among all training rows (the product rule's correction).

    References
    ----------
    C. K. I. Williams, M. Seeger. "Using the Nyström Method to Speed Up Kernel Machines."
    Advances in Neural Information Processing Systems 13, 2001.

    J. Kittler, M. Hatef, R. P. W. Duin, J. Matas. "On combining classifiers." IEEE
    Transactions on Pattern Analysis and Machine Intelligence 20(3), 226-239, 1998.
    doi:10.1109/34.667881.

    Examples
    --------
    >>> import mlmm
    >>> ds = mlmm.load_dataset("synthetic", n_samples=200)
    >>> split = mlmm.train_val_test_split(ds, seed=0)
    >>> train, _ = mlmm.simulate(split.train, "mcar:0.5", seed=0)
    >>> model = mlmm.create_method("per-modality-kernel", ds.specs, ds.task, n_components=50)
    >>> trained = mlmm.Trainer(progress=False).fit(model, train, split.val)
    >>> trained.predict_proba(split.test).shape
    (40, 4)
    """

    search_space = {
        "C": Float(1e-2, 100.0, log=True),
        "gamma": Float(0.05, 5.0, log=True),
        "kernel": Categorical(KERNELS),
    }

    uses_seed = False  # landmarks from a fixed stream, lbfgs and ridge are deterministic

    def __init__(
        self,
        specs: list[ModalitySpec],
        task: TaskSpec,
        C: float = 10.0,
        gamma: float = 0.5,
        kernel: str = "rbf",
        n_components: int = 500,
        max_iter: int = 1000,
    ) -> None:
        super().__init__(specs, task)
        check_range("C", C, 0, low_inclusive=False)
        check_range("gamma", gamma, 0, low_inclusive=False)
        check_range("n_components", n_components, 1, integer=True)
        check_range("max_iter", max_iter, 1, integer=True)
        if kernel not in KERNELS:
            raise MlmmError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        self.C, self.gamma, self.kernel = C, gamma, kernel
        self.n_components, self.max_iter = n_components, max_iter
        self.n_models = len(self.specs)  # one classifier per modality, reported as a cost
        k = task.output_dim
        widths = {s.name: math.prod(s.shape) for s in self.specs}
        features = {n: (n_components if kernel == "rbf" else d) for n, d in widths.items()}
        if kernel == "rbf":
            self.landmarks = nn.ParameterDict(
                {n: frozen(torch.zeros(n_components, d)) for n, d in widths.items()}
            )
            self.projection = nn.ParameterDict(
                {n: frozen(torch.zeros(n_components, n_components)) for n in widths}
            )
        self.coef = nn.ParameterDict({n: frozen(torch.zeros(k, f)) for n, f in features.items()})
        self.intercept = nn.ParameterDict({n: frozen(torch.zeros(k)) for n in widths})
        self.log_prior = frozen(torch.zeros(len(self.specs) + 1, k))

    def features(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Modality ``name``'s model inputs for flattened standardised ``x`` ``[B, D_m]``."""
        if self.kernel == "linear":
            return x
        landmarks = self.landmarks[name]  # [L, D_m]
        sq = (x * x).sum(1, keepdim=True) + (landmarks * landmarks).sum(1) - 2 * x @ landmarks.T
        gram = torch.exp(-self.gamma / x.shape[1] * sq.clamp_min(0.0))  # [B, L]
        return gram @ self.projection[name].T  # [B, L]

    @torch.no_grad()
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Fit every modality's model on the training samples that have the modality."""
        # a fixed stream, not the trainer's seed: the landmarks are a uniform sample either
        # way, and a model that does not depend on the seed is easier to compare across seeds
        rng = np.random.default_rng(LANDMARK_SEED)
        target = train.target.cpu().numpy()
        classification = self.task.is_classification
        for j, name in enumerate(self.modalities):
            rows = train.present[:, j].cpu().numpy()  # [N]
            if not rows.any():  # the trainer refuses such data already
                raise MlmmError(f"modality {name!r} is absent from every training sample")
            x = train.inputs[name].flatten(1)[torch.from_numpy(rows).to(train.present.device)]
            if self.kernel == "rbf":
                landmarks, projection = nystroem(
                    x.double().cpu().numpy(), self.gamma / x.shape[1], self.n_components, rng
                )
                self.landmarks[name].zero_()
                self.projection[name].zero_()
                count, rank = len(landmarks), len(projection)
                self.landmarks[name][:count] = torch.from_numpy(landmarks)
                self.projection[name][:rank, :count] = torch.from_numpy(projection)
            phi = self.features(name, x.to(self.coef[name].dtype)).double().cpu().numpy()
            coef, intercept = fit_linear(
                phi, target[rows], self.task, self.C, self.max_iter, random_state
            )
            self.coef[name].copy_(torch.from_numpy(coef))
            self.intercept[name].copy_(torch.from_numpy(intercept))
            if classification:
                prior = log_class_frequencies(target[rows], self.task.n_classes)
                self.log_prior[j].copy_(torch.from_numpy(prior))
        if classification:
            self.log_prior[-1].copy_(
                torch.from_numpy(log_class_frequencies(target, self.task.n_classes))
            )

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        outputs = []
        for j, name in enumerate(self.modalities):
            x = batch.inputs[name].flatten(1)  # [B, D_m]
            x = torch.where(present[:, j : j + 1], x, 0.0)  # absent rows are never read
            outputs.append(self.features(name, x) @ self.coef[name].T + self.intercept[name])
        outputs = torch.stack(outputs, dim=1)  # [B, M, K]
        weight = present.to(outputs.dtype).unsqueeze(2)  # [B, M, 1]
        if not self.task.is_classification:
            # a sample with nothing present (never one the trainer or TrainedModel passes)
            # gets the mean over every modality, on zero inputs
            use = torch.where(present.any(1, keepdim=True), present, True)  # [B, M]
            share = use.to(outputs.dtype) / use.sum(1, keepdim=True)  # [B, M]
            prediction = (share.unsqueeze(2) * outputs).sum(1)  # [B, 1]
        else:  # product rule; nothing present: the training prior
            evidence = outputs.log_softmax(dim=2) - self.log_prior[:-1]  # [B, M, K]
            prediction = self.log_prior[-1] + (weight * evidence).sum(1)  # [B, K]
        return self.output(batch, prediction, per_modality=outputs)
