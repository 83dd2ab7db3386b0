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


#: The task kinds mlmm trains for.
TASK_KINDS = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class TaskSpec:
    """The prediction task.

    Parameters
    ----------
    kind : {"classification", "regression", "multilabel"}
        ``classification``: one label per sample, targets ``0..n_classes-1``;
        ``regression``: one value; ``multilabel``: any number of ``n_labels`` labels per
        sample, targets a multi-hot ``[N, n_labels]`` matrix of 0/1 (sigmoid outputs).
    n_classes : int
        Number of classes (classification only, at least 2); targets are ``0..n_classes-1``.
    class_names : tuple of str, optional
        Human names of the classes, in label order.
    n_labels : int
        Number of labels (multilabel only, at least 2); columns of the target matrix.
    label_names : tuple of str, optional
        Human names of the labels, in column order.

    Examples
    --------
    >>> TaskSpec("multilabel", n_labels=3, label_names=("drama", "comedy", "war")).output_dim
    3
    """

    kind: Literal["classification", "regression", "multilabel"]
    n_classes: int = 0
    class_names: tuple[str, ...] = ()
    n_labels: int = 0
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise MlmmError(f"task kind must be one of {list(TASK_KINDS)}, got {self.kind!r}")
        for field_name in ("n_classes", "n_labels"):
            if not _is_int(getattr(self, field_name)):
                raise MlmmError(
                    f"{field_name} must be an integer, got {getattr(self, field_name)!r}"
                )
        if self.kind == "classification" and self.n_classes < 2:
            raise MlmmError(f"classification needs n_classes >= 2, got {self.n_classes}")
        if self.kind == "multilabel":
            if self.n_classes or self.class_names:
                raise MlmmError(
                    f"a multilabel task counts labels in n_labels, got n_classes="
                    f"{self.n_classes}; use TaskSpec('multilabel', n_labels={self.n_classes or 2})"
                )
            if self.n_labels < 2:
                raise MlmmError(
                    f"multilabel needs n_labels >= 2 (one column per label), got "
                    f"{self.n_labels}; a single label is binary classification"
                )
        elif self.n_labels or self.label_names:
            raise MlmmError(
                f"n_labels and label_names are for multilabel tasks, got n_labels="
                f"{self.n_labels} for a {self.kind} task; use kind='multilabel'"
            )
        if self.class_names and len(self.class_names) != self.n_classes:
            raise MlmmError(
                f"class_names has {len(self.class_names)} names for {self.n_classes} classes"
            )
        if self.label_names and len(self.label_names) != self.n_labels:
            raise MlmmError(
                f"label_names has {len(self.label_names)} names for {self.n_labels} labels"
            )
        object.__setattr__(self, "n_classes", int(self.n_classes))
        object.__setattr__(self, "n_labels", int(self.n_labels))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "label_names", tuple(str(c) for c in self.label_names))

    @property
    def is_classification(self) -> bool:
        """True for single-label classification (softmax over ``n_classes``)."""
        return self.kind == "classification"

    @property
    def is_multilabel(self) -> bool:
        """True for multi-label classification (one sigmoid per label)."""
        return self.kind == "multilabel"

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def output_dim(self) -> int:
        """Width of a prediction head: ``n_classes`` logits, ``n_labels`` logits, or 1 value."""
        if self.is_classification:
            return self.n_classes
        return self.n_labels if self.is_multilabel else 1

    @property
    def labels(self) -> tuple[str, ...]:
        """Multilabel: the label names, or ``"0", "1", ...`` when none were given."""
        return self.label_names or tuple(str(i) for i in range(self.n_labels))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the label fields only for multilabel, so older files read the same)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
        }
        if self.is_multilabel:
            out["n_labels"] = self.n_labels
            out["label_names"] = list(self.label_names)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            d["kind"],
            int(d.get("n_classes", 0)),
            tuple(d.get("class_names", ())),
            int(d.get("n_labels", 0)),
            tuple(d.get("label_names", ())),
        )
