"""Tiny trained artifacts shared by the deploy tests (trained once per session)."""

import pytest

import mlmm


def _train(tmp_path_factory, method):
    result = mlmm.run_experiment(
        "synthetic",
        method,
        dataset_params={"n_samples": 240},
        missing="mcar:0.3",
        subsets=False,
        trainer={"max_epochs": 2, "progress": False},
    )
    path = tmp_path_factory.mktemp(method) / "run"
    result.trained.save(path)
    return path


@pytest.fixture(scope="session")
def hemis_run(tmp_path_factory):
    """An artifact of hemis on 3 vector modalities (m0, m1, m2 of 16 features), 4 classes."""
    return _train(tmp_path_factory, "hemis")


@pytest.fixture(scope="session")
def late_fusion_run(tmp_path_factory):
    """An artifact of late-fusion on the same data."""
    return _train(tmp_path_factory, "late-fusion")


@pytest.fixture(scope="session")
def two_sequences():
    """zero-impute on a vector "a" [5] and two variable-length sequences "s" [12, 2] and
    "u" [7, 3] ("u" absent, length 0, in every fifth row), 3 classes; the model and its data."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = 60
    y = np.arange(n) % 3
    specs = [
        mlmm.ModalitySpec("a", "vector", (5,)),
        mlmm.ModalitySpec("s", "sequence", (12, 2)),
        mlmm.ModalitySpec("u", "sequence", (7, 3)),
    ]
    inputs = {
        "a": rng.normal(size=(n, 5)) + y[:, None],
        "s": rng.normal(size=(n, 12, 2)) + y[:, None, None],
        "u": rng.normal(size=(n, 7, 3)) - y[:, None, None],
    }
    lengths = {"s": rng.integers(1, 13, size=n), "u": rng.integers(1, 8, size=n)}
    observed = np.ones((n, 3), dtype=bool)
    observed[::5, 2] = False
    lengths["u"][::5] = 0
    data = mlmm.MultimodalDataset(
        specs,
        mlmm.TaskSpec("classification", n_classes=3),
        inputs,
        y,
        observed=observed,
        lengths=lengths,
    )
    model = mlmm.create_method("zero-impute", data.specs, data.task, hidden=8)
    return mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data), data
