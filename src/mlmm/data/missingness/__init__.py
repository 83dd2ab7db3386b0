"""Missingness simulators: seeded, pure models that remove observed modalities from a dataset.

Kinds (one file each): ``none``, ``mcar``, ``mar``, ``mnar``, ``fixed``, ``burst``. Specs are
short strings (``mcar:0.5``, ``mar:0.3:driver=pix``, ``burst:0.3:len=20``) parsed by
:func:`parse_missingness`; :func:`simulate` applies one and returns the masked dataset and a
:class:`MaskResult` with the realised rates. See ``docs/missingness.md``.

Examples
--------
>>> parse_condition("none=>mcar:0.5").test
MCAR(rate=0.5, unit='slots', allow_empty=False)
"""

from mlmm.data.missingness.base import (
    MISSINGNESS,
    MaskResult,
    MissingnessModel,
    first_pc_score,
    register_missingness,
)
from mlmm.data.missingness.burst import Burst, gilbert_elliott
from mlmm.data.missingness.fixed import Fixed
from mlmm.data.missingness.grammar import (
    Condition,
    parse_condition,
    parse_missingness,
    simulate,
    split_specs,
)
from mlmm.data.missingness.mar import MAR
from mlmm.data.missingness.mcar import MCAR
from mlmm.data.missingness.mnar import MNAR
from mlmm.data.missingness.none import NoMissingness

__all__ = [
    "MISSINGNESS",
    "MAR",
    "MCAR",
    "MNAR",
    "Burst",
    "Condition",
    "Fixed",
    "MaskResult",
    "MissingnessModel",
    "NoMissingness",
    "first_pc_score",
    "gilbert_elliott",
    "parse_condition",
    "parse_missingness",
    "register_missingness",
    "simulate",
    "split_specs",
]
