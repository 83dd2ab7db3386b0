"""Two threads of one process tuning one stored study: each trial runs once (a thread never
takes another's claim for its own), and the study is the one a single thread asks for."""

from __future__ import annotations

import threading
import time

import numpy as np

import mlmm
from mlmm.bench.store import ResultsStore
from mlmm.tune import study as study_module
from mlmm.tune.study import tune


def _data() -> mlmm.MultimodalDataset:
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    return mlmm.from_arrays({"a": y[:, None] + rng.normal(0, 0.7, (120, 3))}, y)


def test_two_threads_share_a_study_and_run_each_trial_once(tmp_path, monkeypatch):
    score = study_module.validation_loss

    def slow_score(trained, data):  # trials long enough that both threads hold one at once
        time.sleep(0.3)
        return score(trained, data)

    monkeypatch.setattr(study_module, "validation_loss", slow_score)
    store, n_trials, data = tmp_path / "tune.db", 4, _data()
    ran: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def work(mine: list[int]) -> None:
        try:
            go.wait(30)
            tune(
                data,
                "logistic-mean-impute",
                n_trials=n_trials,
                folds=2,
                store=store,
                timeout=120.0,
                on_trial=lambda record: mine.append(record["number"]),
            )
        except BaseException as err:  # shown by the test
            errors.append(err)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in ran]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors
    assert sorted(ran[0] + ran[1]) == list(range(n_trials))  # once each, by one of them
    monkeypatch.undo()
    alone = tune(data, "logistic-mean-impute", n_trials=n_trials, folds=2)
    with ResultsStore(store) as db:
        key = db.studies().study_key[0]
        shared = db.study_trials(key)
        assert db.trial_claims(key) == {}  # none left behind
    assert [(t["number"], t["params"]) for t in shared] == [
        (r["number"], r["params"]) for r in alone.records
    ]
