"""The trainer's per-epoch hook (``Trainer(on_epoch=...)``), which tuning prunes through."""

import pytest

import mlmm


def test_on_epoch_sees_every_epoch_and_its_exception_stops_training():
    ds = mlmm.load_dataset("synthetic", n_samples=120)
    split = mlmm.train_val_test_split(ds, seed=0)
    seen = []
    trainer = mlmm.Trainer(
        max_epochs=3, progress=False, on_epoch=lambda stage, row: seen.append((stage, row))
    )
    trainer.fit(mlmm.create_method("hemis", ds.specs, ds.task), split.train, split.val)
    assert [(stage, row["epoch"]) for stage, row in seen] == [("main", 1), ("main", 2), ("main", 3)]
    assert all("val_loss" in row and "train_loss" in row for _, row in seen)
    assert "on_epoch" not in trainer.config()

    class Stop(Exception):
        pass

    def stop(stage, row):
        raise Stop(row["epoch"])

    with pytest.raises(Stop):
        mlmm.Trainer(max_epochs=3, progress=False, on_epoch=stop).fit(
            mlmm.create_method("hemis", ds.specs, ds.task), split.train, split.val
        )
