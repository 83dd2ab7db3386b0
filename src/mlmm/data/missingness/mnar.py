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
    MissingnessModel,
    check_logistic,
    first_pc_score,
    format_number,
    join_spec,
    logistic_options,
    option_value,
    parse_logistic,
    register_missingness,
)
from mlmm.data.missingness.calibration import calibrated_removal
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
        offsets = np.zeros(dataset.observed.shape)  # [N, M]
        for j, name in enumerate(dataset.modality_names):
            rows = dataset.observed[:, j]
            score = first_pc_score(dataset.inputs[name], rows)
            if self.mode == "low":
                score = -score
            elif self.mode == "extreme":
                score = _standardise(np.abs(score), rows)
            offsets[:, j] = self.strength * score
        return calibrated_removal(
            offsets, dataset.observed, self.rate, self.unit, self.allow_empty, rng, self.to_string()
        )

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


def _standardise(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over ``rows``; 0 elsewhere and for constant values."""
    out = np.zeros_like(values)
    spread = values[rows].std() if rows.sum() > 1 else 0.0
    if spread > 1e-12:
        out[rows] = (values[rows] - values[rows].mean()) / spread
    return out
