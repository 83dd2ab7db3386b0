"""mlmm: deep multimodal learning with missing modalities.

Simulate realistic missingness, train any method family behind one API, benchmark honestly
per modality subset, and ship a model that answers with whatever inputs arrive.

>>> import mlmm
>>> ds = mlmm.load_dataset("handwritten")              # doctest: +SKIP
>>> res = mlmm.run_experiment(ds, "hemis", missing="mcar:0.5")   # doctest: +SKIP

Public names are imported lazily, so ``import mlmm`` (and ``mlmm --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # data contract
    "ModalitySpec": "mlmm.data.specs",
    "TaskSpec": "mlmm.data.specs",
    "MultimodalDataset": "mlmm.data.dataset",
    "MultimodalBatch": "mlmm.data.batch",
    "TorchMultimodalDataset": "mlmm.data.batch",
    "collate": "mlmm.data.batch",
    "train_val_test_split": "mlmm.data.split",
    "Standardizer": "mlmm.data.preprocessing",
    # datasets
    "load_dataset": "mlmm.data.datasets",
    "list_datasets": "mlmm.data.datasets",
    "register_dataset": "mlmm.data.datasets",
    "from_arrays": "mlmm.data.datasets",
    "from_dataframe": "mlmm.data.datasets",
    # missingness
    "parse_missingness": "mlmm.data.missingness",
    "parse_condition": "mlmm.data.missingness",
    "simulate": "mlmm.data.missingness",
    # methods
    "create_method": "mlmm.methods",
    "list_methods": "mlmm.methods",
    "register_method": "mlmm.methods",
    "MissingModalityModel": "mlmm.methods",
    "MethodOutput": "mlmm.methods",
    # training, evaluation, experiments
    "Trainer": "mlmm.train",
    "TrainedModel": "mlmm.train",
    "evaluate": "mlmm.eval",
    "summarize": "mlmm.eval",
    "run_experiment": "mlmm.experiment",
    "MissingModalityClassifier": "mlmm.estimator",
    "MissingModalityRegressor": "mlmm.estimator",
    "MultimodalArray": "mlmm.estimator",
    "MlmmError": "mlmm.errors",
}

__all__ = ["__version__", "tune", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name == "tune":  # a callable package: mlmm.tune(dataset, method, ...) runs a study
        return importlib.import_module("mlmm.tune")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
