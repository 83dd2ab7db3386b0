"""``fixed``: a deterministic pattern; named modalities always missing, or only named ones kept.

``fixed:-pix-fou`` removes ``pix`` and ``fou`` everywhere; ``fixed:+fou`` keeps only ``fou``.
This is the "one modality missing at test time" condition of many papers. Nothing is random
and nothing is calibrated; the seed is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import (
    MissingnessModel,
    column,
    join_spec,
    option_flag,
    register_missingness,
)
from mlmm.errors import MlmmError

_PATTERN = re.compile(r"([+-])([A-Za-z_][A-Za-z0-9_]*)")


@register_missingness
@dataclass(frozen=True)
class Fixed(MissingnessModel):
    """Always remove the named modalities, or remove every modality except the named ones.

    Parameters
    ----------
    names : tuple of str
        Modality names (checked against the dataset when applied).
    keep : bool
        False (``-name``): remove ``names``. True (``+name``): keep only ``names``.
    allow_empty : bool
        Accept samples left with no modality; otherwise such a pattern raises.

    Examples
    --------
    >>> Fixed(("pix",)).to_string(), Fixed(("fou", "pix"), keep=True).to_string()
    ('fixed:-pix', 'fixed:+fou+pix')
    """

    kind: ClassVar[str] = "fixed"
    description: ClassVar[str] = "fixed pattern: -name removes it everywhere, +name keeps only it"
    example: ClassVar[str] = "fixed:-pix"
    option_names: ClassVar[tuple[str, ...]] = ("allow_empty",)
    needs_argument: ClassVar[str] = "a pattern of -names (remove) or +names (keep only)"

    names: tuple[str, ...]
    keep: bool = False
    allow_empty: bool = False

    def __post_init__(self) -> None:
        names = (self.names,) if isinstance(self.names, str) else tuple(self.names)
        object.__setattr__(self, "names", names)
        if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
            raise MlmmError(f"fixed needs one or more modality names, got {self.names!r}")
        if len(set(names)) != len(names):
            raise MlmmError(f"a modality is named twice in {self.to_string()!r}")

    def removal(self, dataset: MultimodalDataset, rng: np.random.Generator) -> np.ndarray:
        named = np.zeros(dataset.n_modalities, dtype=bool)
        named[[column(dataset, n, self.to_string()) for n in self.names]] = True
        removed = dataset.observed & (~named if self.keep else named)[None, :]  # [N, M]
        emptied = dataset.observed.any(axis=1) & ~(dataset.observed & ~removed).any(axis=1)
        if emptied.any() and not self.allow_empty:
            raise MlmmError(
                f"{self.to_string()!r} leaves {int(emptied.sum())} of {dataset.n_samples} "
                f"sample(s) with no modality (first: {np.flatnonzero(emptied)[:5].tolist()}); "
                f"keep more modalities or add ':allow_empty'"
            )
        return removed

    def to_string(self) -> str:
        sign = "+" if self.keep else "-"
        argument = "".join(sign + n for n in self.names)
        return join_spec("fixed", argument, [("allow_empty", True)] * self.allow_empty)

    @classmethod
    def from_parts(cls, argument, options, text) -> Fixed:
        items = _PATTERN.findall(argument)
        if not argument.startswith(("+", "-")) or "".join(s + n for s, n in items) != argument:
            raise MlmmError(
                f"a fixed pattern is +name... (keep only these) or -name... (remove these), "
                f"got {argument!r} in {text!r}; e.g. 'fixed:-pix' or 'fixed:+fou+pix'"
            )
        signs = {s for s, _ in items}
        if len(signs) > 1:
            raise MlmmError(
                f"a fixed pattern uses either + (keep only) or - (remove), not both, in {text!r}"
            )
        names = tuple(n for _, n in items)
        if len(set(names)) != len(names):
            raise MlmmError(f"a modality is named twice in {text!r}")
        allow_empty = option_flag(options, "allow_empty", text)
        return cls(names, keep=signs == {"+"}, allow_empty=allow_empty)
