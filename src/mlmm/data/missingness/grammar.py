"""The spec grammar: ``parse_missingness``, ``parse_condition``, ``Condition`` and ``simulate``.

A spec is ``kind[:argument][:option=value | :flag]...``, e.g. ``mcar:0.5``,
``mcar:pix=0.8,fou=0.2:allow_empty``, ``mar:0.3:driver=pix:strength=3``,
``burst:0.3:len=20``. A condition is ``TRAIN=>TEST`` or one spec for both.
See ``docs/missingness.md`` for the table of kinds and options.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness.base import MISSINGNESS, MaskResult, MissingnessModel
from mlmm.errors import MlmmError, did_you_mean


def parse_missingness(text: str | MissingnessModel) -> MissingnessModel:
    """Parse a spec string into a missingness model (a model passes through unchanged).

    Parameters
    ----------
    text : str
        ``kind[:argument][:option=value | :flag]...``; the kind is case-insensitive.

    Returns
    -------
    MissingnessModel
        ``parse_missingness(model.to_string()) == model``.

    Raises
    ------
    MlmmError
        One line naming what is wrong and how to write it. Modality names are checked later,
        when the model is applied to a dataset.

    Examples
    --------
    >>> parse_missingness("mcar:0.50:unit=samples").to_string()
    'mcar:0.5:unit=samples'
    """
    if isinstance(text, MissingnessModel):
        return text
    if not isinstance(text, str) or not text.strip():
        raise MlmmError(
            f"a missingness spec is a string such as 'none', 'mcar:0.5' or 'burst:0.3:len=20', "
            f"got {text!r}"
        )
    if "=>" in text:  # read as a kind 'none=>mcar' or an option '0.2' without this
        test_side = text.rpartition("=>")[2].strip()
        raise MlmmError(
            f"one missingness spec is expected here, got the condition {text!r} (TRAIN=>TEST); "
            f"give one side, e.g. the test side {test_side!r}"
        )
    kind, *fields = text.strip().split(":")
    kind = kind.strip().lower()
    if kind not in MISSINGNESS:
        hint = did_you_mean(kind, MISSINGNESS.names())
        raise MlmmError(f"unknown missingness kind {kind!r} in {text!r}.{hint}")
    model = MISSINGNESS.get(kind).obj
    argument = None
    if model.needs_argument:
        first = fields[0].partition("=")[0] if fields else ""
        if not fields or not fields[0] or first in model.option_names:
            raise MlmmError(
                f"{kind} needs {model.needs_argument} as its first field, e.g. "
                f"{model.example!r}; got {text!r}"
            )
        argument, fields = fields[0], fields[1:]
    if fields and not model.option_names:
        raise MlmmError(f"'{kind}' takes no rate or options, got {text!r}; write '{kind}'")
    options: dict[str, str | None] = {}
    for field in fields:
        key, equals, value = field.partition("=")
        if not key:
            raise MlmmError(
                f"empty field in {text!r} (':' twice or at the end); write e.g. {model.example!r}"
            )
        if key not in model.option_names:
            hint = did_you_mean(key, model.option_names)
            raise MlmmError(f"unknown option {key!r} for {kind} in {text!r}.{hint}")
        if key in options:
            raise MlmmError(f"option {key!r} is given twice in {text!r}")
        options[key] = value if equals else None
    return model.from_parts(argument, options, text)


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs, keeping per-modality rates whole.

    A comma starts a new spec only when what follows begins with a registered kind, so
    ``"mcar:0,mcar:pix=0.8,fou=0.2,none"`` gives ``["mcar:0", "mcar:pix=0.8,fou=0.2", "none"]``.
    Use it instead of ``text.split(",")`` for lists of specs (robustness curves).

    Examples
    --------
    >>> split_specs("none, mcar:0.3, mcar:pix=0.8,fou=0.2")
    ['none', 'mcar:0.3', 'mcar:pix=0.8,fou=0.2']
    >>> split_specs("mcar:0.5,none=>mcar:a=0.5,b=0.1")
    ['mcar:0.5', 'none=>mcar:a=0.5,b=0.1']
    """
    if not isinstance(text, str):
        raise MlmmError(
            f"a list of specs is one comma-separated string such as 'none,mcar:0.3', got {text!r}"
        )
    specs: list[str] = []
    for piece in text.split(","):
        starts_spec = piece.split("=>")[0].split(":")[0].strip().lower() in MISSINGNESS
        if specs and not starts_spec:
            specs[-1] += "," + piece.strip()
        else:
            specs.append(piece.strip())
    return [s for s in specs if s]


@dataclass(frozen=True)
class Condition:
    """A train/test missingness condition (the two may differ: train/test mismatch).

    Parameters
    ----------
    train, test : MissingnessModel or str
        Specs are parsed.

    Examples
    --------
    >>> c = parse_condition("none=>mcar:0.5")
    >>> c.to_string(), c.is_mismatch, parse_condition("mcar:0.5").to_string()
    ('none=>mcar:0.5', True, 'mcar:0.5')
    """

    train: MissingnessModel
    test: MissingnessModel

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", parse_missingness(self.train))
        object.__setattr__(self, "test", parse_missingness(self.test))

    @property
    def is_mismatch(self) -> bool:
        """True when training and testing use different specs."""
        return self.train != self.test

    def to_string(self) -> str:
        """``"A"`` when train and test are equal, else ``"A=>B"``."""
        if not self.is_mismatch:
            return self.train.to_string()
        return f"{self.train.to_string()}=>{self.test.to_string()}"

    def __str__(self) -> str:
        return self.to_string()


def parse_condition(text: str) -> Condition:
    """Parse ``"TRAIN=>TEST"`` (e.g. ``"none=>mcar:0.5"``) or one spec used for both.

    Raises
    ------
    MlmmError
        On more than one ``=>``, an empty side, or a malformed spec.
    """
    if not isinstance(text, str):
        raise MlmmError(f"a condition is a string such as 'none=>mcar:0.5', got {text!r}")
    sides = text.split("=>")
    if len(sides) > 2 or not all(s.strip() for s in sides):
        raise MlmmError(
            f"a condition is 'TRAIN=>TEST' (e.g. 'none=>mcar:0.5') or one spec for both, "
            f"got {text!r}"
        )
    return Condition(sides[0].strip(), sides[-1].strip())


def simulate(
    dataset: MultimodalDataset,
    spec: str | MissingnessModel,
    seed: int | np.random.Generator,
) -> tuple[MultimodalDataset, MaskResult]:
    """Apply a missingness spec and return the masked dataset with what was done.

    Parameters
    ----------
    dataset : MultimodalDataset
    spec : str or MissingnessModel
    seed : int or numpy.random.Generator

    Returns
    -------
    dataset : MultimodalDataset
        ``dataset.with_presence(result.present)``; it allows empty samples if the dataset
        already did or the model has ``allow_empty``.
    result : MaskResult

    Examples
    --------
    >>> import numpy as np
    >>> from mlmm.data.specs import ModalitySpec, TaskSpec
    >>> specs = [ModalitySpec("a", "vector", (1,)), ModalitySpec("b", "vector", (1,))]
    >>> inputs = {"a": np.ones((4, 1)), "b": np.ones((4, 1))}
    >>> ds = MultimodalDataset(specs, TaskSpec("regression"), inputs, np.zeros(4))
    >>> masked, result = simulate(ds, "fixed:-b", seed=0)
    >>> masked.observed[:, 1].any(), result.slot_rate
    (np.False_, 0.5)
    """
    model = parse_missingness(spec)
    result = model.apply(dataset, seed)
    allow_empty = dataset.allow_empty or model.allow_empty
    return dataset.with_presence(result.present, allow_empty=allow_empty), result
