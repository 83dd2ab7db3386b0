"""Built-in datasets (registered by name) and bring-your-own-data constructors.

Importing this package imports every loader module, which registers its dataset.
"""

from mlmm.data.datasets.basicmotions import BASICMOTIONS_CLASSES, load_basicmotions
from mlmm.data.datasets.frames import from_arrays, from_dataframe
from mlmm.data.datasets.handwritten import HANDWRITTEN_VIEWS, load_handwritten
from mlmm.data.datasets.registry import DATASETS, list_datasets, load_dataset, register_dataset
from mlmm.data.datasets.synthetic import (
    InteractionGenerator,
    SyntheticGenerator,
    bayes_accuracy_under_mask,
    load_synthetic,
    load_synthetic_interaction,
    mnar_bayes_accuracy,
)
from mlmm.data.datasets.synthetic_multilabel import (
    MultilabelGenerator,
    load_synthetic_multilabel,
    mnar_bayes_auroc,
)

__all__ = [
    "BASICMOTIONS_CLASSES",
    "DATASETS",
    "HANDWRITTEN_VIEWS",
    "InteractionGenerator",
    "MultilabelGenerator",
    "SyntheticGenerator",
    "bayes_accuracy_under_mask",
    "from_arrays",
    "from_dataframe",
    "list_datasets",
    "load_basicmotions",
    "load_dataset",
    "load_handwritten",
    "load_synthetic",
    "load_synthetic_interaction",
    "load_synthetic_multilabel",
    "mnar_bayes_accuracy",
    "mnar_bayes_auroc",
    "register_dataset",
]

# the file-format loaders register themselves too (their readers are imported lazily)
import mlmm.data.formats  # noqa: E402, F401
