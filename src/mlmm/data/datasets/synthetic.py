"""Synthetic multimodal Gaussian classes whose Bayes-optimal accuracy is known for every subset.

The physical limit that tests and benchmarks compare methods to. Each modality ``m`` of a
sample of class ``y`` is drawn as ``x_m = mu[y, m] + noise`` with isotropic unit Gaussian
noise, independently across modalities given the class. The exact Bayes posterior for any
set of present modalities is therefore a sum of per-modality Gaussian log-likelihoods, and
the Bayes-optimal accuracy of every modality subset can be computed by Monte Carlo from the
true parameters (:meth:`SyntheticGenerator.bayes_accuracy`).

The class means mix a geometry shared by all modalities (redundant information: every
modality separates the same pairs of classes) with a geometry specific to each modality
(complementary information: different modalities confuse different pairs)::

    mu[y, m] = offset_m + snr_m * W_m [sqrt(shared) * u_y, sqrt(1 - shared) * v_{y,m}]

``u`` and ``v_m`` are random class codes in ``n_classes - 1`` dimensions each, centred over
classes and scaled to unit root-mean-square norm, placed in orthogonal blocks so that
``shared`` is exactly the fraction of class-signal energy that is shared. ``W_m`` is a random
matrix with orthonormal columns (distances are kept); ``offset_m`` a random class-independent
mean, so raw features are not centred (as with real data).

The ``synthetic-interaction`` variant (:class:`InteractionGenerator`,
:func:`load_synthetic_interaction`) is the opposite case: the class is the XOR of two latent
signs seen by different modalities, so no modality alone carries any class information and
only a model that fuses modalities before deciding can beat chance. Its Bayes posterior is
exact for every presence pattern too (a ratio of Gaussian-mixture likelihoods).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, unknown_name_error

if TYPE_CHECKING:
    from mlmm.data.missingness.mnar import MNARLaw

__all__ = [
    "InteractionGenerator",
    "SyntheticGenerator",
    "bayes_accuracy_under_mask",
    "load_synthetic",
    "load_synthetic_interaction",
    "mnar_bayes_accuracy",
    "mnar_log_factors",
]

DEFAULT_SNR_RANGE = (1.15, 1.65)
"""Default per-modality signal-to-noise: evenly spaced over this range (see ``load_synthetic``)."""

MAX_VALUES = 10**8
"""The most numbers one request may generate (samples × features, or the class means'
projections): about 0.8 GB of float64, checked before anything is allocated."""
MAX_MODALITIES = 64
MAX_CLASSES = 1000

_MC_CHUNK = 50_000
# rows × hypotheses × draws held at once by the MNAR term (about 32 MB of float64)
_MC_CHUNK_VALUES = 2**22
# A fixed extra word for the Monte Carlo random stream, so that its samples never coincide
# with the dataset's own samples drawn from the same seed.
_MC_STREAM = 0x5EED_BA7E


@dataclass(frozen=True, eq=False)
class SyntheticGenerator:
    """The true parameters of a synthetic dataset, with its exact Bayes classifier.

    Classes are equally likely; given the class ``y``, modality ``m`` is
    ``Normal(class_means[m][y], noise_std**2 * I)``, independently of the other modalities.
    Build one with :meth:`create` (or get it from ``load_synthetic(...).meta["generator"]``).

    Parameters
    ----------
    modality_names : tuple of str
        ``("m0", "m1", ...)``, the order of ``present`` columns.
    class_means : dict of str to ndarray, shape (n_classes, dim)
        Mean of each class in each modality (raw, unstandardised units).
    noise_std : float
        Standard deviation of the isotropic Gaussian noise (1 for generated data).
    snr : tuple of float
        Per-modality signal-to-noise: root-mean-square distance of the class means from their
        centre, in units of ``noise_std``.
    shared : float
        Fraction of the class-signal energy shared by all modalities (see module docstring).
    seed : int
        Seed the parameters were drawn from.

    Attributes
    ----------
    n_classes : int
    n_modalities : int
    dims : tuple of int

    Examples
    --------
    >>> gen = SyntheticGenerator.create(n_modalities=2, dims=4, n_classes=3, snr=2.0, seed=1)
    >>> inputs, targets = gen.sample(5, np.random.default_rng(0))
    >>> gen.log_posterior(inputs, np.ones((5, 2), dtype=bool)).shape
    (5, 3)
    """

    modality_names: tuple[str, ...]
    class_means: dict[str, np.ndarray]
    noise_std: float = 1.0
    snr: tuple[float, ...] = ()
    shared: float = 0.5
    seed: int = 0
    _sq_norms: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(self.modality_names)
        object.__setattr__(self, "modality_names", names)
        if set(names) != set(self.class_means):
            raise MlmmError(
                f"class_means has modalities {sorted(self.class_means)}, expected {list(names)}"
            )
        means = {name: np.asarray(self.class_means[name], dtype=np.float64) for name in names}
        n_classes = {m.shape[0] for m in means.values()}
        if len(n_classes) != 1 or any(m.ndim != 2 for m in means.values()):
            raise MlmmError("every class_means array must be 2-D with the same number of classes")
        if not self.noise_std > 0:
            raise MlmmError(f"noise_std must be positive, got {self.noise_std}")
        object.__setattr__(self, "class_means", means)
        object.__setattr__(
            self, "_sq_norms", {name: (mu**2).sum(axis=1) for name, mu in means.items()}
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        n_modalities: int = 3,
        dims: int | Sequence[int] = 16,
        n_classes: int = 4,
        snr: float | Sequence[float] | None = None,
        shared: float = 0.5,
        seed: int | None = 0,
        rng: np.random.Generator | None = None,
    ) -> SyntheticGenerator:
        """Draw the true parameters of a generator.

        Parameters
        ----------
        n_modalities, dims, n_classes, snr, shared
            As in :func:`load_synthetic` (``snr=None`` spreads ``DEFAULT_SNR_RANGE``).
        seed : int, optional
            Seeds ``numpy.random.default_rng(seed)`` when ``rng`` is not given.
        rng : numpy.random.Generator, optional
            Used (and advanced) instead of a fresh generator; ``seed`` is then only recorded
            (None is recorded as -1).

        Returns
        -------
        SyntheticGenerator
        """
        n_modalities = _positive_int("n_modalities", n_modalities)
        if n_modalities > MAX_MODALITIES:
            raise MlmmError(f"n_modalities must be at most {MAX_MODALITIES}, got {n_modalities}")
        n_classes = _positive_int("n_classes", n_classes)
        if n_classes < 2:
            raise MlmmError(f"n_classes must be at least 2, got {n_classes}")
        if n_classes > MAX_CLASSES:
            raise MlmmError(f"n_classes must be at most {MAX_CLASSES}, got {n_classes}")
        dims_list = _per_modality("dims", dims, n_modalities, integer=True)
        _check_size(
            "sum(dims) × 2 × n_classes (the class means' projections)",
            2 * n_classes * sum(dims_list),
            "dims or n_classes",
        )
        if snr is None:
            low, high = DEFAULT_SNR_RANGE
            snr_list = [float(s) for s in np.linspace(low, high, n_modalities)]
        else:
            snr_list = _per_modality("snr", snr, n_modalities, integer=False)
        if not (isinstance(shared, (int, float)) and 0.0 <= shared <= 1.0):
            raise MlmmError(f"shared must be a number in [0, 1], got {shared!r}")
        if rng is None:
            if seed is None or int(seed) < 0:
                raise MlmmError(f"seed must be a non-negative integer, got {seed!r}")
            rng = np.random.default_rng(int(seed))

        latent = n_classes - 1  # K centred class codes span at most K - 1 dimensions
        shared_code = _class_code(rng, n_classes, latent)  # [K, L]
        names = tuple(f"m{j}" for j in range(n_modalities))
        means: dict[str, np.ndarray] = {}
        for name, dim, strength in zip(names, dims_list, snr_list, strict=True):
            specific_code = _class_code(rng, n_classes, latent)  # [K, L]
            code = np.concatenate(
                [np.sqrt(shared) * shared_code, np.sqrt(1.0 - shared) * specific_code], axis=1
            )  # [K, 2L]
            projection = _orthonormal(rng, dim, 2 * latent)  # [D, 2L]
            signal = code @ projection.T  # [K, D]
            signal -= signal.mean(axis=0)
            # With dim >= 2L the projection keeps norms and this is a no-op up to rounding;
            # with fewer dimensions it restores the requested signal-to-noise exactly.
            signal *= strength / np.sqrt((signal**2).sum(axis=1).mean())
            offset = rng.standard_normal(dim)  # [D]
            means[name] = offset + signal
        return cls(
            modality_names=names,
            class_means=means,
            noise_std=1.0,
            snr=tuple(snr_list),
            shared=float(shared),
            seed=-1 if seed is None else int(seed),
        )

    # ------------------------------------------------------------------ views
    @property
    def n_classes(self) -> int:
        """Number of classes (uniform prior)."""
        return next(iter(self.class_means.values())).shape[0]

    @property
    def n_modalities(self) -> int:
        """Number of modalities."""
        return len(self.modality_names)

    @property
    def dims(self) -> tuple[int, ...]:
        """Feature dimension of each modality."""
        return tuple(self.class_means[name].shape[1] for name in self.modality_names)

    # ------------------------------------------------------------------ sampling
    def sample(
        self, n: int, rng: np.random.Generator, balanced: bool = False
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw ``n`` samples with every modality observed.

        Parameters
        ----------
        n : int
            Number of samples.
        rng : numpy.random.Generator
            Source of randomness (advanced in place).
        balanced : bool
            Draw exactly ``n // n_classes`` samples per class (the remainder spread over the
            first classes) in random order, instead of i.i.d. labels from the uniform prior.

        Returns
        -------
        inputs : dict of str to ndarray, shape (n, dim), float64
        targets : ndarray of int64, shape (n,)
        """
        n = _positive_int("n", n, allow_zero=True)
        if balanced:
            targets = rng.permutation(np.arange(n) % self.n_classes).astype(np.int64)
        else:
            targets = rng.integers(self.n_classes, size=n).astype(np.int64)
        inputs = {}
        for name in self.modality_names:
            mu = self.class_means[name]  # [K, D]
            noise = rng.standard_normal((n, mu.shape[1])) * self.noise_std  # [N, D]
            inputs[name] = mu[targets] + noise
        return inputs, targets

    # ------------------------------------------------------------------ Bayes classifier
    def log_posterior(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Exact log posterior ``log p(y | present modalities)`` per sample.

        Parameters
        ----------
        inputs : dict of str to ndarray, shape (N, dim)
            Raw (unstandardised) features. Rows of absent modalities are never read, so they
            may hold anything (zeros, NaN); a modality absent in every row may be left out.
        present : ndarray of bool, shape (N, n_modalities)
            True where the modality is used, columns in ``modality_names`` order.

        Returns
        -------
        ndarray, shape (N, n_classes)
            Normalised log probabilities. A row with no modality present gets the prior
            (uniform), so its argmax is class 0.
        """
        present = np.asarray(present)
        if present.ndim != 2 or present.shape[1] != self.n_modalities:
            raise MlmmError(
                f"present must have shape (n_samples, {self.n_modalities}) with columns "
                f"{list(self.modality_names)}, got {present.shape}"
            )
        present = present.astype(bool)
        n = present.shape[0]
        scale = self.noise_std**2
        scores = np.zeros((n, self.n_classes))  # [N, K]
        for j, name in enumerate(self.modality_names):
            rows = present[:, j]
            if not rows.any():
                continue
            if name not in inputs:
                raise MlmmError(f"inputs has no array for modality {name!r}, which is present")
            x = np.asarray(inputs[name])
            mu = self.class_means[name]  # [K, D]
            if x.shape != (n, mu.shape[1]):
                raise MlmmError(
                    f"inputs[{name!r}] has shape {x.shape}, expected {(n, mu.shape[1])}"
                )
            # The class-independent term -|x|^2 / 2 cancels in the normalisation.
            x = x[rows].astype(np.float64)  # [N_present, D]
            scores[rows] += (x @ mu.T - 0.5 * self._sq_norms[name]) / scale  # [N_present, K]
        top = scores.max(axis=1, keepdims=True)
        return scores - (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))

    def log_posterior_mnar(
        self,
        inputs: Mapping[str, np.ndarray],
        present: np.ndarray,
        law: MNARLaw,
        n_mc: int = 2000,
        seed: int = 0,
        batches: int = 1,
    ) -> np.ndarray:
        """Log posterior ``log p(y | x_obs, R)`` when ``present`` was drawn by an MNAR law.

        Under MNAR the presence pattern ``R`` carries class information, so the ignorable
        posterior (:meth:`log_posterior`) is not Bayes-optimal. Here
        ``p(y | x_o, R)`` is proportional to ``p(y) p(x_o | y) E[P(R | x_o, x_m)]``, the
        expectation over the absent modalities ``x_m ~ p(x_m | y)`` (the modalities are
        independent given ``y``, so the absent ones do not depend on ``x_o``). ``P(R | x)`` is
        the law's: independent drops with probabilities ``sigmoid(theta + strength * u_j(x_j))``
        conditioned on keeping a modality (unless ``allow_empty``). Each ``u_j`` depends on
        ``x_j`` through its first-principal-component score, a Gaussian given ``y``, so the
        expectation is a Monte Carlo average over ``n_mc`` one-dimensional draws per modality.

        Parameters
        ----------
        inputs : dict of str to ndarray, shape (N, dim)
            Raw features; rows of absent modalities are never read.
        present : ndarray of bool, shape (N, n_modalities)
        law : MNARLaw
            ``MNAR.fit_law(test_data)`` on the complete data the mask was drawn on (every
            modality observed there, as generated).
        n_mc : int
            Monte Carlo draws per class (split evenly over ``batches``).
        seed : int
            Seed of the draws (the same draws for every row).
        batches : int
            With ``batches > 1``, one posterior per batch of draws is returned as well, to
            estimate the Monte Carlo error (:func:`mnar_bayes_accuracy`).

        Returns
        -------
        ndarray, shape (N, n_classes), or (batches + 1, N, n_classes) when ``batches > 1``
            Normalised log probabilities (the first entry uses all draws).
        """
        base = self.log_posterior(inputs, present)  # [N, K], p(y) p(x_o | y) normalised
        factors = mnar_log_factors(
            self.modality_names, self.class_means, self.noise_std, inputs, present, law,
            n_mc=n_mc, seed=seed, batches=batches,
        )  # fmt: skip
        scores = base[None] + factors  # [B+1, N, K]
        top = scores.max(axis=-1, keepdims=True)
        out = scores - (top + np.log(np.exp(scores - top).sum(axis=-1, keepdims=True)))
        return out[0] if batches == 1 else out

    def predict(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Bayes-optimal class per sample (argmax of :meth:`log_posterior`, ties to lowest)."""
        return self.log_posterior(inputs, present).argmax(axis=1)

    def bayes_accuracy(
        self, subset: Sequence[str] | None = None, n_mc: int = 200_000, seed: int = 0
    ) -> float:
        """Monte Carlo estimate of the Bayes-optimal accuracy when only ``subset`` is present.

        The posterior is exact; only the expectation over samples is estimated, from ``n_mc``
        fresh samples of the true model (standard error ``sqrt(p (1 - p) / n_mc)``, about
        0.0007 at the default size and p = 0.9). The same ``seed`` gives the same samples for
        every subset, so differences between subsets carry little noise.

        Parameters
        ----------
        subset : sequence of str, optional
            Modality names, e.g. ``("m0", "m2")``. None: all modalities.
        n_mc : int
            Number of Monte Carlo samples.
        seed : int
            Seed of the Monte Carlo samples (independent of the dataset's samples).
        """
        subset = self.modality_names if subset is None else subset
        return self._mc_accuracies([self._subset_mask(subset)], n_mc, seed)[0]

    def bayes_accuracy_table(
        self, n_mc: int = 200_000, seed: int = 0
    ) -> dict[tuple[str, ...], float]:
        """Bayes-optimal accuracy of every non-empty modality subset.

        Keys are subsets in ``modality_names`` order, sorted by size then position
        (``("m0",), ("m1",), ..., ("m0", "m1"), ..., ("m0", "m1", "m2")``). Values equal
        :meth:`bayes_accuracy` with the same ``n_mc`` and ``seed``.
        """
        subsets = [
            combo
            for size in range(1, self.n_modalities + 1)
            for combo in itertools.combinations(self.modality_names, size)
        ]
        masks = [self._subset_mask(s) for s in subsets]
        return dict(zip(subsets, self._mc_accuracies(masks, n_mc, seed), strict=True))

    # ------------------------------------------------------------------ helpers
    def _subset_mask(self, subset: Sequence[str]) -> np.ndarray:
        if isinstance(subset, str):
            subset = (subset,)
        subset = tuple(subset)
        if not subset:
            raise MlmmError(
                "subset must name at least one modality; with none, Bayes accuracy is the "
                f"prior's: 1/{self.n_classes}"
            )
        mask = np.zeros(self.n_modalities, dtype=bool)
        for name in subset:
            if name not in self.modality_names:
                raise unknown_name_error("modality", name, self.modality_names)
            mask[self.modality_names.index(name)] = True
        return mask

    def _mc_accuracies(self, masks: Iterable[np.ndarray], n_mc: int, seed: int) -> list[float]:
        masks = list(masks)
        n_mc = _positive_int("n_mc", n_mc)
        rng = np.random.default_rng([int(seed), _MC_STREAM])
        correct = np.zeros(len(masks), dtype=np.int64)
        done = 0
        while done < n_mc:
            n = min(_MC_CHUNK, n_mc - done)
            inputs, targets = self.sample(n, rng)
            # Per-modality log-likelihood scores, summed per subset (conditional independence).
            per_modality = [
                (inputs[name] @ self.class_means[name].T - 0.5 * self._sq_norms[name])
                / self.noise_std**2
                for name in self.modality_names
            ]  # M x [n, K]
            for i, mask in enumerate(masks):
                scores = sum(per_modality[j] for j in np.flatnonzero(mask))  # [n, K]
                correct[i] += int((scores.argmax(axis=1) == targets).sum())
            done += n
        return [float(c) / n_mc for c in correct]


def mnar_log_factors(
    modality_names: tuple[str, ...],
    means: Mapping[str, np.ndarray],
    noise_std: float,
    inputs: Mapping[str, np.ndarray],
    present: np.ndarray,
    law: MNARLaw,
    n_mc: int = 2000,
    seed: int = 0,
    batches: int = 1,
) -> np.ndarray:
    """``log E[P(R | x_o, x_m)]`` per sample and hypothesis, the MNAR term of the posterior.

    The hypotheses ``k`` (classes, or label vectors) each give every modality an isotropic
    Gaussian ``Normal(means[name][k], noise_std**2 I)``, independent across modalities, so
    the absent modalities do not depend on ``x_o`` given ``k``. ``P(R | x)`` is the law's
    (see :meth:`SyntheticGenerator.log_posterior_mnar`); the expectation over the absent
    modalities is a Monte Carlo average over ``n_mc`` one-dimensional draws of each one's
    principal-component score, shared by every row.

    Returns
    -------
    ndarray, shape (batches + 1, N, K)
        The first entry uses all draws; the others one batch of draws each (for the Monte
        Carlo error). Add it to ``log p(k | x_o)`` and normalise.
    """
    present = np.asarray(present, dtype=bool)
    if tuple(law.modalities) != tuple(modality_names):
        raise MlmmError(
            f"the MNAR law is for modalities {list(law.modalities)}, the generator has "
            f"{list(modality_names)}; fit it on this generator's data"
        )
    n_mc, batches = _positive_int("n_mc", n_mc), _positive_int("batches", batches)
    per_batch = max(1, n_mc // batches)
    n_modalities = len(modality_names)
    n_hypotheses = next(iter(means.values())).shape[0]
    rng = np.random.default_rng([int(seed), _MC_STREAM, 1])
    z = rng.standard_normal((batches * per_batch, n_modalities))  # [S, M]
    # drop probability of each modality for each hypothesis and draw, from its PC score
    absent_p = np.ones((n_modalities, n_hypotheses, len(z)))  # [M, K, S]
    present_p = np.zeros(present.shape)  # [N, M], for the rows where it is present
    for j, name in enumerate(modality_names):
        pc = law.scores[j].pc
        if pc is None:  # constant modality: a hypothesis-independent probability
            absent_p[j] = law.drop_probability(j, np.zeros((n_hypotheses, len(z))))
        else:
            mu = means[name]  # [K, D]
            shift = (mu @ pc.direction - pc.mean @ pc.direction - pc.center) / pc.spread
            scale = noise_std * np.linalg.norm(pc.direction) / pc.spread
            scores = shift[:, None] + scale * z[None, :, j]  # [K, S]
            absent_p[j] = law.drop_probability(j, scores)
        rows = present[:, j]
        if rows.any():
            x = np.asarray(inputs[name])[rows]
            score = np.zeros(len(x)) if pc is None else pc(x)  # [n]
            present_p[rows, j] = law.drop_probability(j, score)
    keep_one = not law.model.allow_empty
    factors = np.zeros((batches + 1, len(present), n_hypotheses))  # [B+1, N, K]
    step = max(1, min(256, _MC_CHUNK_VALUES // (n_hypotheses * len(z))))  # rows per chunk
    for pattern in np.unique(present, axis=0):
        rows = np.flatnonzero((present == pattern).all(axis=1))
        absent = np.prod(absent_p[~pattern], axis=0)  # [K, S]: all absent dropped
        kept = np.prod(1.0 - present_p[rows][:, pattern], axis=1)  # [n]
        all_kept_dropped = np.prod(present_p[rows][:, pattern], axis=1)  # [n]
        for start in range(0, len(rows), step):
            part = slice(start, start + step)
            prob = kept[part, None, None] * absent[None]  # [n, K, S]
            if keep_one:  # the mask was redrawn until a modality was kept
                prob = prob / (1.0 - all_kept_dropped[part, None, None] * absent[None])
            groups = prob.reshape(*prob.shape[:2], batches, per_batch).mean(axis=-1)
            with np.errstate(divide="ignore"):
                factors[0, rows[part]] = np.log(groups.mean(axis=-1))  # [n, K]
                factors[1:, rows[part]] = np.log(np.moveaxis(groups, -1, 0))
    return factors


def bayes_accuracy_under_mask(dataset: MultimodalDataset) -> float:
    """Accuracy of the exact Bayes classifier on ``dataset`` under its own ``observed`` mask.

    This is "the Bayes-optimal accuracy under the same masks": apply a missingness model to a
    synthetic test set, then compare a method's accuracy on it with this number. It is the
    realised accuracy on these very samples (no Monte Carlo over new samples), so a method
    scored on the same dataset is compared without sampling noise between the two.

    Parameters
    ----------
    dataset : MultimodalDataset
        A dataset from ``load_synthetic`` (or a subset / re-masked copy of one) whose
        ``meta["generator"]`` holds the true parameters. Its inputs must be the raw generated
        features: standardise a copy for the model, not the dataset passed here.

    Returns
    -------
    float
        Fraction of samples whose Bayes prediction equals the target. Samples with no
        modality present (``allow_empty``) are predicted as class 0.
    """
    generator = dataset.meta.get("generator") if isinstance(dataset.meta, dict) else None
    if not isinstance(generator, (SyntheticGenerator, InteractionGenerator)):
        raise MlmmError(
            f"dataset {dataset.name!r} has no SyntheticGenerator in meta['generator']; "
            "the Bayes accuracy is only known for data from load_dataset('synthetic') or "
            "load_dataset('synthetic-interaction')"
        )
    if dataset.modality_names != generator.modality_names:
        raise MlmmError(
            f"dataset modalities {list(dataset.modality_names)} do not match the generator's "
            f"{list(generator.modality_names)}; keep all modalities and mask them with observed"
        )
    predicted = generator.predict(dataset.inputs, dataset.observed)
    return float((predicted == dataset.targets).mean())


def mnar_reference_generator(
    dataset: MultimodalDataset, kind: type, loader: str, batches: int
) -> object:
    """The generator in ``dataset.meta["generator"]``, checked to be a ``kind``, for a Monte
    Carlo Bayes reference with a batch-means error over ``batches`` (at least 2)."""
    generator = dataset.meta.get("generator") if isinstance(dataset.meta, dict) else None
    if not isinstance(generator, kind):
        raise MlmmError(
            f"dataset {dataset.name!r} has no {kind.__name__} in meta['generator']; the Bayes "
            f"reference is only known for data from load_dataset({loader!r})"
        )
    if batches < 2:
        raise MlmmError(f"batches must be at least 2 to estimate the error, got {batches}")
    return generator


def batch_means(scores: np.ndarray) -> tuple[float, float]:
    """``scores [B+1]``: the score of all draws, then of each of ``B`` independent batches.
    Returns the first and its batch-means standard error (the batches' standard deviation
    divided by ``sqrt(B)``)."""
    batches = len(scores) - 1
    return float(scores[0]), float(np.std(scores[1:], ddof=1) / np.sqrt(batches))


def mnar_bayes_accuracy(
    dataset: MultimodalDataset, law: MNARLaw, n_mc: int = 2000, seed: int = 0, batches: int = 10
) -> tuple[float, float]:
    """Accuracy of the Bayes classifier under MNAR on ``dataset``, with its Monte Carlo error.

    The classifier is :meth:`SyntheticGenerator.log_posterior_mnar` (``p(y | x_obs, R)``,
    the presence pattern used as evidence), scored on ``dataset`` under its own ``observed``
    mask, which ``law`` drew. The standard error is the batch-means estimate over ``batches``
    independent batches of draws: the standard deviation of the accuracies the batches give
    on their own, divided by ``sqrt(batches)``.

    Returns
    -------
    accuracy, standard_error : float
    """
    generator = mnar_reference_generator(dataset, SyntheticGenerator, "synthetic", batches)
    logp = generator.log_posterior_mnar(
        dataset.inputs, dataset.observed, law, n_mc=n_mc, seed=seed, batches=batches
    )  # [B+1, N, K]
    hits = logp.argmax(axis=-1) == dataset.targets[None]  # [B+1, N]
    return batch_means(hits.mean(axis=1))


@register_dataset(
    "synthetic",
    description=(
        "Gaussian classes in conditionally independent modalities; exact Bayes-optimal "
        "accuracy known for every modality subset"
    ),
    source="generated by mlmm (mlmm.data.datasets.synthetic)",
    license="BSD-3-Clause (generated data)",
    modalities="m0, m1, ... (vector)",
    task="classification",
)
def load_synthetic(
    n_samples: int = 12500,
    n_modalities: int = 3,
    dims: int | Sequence[int] = 16,
    n_classes: int = 4,
    snr: float | Sequence[float] | None = None,
    shared: float = 0.5,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate a multimodal Gaussian classification dataset with known Bayes accuracy.

    All modalities are observed; apply a missingness model to hide some. The true parameters
    and the exact Bayes classifier are in ``dataset.meta["generator"]`` (a
    :class:`SyntheticGenerator`); :func:`bayes_accuracy_under_mask` scores it on a dataset.

    Parameters
    ----------
    n_samples : int
        Number of samples; classes are balanced exactly (``n_samples // n_classes`` each, the
        remainder spread over the first classes) in random order.
    n_modalities : int
        Number of modalities, named ``m0, m1, ...``.
    dims : int or sequence of int
        Feature dimension per modality (one value for all, or one per modality).
    n_classes : int
        Number of classes (uniform prior).
    snr : float or sequence of float, optional
        Per-modality signal-to-noise: root-mean-square distance of the class means from their
        centre in units of the noise standard deviation. Default (None): ``n_modalities``
        values evenly spaced over ``DEFAULT_SNR_RANGE = (1.15, 1.65)``, i.e. ``(1.15, 1.4, 1.65)``
        for three modalities, so the modalities differ in quality. With ``n_classes=4`` and
        seed 0 this gives a full-modality Bayes accuracy near 0.90 and single modalities of
        about 0.6-0.7; the defaults were calibrated for four classes.
    shared : float
        In [0, 1]: fraction of the class signal shared by all modalities (they separate the
        same class pairs: redundant) versus specific to each (complementary). 1 makes every
        modality a noisy copy of the same geometry; 0 gives independent geometries.
    seed : int
        Seeds both the true parameters and the samples; the parameters are drawn first, so
        the same seed gives the same generator whatever ``n_samples``.

    Returns
    -------
    MultimodalDataset
        Vector modalities ``m0..m{M-1}``; ``meta`` holds ``generator`` and the parameters.

    Examples
    --------
    >>> ds = load_synthetic(n_samples=400)
    >>> ds.modality_names, ds.task.n_classes
    (('m0', 'm1', 'm2'), 4)
    >>> gen = ds.meta["generator"]
    >>> round(gen.bayes_accuracy(), 2)
    0.9
    """
    n_samples = _positive_int("n_samples", n_samples)
    _check_size("n_samples", n_samples, "n_samples")  # before the generator: n × dims below
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    generator = SyntheticGenerator.create(
        n_modalities=n_modalities,
        dims=dims,
        n_classes=n_classes,
        snr=snr,
        shared=shared,
        seed=int(seed),
        rng=rng,
    )
    _check_size("n_samples × sum(dims)", n_samples * sum(generator.dims), "n_samples or dims")
    inputs, targets = generator.sample(n_samples, rng, balanced=True)
    specs = [
        ModalitySpec(name, "vector", (dim,))
        for name, dim in zip(generator.modality_names, generator.dims, strict=True)
    ]
    return MultimodalDataset(
        specs=specs,
        task=TaskSpec("classification", generator.n_classes),
        inputs=inputs,
        targets=targets,
        name="synthetic",
        meta={
            "generator": generator,
            "params": {
                "n_samples": n_samples,
                "n_modalities": generator.n_modalities,
                "dims": list(generator.dims),
                "n_classes": generator.n_classes,
                "snr": list(generator.snr),
                "shared": generator.shared,
                "seed": int(seed),
            },
            "source": "generated by mlmm",
        },
    )


# ---------------------------------------------------------------------- interaction variant
DEFAULT_INTERACTION_SNR_RANGE = (1.6, 2.2)
"""Default per-modality signal-to-noise of ``synthetic-interaction`` (evenly spaced)."""


@dataclass(frozen=True, eq=False)
class InteractionGenerator:
    """True parameters and exact Bayes classifier of the ``synthetic-interaction`` data.

    Two latent signs ``s_0, s_1`` are drawn independently and uniformly from ``{-1, +1}``; the
    class is their XOR, ``y = 1`` when they differ. Modality ``m_j`` sees only the sign
    ``s_{j mod 2}``: ``x_j = offset_j + s * snr_j * noise_std * w_j + noise`` with ``w_j`` a
    random unit direction and isotropic Gaussian noise. Given the class, each modality is a
    two-component Gaussian mixture and the modalities are *dependent* (they share the signs),
    so the class is carried by the interaction across modalities: whatever a single modality
    shows is equally likely under both classes.

    The exact posterior of any presence pattern is a ratio of mixture likelihoods. With
    ``t_k = sum_j snr_j w_j . (x_j - offset_j) / noise_std`` over the present modalities that
    see sign ``k``, ``p(x | y=0)`` is proportional to ``cosh(t_0 + t_1)`` and
    ``p(x | y=1)`` to ``cosh(t_0 - t_1)``. A pattern that misses every modality of one sign
    has ``t_k = 0`` and the posterior is exactly 1/2. The Bayes-optimal accuracy is exact as
    well: the rule predicts ``y = 0`` iff ``t_0 t_1 > 0``, and ``t_k`` recovers ``s_k`` with
    probability ``p_k = Phi(A_k)``, ``A_k = sqrt(sum of snr_j^2 over those modalities)``, so the
    accuracy is ``p_0 p_1 + (1 - p_0)(1 - p_1)``.

    Parameters
    ----------
    modality_names : tuple of str
        ``("m0", "m1", ...)``, the order of ``present`` columns.
    directions : dict of str to ndarray, shape (dim,)
        Unit direction ``w_j`` of each modality's sign.
    offsets : dict of str to ndarray, shape (dim,)
        Class-independent mean of each modality.
    snr : tuple of float
        Distance of each modality's two components from its offset, in noise units.
    noise_std : float
        Standard deviation of the noise (1 for generated data).
    seed : int
        Seed the parameters were drawn from.

    Examples
    --------
    >>> gen = InteractionGenerator.create(n_modalities=2, dims=4, snr=2.0, seed=1)
    >>> round(gen.bayes_accuracy(("m0",)), 3), round(gen.bayes_accuracy(), 3)
    (0.5, 0.956)
    """

    modality_names: tuple[str, ...]
    directions: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    snr: tuple[float, ...]
    noise_std: float = 1.0
    seed: int = 0

    n_classes = 2

    def __post_init__(self) -> None:
        names = tuple(self.modality_names)
        object.__setattr__(self, "modality_names", names)
        if len(names) < 2:
            raise MlmmError(f"the interaction needs at least 2 modalities, got {list(names)}")
        for label, arrays in (("directions", self.directions), ("offsets", self.offsets)):
            if set(arrays) != set(names):
                raise MlmmError(f"{label} has modalities {sorted(arrays)}, expected {list(names)}")
        if len(self.snr) != len(names):
            raise MlmmError(f"snr needs one value per modality ({len(names)}), got {self.snr}")
        if not self.noise_std > 0:
            raise MlmmError(f"noise_std must be positive, got {self.noise_std}")

    @classmethod
    def create(
        cls,
        n_modalities: int = 3,
        dims: int | Sequence[int] = 16,
        snr: float | Sequence[float] | None = None,
        seed: int | None = 0,
        rng: np.random.Generator | None = None,
    ) -> InteractionGenerator:
        """Draw the true parameters (arguments as in :func:`load_synthetic_interaction`)."""
        n_modalities = _positive_int("n_modalities", n_modalities)
        if not 2 <= n_modalities <= MAX_MODALITIES:
            raise MlmmError(
                f"n_modalities must be in [2, {MAX_MODALITIES}] (two latent signs seen by "
                f"different modalities), got {n_modalities}"
            )
        dims_list = _per_modality("dims", dims, n_modalities, integer=True)
        if snr is None:
            low, high = DEFAULT_INTERACTION_SNR_RANGE
            snr_list = [float(s) for s in np.linspace(low, high, n_modalities)]
        else:
            snr_list = _per_modality("snr", snr, n_modalities, integer=False)
        if rng is None:
            if seed is None or int(seed) < 0:
                raise MlmmError(f"seed must be a non-negative integer, got {seed!r}")
            rng = np.random.default_rng(int(seed))
        names = tuple(f"m{j}" for j in range(n_modalities))
        directions, offsets = {}, {}
        for name, dim in zip(names, dims_list, strict=True):
            w = rng.standard_normal(dim)  # [D]
            directions[name] = w / np.linalg.norm(w)
            offsets[name] = rng.standard_normal(dim)  # [D]
        return cls(
            modality_names=names,
            directions=directions,
            offsets=offsets,
            snr=tuple(snr_list),
            noise_std=1.0,
            seed=-1 if seed is None else int(seed),
        )

    @property
    def n_modalities(self) -> int:
        """Number of modalities."""
        return len(self.modality_names)

    @property
    def dims(self) -> tuple[int, ...]:
        """Feature dimension of each modality."""
        return tuple(self.directions[name].shape[0] for name in self.modality_names)

    def sign_of(self, name: str) -> int:
        """Index (0 or 1) of the latent sign that modality ``name`` sees."""
        return self.modality_names.index(name) % 2

    def sample(
        self, n: int, rng: np.random.Generator, balanced: bool = False
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw ``n`` samples with every modality observed (as :meth:`SyntheticGenerator.sample`).

        With ``balanced``, the four sign combinations are balanced exactly (``n // 4`` each, the
        remainder spread over the first), hence the two classes too.
        """
        n = _positive_int("n", n, allow_zero=True)
        if balanced:
            combo = rng.permutation(np.arange(n) % 4)
        else:
            combo = rng.integers(4, size=n)
        signs = np.stack([combo % 2, combo // 2], axis=1) * 2.0 - 1.0  # [N, 2], values ±1
        targets = (signs[:, 0] != signs[:, 1]).astype(np.int64)
        inputs = {}
        for j, name in enumerate(self.modality_names):
            w, offset = self.directions[name], self.offsets[name]
            mean = offset + signs[:, j % 2, None] * (self.snr[j] * self.noise_std) * w  # [N, D]
            inputs[name] = mean + rng.standard_normal((n, w.shape[0])) * self.noise_std
        return inputs, targets

    def sign_evidence(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """``t_k``, the log-likelihood-ratio evidence for ``s_k = +1`` over ``-1``, halved.

        Returns
        -------
        ndarray, shape (N, 2)
            Zero for a sign none of whose modalities is present.
        """
        present = self._check_present(present)
        n = present.shape[0]
        evidence = np.zeros((n, 2))  # [N, 2]
        for j, name in enumerate(self.modality_names):
            rows = present[:, j]
            if not rows.any():
                continue
            if name not in inputs:
                raise MlmmError(f"inputs has no array for modality {name!r}, which is present")
            x = np.asarray(inputs[name])
            if x.shape != (n, self.dims[j]):
                raise MlmmError(
                    f"inputs[{name!r}] has shape {x.shape}, expected {(n, self.dims[j])}"
                )
            centred = x[rows].astype(np.float64) - self.offsets[name]  # [N_present, D]
            evidence[rows, j % 2] += (
                self.snr[j] * (centred @ self.directions[name]) / self.noise_std
            )
        return evidence

    def log_posterior(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Exact log posterior ``log p(y | present modalities)`` per sample, shape (N, 2).

        Rows of absent modalities are never read. A row that misses every modality of one
        latent sign (or all modalities) gets exactly ``log(1/2)`` for both classes.
        """
        t = self.sign_evidence(inputs, present)  # [N, 2]
        # log cosh(a) = logaddexp(a, -a) - log 2; the log 2 cancels in the normalisation
        same = np.logaddexp(t[:, 0] + t[:, 1], -(t[:, 0] + t[:, 1]))  # y = 0: equal signs
        differ = np.logaddexp(t[:, 0] - t[:, 1], -(t[:, 0] - t[:, 1]))  # y = 1
        scores = np.stack([same, differ], axis=1)  # [N, 2]
        return scores - np.logaddexp(same, differ)[:, None]

    def predict(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Bayes-optimal class per sample (ties, i.e. an unseen sign, go to class 0)."""
        return self.log_posterior(inputs, present).argmax(axis=1)

    def bayes_accuracy(self, subset: Sequence[str] | None = None) -> float:
        """Exact Bayes-optimal accuracy when only ``subset`` is present (None: all).

        ``p_0 p_1 + (1 - p_0)(1 - p_1)`` with ``p_k = Phi(A_k)``; 0.5 when a sign is unseen.
        """
        subset = self.modality_names if subset is None else subset
        if isinstance(subset, str):
            subset = (subset,)
        energy = [0.0, 0.0]
        for name in subset:
            if name not in self.modality_names:
                raise unknown_name_error("modality", name, self.modality_names)
            j = self.modality_names.index(name)
            energy[j % 2] += self.snr[j] ** 2
        p0, p1 = (0.5 * (1.0 + math.erf(math.sqrt(e / 2.0))) for e in energy)  # Phi(sqrt(e))
        return p0 * p1 + (1.0 - p0) * (1.0 - p1)

    def bayes_accuracy_table(self) -> dict[tuple[str, ...], float]:
        """Exact Bayes-optimal accuracy of every non-empty modality subset (ordered as
        :meth:`SyntheticGenerator.bayes_accuracy_table`)."""
        return {
            combo: self.bayes_accuracy(combo)
            for size in range(1, self.n_modalities + 1)
            for combo in itertools.combinations(self.modality_names, size)
        }

    def _check_present(self, present: np.ndarray) -> np.ndarray:
        present = np.asarray(present)
        if present.ndim != 2 or present.shape[1] != self.n_modalities:
            raise MlmmError(
                f"present must have shape (n_samples, {self.n_modalities}) with columns "
                f"{list(self.modality_names)}, got {present.shape}"
            )
        return present.astype(bool)


@register_dataset(
    "synthetic-interaction",
    description=(
        "the class is the XOR of two latent signs seen by different modalities: no single "
        "modality carries class information; exact Bayes accuracy for every subset"
    ),
    source="generated by mlmm (mlmm.data.datasets.synthetic)",
    license="BSD-3-Clause (generated data)",
    modalities="m0, m1, ... (vector)",
    task="classification",
)
def load_synthetic_interaction(
    n_samples: int = 12500,
    n_modalities: int = 3,
    dims: int | Sequence[int] = 16,
    snr: float | Sequence[float] | None = None,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate the interaction variant of ``synthetic``: fusion across modalities is needed.

    Modality ``m_j`` sees the latent sign ``s_{j mod 2}``; the binary class is
    ``s_0 XOR s_1`` (see :class:`InteractionGenerator`). Each modality alone, or any set of
    modalities that misses one of the signs, carries no class information at all: its Bayes
    posterior is exactly 1/2, so per-modality late fusion stays at chance by construction,
    while a model that combines the modalities' features reaches the Bayes accuracy.

    Parameters
    ----------
    n_samples : int
        Number of samples; the four sign combinations (hence the classes) are balanced exactly.
    n_modalities : int
        Number of modalities (at least 2), named ``m0, m1, ...``; even ones see ``s_0``, odd
        ones ``s_1``.
    dims : int or sequence of int
        Feature dimension per modality.
    snr : float or sequence of float, optional
        Per-modality distance of the two mixture components from their centre, in noise
        units. Default: evenly spaced over ``DEFAULT_INTERACTION_SNR_RANGE = (1.6, 2.2)``,
        i.e. ``(1.6, 1.9, 2.2)`` for three modalities: Bayes accuracy 0.968 with all three,
        0.920 (m0+m1), 0.958 (m1+m2) and 0.5 for m0+m2 and every single modality.
    seed : int
        Seeds the parameters, then the samples.

    Returns
    -------
    MultimodalDataset
        Vector modalities, binary task; ``meta["generator"]`` is the
        :class:`InteractionGenerator` (used for the ``bayes-optimal`` reference rows).

    Examples
    --------
    >>> ds = load_synthetic_interaction(n_samples=400)
    >>> ds.task.n_classes, ds.meta["generator"].bayes_accuracy(("m0", "m2"))
    (2, 0.5)
    """
    n_samples = _positive_int("n_samples", n_samples)
    _check_size("n_samples", n_samples, "n_samples")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MlmmError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    generator = InteractionGenerator.create(
        n_modalities=n_modalities, dims=dims, snr=snr, seed=int(seed), rng=rng
    )
    _check_size("n_samples × sum(dims)", n_samples * sum(generator.dims), "n_samples or dims")
    inputs, targets = generator.sample(n_samples, rng, balanced=True)
    specs = [
        ModalitySpec(name, "vector", (dim,))
        for name, dim in zip(generator.modality_names, generator.dims, strict=True)
    ]
    return MultimodalDataset(
        specs=specs,
        task=TaskSpec("classification", 2),
        inputs=inputs,
        targets=targets,
        name="synthetic-interaction",
        meta={
            "generator": generator,
            "params": {
                "n_samples": n_samples,
                "n_modalities": generator.n_modalities,
                "dims": list(generator.dims),
                "snr": list(generator.snr),
                "seed": int(seed),
            },
            "source": "generated by mlmm",
        },
    )


# ---------------------------------------------------------------------- helpers
def _check_size(label: str, count: int, fix: str) -> None:
    """Refuse a request that would allocate more than :data:`MAX_VALUES` numbers."""
    if count > MAX_VALUES:
        raise MlmmError(
            f"{label} asks for {count:.3g} values; the generator makes at most {MAX_VALUES:.0e} "
            f"(about {MAX_VALUES * 8 / 1e9:.1f} GB); lower {fix}"
        )


def _positive_int(label: str, value: object, allow_zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        bound = "non-negative" if allow_zero else "positive"
        raise MlmmError(f"{label} must be a {bound} integer, got {value!r}")
    return int(value)


def _per_modality(
    label: str, value: object, n_modalities: int, integer: bool
) -> list[float] | list[int]:
    values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    if len(values) == 1:
        values = values * n_modalities
    if len(values) != n_modalities:
        raise MlmmError(
            f"{label} needs one value or one per modality ({n_modalities}), got {len(values)}: "
            f"{list(values)}"
        )
    out = []
    for v in values:
        if integer:
            out.append(_positive_int(label, v))
        else:
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float, np.number))
                or not 0 < v < np.inf
            ):
                raise MlmmError(f"{label} values must be positive numbers, got {list(values)}")
            out.append(float(v))
    return out


def _class_code(rng: np.random.Generator, n_classes: int, latent: int) -> np.ndarray:
    """Random class codes ``[K, L]``, centred over classes, unit root-mean-square norm."""
    code = rng.standard_normal((n_classes, latent))
    code -= code.mean(axis=0)
    return code / np.sqrt((code**2).sum(axis=1).mean())


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A random ``[rows, cols]`` matrix with orthonormal columns (or rows when rows < cols)."""
    tall = max(rows, cols), min(rows, cols)
    q, r = np.linalg.qr(rng.standard_normal(tall))
    q = q * np.sign(np.diag(r))  # Haar-distributed, not biased by the QR sign convention
    return q if rows >= cols else q.T
