"""Modality and task specifications: the static description every part of mlmm shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mlmm.errors import MlmmError

ModalityKind = Literal["vector", "sequence", "image"]
_RANK = {"vector": 1, "sequence": 2, "image": 3}


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModalitySpec:
    """One modality: a name, a kind and a fixed per-sample shape.

    Parameters
    ----------
    name : str
        Identifier used in batches, missingness specs and reports (``"pix"``, ``"gyro"``).
    kind : {"vector", "sequence", "image"}
        Chooses the encoder. Shapes are ``(D,)`` for vectors, ``(T, C)`` (time, channels) for
        sequences and ``(C, H, W)`` for images.
    shape : tuple of int
        Shape of one sample of this modality.
    standardize : bool, default True
        Whether the trainer z-scores this modality (:class:`~mlmm.data.Standardizer`). False
        for inputs whose values are codes, not measurements: token ids read by a pretrained
        text backbone (``mlmm.nn.backbones.minilm_token_ids``), category indices.

    Examples
    --------
    >>> ModalitySpec("acc", "sequence", (100, 3)).n_features
    3
    >>> ModalitySpec("text", "vector", (32,), standardize=False).to_dict()["standardize"]
    False
    """

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    standardize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not self.name.isidentifier():
            raise MlmmError(
                f"modality name must be a non-empty identifier (letters, digits, _), "
                f"got {self.name!r}"
            )
        if self.kind not in _RANK:
            raise MlmmError(
                f"modality kind must be one of {sorted(_RANK)}, got {self.kind!r} for {self.name!r}"
            )
        try:
            sizes = tuple(self.shape)
        except TypeError:
            sizes = None
        # a float size such as 2.5 must not be truncated silently to 2
        if sizes is None or not all(_is_int(s) for s in sizes):
            raise MlmmError(
                f"modality shape must be a tuple of integer sizes, got {self.shape!r} for "
                f"{self.name!r}"
            )
        shape = tuple(int(s) for s in sizes)
        object.__setattr__(self, "shape", shape)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise MlmmError(
                f"modality standardize must be True or False, got {self.standardize!r} for "
                f"{self.name!r}"
            )
        object.__setattr__(self, "standardize", bool(self.standardize))
        if len(shape) != _RANK[self.kind] or any(s <= 0 for s in shape):
            raise MlmmError(
                f"a {self.kind} modality needs a shape of {_RANK[self.kind]} positive sizes, "
                f"got {shape} for {self.name!r}"
            )

    @property
    def n_features(self) -> int:
        """Size of the feature/channel axis (vector dim, sequence or image channels)."""
        return self.shape[-1] if self.kind != "image" else self.shape[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``standardize`` only when False, so older files read the same)."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "shape": list(self.shape)}
        if not self.standardize:
            out["standardize"] = False
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModalitySpec:
        """Inverse of :meth:`to_dict`."""
        return cls(d["name"], d["kind"], tuple(d["shape"]), d.get("standardize", True))


@dataclass(frozen=True)
class TaskSpec:
    """The prediction task.

    Parameters
    ----------
    kind : {"classification", "regression"}
    n_classes : int
        Number of classes (classification only, at least 2); targets are ``0..n_classes-1``.
    class_names : tuple of str, optional
        Human names of the classes, in label order.
    """

    kind: Literal["classification", "regression"]
    n_classes: int = 0
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("classification", "regression"):
            raise MlmmError(
                f"task kind must be 'classification' or 'regression', got {self.kind!r}"
            )
        if self.kind == "classification" and self.n_classes < 2:
            raise MlmmError(f"classification needs n_classes >= 2, got {self.n_classes}")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise MlmmError(
                f"class_names has {len(self.class_names)} names for {self.n_classes} classes"
            )
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"

    @property
    def output_dim(self) -> int:
        """Width of a prediction head: ``n_classes`` logits, or 1 value."""
        return self.n_classes if self.is_classification else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        return cls(d["kind"], int(d.get("n_classes", 0)), tuple(d.get("class_names", ())))
