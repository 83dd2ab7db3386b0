"""Held-out hyperparameter tuning (search spaces next to each method, seeded Optuna studies
scored on validation folds of the training data only, stored in the results store) and
``method="auto"`` (:func:`fit_auto`: a portfolio chosen by inner cross-validation, ensembled).

>>> import mlmm
>>> result = mlmm.tune("synthetic", "hemis", missing="mcar:0.5", n_trials=20)  # doctest: +SKIP

Names are imported lazily: method modules import :mod:`mlmm.tune.space` without pulling in
Optuna or the training code.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "tune": "mlmm.tune.study",
    "tune_training_data": "mlmm.tune.study",
    "TuneResult": "mlmm.tune.study",
    "TuneSettings": "mlmm.tune.study",
    "Float": "mlmm.tune.space",
    "Int": "mlmm.tune.space",
    "Categorical": "mlmm.tune.space",
    "When": "mlmm.tune.space",
    "TRAINER_SPACE": "mlmm.tune.space",
    "fit_auto": "mlmm.tune.auto",
    "leaderboard": "mlmm.tune.auto",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlmm.tune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallableModule(types.ModuleType):
    """``mlmm.tune`` is this package and the function at once: ``mlmm.tune(dataset, method)``
    runs :func:`mlmm.tune.study.tune` (Python binds ``mlmm.tune`` to the package whenever a
    submodule is imported, so the function cannot simply be re-exported under that name)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from mlmm.tune.study import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
