"""auto's leaderboard scores: a NaN out-of-fold row is not read as class 0."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.tune.auto import _leaderboard


def data(targets: np.ndarray) -> MultimodalDataset:
    inputs = {"a": np.zeros((len(targets), 2))}
    specs = (ModalitySpec("a", "vector", (2,)),)
    return MultimodalDataset(specs, TaskSpec("classification", 2), inputs, targets)


def result(oof: np.ndarray) -> dict:
    member = {"method": "logistic-mean-impute", "params": {}}
    return {"model": "m", "member": member, "oof": oof, "epochs": None, "seconds": 0.0, "note": ""}


def leaderboard(oof: np.ndarray, targets: np.ndarray) -> list[dict]:
    r = result(oof)
    return _leaderboard([r], [r], [1.0], [], data(targets))


def test_cv_accuracy_is_undefined_when_an_out_of_fold_row_is_nan():
    # the NaN row's label is 0: an argmax over NaN picked class 0 and counted it correct
    oof = np.array([[np.nan, np.nan], [0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])  # [N, K]
    rows = leaderboard(oof, np.array([0, 1, 0, 0]))
    assert [row["cv_accuracy"] for row in rows] == [None, None]  # ensemble, member


def test_cv_accuracy_counts_correct_rows_when_every_score_is_finite():
    oof = np.array([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])  # [N, K]
    rows = leaderboard(oof, np.array([0, 1, 0, 0]))
    assert [row["cv_accuracy"] for row in rows] == [0.75, 0.75]
    assert not any(math.isnan(row["cv_log_loss"]) for row in rows)
    assert rows[1]["cv_log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.8, 0.9, 0.4])))
