"""Methods: the base contract, the registry, and every registered method (one file each)."""

from mlmm.methods.base import MethodOutput, MissingModalityModel, check_choice, check_range
from mlmm.methods.combination import late_fusion  # noqa: F401, E402

# Importing the method modules registers them.
from mlmm.methods.imputation import zero_impute  # noqa: F401, E402
from mlmm.methods.registry import (
    METHODS,
    TAXONOMY,
    create_method,
    list_methods,
    method_hyperparameters,
    register_method,
)
from mlmm.methods.representation import hemis  # noqa: F401, E402

__all__ = [
    "METHODS",
    "TAXONOMY",
    "MethodOutput",
    "MissingModalityModel",
    "check_choice",
    "check_range",
    "create_method",
    "list_methods",
    "method_hyperparameters",
    "register_method",
]
