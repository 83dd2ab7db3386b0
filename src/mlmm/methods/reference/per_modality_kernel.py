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
``evidence_scale`` tempers the summed evidence by one factor ``beta`` (``"cv"``: chosen on
out-of-fold predictions of the training rows), and ``C="cv"`` chooses each view's penalty by
its own inner cross-validation (the eighth design round of ``method="auto"``, docs/auto.md)
from ``C_grid`` (the ninth round's option), jointly with the view's RBF width from
``gamma_grid`` where one is given (the tenth round's option).

``fusion="joint"`` (the eleventh round's option) trains the views together instead: ONE
multinomial logistic regression (regression: one ridge) on all training rows, on the
concatenation of every view's Nyström block (centred on its mean over the training rows that
have the view; an absent view's block zero, i.e. its average) and the presence indicators. In
kernel terms it is a kernel machine with ``k(x, x') = sum_{m in S(x) & S(x')} k_m(x_m, x'_m)``,
the sum of the per-view centred RBF kernels over the views both samples have (a positive
semi-definite kernel on inputs with missing views: the inner product of the zero-filled
centred feature maps), plus a bias per present view; its decision function is additive over
the present views, but their weights are fitted together, so evidence the views share is not
counted once per view as the product rule counts it. The centring makes a view that every
training row had count as its average when it is absent at prediction (without it, its mean
term went into the bias and dropping it shifted the logits). The closest published
construction: X. Liu, L. Wang, J. Yin, Y. Dou, J. Zhang, "Absent Multiple Kernel Learning",
AAAI 2015, doi:10.1609/aaai.v29i1.9545, which classifies each sample in the feature space of
its observed channels (after G. Chechik, G. Heitz, G. Elidan, P. Abbeel, D. Koller, "Max-margin
Classification of Data with Absent Features", JMLR 9:1-21, 2008) and compares with zero-, mean-
and EM-filling of the inputs. As there, a sample's score sums the terms of its observed views
only (an RBF kernel on zero-filled inputs would still compare the absent view's zeros); ours
differs in that the view kernels are summed with equal weights (no kernel weights are learnt;
the fitted per-view coefficients carry the weighting), the loss is the penalised multinomial
log loss (not a max-min of margins each measured in the sample's own observed views), and
presence indicators let the bias depend on which views are present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.special import log_softmax
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
#: ``"product"``: one model per view, product rule; ``"joint"``: one model over every view.
FUSIONS = ("product", "joint")
#: Seeds the landmark draw (a modality with more than ``n_components`` training rows).
LANDMARK_SEED = 0
#: The per-view penalties ``C="cv"`` chooses from (unless ``C_grid`` gives others).
C_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)
#: The evidence scales ``beta`` ``evidence_scale="cv"`` chooses from (1: the product rule).
EVIDENCE_SCALE_GRID = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
#: Folds of both inner cross-validations (``"cv"``), and the seed of their fixed fold draw.
CV_FOLDS = 3
CV_SEED = 0
#: The penalty a view gets under ``C="cv"`` when it has fewer than :data:`CV_FOLDS` rows
#: (with a ``C_grid`` that lacks it, the grid's value nearest it: :func:`fallback_C`).
CV_FALLBACK_C = 10.0
#: The relative RBF width of every view unless ``gamma`` or ``gamma_grid`` says otherwise; with
#: a ``gamma_grid``, a view too rare to cross-validate gets the grid's value nearest it.
DEFAULT_GAMMA = 0.5


def nystroem(
    x: np.ndarray, gamma: float, n_components: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Nyström map of the RBF kernel ``exp(-gamma |x - x'|^2)`` from the rows ``x [N, D]``.

    Draws ``L = min(n_components, N)`` landmark rows without replacement and returns them
    ``[L, D]`` with the projection ``P [R, L]`` such that ``k(x, landmarks) @ P.T`` are the
    features, ``P = S^(-1/2) U^T`` from the eigendecomposition ``U S U^T`` of the landmarks'
    kernel matrix (:func:`nystroem_projection`).
    """
    landmarks = x[landmark_rows(len(x), n_components, rng)]  # [L, D]
    return landmarks, nystroem_projection(landmarks, gamma)


def landmark_rows(n: int, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """``min(n_components, n)`` of the row indices ``0..n-1`` drawn from ``rng`` without
    replacement, sorted: the Nyström landmarks (:func:`nystroem`)."""
    return np.sort(rng.choice(n, size=min(n_components, n), replace=False))


def nystroem_projection(landmarks: np.ndarray, gamma: float) -> np.ndarray:
    """The Nyström projection ``P [R, L]`` of the RBF kernel ``exp(-gamma |x - x'|^2)`` on
    ``landmarks [L, D]`` (:func:`nystroem`). Eigenvalues below ``1e-6`` times the largest are
    dropped (rank ``R <= L``): their directions carry no signal and ``1 / sqrt`` of them would
    swamp float32 arithmetic."""
    sq = (landmarks**2).sum(1)
    gram = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * landmarks @ landmarks.T, 0))
    values, vectors = np.linalg.eigh(gram)  # ascending
    keep = values > 1e-6 * values[-1]
    return (vectors[:, keep] / np.sqrt(values[keep])).T  # [R, L]


def check_grid(name: str, grid: Any, example: str) -> tuple[float, ...]:
    """A grid option (``C_grid``, ``gamma_grid``) as :class:`PerModalityKernel` stores it: a
    non-empty sequence (or 1-D array) of positive finite numbers, numpy scalars included,
    sorted and without repeats, as a tuple of floats; a one-line :class:`MlmmError` naming
    ``name`` (with ``example`` as the fix) otherwise."""
    if isinstance(grid, np.ndarray) and grid.ndim == 1:
        grid = grid.tolist()
    if isinstance(grid, (str, bytes, Mapping)) or not isinstance(grid, Sequence):
        shown = (  # an array's repr spans lines
            f"an array of shape {grid.shape}" if isinstance(grid, np.ndarray) else repr(grid)
        )
        raise MlmmError(f"{name} must be a list of positive numbers, got {shown}; e.g. {example}")
    if not grid:
        raise MlmmError(f"{name} must hold at least one positive number, got an empty list")
    values = [v.item() if isinstance(v, np.generic) else v for v in grid]  # np.int64(3): 3
    for i, value in enumerate(values):
        check_range(f"{name}[{i}]", value, 0, low_inclusive=False)
    return tuple(sorted({float(v) for v in values}))


def check_C_grid(C_grid: Any) -> tuple[float, ...]:
    """``C_grid`` as :class:`PerModalityKernel` stores it (:func:`check_grid`)."""
    return check_grid("C_grid", C_grid, "[1, 10, 100]")


def check_gamma_grid(gamma_grid: Any) -> tuple[float, ...]:
    """``gamma_grid`` as :class:`PerModalityKernel` stores it (:func:`check_grid`)."""
    return check_grid("gamma_grid", gamma_grid, "[0.25, 0.5, 1]")


def check_joint(C: Any, evidence_scale: Any, gamma_grid: Any) -> None:
    """Refuse, in one line each, the options ``fusion="joint"`` has no use for: a per-modality
    ``C`` mapping, ``evidence_scale`` other than 1.0 and a ``gamma_grid`` (all three belong to
    the product rule's per-modality models)."""
    if isinstance(C, Mapping):
        raise MlmmError(
            f'fusion="joint" fits one model with one C, got a mapping {dict(C)!r}; give one '
            f'number or "cv"'
        )
    if evidence_scale != 1.0:
        raise MlmmError(
            f"evidence_scale scales the product rule, got evidence_scale={evidence_scale!r} with "
            f'fusion="joint"; leave it at 1.0'
        )
    if gamma_grid is not None:
        raise MlmmError(
            f"gamma_grid chooses each modality's width for the product rule, got "
            f'gamma_grid={gamma_grid!r} with fusion="joint"; leave gamma_grid out, or give '
            f"one gamma"
        )


def nearest_on_log_scale(grid: Sequence[float], target: float) -> float:
    """The value of ``grid`` nearest ``target`` on a log scale (the smaller on a tie)."""
    return min(grid, key=lambda v: (abs(math.log(v) - math.log(target)), v))


def fallback_C(grid: Sequence[float]) -> float:
    """The value of ``grid`` nearest :data:`CV_FALLBACK_C` on a log scale (the smaller on a
    tie): the ``C`` of a view too rare to cross-validate, kept inside the grid it was given."""
    return nearest_on_log_scale(grid, CV_FALLBACK_C)


def cv_folds(y: np.ndarray, classification: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """:data:`CV_FOLDS` (training, held-out) index pairs over the rows of ``y [N]``, from the
    fixed seed :data:`CV_SEED`: stratified by class where a class has at least that many rows
    (a rarer class is spread as far as it goes), shuffled plain folds otherwise; none with
    fewer rows than folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(y) < CV_FOLDS:
        return []
    x = np.zeros((len(y), 1))
    if classification and np.bincount(y).max() >= CV_FOLDS:
        import warnings

        with warnings.catch_warnings():  # "the least populated class has only 1 member"
            warnings.simplefilter("ignore", UserWarning)
            folds = StratifiedKFold(CV_FOLDS, shuffle=True, random_state=CV_SEED)
            return list(folds.split(x, y))
    return list(KFold(CV_FOLDS, shuffle=True, random_state=CV_SEED).split(x))


def held_out_loss(
    phi: np.ndarray,
    y: np.ndarray,
    task: TaskSpec,
    C: float,
    max_iter: int,
    random_state: int,
    folds: list[tuple[np.ndarray, np.ndarray]],
) -> float:
    """Mean held-out log loss (regression: squared error) of :func:`fit_linear` at ``C`` on
    features ``phi [N, F]`` and targets ``y [N]``, over ``folds`` (:func:`cv_folds`)."""
    total = 0.0
    for fit_rows, held in folds:
        coef, intercept = fit_linear(phi[fit_rows], y[fit_rows], task, C, max_iter, random_state)
        out = phi[held] @ coef.T + intercept  # [H, K]
        if task.is_classification:
            total -= log_softmax(out, axis=1)[np.arange(len(held)), y[held]].sum()
        else:
            total += ((out[:, 0] - y[held]) ** 2).sum()
    return total / len(y)


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
    ``forward`` returns ``log p(y) + beta * sum_m [log p_m(y | x_m) - log p_m(y)]`` over the
    sample's present modalities (``beta = 1``, the default, is the product rule; regression:
    the mean of their predictions).

    Parameters
    ----------
    specs : sequence of ModalitySpec
    task : TaskSpec
    C : float, "cv" or mapping of modality name to float, default 10.0
        Inverse L2 penalty strength of the per-modality models, as in scikit-learn: one for
        every modality, one per modality (a mapping naming every modality), or ``"cv"``: each
        modality's own, the value of ``C_grid`` with the lowest mean held-out log loss
        (regression: squared error) of that modality's model over :data:`CV_FOLDS` stratified
        folds of the training rows that have it (:func:`cv_folds`, a fixed seed; the Nyström
        map is drawn once from all those rows; ties go to the smaller ``C``; a modality with
        fewer rows than folds gets :data:`CV_FALLBACK_C`, or the ``C_grid`` value nearest it,
        :func:`fallback_C`). The choice is recorded (:attr:`view_C`,
        :meth:`resolved_hyperparameters`), so a saved model reloads with it.
    C_grid : sequence of float, optional
        The values ``C="cv"`` chooses from (positive, finite; kept sorted, without repeats, as a
        tuple, also after :meth:`mlmm.TrainedModel.load`); ``None``, the default, is
        :data:`C_GRID` (1, 3, 10, 30, 100). Only with ``C="cv"``: given with a number or a
        mapping for ``C`` it is an error, since nothing would read it.
    gamma_grid : sequence of float, optional
        RBF widths (relative, as ``gamma``; positive, finite; kept as ``C_grid`` is) each
        modality chooses from *jointly* with its ``C``: the (``gamma``, ``C``) pair of
        ``gamma_grid`` x ``C_grid`` with the lowest mean held-out loss of that modality's model
        over the same :data:`CV_FOLDS` folds, the Nyström map of each ``gamma`` computed on the
        same landmark rows (ties go to the smaller ``gamma``, then the smaller ``C``; a
        modality with fewer rows than folds gets the grid's value nearest
        :data:`DEFAULT_GAMMA`). The choice is recorded (:attr:`view_gamma`,
        :meth:`resolved_hyperparameters`) and the view's features use it. ``None``, the
        default, keeps one ``gamma`` for every view. Only with ``C="cv"``, ``kernel="rbf"``
        and ``gamma`` at its default: otherwise it is an error, since nothing would read it or
        two widths would be asked for.
    evidence_scale : float or "cv", default 1.0
        ``beta``, the factor on the summed evidence of the present modalities: 1 is the product
        rule, below 1 tempers its over-confidence when the modalities are correlated.
        ``"cv"``: the value of :data:`EVIDENCE_SCALE_GRID` with the lowest log loss of the fused
        posterior over :data:`CV_FOLDS` stratified folds of all training rows, each held-out
        row's evidence from modality models (at their ``C``) and priors fitted on the other
        folds (ties go to the larger ``beta``); recorded as :attr:`beta`. Classification only:
        regression averages the modalities and refuses any other value than 1.0.
    gamma : float or mapping of modality name to float, default 0.5
        RBF width, relative: the kernel is ``exp(-gamma / D_m * |x - x'|^2)`` on standardised
        inputs (``gamma=1`` is scikit-learn's ``gamma="scale"`` for unit-variance features);
        one for every modality or one per modality (a mapping naming every modality: what
        ``gamma_grid`` chose, as a saved model records it).
    kernel : {"rbf", "linear"}, default "rbf"
        ``"linear"``: logistic regressions on the inputs themselves (no landmarks).
    n_components : int, default 500
        Most landmarks per modality (all training rows that have the modality when fewer).
    max_iter : int, default 1000
        Most lbfgs iterations per model (classification).
    fusion : {"product", "joint"}, default "product"
        ``"product"``: one model per modality, fused as above. ``"joint"``: one model, fitted on
        all training rows, on the concatenation of every modality's features (the same maps,
        centred on their mean over the training rows that have the modality; an absent
        modality's block zero) and the ``M`` presence indicators; ``forward`` returns
        ``b + sum_m [f_m(x_m) @ coef_m.T + intercept_m]`` over the present modalities (the
        logits, or the prediction for regression), ``intercept_m`` being the presence
        indicator's coefficients less ``mean_m @ coef_m.T`` (the centring). ``C`` is one number
        or ``"cv"``: the ``C_grid`` value with the lowest mean held-out loss of the joint model
        over :data:`CV_FOLDS` stratified folds of all training rows (:func:`cv_folds`; the
        Nyström maps and their means drawn once from all rows that have each modality; ties go
        to the smaller ``C``; fewer rows than folds: :func:`fallback_C`). Refuses a
        per-modality ``C`` mapping, ``gamma_grid`` and ``evidence_scale`` other than 1.0, which
        belong to the product rule's per-view models.

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
    joint_intercept : nn.Parameter
        ``[K]``: the joint model's bias ``b`` (``fusion="joint"`` only).
    view_C : dict of str to float or None
        The penalty each modality's model was fitted with (``None`` until :meth:`fit` resolves
        ``C="cv"``).
    view_gamma : dict of str to float or None
        The RBF width of each modality's features (``None`` until :meth:`fit` resolves a
        ``gamma_grid``).
    beta : float or None
        The evidence scale ``forward`` uses (``None`` until :meth:`fit` resolves
        ``evidence_scale="cv"``; 1.0 is used meanwhile).
    cv_losses : dict
        After a fit with ``"cv"``: ``cv_losses["C"][name]``, the held-out loss of every
        ``C_grid`` value (in its sorted order) for modality ``name`` (with a ``gamma_grid``: at
        the chosen ``gamma``; ``cv_losses["gamma"][name][i]`` holds the list for the ``i``-th
        ``gamma_grid`` value), and ``cv_losses["evidence_scale"]``, the fused log loss of every
        :data:`EVIDENCE_SCALE_GRID` value; with ``fusion="joint"``, ``cv_losses["C"]`` is the
        joint model's list (not saved).

    References
    ----------
    C. K. I. Williams, M. Seeger. "Using the Nyström Method to Speed Up Kernel Machines."
    Advances in Neural Information Processing Systems 13, 2001.

    J. Kittler, M. Hatef, R. P. W. Duin, J. Matas. "On combining classifiers." IEEE
    Transactions on Pattern Analysis and Machine Intelligence 20(3), 226-239, 1998.
    doi:10.1109/34.667881.

    X. Liu, L. Wang, J. Yin, Y. Dou, J. Zhang. "Absent Multiple Kernel Learning." Proceedings
    of the AAAI Conference on Artificial Intelligence 29(1), 2015. doi:10.1609/aaai.v29i1.9545
    (the closest published form of ``fusion="joint"``; how ours differs: module docstring).

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
        C: float | str | Mapping[str, float] = 10.0,
        gamma: float | Mapping[str, float] = DEFAULT_GAMMA,
        kernel: str = "rbf",
        n_components: int = 500,
        max_iter: int = 1000,
        evidence_scale: float | str = 1.0,
        C_grid: Sequence[float] | None = None,
        gamma_grid: Sequence[float] | None = None,
        fusion: str = "product",
    ) -> None:
        super().__init__(specs, task)
        names = [s.name for s in self.specs]
        if fusion not in FUSIONS:
            raise MlmmError(f"fusion must be one of {list(FUSIONS)}, got {fusion!r}")
        if fusion == "joint":
            check_joint(C, evidence_scale, gamma_grid)
        if C_grid is not None:
            C_grid = check_C_grid(C_grid)
            if not isinstance(C, str):
                raise MlmmError(
                    f'C_grid is the grid C="cv" chooses from, got it with C={C!r}; give C="cv", '
                    f"or leave C_grid out"
                )
        if isinstance(C, str):
            if C != "cv":
                raise MlmmError(f'C must be a positive number, "cv" or a mapping, got {C!r}')
            self.view_C: dict[str, float] | None = None
        elif isinstance(C, Mapping):
            if set(C) != set(names):
                raise MlmmError(
                    f"C as a mapping must name every modality {names}, got {sorted(C)}; "
                    f'give one number for all, or "cv"'
                )
            for name, value in C.items():
                check_range(f"C[{name!r}]", value, 0, low_inclusive=False)
            self.view_C = {name: float(C[name]) for name in names}
        else:
            check_range("C", C, 0, low_inclusive=False)
            self.view_C = dict.fromkeys(names, C)
        if isinstance(evidence_scale, str):
            if evidence_scale != "cv":
                raise MlmmError(
                    f'evidence_scale must be a positive number or "cv", got {evidence_scale!r}'
                )
            self.beta: float | None = None
        else:
            check_range("evidence_scale", evidence_scale, 0, low_inclusive=False)
            self.beta = evidence_scale
        if not task.is_classification and evidence_scale != 1.0:
            raise MlmmError(
                f"evidence_scale scales the product rule of classification; a {task.kind} "
                f"model averages its modalities, got evidence_scale={evidence_scale!r}; leave "
                f"it at 1.0"
            )
        if isinstance(gamma, Mapping):
            if set(gamma) != set(names):
                raise MlmmError(
                    f"gamma as a mapping must name every modality {names}, got {sorted(gamma)}; "
                    f"give one number for all"
                )
            for name, value in gamma.items():
                check_range(f"gamma[{name!r}]", value, 0, low_inclusive=False)
            self.view_gamma: dict[str, float] | None = {n: float(gamma[n]) for n in names}
        else:
            check_range("gamma", gamma, 0, low_inclusive=False)
            self.view_gamma = dict.fromkeys(names, gamma)
        check_range("n_components", n_components, 1, integer=True)
        check_range("max_iter", max_iter, 1, integer=True)
        if kernel not in KERNELS:
            raise MlmmError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
        if gamma_grid is not None:
            gamma_grid = check_gamma_grid(gamma_grid)
            if C != "cv":
                raise MlmmError(
                    f'gamma_grid is chosen jointly with C="cv", got it with C={C!r}; give '
                    f'C="cv", or leave gamma_grid out'
                )
            if kernel != "rbf":
                raise MlmmError(
                    f'gamma_grid sets the width of the "rbf" kernel, got it with '
                    f"kernel={kernel!r}; leave gamma_grid out"
                )
            if isinstance(gamma, Mapping) or gamma != DEFAULT_GAMMA:
                raise MlmmError(
                    f"gamma_grid chooses each modality's gamma, got it with gamma={gamma!r}; "
                    f"leave gamma at its default {DEFAULT_GAMMA}, or leave gamma_grid out"
                )
            self.view_gamma = None
        self.C, self.gamma, self.kernel = C, gamma, kernel
        self.C_grid, self.gamma_grid = C_grid, gamma_grid
        self.evidence_scale, self.fusion = evidence_scale, fusion
        self.cv_losses: dict[str, Any] = {}
        self.n_components, self.max_iter = n_components, max_iter
        # one classifier per modality (or one joint one), reported as a cost
        self.n_models = 1 if fusion == "joint" else len(self.specs)
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
        if fusion == "joint":  # only then: the product rule's saved models keep their keys
            self.joint_intercept = frozen(torch.zeros(k))

    @property
    def C_grid(self) -> tuple[float, ...] | None:
        """The grid ``C="cv"`` chooses from, as a tuple (``None``: :data:`C_GRID`)."""
        return self._C_grid

    @C_grid.setter
    def C_grid(self, value: Sequence[float] | None) -> None:
        # TrainedModel.load sets the given value back from JSON (a list): stored as a tuple
        self._C_grid = None if value is None else check_C_grid(value)

    @property
    def gamma_grid(self) -> tuple[float, ...] | None:
        """The widths each modality chooses from jointly with ``C`` (``None``: one ``gamma``)."""
        return self._gamma_grid

    @gamma_grid.setter
    def gamma_grid(self, value: Sequence[float] | None) -> None:
        self._gamma_grid = None if value is None else check_gamma_grid(value)

    def features(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Modality ``name``'s model inputs for flattened standardised ``x`` ``[B, D_m]``."""
        if self.kernel == "linear":
            return x
        landmarks = self.landmarks[name]  # [L, D_m]
        sq = (x * x).sum(1, keepdim=True) + (landmarks * landmarks).sum(1) - 2 * x @ landmarks.T
        gamma = self.view_gamma[name] if self.view_gamma is not None else DEFAULT_GAMMA
        gram = torch.exp(-gamma / x.shape[1] * sq.clamp_min(0.0))  # [B, L]
        return gram @ self.projection[name].T  # [B, L]

    def resolved_hyperparameters(self) -> dict[str, Any]:
        """``C`` and ``evidence_scale`` given as ``"cv"`` and ``gamma`` chosen from a
        ``gamma_grid``, once :meth:`fit` chose them: the per-modality penalties
        (:attr:`view_C`), widths (:attr:`view_gamma`) and the scale (:attr:`beta`); an artifact
        rebuilds with them, so it predicts as it did when saved."""
        resolved: dict[str, Any] = {}
        if isinstance(self.C, str) and self.view_C is not None:
            # joint: one C for the one model (every view_C entry holds it)
            joint = self.fusion == "joint"
            resolved["C"] = self.view_C[self.modalities[0]] if joint else dict(self.view_C)
            if self.C_grid is not None:  # chosen already: the grid goes with "cv" only
                resolved["C_grid"] = None
        if self.gamma_grid is not None and self.view_gamma is not None:
            resolved["gamma"] = dict(self.view_gamma)
            resolved["gamma_grid"] = None
        if isinstance(self.evidence_scale, str) and self.beta is not None:
            resolved["evidence_scale"] = self.beta
        return resolved

    @torch.no_grad()
    def fit_classical(
        self, train: MultimodalBatch, val: MultimodalBatch | None, random_state: int
    ) -> None:
        """Fit every modality's model on the training samples that have the modality (first
        choosing its ``C``, with its ``gamma`` where a ``gamma_grid`` is given, and then
        ``beta`` by inner cross-validation where asked)."""
        if self.fusion == "joint":
            self.fit_joint(train, random_state)
            return
        # a fixed stream, not the trainer's seed: the landmarks are a uniform sample either
        # way, and a model that does not depend on the seed is easier to compare across seeds
        rng = np.random.default_rng(LANDMARK_SEED)
        target = train.target.cpu().numpy()
        classification = self.task.is_classification
        choose_C = isinstance(self.C, str)
        if choose_C:
            self.view_C, self.cv_losses["C"] = {}, {}
        if self.gamma_grid is not None:
            self.view_gamma, self.cv_losses["gamma"] = {}, {}
        present = train.present.cpu().numpy()  # [N, M]
        phis = {}
        for j, name in enumerate(self.modalities):
            rows = present[:, j]  # [N]
            x = self.view_rows(train, j)  # [N_m, D_m]
            if self.gamma_grid is not None:
                phi = self.choose_gamma_and_C(name, x, target[rows], rng, random_state)
            else:
                phi, _ = self.draw_features(name, x, rng)
                if choose_C:
                    self.view_C[name] = self.choose_C(name, phi, target[rows], random_state)
            coef, intercept = fit_linear(
                phi, target[rows], self.task, self.view_C[name], self.max_iter, random_state
            )
            self.coef[name].copy_(torch.from_numpy(coef))
            self.intercept[name].copy_(torch.from_numpy(intercept))
            if classification:
                prior = log_class_frequencies(target[rows], self.task.n_classes)
                self.log_prior[j].copy_(torch.from_numpy(prior))
            if isinstance(self.evidence_scale, str):
                phis[name] = phi
        if classification:
            self.log_prior[-1].copy_(
                torch.from_numpy(log_class_frequencies(target, self.task.n_classes))
            )
        if isinstance(self.evidence_scale, str):
            self.beta = self.choose_beta(phis, present, target, random_state)

    def fit_joint(self, train: MultimodalBatch, random_state: int) -> None:
        """``fusion="joint"``: draw every modality's Nyström map as the product rule does (the
        same landmark rows), then fit one model on all training rows' concatenated features
        (each modality's centred on its rows' mean, zero where absent) and presence indicators
        (first choosing its ``C`` where asked), and split its coefficients into the
        per-modality buffers."""
        rng = np.random.default_rng(LANDMARK_SEED)  # as fit_classical: the same landmarks
        target = train.target.cpu().numpy()
        present = train.present.cpu().numpy()  # [N, M]
        blocks, means = [], []
        for j, name in enumerate(self.modalities):
            rows = present[:, j]  # [N]
            phi, width = self.draw_features(name, self.view_rows(train, j), rng)
            means.append(phi[:, :width].mean(0))  # [F_m] over the rows that have the modality
            # centred, so an absent modality's zero block is its average features: a modality
            # present in every training row (constant indicator) can still be dropped later
            block = np.zeros((len(target), width))  # [N, F_m], an absent modality's rows zero
            block[rows] = phi[:, :width] - means[-1]
            blocks.append(block)
        design = np.hstack([*blocks, present.astype(np.float64)])  # [N, sum F_m + M]
        if isinstance(self.C, str):
            grid = C_GRID if self.C_grid is None else tuple(self.C_grid)
            folds = cv_folds(target, self.task.is_classification)
            losses = (
                [
                    held_out_loss(design, target, self.task, c, self.max_iter, random_state, folds)
                    for c in grid
                ]
                if folds
                else []
            )
            self.cv_losses["C"] = [float(v) for v in losses]
            C = grid[int(np.argmin(losses))] if losses else fallback_C(grid)
            self.view_C = dict.fromkeys(self.modalities, C)
        C = self.view_C[self.modalities[0]]
        coef, intercept = fit_linear(design, target, self.task, C, self.max_iter, random_state)
        start, start_presence = 0, design.shape[1] - len(self.modalities)
        for j, (name, mean) in enumerate(zip(self.modalities, means, strict=True)):
            width = len(mean)
            view_coef = coef[:, start : start + width]  # [K, F_m]
            self.coef[name].zero_()
            self.coef[name][:, :width] = torch.from_numpy(view_coef)
            # the centring folded into the bias: (phi - mean) @ w.T + c = phi @ w.T + intercept
            self.intercept[name].copy_(
                torch.from_numpy(coef[:, start_presence + j] - view_coef @ mean)
            )
            start += width
        self.joint_intercept.copy_(torch.from_numpy(intercept))
        if self.task.is_classification:  # not read by the joint forward; kept as documented
            for j in range(len(self.modalities)):
                prior = log_class_frequencies(target[present[:, j]], self.task.n_classes)
                self.log_prior[j].copy_(torch.from_numpy(prior))
            self.log_prior[-1].copy_(
                torch.from_numpy(log_class_frequencies(target, self.task.n_classes))
            )

    def view_rows(self, train: MultimodalBatch, j: int) -> torch.Tensor:
        """The flattened inputs ``[N_m, D_m]`` of the training rows that have the ``j``-th
        modality (one line if none has it)."""
        name, rows = self.modalities[j], train.present[:, j]  # [N]
        if not bool(rows.any()):  # the trainer refuses such data already
            raise MlmmError(f"modality {name!r} is absent from every training sample")
        return train.inputs[name].flatten(1)[rows]

    def draw_features(
        self, name: str, x: torch.Tensor, rng: np.random.Generator
    ) -> tuple[np.ndarray, int]:
        """Draw modality ``name``'s Nyström map from its training rows ``x`` ``[N_m, D_m]``
        (rbf: the landmarks from ``rng``, :func:`nystroem`, written into the buffers) and return
        their features ``[N_m, F]`` with the number of leading columns that are not zero by
        construction (rbf: the map's rank; linear: ``D_m``)."""
        width = x.shape[1]
        if self.kernel == "rbf":
            landmarks, projection = nystroem(
                x.double().cpu().numpy(), self.view_gamma[name] / width, self.n_components, rng
            )
            self.set_nystroem(name, landmarks, projection)
            width = len(projection)  # the buffers' other columns are zero
        return self.features(name, x.to(self.coef[name].dtype)).double().cpu().numpy(), width

    def set_nystroem(self, name: str, landmarks: np.ndarray, projection: np.ndarray) -> None:
        """Write modality ``name``'s Nyström map (:func:`nystroem`) into its buffers."""
        self.landmarks[name].zero_()
        self.projection[name].zero_()
        count, rank = len(landmarks), len(projection)
        self.landmarks[name][:count] = torch.from_numpy(landmarks)
        self.projection[name][:rank, :count] = torch.from_numpy(projection)

    def choose_C(self, name: str, phi: np.ndarray, y: np.ndarray, random_state: int) -> float:
        """The ``C_grid`` value (:data:`C_GRID` by default) with the lowest held-out loss of
        modality ``name``'s model on its features ``phi [N_m, F]`` and targets ``y [N_m]``
        (:func:`cv_folds`), recorded in :attr:`cv_losses`."""
        folds = cv_folds(y, self.task.is_classification)
        grid = C_GRID if self.C_grid is None else tuple(self.C_grid)
        if not folds:
            self.cv_losses["C"][name] = []
            return fallback_C(grid)
        losses = [
            held_out_loss(phi, y, self.task, c, self.max_iter, random_state, folds) for c in grid
        ]
        self.cv_losses["C"][name] = [float(v) for v in losses]
        return grid[int(np.argmin(losses))]

    def choose_gamma_and_C(
        self,
        name: str,
        x: torch.Tensor,
        y: np.ndarray,
        rng: np.random.Generator,
        random_state: int,
    ) -> np.ndarray:
        """Choose modality ``name``'s (``gamma``, ``C``) from ``gamma_grid`` x ``C_grid`` by the
        lowest held-out loss (:meth:`choose_C` at each ``gamma``; ties: the smaller ``gamma``),
        record both (:attr:`view_gamma`, :attr:`view_C`, :attr:`cv_losses`), leave that
        ``gamma``'s Nyström map in the buffers and return its features ``[N_m, L]``.

        ``x`` ``[N_m, D_m]`` are the view's training rows, ``y`` ``[N_m]`` their targets; the
        landmark rows are drawn once from ``rng``, as with one ``gamma``.
        """
        grid = self.gamma_grid  # set: fit_classical calls this only with one
        xs = x.double().cpu().numpy()
        landmarks = xs[landmark_rows(len(xs), self.n_components, rng)]  # [L, D_m]
        projections, phis, chosen_C, per_gamma = [], [], [], []
        for gamma in grid:
            projections.append(nystroem_projection(landmarks, gamma / xs.shape[1]))
            self.set_nystroem(name, landmarks, projections[-1])
            self.view_gamma[name] = gamma
            phis.append(self.features(name, x.to(self.coef[name].dtype)).double().cpu().numpy())
            chosen_C.append(self.choose_C(name, phis[-1], y, random_state))
            per_gamma.append(self.cv_losses["C"][name])
        if per_gamma[0]:  # the first lowest: ties go to the smaller gamma
            best = int(np.argmin([min(losses) for losses in per_gamma]))
        else:  # too few rows to cross-validate: the width nearest the default
            best = grid.index(nearest_on_log_scale(grid, DEFAULT_GAMMA))
        self.view_gamma[name], self.view_C[name] = grid[best], chosen_C[best]
        self.set_nystroem(name, landmarks, projections[best])
        self.cv_losses["C"][name] = per_gamma[best]
        self.cv_losses["gamma"][name] = per_gamma
        return phis[best]

    def choose_beta(
        self,
        phis: dict[str, np.ndarray],
        present: np.ndarray,
        y: np.ndarray,
        random_state: int,
    ) -> float:
        """The :data:`EVIDENCE_SCALE_GRID` value with the lowest log loss of the fused posterior
        on out-of-fold evidence of the training rows, recorded in :attr:`cv_losses`.

        ``phis[name]`` ``[N_m, F]`` are modality ``name``'s features of the training rows that
        have it (in row order), ``present`` ``[N, M]`` and ``y`` ``[N]`` all training rows'.
        """
        n, k = len(y), self.task.n_classes
        folds = cv_folds(y, True)
        if not folds:
            self.cv_losses["evidence_scale"] = []
            return 1.0
        prior = np.zeros((n, k))  # [N, K] log p(y) of each row's fitting folds
        evidence = np.zeros((n, k))  # [N, K] summed over the row's present modalities
        position = np.cumsum(present, axis=0) - 1  # [N, M] row -> its index in phis[name]
        for fit_rows, held in folds:
            prior[held] = log_class_frequencies(y[fit_rows], k)
            for j, name in enumerate(self.modalities):
                fit_m, held_m = fit_rows[present[fit_rows, j]], held[present[held, j]]
                if not len(fit_m) or not len(held_m):
                    continue  # no model from the other folds: no evidence from this modality
                coef, intercept = fit_linear(
                    phis[name][position[fit_m, j]],
                    y[fit_m],
                    self.task,
                    self.view_C[name],
                    self.max_iter,
                    random_state,
                )
                out = phis[name][position[held_m, j]] @ coef.T + intercept  # [H_m, K]
                evidence[held_m] += log_softmax(out, axis=1) - log_class_frequencies(y[fit_m], k)
        losses = [
            -log_softmax(prior + beta * evidence, axis=1)[np.arange(n), y].mean()
            for beta in EVIDENCE_SCALE_GRID
        ]
        self.cv_losses["evidence_scale"] = [float(v) for v in losses]
        best = np.flatnonzero(np.asarray(losses) == min(losses))[-1]  # ties: the larger beta
        return EVIDENCE_SCALE_GRID[int(best)]

    def forward(self, batch: MultimodalBatch) -> MethodOutput:
        present = self.present_mask(batch)  # [B, M]
        inputs = batch.zero_padding().inputs  # padded steps read as zeros, as the fit saw them
        outputs = []
        for j, name in enumerate(self.modalities):
            x = inputs[name].flatten(1)  # [B, D_m]
            x = torch.where(present[:, j : j + 1], x, 0.0)  # absent rows are never read
            outputs.append(self.features(name, x) @ self.coef[name].T + self.intercept[name])
        outputs = torch.stack(outputs, dim=1)  # [B, M, K]
        weight = present.to(outputs.dtype).unsqueeze(2)  # [B, M, 1]
        if self.fusion == "joint":  # one model: its terms over the present modalities
            prediction = self.joint_intercept + (weight * outputs).sum(1)  # [B, K]
        elif not self.task.is_classification:
            # a sample with nothing present (never one the trainer or TrainedModel passes)
            # gets the mean over every modality, on zero inputs
            use = present | ~present.any(1, keepdim=True)  # [B, M] (a where with True: no ONNX)
            share = use.to(outputs.dtype) / use.sum(1, keepdim=True)  # [B, M]
            prediction = (share.unsqueeze(2) * outputs).sum(1)  # [B, 1]
        else:  # product rule; nothing present: the training prior
            evidence = outputs.log_softmax(dim=2) - self.log_prior[:-1]  # [B, M, K]
            summed = (weight * evidence).sum(1)  # [B, K]
            if self.beta is not None and self.beta != 1.0:  # 1: the product rule, as it was
                summed = self.beta * summed
            prediction = self.log_prior[-1] + summed  # [B, K]
        return self.output(batch, prediction, per_modality=outputs)
