"""A tiny stand-in model for the engine tests: fast, and it records what it was given."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.specs import ModalitySpec, TaskSpec


class RecordingModel:
    """Two sequence modalities ``a``, ``b`` of shape (4, 1) (4 slots per 1 s window = 4 Hz).

    Answers class 1 with probability ``sigmoid(sum of the present windows)``; keeps every
    dataset it was asked about in ``calls``."""

    def __init__(self) -> None:
        self.specs = (
            ModalitySpec("a", "sequence", (4, 1)),
            ModalitySpec("b", "sequence", (4, 1)),
        )
        self.task = TaskSpec("classification", 2)
        self.prior = [0.25, 0.75]
        self.calls = []

    def predict_raw(self, dataset, on_empty="error"):
        assert dataset.observed.any(axis=1).all()  # the engine never sends an empty row
        self.calls.append(dataset)
        total = sum(dataset.inputs[n].reshape(dataset.n_samples, -1).sum(1) for n in ("a", "b"))
        p1 = 1 / (1 + np.exp(-total))
        return np.stack([1 - p1, p1], axis=1)


@pytest.fixture
def model() -> RecordingModel:
    return RecordingModel()


def feed(engine, events):
    """Push ``(time, sensor, value)`` events one by one; all answers, in order."""
    answers = []
    for t, sensor, value in events:
        answers += engine.push(t, sensor, np.array([value], dtype=np.float32))
    return answers
