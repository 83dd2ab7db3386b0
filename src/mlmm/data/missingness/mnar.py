"""``mnar``: missing not at random; a modality's own values decide whether it goes missing.

Each modality ``j`` of sample ``i`` goes missing with probability
``sigmoid(theta + strength * u_ij)``, where ``u_ij`` is a standardised score of the modality's
own reading: its first-principal-component score ``s`` (``mode=high``), ``-s`` (``low``) or
``|s|`` re-standardised (``extreme``, the default: unusual readings fail more, like a sensor
that saturates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import (
    FirstPCScore,
    MissingnessModel,
    check_logistic,
    format_number,
    join_spec,
    logistic_options,
    option_value,
    parse_logistic,
    register_missingness,
)
from mlmm.data.missingness.calibration import MAX_P, calibrate_theta, draw_removal, sigmoid
from mlmm.errors import MlmmError

MODES = ("extreme", "high", "low")


@register_missingness
@dataclass(frozen=True)
class MNAR(MissingnessModel):
    """Missing not at random: the odds of losing a reading depend on the reading.

    One ``theta`` shared by all modalities is calibrated so the expected rate in ``unit``
    equals ``rate``; at-least-one is kept by redrawing emptied rows.

    Parameters
    ----------
    rate : float
        In [0, 1).
    mode : {"extreme", "high", "low"}
        Which readings fail more: far from the mean, high scores, or low scores.
    strength : float
        Logit slope on the standardised score, in [-1e4, 1e4] (default 2).
    unit : {"slots", "samples"}
    allow_empty : bool

    Examples
    --------
    >>> MNAR(0.3, mode="high").to_string()
    'mnar:0.3:mode=high'
    """

    kind: ClassVar[str] = "mnar"
    description: ClassVar[str] = "missing not at random: a modality's own values set its odds"
    example: ClassVar[str] = "mnar:0.3"
    option_names: ClassVar[tuple[str, ...]] = ("mode", "strength", "unit", "allow_empty")
    needs_argument: ClassVar[str] = "a missing rate"

    rate: float
    mode: str = "extreme"
    strength: float = 2.0
    unit: str = "slots"
    allow_empty: bool = False

    def __post_init__(self) -> None:
        check_logistic(self)
        if self.mode not in MODES:
            raise MlmmError(
                f"mode must be one of {', '.join(MODES)}, got {self.mode!r} in {self.to_string()!r}"
            )

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        if self.rate == 0.0:
            return np.zeros(dataset.observed.shape, dtype=bool)
        law = self.fit_law(dataset)
        p = law.drop_probabilities(dataset.inputs)  # [N, M]
        return draw_removal(p, dataset.observed, self.allow_empty, rng)

    def fit_law(self, dataset: MultimodalDataset) -> MNARLaw:
        """The removal law this model applies to ``dataset``: the value scores fitted on its
        observed rows and ``theta`` calibrated on them (what :meth:`apply` draws from).

        The law can then give the drop probabilities of values it never saw, such as values
        drawn for an absent modality: the Bayes posterior under MNAR needs them.
        """
        scorers = []
        offsets = np.zeros(dataset.observed.shape)  # [N, M]
        for j, name in enumerate(dataset.modality_names):
            rows = dataset.observed[:, j]
            pc = FirstPCScore.fit(dataset.inputs[name], rows)
            score = np.zeros(len(rows))
            if pc is not None:
                score[rows] = pc(dataset.inputs[name][rows])
            center, spread = 0.0, 0.0
            if self.mode == "extreme":  # |s| re-standardised over the observed rows
                center, spread = _moments(np.abs(score), rows)
            scorers.append(_ValueScore(pc, self.mode, center, spread))
            offsets[:, j] = self.strength * scorers[-1].from_pc(score, rows)
        theta = calibrate_theta(
            offsets, dataset.observed, self.rate, self.unit, self.allow_empty, self.to_string()
        )
        return MNARLaw(self, dataset.modality_names, tuple(scorers), float(theta))

    def to_string(self) -> str:
        options = [("mode", self.mode if self.mode != "extreme" else None), *logistic_options(self)]
        argument = format_number(self.rate)
        return join_spec("mnar", argument, [(k, v) for k, v in options if v is not None])

    @classmethod
    def from_parts(cls, argument, options, text) -> MNAR:
        mode = option_value(options, "mode", text) or "extreme"
        if mode not in MODES:
            raise MlmmError(f"mode must be one of {', '.join(MODES)}, got {mode!r} in {text!r}")
        return cls(mode=mode, **parse_logistic(argument, options, text))


def _moments(values: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over ``rows`` (spread 0 for fewer than two rows or
    constant values: the score is then 0)."""
    spread = float(values[rows].std()) if rows.sum() > 1 else 0.0
    if spread <= 1e-12:
        return 0.0, 0.0
    return float(values[rows].mean()), spread


@dataclass(frozen=True, eq=False)
class _ValueScore:
    """One modality's standardised value score ``u(x)`` (its offset is ``strength * u``)."""

    pc: FirstPCScore | None
    mode: str
    center: float  # mean and spread of |s| over the observed rows (mode "extreme")
    spread: float

    def from_pc(self, score: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``u`` from first-PC scores ``s``; 0 outside ``rows`` and when undefined."""
        if self.mode == "low":
            out = -score
        elif self.mode == "extreme":
            out = np.zeros_like(score)
            if self.spread > 0:
                out = (np.abs(score) - self.center) / self.spread
        else:
            out = score
        return out if rows is None else np.where(rows, out, 0.0)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """``u`` of values ``[n, *shape]``."""
        score = np.zeros(len(values)) if self.pc is None else self.pc(values)
        return self.from_pc(score)


@dataclass(frozen=True, eq=False)
class MNARLaw:
    """An MNAR model fitted to one dataset (:meth:`MNAR.fit_law`): slot ``(i, j)`` is dropped
    with probability ``sigmoid(theta + strength * u_j(x_ij))``, rows left empty redrawn
    (unless ``allow_empty``).

    Attributes
    ----------
    model : MNAR
    modalities : tuple of str
    scores : tuple
        Per modality, the value score ``u_j``; ``scores[j].pc`` is its first-PC map
        (:class:`~mlmm.data.missingness.base.FirstPCScore`, None for a constant modality) and
        ``from_pc`` maps first-PC scores to ``u_j``.
    theta : float
        The calibrated intercept.
    """

    model: MNAR
    modalities: tuple[str, ...]
    scores: tuple[_ValueScore, ...]
    theta: float

    def drop_probability(self, modality: int, score: np.ndarray) -> np.ndarray:
        """Drop probability of modality ``modality`` given first-PC scores ``s`` (any shape),
        before the at-least-one rule."""
        u = self.scores[modality].from_pc(score)
        return np.minimum(sigmoid(self.theta + self.model.strength * u), MAX_P)

    def drop_probabilities(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Drop probabilities ``[N, M]`` of the rows of ``inputs`` (every modality's values)."""
        columns = [
            np.minimum(sigmoid(self.theta + self.model.strength * score(inputs[name])), MAX_P)
            for name, score in zip(self.modalities, self.scores, strict=True)
        ]
        return np.stack(columns, axis=1)  # [N, M]
