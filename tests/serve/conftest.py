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
