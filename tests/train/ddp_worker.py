"""One process of the data-parallel tests: join the group torchrun's variables describe, train,
write what it got to ``OUT-RANK.json``. Run with no group (no RANK) it is the one-process run.

Usage: ``python ddp_worker.py OUT_PREFIX`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT`` set for a process group).
"""

from __future__ import annotations

import json
import sys

import mlmm
from mlmm.train import distributed

#: method -> hyperparameters. late-fusion without dropout has no randomness in its forward, so
#: two processes must match one up to the order of float sums; it also selects each head on its
#: own validation loss (per-part selection). hemis keeps its dropout and modality dropout
#: (seeded per rank), so it is compared by its metrics. frozen-backbone-prompting without
#: dropout is a staged method (encoders pretrained, then frozen and adapted with prompts and
#: LoRA) that must also match one process.
RUNS = {
    "late-fusion": {"dropout": 0.0},
    "hemis": {},
    "frozen-backbone-prompting": {"dropout": 0.0, "modality_dropout": 0.0, "adapter": "both"},
}


def train_all() -> dict[str, dict]:
    ds = mlmm.load_dataset("synthetic", n_samples=360)
    split = mlmm.train_val_test_split(ds, test_size=0.25, val_size=0.15, seed=0)
    results = {}
    for method, params in RUNS.items():
        model = mlmm.create_method(method, ds.specs, ds.task, **params)
        trainer = mlmm.Trainer(
            max_epochs=4, batch_size=32, patience=2, seed=0, progress=False, num_threads=1
        )
        trained = trainer.fit(model, split.train, split.val)
        proba = trained.predict_proba(split.test)
        history = trained.histories[-1]
        results[method] = {
            "proba": proba.tolist(),
            "accuracy": float((proba.argmax(1) == split.test.targets).mean()),
            "val_loss": [row["val_loss"] for row in history.epochs],
            "train_loss": [row["train_loss"] for row in history.epochs],
            "best_epoch": history.best_epoch,
            "part_best_epochs": history.part_best_epochs,
            "epochs": len(history.epochs),
        }
    return results


if __name__ == "__main__":
    rank = 0
    if distributed.launched_by_torchrun():
        rank = distributed.join("cpu", timeout=60).rank
    out = train_all()
    distributed.leave()
    with open(f"{sys.argv[1]}-{rank}.json", "w") as handle:
        json.dump(out, handle)
