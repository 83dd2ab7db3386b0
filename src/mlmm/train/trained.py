"""``TrainedModel``: a fitted method together with its preprocessing, ready to answer."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mlmm
from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.preprocessing import Standardizer
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import ArtifactError, MlmmError
from mlmm.methods.base import MissingModalityModel
from mlmm.methods.registry import METHODS, create_method
from mlmm.train.checkpoint import load_artifact, save_artifact
from mlmm.train.trainer import TrainHistory, _check_matches, predict_batches


@dataclass
class TrainedModel:
    """A trained method plus the standardisation fitted on its training data.

    Predicts on raw (unstandardised) datasets with any presence pattern. Saved and loaded
    as an artifact directory (JSON config + safetensors weights).

    Attributes
    ----------
    model : MissingModalityModel
    standardizer : Standardizer
    histories : list of TrainHistory
        One per training stage.
    trainer_config : dict
    info : dict
        Where the model came from (dataset, missingness, split seed...).
    prior : list of float
        Training class frequencies (classification) or target mean, used only for samples
        with no modality present when ``on_empty="prior"``.
    validation : dict
        Validation metrics stored with the artifact (filled by the experiment runner).
    """

    model: MissingModalityModel
    standardizer: Standardizer
    histories: list[TrainHistory]
    trainer_config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    prior: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    validation: dict[str, Any] = field(default_factory=dict)

    @property
    def specs(self) -> tuple[ModalitySpec, ...]:
        return self.model.specs

    @property
    def task(self) -> TaskSpec:
        return self.model.task

    @property
    def method(self) -> str:
        return self.model.method_name

    def to(self, device: str | torch.device) -> TrainedModel:
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``); returns ``self``."""
        from mlmm.utils import resolve_device

        self.model.to(resolve_device(device))
        return self

    def n_parameters(self) -> int:
        """Number of learnable parameters."""
        return sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------ prediction
    def predict_raw(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        """Model outputs for ``dataset``: class probabilities ``[N, K]`` or values ``[N]``.

        ``on_empty`` says what to do with samples that have no modality present: ``"error"``
        (default) refuses them; ``"prior"`` answers them with the training class frequencies
        (or target mean).
        """
        _check_matches(self.model, dataset, "input")
        if on_empty not in ("error", "prior"):
            raise MlmmError(f"on_empty must be 'error' or 'prior', got {on_empty!r}")
        empty = ~dataset.observed.any(axis=1)
        if empty.any() and on_empty == "error":
            raise MlmmError(
                f"{int(empty.sum())} sample(s) have no modality present and cannot be answered; "
                f"drop them or pass on_empty='prior'"
            )
        data = self.standardizer.transform(dataset)
        batch = MultimodalBatch.from_dataset(data, with_target=False)
        device = next(self.model.parameters()).device
        pred = predict_batches(self.model, batch.to(device)).cpu()
        if self.task.is_classification:
            out = torch.softmax(pred.double(), dim=1).numpy()
            out[empty] = np.asarray(self.prior)
        else:
            out = self.standardizer.inverse_target(pred.double().numpy())
            out[empty] = self.prior[0]
        return out

    def predict_proba(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        """Class probabilities ``[N, K]`` (classification only)."""
        if not self.task.is_classification:
            raise MlmmError("predict_proba is for classification; use predict for regression")
        return self.predict_raw(dataset, on_empty)

    def predict(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        """Class labels ``[N]`` (classification) or values ``[N]`` (regression)."""
        out = self.predict_raw(dataset, on_empty)
        return out.argmax(axis=1) if self.task.is_classification else out

    # ------------------------------------------------------------ persistence
    def config(self) -> dict[str, Any]:
        """Everything but the weights, as JSON-ready data."""
        return {
            "library_version": mlmm.__version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "method": self.method,
            "class": type(self.model).__qualname__,
            "hyperparameters": self.model.get_hyperparameters(),
            "modalities": [s.to_dict() for s in self.specs],
            "task": self.task.to_dict(),
            "preprocessing": self.standardizer.to_dict(),
            "prior": self.prior,
            "trainer": self.trainer_config,
            "train_seconds": self.train_seconds,
            "histories": [h.to_dict() for h in self.histories],
            "info": self.info,
            "validation": self.validation,
        }

    def save(self, path: str | Path) -> Path:
        """Save as an artifact directory (atomic; an existing one is replaced when complete)."""
        return save_artifact(path, self.model.state_dict(), self.config())

    @classmethod
    def load(cls, path: str | Path) -> TrainedModel:
        """Load and check an artifact directory written by :meth:`save`."""
        config, state = load_artifact(path)
        try:
            method = config["method"]
            if method not in METHODS:
                raise ArtifactError(
                    f"{path} holds a {method!r} model, a method this mlmm does not have; "
                    f"upgrade mlmm or install the plugin that provides it"
                )
            specs = [ModalitySpec.from_dict(d) for d in config["modalities"]]
            task = TaskSpec.from_dict(config["task"])
            model = create_method(method, specs, task, **config["hyperparameters"])
            standardizer = Standardizer.from_dict(config["preprocessing"])
        except (KeyError, TypeError) as err:
            raise ArtifactError(
                f"{path}/config.json lacks or garbles {err}; retrain the model"
            ) from None
        except MlmmError as err:
            if isinstance(err, ArtifactError):
                raise
            raise ArtifactError(f"{path}/config.json is incompatible: {err}") from None
        # torch checks names and shapes; a module whose buffers hold data (a k-NN bank of
        # training samples) sizes them from the stored tensors in its _load_from_state_dict
        expected = set(model.state_dict())
        try:
            model.load_state_dict(state)
            shapes_fit = True
        except RuntimeError:
            shapes_fit = False
        if not shapes_fit or expected != set(state):
            missing = sorted(expected - set(state))[:3]
            extra = sorted(set(state) - expected)[:3]
            raise ArtifactError(
                f"{path}: weights do not fit the {method!r} model (missing {missing}, unexpected "
                f"{extra}, or shapes differ); it was written by an incompatible version, retrain it"
            )
        model.eval()
        histories = [TrainHistory(**h) for h in config.get("histories", [])]
        return cls(
            model,
            standardizer,
            histories,
            config.get("trainer", {}),
            config.get("info", {}),
            config.get("prior", []),
            config.get("train_seconds", 0.0),
            config.get("validation", {}),
        )
