"""Methods: the base contract, the registry, and every registered method (one file each)."""

import importlib
import pkgutil

from mlmm.methods.base import (
    MethodOutput,
    MissingModalityModel,
    check_choice,
    check_common,
    check_range,
)
from mlmm.methods.registry import (
    METHODS,
    TAXONOMY,
    create_method,
    list_methods,
    method_hyperparameters,
    register_method,
)


def _import_all_methods() -> None:
    """Import every module under the family subpackages, which registers its method.

    Modules whose name starts with ``_`` (the template) are skipped. A new method needs no
    edit here: put its file in ``methods/<family>/``.
    """
    for family in ("imputation", "representation", "architecture", "combination", "reference"):
        try:
            package = importlib.import_module(f"{__name__}.{family}")
        except ModuleNotFoundError:
            continue
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")


_import_all_methods()

__all__ = [
    "METHODS",
    "TAXONOMY",
    "MethodOutput",
    "MissingModalityModel",
    "check_choice",
    "check_common",
    "check_range",
    "create_method",
    "list_methods",
    "method_hyperparameters",
    "register_method",
]
