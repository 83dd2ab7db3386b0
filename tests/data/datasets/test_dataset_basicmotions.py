"""The shipped UEA BasicMotions data."""

import os
from pathlib import Path

import numpy as np
import pytest

from mlmm.data.datasets import BASICMOTIONS_CLASSES, DATASETS, load_basicmotions, load_dataset


def _source_folder() -> Path | None:
    candidates = [
        os.environ.get("MLMM_SOURCE_DATA"),
        Path(__file__).resolve().parents[4] / "shared" / "data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "aeon" / "BasicMotions_TRAIN.ts").is_file():
            return Path(candidate) / "aeon"
    return None


def test_modalities_shapes_and_classes():
    ds = load_dataset("basicmotions")
    assert ds.n_samples == 80
    assert ds.modality_names == ("acc", "gyro")
    assert [(s.kind, s.shape) for s in ds.specs] == [("sequence", (100, 3))] * 2
    assert ds.task.class_names == ("Standing", "Running", "Walking", "Badminton")
    assert ds.task.class_names == BASICMOTIONS_CLASSES
    assert np.bincount(ds.targets).tolist() == [20, 20, 20, 20]
    assert ds.observed.all()
    assert all(
        np.isfinite(ds.inputs[m]).all() and ds.inputs[m].std() > 0.1 for m in ("acc", "gyro")
    )


def test_official_split_is_40_train_then_40_test_with_10_per_class_each():
    ds = load_basicmotions()
    split = ds.meta["official_split"]
    assert split.tolist() == ["train"] * 40 + ["test"] * 40
    for part in ("train", "test"):
        assert np.bincount(ds.targets[split == part]).tolist() == [10, 10, 10, 10]


def test_gyroscope_channels_have_near_zero_mean_in_every_class():
    # The evidence behind the (unverified) reading channels 0-2 = acc, 3-5 = gyro.
    ds = load_basicmotions()
    for label in range(4):
        rows = ds.targets == label
        assert np.abs(ds.inputs["gyro"][rows].mean(axis=(0, 1))).max() < 0.15
    running = ds.inputs["acc"][ds.targets == 1].mean(axis=(0, 1))
    assert np.abs(running).max() > 2.0


def test_attribution_and_unverified_channel_note():
    info = DATASETS.get("basicmotions").info
    assert "Bagnall" in info["source"] and "aeon" in info["source"]
    assert "unverified" in load_basicmotions.__doc__
    assert "unverified" in load_basicmotions().meta["channels"]


@pytest.mark.skipif(
    _source_folder() is None,
    reason="the original BasicMotions .ts files (shared/data/aeon) are not beside this checkout",
)
def test_shipped_data_equals_the_ts_sources():
    folder = _source_folder()
    series, labels = [], []
    for part in ("TRAIN", "TEST"):
        lines = (folder / f"BasicMotions_{part}.ts").read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data") + 1
        for line in lines[start:]:
            if line.strip():
                *channels, label = line.strip().split(":")
                series.append([[float(v) for v in c.split(",")] for c in channels])
                labels.append(label)
    values = np.asarray(series)  # [80, 6, 100]
    ds = load_basicmotions()
    np.testing.assert_array_equal(
        ds.inputs["acc"], values[:, :3].transpose(0, 2, 1).astype(np.float32)
    )
    np.testing.assert_array_equal(
        ds.inputs["gyro"], values[:, 3:].transpose(0, 2, 1).astype(np.float32)
    )
    assert [ds.task.class_names[t] for t in ds.targets] == labels
