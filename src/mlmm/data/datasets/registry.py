"""The dataset registry: ``register_dataset``, ``load_dataset``, ``list_datasets``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from mlmm.data.dataset import MultimodalDataset
from mlmm.errors import MlmmError, did_you_mean
from mlmm.registry import Registry

DATASETS: Registry[Callable[..., MultimodalDataset]] = Registry("dataset")


def register_dataset(name: str, *, description: str, source: str, license: str = "", **info: Any):
    """Register a loader ``f(**params) -> MultimodalDataset`` under ``name``.

    ``description`` is one line for ``mlmm datasets``; ``source`` names where the data comes
    from (citation or "generated"); ``license`` its licence.
    """
    return DATASETS.register(name, description=description, source=source, license=license, **info)


def load_dataset(name: str, **params: Any) -> MultimodalDataset:
    """Load a registered dataset by name, e.g. ``load_dataset("handwritten")``.

    Keyword arguments go to the loader; unknown ones raise with the accepted names.
    """
    check_dataset_params(name, params)
    return DATASETS.get(name).obj(**params)


def check_dataset_params(name: str, params: Mapping[str, Any]) -> None:
    """Raise one line naming the closest parameters when the loader of ``name`` lacks a key."""
    accepted = inspect.signature(DATASETS.get(name).obj).parameters
    for key in params:
        if key not in accepted:
            if not accepted:
                raise MlmmError(f"dataset {name!r} takes no parameters, got {key!r}")
            raise MlmmError(
                f"dataset {name!r} has no parameter {key!r}.{did_you_mean(key, accepted)}"
            )


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell-style ``pattern``."""
    return DATASETS.names(pattern)
