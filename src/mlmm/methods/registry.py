"""The method registry: ``register_method``, ``create_method``, ``list_methods``."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError, did_you_mean
from mlmm.methods.base import MissingModalityModel
from mlmm.registry import Registry

METHODS: Registry[type[MissingModalityModel]] = Registry("method")

#: The taxonomy of DESIGN.md (family -> subtypes), plus classical reference baselines.
TAXONOMY: dict[str, tuple[str, ...]] = {
    "imputation": ("composition", "generation"),
    "representation": ("coordinated", "composition", "generation"),
    "architecture": ("attention", "distillation", "graph learning", "large multimodal models"),
    "combination": ("ensemble", "dedicated training", "discrete scheduler"),
    "reference": ("classical",),
}


def register_method(name: str, *, family: str, subtype: str, paper: str):
    """Class decorator registering a :class:`MissingModalityModel` subclass under ``name``.

    ``family``/``subtype`` must come from :data:`TAXONOMY`; ``paper`` is the short citation
    shown by ``mlmm methods`` (the full one is in the class docstring).
    """
    if family not in TAXONOMY or subtype not in TAXONOMY[family]:
        raise MlmmError(f"unknown family/subtype {family!r}/{subtype!r}; see TAXONOMY")

    def decorator(cls: type[MissingModalityModel]) -> type[MissingModalityModel]:
        cls.method_name, cls.family, cls.subtype, cls.paper = name, family, subtype, paper
        return METHODS.register(name, family=family, subtype=subtype, paper=paper)(cls)

    return decorator


def method_hyperparameters(name: str) -> dict[str, Any]:
    """Default hyperparameters of a registered method (from its constructor signature)."""
    cls = METHODS.get(name).obj
    out = {}
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname in ("self", "specs", "task") or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[pname] = p.default
    return out


def member_resolved_from_state(
    name: str, params: dict[str, Any], state: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """:meth:`~MissingModalityModel.resolved_from_state` of a method held by another (a
    scheduler's expert, an auto-ensemble's member): ``name`` built from ``params`` (as given,
    its defaults filled in), whose weights are the entries of ``state`` under ``prefix``.

    A method holding others calls it from its own ``resolved_from_state``, so the sizes an
    old artifact's members resolved are read off their weights however deep they sit (an
    auto-ensemble holding a scheduler holding a flex-moe). A method this mlmm lacks reads
    nothing: the load names it.
    """
    if name not in METHODS.names():
        return {}
    given = {**method_hyperparameters(name), **params}
    own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return METHODS.get(name).obj.resolved_from_state(given, own)


def create_method(
    name: str, specs: Sequence[ModalitySpec], task: TaskSpec, **params: Any
) -> MissingModalityModel:
    """Build a registered method: ``create_method("hemis", dataset.specs, dataset.task, hidden=128)``.

    Unknown hyperparameters raise with the accepted names.
    """
    cls = METHODS.get(name).obj
    accepted = method_hyperparameters(name)
    for key in params:
        if key not in accepted:
            raise MlmmError(
                f"method {name!r} has no hyperparameter {key!r}.{did_you_mean(key, accepted)}"
            )
    return cls(specs, task, **params)


def list_methods(pattern: str = "*", family: str | None = None) -> list[str]:
    """Names of registered methods matching ``pattern`` (shell-style), optionally one family."""
    return METHODS.names(pattern, family=family)
