"""A small generated multi-label dataset: each sample has any number of labels.

Label ``l`` of a sample is on with probability ``rate_l`` (rates evenly spaced over
``(0.15, 0.5)``, so some labels are rare), independently of the other labels. Each modality
``m`` is ``x_m = offset_m + snr * sum_l y_l * a_{l,m} + noise`` with unit Gaussian noise and
unit-norm random directions ``a_{l,m}``. Label ``l`` is seen strongly by modality
``l mod M`` and weakly (a third of the amplitude) by the others, so each modality alone
recovers some labels well and the others poorly: the modalities complement each other.

The labels are independent a priori but not given the inputs: their signals add up in the
same features along directions that are not orthogonal, so seeing one label's signal
explains away part of another's ("explaining away"). The exact posterior of each label,
``p(y_l = 1 | x_obs)``, therefore marginalises the joint posterior over all ``2^L`` label
vectors (:class:`MultilabelGenerator`), which is exact and cheap for the few labels this
dataset has (at most :data:`MAX_EXACT_LABELS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets.registry import register_dataset
from mlmm.data.datasets.synthetic import (
    _positive_int,
    batch_means,
    mnar_log_factors,
    mnar_reference_generator,
)
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

if TYPE_CHECKING:
    from mlmm.data.missingness.mnar import MNARLaw

__all__ = [
    "MAX_EXACT_LABELS",
    "MAX_MNAR_LABELS",
    "MultilabelGenerator",
    "load_synthetic_multilabel",
    "mnar_bayes_auroc",
]

#: The most values one request may generate (samples × features).
MAX_VALUES = 10**8
#: The most labels whose exact posterior is computed (a sum over ``2^L`` label vectors);
#: with more, the dataset has no Bayes-optimal reference.
MAX_EXACT_LABELS = 16
#: The most labels whose MNAR posterior is computed: its Monte Carlo term costs
#: rows × 2^L × n_mc operations (about 10^9 for 2,000 rows at 2,000 draws and 8 labels).
MAX_MNAR_LABELS = 8
_WEAK = 1 / 3
# rows × label vectors held at once while scoring the joint posterior
_CHUNK_VALUES = 2**22


@dataclass(frozen=True, eq=False)
class MultilabelGenerator:
    """The true parameters of ``synthetic-multilabel``, with its exact Bayes posterior.

    Label ``l`` is on with probability ``rates[l]``, independently of the others; given the
    label vector ``y`` (``[L]``, 0/1), modality ``m`` is
    ``Normal(offsets[m] + y @ signals[m], I)``, independently of the other modalities.
    Build one with :meth:`create` (or take it from
    ``load_synthetic_multilabel(...).meta["generator"]``).

    Given the inputs the labels are dependent (their signals overlap in the same features),
    so :meth:`label_posterior` sums the joint posterior :meth:`log_joint_posterior` over all
    ``2^L`` label vectors: exact, for at most :data:`MAX_EXACT_LABELS` labels.

    Parameters
    ----------
    modality_names : tuple of str
        ``("m0", "m1", ...)``, the order of ``present`` columns.
    signals : dict of str to ndarray, shape (n_labels, dim)
        Each label's mean shift in each modality (``snr * strength * direction``).
    offsets : dict of str to ndarray, shape (dim,)
        Mean of each modality with no label on.
    rates : ndarray, shape (n_labels,)
        Prior probability of each label.
    snr : float
        Amplitude of a label's signal in the modality that sees it strongly.
    seed : int
        Seed the parameters were drawn from.

    Attributes
    ----------
    n_labels, n_modalities, dim : int

    Examples
    --------
    >>> gen = MultilabelGenerator.create(n_modalities=2, dim=4, n_labels=3, seed=1)
    >>> inputs, targets = gen.sample(5, np.random.default_rng(0))
    >>> gen.label_posterior(inputs, np.ones((5, 2), dtype=bool)).shape
    (5, 3)
    """

    modality_names: tuple[str, ...]
    signals: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    rates: np.ndarray
    snr: float = 2.0
    seed: int = 0
    _vectors: np.ndarray = field(init=False, repr=False)
    _log_prior: np.ndarray = field(init=False, repr=False)
    _sq_norms: dict[str, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(self.modality_names)
        object.__setattr__(self, "modality_names", names)
        for label, arrays in (("signals", self.signals), ("offsets", self.offsets)):
            if set(arrays) != set(names):
                raise MlmmError(f"{label} has modalities {sorted(arrays)}, expected {list(names)}")
        rates = np.asarray(self.rates, dtype=np.float64)
        if rates.ndim != 1 or not ((rates > 0) & (rates < 1)).all():
            raise MlmmError(f"rates must be probabilities in (0, 1), one per label, got {rates}")
        signals = {name: np.asarray(self.signals[name], dtype=np.float64) for name in names}
        if any(s.shape != signals[names[0]].shape or s.ndim != 2 for s in signals.values()):
            raise MlmmError("every signals array must be 2-D with the same shape (n_labels, dim)")
        if signals[names[0]].shape[0] != len(rates):
            raise MlmmError(f"signals have {signals[names[0]].shape[0]} labels, rates {len(rates)}")
        object.__setattr__(self, "rates", rates)
        object.__setattr__(self, "signals", signals)
        n_labels = len(rates)
        if n_labels <= MAX_EXACT_LABELS:
            # every label vector, label l in bit l: [C, L] with C = 2^L
            codes = np.arange(2**n_labels)[:, None]
            vectors = ((codes >> np.arange(n_labels)) & 1).astype(np.float64)  # [C, L]
            log_prior = vectors @ np.log(rates) + (1 - vectors) @ np.log1p(-rates)  # [C]
            sq_norms = {name: ((vectors @ s) ** 2).sum(axis=1) for name, s in signals.items()}
        else:
            vectors, log_prior, sq_norms = np.zeros((0, n_labels)), np.zeros(0), {}
        object.__setattr__(self, "_vectors", vectors)
        object.__setattr__(self, "_log_prior", log_prior)
        object.__setattr__(self, "_sq_norms", sq_norms)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        n_modalities: int = 2,
        dim: int = 8,
        n_labels: int = 5,
        snr: float = 2.0,
        seed: int = 0,
        rng: np.random.Generator | None = None,
    ) -> MultilabelGenerator:
        """Draw the true parameters (arguments as in :func:`load_synthetic_multilabel`).

        ``rng``, when given, is used (and advanced) instead of ``default_rng(seed)``; ``seed``
        is then only recorded.
        """
        rng = np.random.default_rng(int(seed)) if rng is None else rng
        rates = np.linspace(0.15, 0.5, n_labels)  # [L]
        directions = rng.normal(size=(n_labels, n_modalities, dim))  # [L, M, D]
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        strength = np.full((n_labels, n_modalities), _WEAK)  # [L, M]
        strength[np.arange(n_labels), np.arange(n_labels) % n_modalities] = 1.0
        offsets = rng.normal(size=(n_modalities, dim))  # [M, D]
        names = tuple(f"m{m}" for m in range(n_modalities))
        return cls(
            modality_names=names,
            signals={
                name: snr * strength[:, m, None] * directions[:, m]  # [L, D]
                for m, name in enumerate(names)
            },
            offsets={name: offsets[m] for m, name in enumerate(names)},
            rates=rates,
            snr=float(snr),
            seed=int(seed),
        )

    # ------------------------------------------------------------------ views
    @property
    def n_labels(self) -> int:
        """Number of labels."""
        return len(self.rates)

    @property
    def n_modalities(self) -> int:
        """Number of modalities."""
        return len(self.modality_names)

    @property
    def dim(self) -> int:
        """Feature dimension of every modality."""
        return self.signals[self.modality_names[0]].shape[1]

    @property
    def exact_posterior(self) -> bool:
        """Whether the exact posterior is available (at most :data:`MAX_EXACT_LABELS` labels)."""
        return self.n_labels <= MAX_EXACT_LABELS

    @property
    def mnar_posterior(self) -> bool:
        """Whether :meth:`label_posterior_mnar` is available (at most
        :data:`MAX_MNAR_LABELS` labels)."""
        return self.n_labels <= MAX_MNAR_LABELS

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Draw ``n`` samples with every modality observed.

        Returns
        -------
        inputs : dict of str to ndarray, shape (n, dim), float64
        targets : ndarray of float32, shape (n, n_labels), 0/1
        """
        targets = (rng.random((n, self.n_labels)) < self.rates).astype(np.float32)  # [N, L]
        inputs = {}
        for name in self.modality_names:
            signal = targets @ self.signals[name]  # [N, D]
            noise = rng.normal(size=(n, self.dim))
            inputs[name] = self.offsets[name] + signal + noise
        return inputs, targets

    # ------------------------------------------------------------------ Bayes posterior
    def log_joint_posterior(
        self, inputs: Mapping[str, np.ndarray], present: np.ndarray
    ) -> np.ndarray:
        """Exact log posterior of every label vector, ``log p(y | present modalities)``.

        Parameters
        ----------
        inputs : dict of str to ndarray, shape (N, dim)
            Raw features. Rows of absent modalities are never read, so they may hold
            anything; a modality absent in every row may be left out.
        present : ndarray of bool, shape (N, n_modalities)
            True where the modality is used, columns in ``modality_names`` order.

        Returns
        -------
        ndarray, shape (N, 2 ** n_labels)
            Normalised log probabilities; column ``c`` is the label vector whose label ``l``
            is bit ``l`` of ``c``. A row with no modality present gets the prior. Its argmax
            is the most probable label vector (the subset-accuracy-optimal decision).
        """
        if not self.exact_posterior:
            raise MlmmError(
                f"the exact posterior sums over 2^n_labels label vectors and is computed for "
                f"at most {MAX_EXACT_LABELS} labels, got {self.n_labels}; use fewer labels"
            )
        present = np.asarray(present)
        if present.ndim != 2 or present.shape[1] != self.n_modalities:
            raise MlmmError(
                f"present must have shape (n_samples, {self.n_modalities}) with columns "
                f"{list(self.modality_names)}, got {present.shape}"
            )
        present = present.astype(bool)
        n = present.shape[0]
        projections = np.zeros((n, self.n_labels))  # [N, L], sum of (x_m - o_m) . s_{l,m}
        quadratic = np.zeros((n, len(self._vectors)))  # [N, C], sum of |y @ S_m|^2 / 2
        for j, name in enumerate(self.modality_names):
            rows = present[:, j]
            if not rows.any():
                continue
            if name not in inputs:
                raise MlmmError(f"inputs has no array for modality {name!r}, which is present")
            x = np.asarray(inputs[name])
            if x.shape != (n, self.dim):
                raise MlmmError(f"inputs[{name!r}] has shape {x.shape}, expected {(n, self.dim)}")
            centred = x[rows].astype(np.float64) - self.offsets[name]  # [N_present, D]
            projections[rows] += centred @ self.signals[name].T  # [N_present, L]
            quadratic[rows] += 0.5 * self._sq_norms[name]
        # log p(x_obs | y) = (x - o) . (y @ S) - |y @ S|^2 / 2 + terms free of y, per modality
        scores = self._log_prior + projections @ self._vectors.T - quadratic  # [N, C]
        top = scores.max(axis=1, keepdims=True)
        return scores - (top + np.log(np.exp(scores - top).sum(axis=1, keepdims=True)))

    def label_posterior(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Exact ``p(y_l = 1 | present modalities)`` of every label, shape (N, n_labels).

        The joint posterior (:meth:`log_joint_posterior`) summed over the label vectors with
        label ``l`` on; rows are scored in chunks so memory stays bounded. Rows of absent
        modalities are never read; a row with no modality present gets the prior rates.
        """
        present = np.asarray(present)
        n = len(present)
        out = np.zeros((n, self.n_labels))  # [N, L]
        step = max(1, _CHUNK_VALUES // max(1, len(self._vectors)))
        for start in range(0, max(n, 1), step):
            rows = slice(start, start + step)
            part = {name: np.asarray(x)[rows] for name, x in inputs.items()}
            joint = np.exp(self.log_joint_posterior(part, present[rows]))  # [n, C]
            out[rows] = joint @ self._vectors  # [n, L]
        return np.clip(out, 0.0, 1.0)

    def label_posterior_mnar(
        self,
        inputs: Mapping[str, np.ndarray],
        present: np.ndarray,
        law: MNARLaw,
        n_mc: int = 2000,
        seed: int = 0,
        batches: int = 1,
    ) -> np.ndarray:
        """``p(y_l = 1 | x_obs, R)`` when ``present`` was drawn by an MNAR law.

        Under MNAR the presence pattern ``R`` carries label information, so the ignorable
        posterior (:meth:`label_posterior`) is not Bayes-optimal. As for ``synthetic``
        (:meth:`~mlmm.data.datasets.synthetic.SyntheticGenerator.log_posterior_mnar`), the
        joint posterior of each label vector ``y`` is multiplied by ``E[P(R | x_o, x_m)]``
        over the absent modalities drawn given ``y`` (a Monte Carlo average of ``n_mc`` draws,
        :func:`~mlmm.data.datasets.synthetic.mnar_log_factors`), then summed into each
        label's marginal. For at most :data:`MAX_MNAR_LABELS` labels; rows are scored in chunks
        so memory stays bounded.

        Parameters
        ----------
        inputs, present
            As in :meth:`label_posterior`.
        law : MNARLaw
            ``MNAR.fit_law(test_data)`` on the complete data the mask was drawn on.
        n_mc : int
            Monte Carlo draws per label vector (split evenly over ``batches``).
        seed : int
            Seed of the draws (the same draws for every row).
        batches : int
            With ``batches > 1``, one posterior per batch of draws is returned as well, to
            estimate the Monte Carlo error (:func:`mnar_bayes_auroc`).

        Returns
        -------
        ndarray, shape (N, n_labels), or (batches + 1, N, n_labels) when ``batches > 1``
            Probabilities (the first entry uses all draws).
        """
        if not self.mnar_posterior:
            raise MlmmError(
                f"the MNAR posterior is computed for at most {MAX_MNAR_LABELS} labels, got "
                f"{self.n_labels}; use fewer labels"
            )
        batches = _positive_int("batches", batches)
        means = {name: self.offsets[name] + self._vectors @ s for name, s in self.signals.items()}
        present = np.asarray(present)
        n = len(present)
        out = np.zeros((batches + 1, n, self.n_labels))  # [B+1, N, L]
        # rows in chunks, as in label_posterior: [B+1, rows, C] is held twice per chunk
        step = max(1, _CHUNK_VALUES // ((batches + 1) * len(self._vectors)))
        for start in range(0, max(n, 1), step):
            rows = slice(start, start + step)
            part = {name: np.asarray(x)[rows] for name, x in inputs.items()}
            base = self.log_joint_posterior(part, present[rows])  # [n, C]
            factors = mnar_log_factors(
                self.modality_names, means, 1.0, part, present[rows], law,
                n_mc=n_mc, seed=seed, batches=batches,
            )  # fmt: skip
            scores = base[None] + factors  # [B+1, n, C]
            scores -= scores.max(axis=-1, keepdims=True)
            joint = np.exp(scores, out=scores)
            joint /= joint.sum(axis=-1, keepdims=True)
            out[:, rows] = joint @ self._vectors  # [B+1, n, L]
        out = np.clip(out, 0.0, 1.0)
        return out[0] if batches == 1 else out

    def predict(self, inputs: Mapping[str, np.ndarray], present: np.ndarray) -> np.ndarray:
        """Each label on where its posterior is at least 1/2, shape (N, n_labels), 0/1.

        The Bayes-optimal decision for the Hamming loss (each label decided on its own); not
        for F1 nor subset accuracy.
        """
        return (self.label_posterior(inputs, present) >= 0.5).astype(np.int64)


def mnar_bayes_auroc(
    dataset: MultimodalDataset, law: MNARLaw, n_mc: int = 2000, seed: int = 0, batches: int = 10
) -> tuple[float, float]:
    """Macro AUROC of the MNAR Bayes posterior on ``dataset``, with its Monte Carlo error.

    The posterior is :meth:`MultilabelGenerator.label_posterior_mnar`, scored on
    ``dataset`` under its own ``observed`` mask, which ``law`` drew. The standard error is
    the batch-means estimate, as in :func:`~mlmm.data.datasets.synthetic.mnar_bayes_accuracy`.

    Returns
    -------
    macro_auroc, standard_error : float
    """
    from mlmm.eval.metrics import multilabel_metrics

    generator = mnar_reference_generator(
        dataset, MultilabelGenerator, "synthetic-multilabel", batches
    )
    proba = generator.label_posterior_mnar(
        dataset.inputs, dataset.observed, law, n_mc=n_mc, seed=seed, batches=batches
    )  # [B+1, N, L]
    return batch_means(
        np.array([multilabel_metrics(p, dataset.targets)["macro_auroc"] for p in proba])
    )


@register_dataset(
    "synthetic-multilabel",
    description="Gaussian label signals in vector modalities; several labels per sample "
    "(multi-hot targets), each label seen strongly by one modality",
    source="generated by mlmm (mlmm.data.datasets.synthetic_multilabel)",
    license="BSD-3-Clause (generated data)",
    modalities="m0, m1, ... (vector)",
    task="multilabel",
)
def load_synthetic_multilabel(
    n_samples: int = 2000,
    n_modalities: int = 2,
    dim: int = 8,
    n_labels: int = 5,
    snr: float = 2.0,
    seed: int = 0,
) -> MultimodalDataset:
    """Generate a multi-label dataset (``TaskSpec("multilabel", n_labels=...)``).

    Parameters
    ----------
    n_samples : int
        Number of samples.
    n_modalities : int
        Number of vector modalities, named ``m0, m1, ...``.
    dim : int
        Feature dimension of every modality.
    n_labels : int
        Number of labels (at least 2), named ``label0, label1, ...``.
    snr : float
        Amplitude of a label's signal in the modality that sees it strongly, in noise
        standard deviations.
    seed : int
        Seeds the parameters and the samples.

    Returns
    -------
    MultimodalDataset
        Targets are a float32 0/1 matrix ``[n_samples, n_labels]``; ``meta["rates"]`` holds
        each label's probability and ``meta["generator"]`` the :class:`MultilabelGenerator`
        (the exact posterior, used for the ``bayes-optimal`` reference rows).

    Examples
    --------
    >>> ds = load_synthetic_multilabel(n_samples=100)
    >>> ds.task.kind, ds.targets.shape
    ('multilabel', (100, 5))
    """
    for name, value, low in (
        ("n_samples", n_samples, 1),
        ("n_modalities", n_modalities, 1),
        ("dim", dim, 1),
        ("n_labels", n_labels, 2),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise MlmmError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not 0 < snr < 1e6:
        raise MlmmError(f"snr must be a positive number, got {snr!r}")
    if n_samples * n_modalities * dim > MAX_VALUES:
        raise MlmmError(
            f"n_samples × n_modalities × dim = {n_samples * n_modalities * dim:,} values is "
            f"more than {MAX_VALUES:,}; ask for fewer samples or features"
        )
    rng = np.random.default_rng(int(seed))
    # the parameters first, then the samples, from one stream
    generator = MultilabelGenerator.create(
        n_modalities=n_modalities, dim=dim, n_labels=n_labels, snr=snr, seed=seed, rng=rng
    )
    raw, targets = generator.sample(n_samples, rng)
    inputs = {name: x.astype(np.float32) for name, x in raw.items()}
    return MultimodalDataset(
        specs=[ModalitySpec(f"m{m}", "vector", (dim,)) for m in range(n_modalities)],
        task=TaskSpec(
            "multilabel", n_labels=n_labels, label_names=[f"label{i}" for i in range(n_labels)]
        ),
        inputs=inputs,
        targets=targets,
        name="synthetic-multilabel",
        meta={
            "generator": generator,
            "rates": generator.rates,
            "params": {
                "n_samples": int(n_samples),
                "n_modalities": int(n_modalities),
                "dim": int(dim),
                "n_labels": int(n_labels),
                "snr": float(snr),
                "seed": int(seed),
            },
        },
    )
