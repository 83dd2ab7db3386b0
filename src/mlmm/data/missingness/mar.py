"""``mar``: missing at random; a driver modality's values decide which other modalities go.

A pivot ("driver") modality is never removed. Each other modality of sample ``i`` goes missing
with probability ``sigmoid(theta + strength * z_i)``, where ``z_i`` is the driver's standardised
first-principal-component score, so missingness depends only on values that stay observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import (
    MissingnessModel,
    check_logistic,
    column,
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


@register_missingness
@dataclass(frozen=True)
class MAR(MissingnessModel):
    """Missing at random, driven by one always-kept modality.

    ``theta`` is calibrated so the expected rate in ``unit`` equals ``rate``, counted over all
    observed slots including the driver's, so with ``M`` modalities all observed the rate stays
    below ``(M - 1) / M``. Samples whose driver was not observed get ``z = 0`` (the average
    score); there the at-least-one guarantee is kept by redrawing emptied rows.

    Parameters
    ----------
    rate : float
        In [0, 1).
    driver : str, optional
        The driver modality; default the first one of the dataset.
    strength : float
        Logit slope on the driver score, in [-1e4, 1e4] (default 2; 0 gives MCAR on the other
        modalities, negative values reverse the dependence).
    unit : {"slots", "samples"}
    allow_empty : bool

    Examples
    --------
    >>> MAR(0.3, driver="pix", strength=3.0).to_string()
    'mar:0.3:driver=pix:strength=3'
    """

    kind: ClassVar[str] = "mar"
    description: ClassVar[str] = "missing at random: a driver modality's values set the odds"
    example: ClassVar[str] = "mar:0.3:driver=pix"
    option_names: ClassVar[tuple[str, ...]] = ("driver", "strength", "unit", "allow_empty")
    needs_argument: ClassVar[str] = "a missing rate"

    rate: float
    driver: str | None = None
    strength: float = 2.0
    unit: str = "slots"
    allow_empty: bool = False

    def __post_init__(self) -> None:
        check_logistic(self)
        if self.driver is not None and not str(self.driver).isidentifier():
            raise MlmmError(f"driver must be a modality name, got {self.driver!r}")

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        if dataset.n_modalities < 2:
            raise MlmmError(
                f"{self.to_string()!r} needs at least 2 modalities (a driver and one to remove), "
                f"got {dataset.n_modalities}; use mcar or mnar instead"
            )
        name = self.driver or dataset.modality_names[0]
        d = column(dataset, name, self.to_string())
        z = first_pc_score(dataset.inputs[name], dataset.observed[:, d])  # [N]
        offsets = np.repeat((self.strength * z)[:, None], dataset.n_modalities, axis=1)
        offsets[:, d] = -np.inf
        return calibrated_removal(
            offsets,
            dataset.observed,
            self.rate,
            self.unit,
            self.allow_empty,
            rng,
            self.to_string(),
            never_removed=f"the driver {name!r} is never removed",
        )

    def to_string(self) -> str:
        options = [("driver", self.driver), *logistic_options(self)]
        argument = format_number(self.rate)
        return join_spec("mar", argument, [(k, v) for k, v in options if v is not None])

    @classmethod
    def from_parts(cls, argument, options, text) -> MAR:
        driver = option_value(options, "driver", text)
        if driver is not None and not driver.isidentifier():
            raise MlmmError(f"driver must be a modality name, got {driver!r} in {text!r}")
        return cls(driver=driver, **parse_logistic(argument, options, text))
