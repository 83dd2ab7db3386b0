"""Built-in datasets (registered by name) and bring-your-own-data constructors."""

from mlmm.data.datasets.registry import DATASETS, list_datasets, load_dataset, register_dataset

__all__ = ["DATASETS", "list_datasets", "load_dataset", "register_dataset"]
