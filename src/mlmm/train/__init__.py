"""Training: the shared trainer, trained models and their artifacts."""

from mlmm.train.checkpoint import load_artifact, save_artifact
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer, TrainHistory

__all__ = ["TrainHistory", "TrainedModel", "Trainer", "load_artifact", "save_artifact"]
