"""``none``: the identity model; nothing observed is removed (the full-modality condition)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import MissingnessModel, register_missingness
from mlmm.errors import MlmmError


@register_missingness
@dataclass(frozen=True)
class NoMissingness(MissingnessModel):
    """Remove nothing: the presence mask is the dataset's ``observed`` mask.

    Examples
    --------
    >>> NoMissingness().to_string()
    'none'
    """

    kind: ClassVar[str] = "none"
    description: ClassVar[str] = "remove nothing: keep what was observed"
    example: ClassVar[str] = "none"

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(dataset.observed.shape, dtype=bool)

    def to_string(self) -> str:
        return "none"

    @classmethod
    def from_parts(cls, argument, options, text) -> NoMissingness:
        if argument is not None or options:
            raise MlmmError(f"'none' takes no rate or options, got {text!r}; write 'none'")
        return cls()
