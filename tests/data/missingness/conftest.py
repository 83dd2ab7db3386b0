"""Tiny seeded synthetic datasets for the missingness tests."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec


def build(n: int = 20_000, observed: np.ndarray | None = None, seed: int = 0, **kw):
    """Three vector modalities: pix (1-D), fou (3-D, one dominant axis), kar (2-D)."""
    rng = np.random.default_rng(seed)
    specs = [
        ModalitySpec("pix", "vector", (1,)),
        ModalitySpec("fou", "vector", (3,)),
        ModalitySpec("kar", "vector", (2,)),
    ]
    inputs = {
        "pix": rng.normal(size=(n, 1)),
        "fou": rng.normal(size=(n, 3)) * np.array([3.0, 1.0, 0.5]),
        "kar": rng.normal(size=(n, 2)),
    }
    targets = rng.integers(0, 2, n)
    return MultimodalDataset(
        specs, TaskSpec("classification", 2), inputs, targets, observed=observed, **kw
    )


@pytest.fixture(scope="session")
def full_data() -> MultimodalDataset:
    """20 000 samples, every modality observed."""
    return build()


@pytest.fixture(scope="session")
def gappy_data() -> MultimodalDataset:
    """20 000 samples; each slot observed with probability 0.8, no empty rows."""
    rng = np.random.default_rng(1)
    observed = rng.random((20_000, 3)) < 0.8
    observed[~observed.any(axis=1), 0] = True
    return build(observed=observed)


@pytest.fixture(scope="session")
def make_data():
    """The dataset builder, for tests that need their own shape or observed mask."""
    return build
