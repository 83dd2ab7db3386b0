"""User inputs -> per-modality arrays: shapes checked against what the model was fitted on."""

import numpy as np
import pytest

from mlmm.data.inputs import align_modalities
from mlmm.errors import MlmmError

SHAPES = {"a": (3,), "b": (2,)}


def test_an_omitted_modality_is_absent_and_a_wrong_shape_is_named():
    rng = np.random.default_rng(0)
    out = align_modalities({"a": rng.normal(size=(4, 3))}, SHAPES, "fit")
    assert np.isnan(out["b"]).all() and out["b"].shape == (4, 2)
    with pytest.raises(MlmmError, match=r"^modality 'a' has shape \(4, 2\), expected \(4, 3\)"):
        align_modalities({"a": rng.normal(size=(4, 2))}, SHAPES, "fit")


def test_one_sample_without_its_sample_axis_says_how_to_give_it():
    # was: "has shape (3,), expected (3, 3)", which reads as a wrong width
    sample = {"a": np.zeros(3), "b": np.zeros(2)}
    with pytest.raises(MlmmError, match=r"for one sample, give it a leading axis \(x\[None\]\)"):
        align_modalities(sample, SHAPES, "fit")
    out = align_modalities({k: v[None] for k, v in sample.items()}, SHAPES, "fit")
    assert out["a"].shape == (1, 3)
