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


def test_an_unknown_column_of_a_wide_frame_is_one_short_line():
    # a 500-column DataFrame listed every column after "Choose from:" (r1's finding)
    import pandas as pd

    from mlmm.data.inputs import as_sample_arrays

    frame = pd.DataFrame(np.zeros((2, 500)), columns=[f"c{i}" for i in range(500)])
    with pytest.raises(MlmmError, match=r"\(500 in all\)") as caught:
        as_sample_arrays(frame, {"a": ["zzz_unknown"]})
    assert len(str(caught.value)) < 400
    assert "\n" not in str(caught.value)
