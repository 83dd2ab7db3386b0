"""The shared trainer: early stopping, seeding, argument checks, prediction of empty samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods.base import MissingModalityModel
from mlmm.train.trainer import Trainer

SPECS = (ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,)))
BINARY = TaskSpec("classification", 2)


def data(n: int = 40, seed: int = 0, flip: bool = False, **kw) -> MultimodalDataset:
    """Two classes separated along every feature of 'a'; 'b' is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    inputs = {"a": rng.normal(size=(n, 3)) + 2.0 * y[:, None], "b": rng.normal(size=(n, 2))}
    return MultimodalDataset(
        SPECS, TaskSpec("classification", 2), inputs, 1 - y if flip else y, **kw
    )


def model(specs=SPECS, task=BINARY):
    # joint selection: one early-stopping criterion (per-part selection is tested below)
    return mlmm.create_method(
        "late-fusion", specs, task, embed_dim=4, hidden=8, dropout=0.0, selection="joint"
    )


def trainer(**kw) -> Trainer:
    args = {"max_epochs": 3, "batch_size": 20, "lr": 1e-2, "progress": False}
    args.update(kw)
    return Trainer(**args)


def test_early_stopping_restores_the_best_epoch():
    # the validation labels are flipped, so the validation loss rises as training fits 'a'
    train, val = data(), data(20, seed=1, flip=True)
    trained = trainer(max_epochs=60, patience=3).fit(model(), train, val)
    (history,) = trained.histories
    losses = [row["val_loss"] for row in history.epochs]
    assert history.stopped_early and len(losses) < 60
    best = int(np.argmin(losses))
    assert history.best_epoch == best + 1
    assert history.best_val_loss == losses[best]
    assert len(losses) == history.best_epoch + 3  # patience epochs without improvement
    assert losses[-1] > history.best_val_loss + 1e-3
    assert [row["epoch"] for row in history.epochs] == list(range(1, len(losses) + 1))
    assert all(
        {"train_loss", "val_loss", "val_accuracy", "seconds"} <= set(r) for r in history.epochs
    )
    # the kept weights are those of the best epoch: their validation loss is the best one
    proba = trained.predict_raw(val)
    loss = -np.mean(np.log(proba[np.arange(val.n_samples), val.targets]))
    assert loss == pytest.approx(history.best_val_loss, rel=1e-4)


def test_without_validation_every_epoch_runs_and_the_last_weights_stay():
    trained = trainer(max_epochs=4).fit(model(), data())
    (history,) = trained.histories
    assert len(history.epochs) == 4 and history.best_epoch == 4
    assert not history.stopped_early and math.isnan(history.best_val_loss)
    assert "val_loss" not in history.epochs[0]
    assert trained.trainer_config["max_epochs"] == 4


def test_training_learns_the_signal():
    trained = trainer(max_epochs=10).fit(model(), data())
    test = data(40, seed=5)
    assert (trained.predict(test) == test.targets).mean() >= 0.85
    history = trained.histories[0]
    assert history.epochs[-1]["train_loss"] < history.epochs[0]["train_loss"]


def test_same_seed_same_model_whatever_the_global_random_state():
    train, val, test = data(), data(20, seed=1), data(20, seed=2)
    torch.manual_seed(1)
    a = trainer(seed=3).fit(model(), train, val)
    torch.manual_seed(2)
    b = trainer(seed=3).fit(model(), train, val)
    c = trainer(seed=4).fit(model(), train, val)
    np.testing.assert_array_equal(a.predict_raw(test), b.predict_raw(test))
    assert [r["train_loss"] for r in a.histories[0].epochs] == [
        r["train_loss"] for r in b.histories[0].epochs
    ]
    assert not np.array_equal(a.predict_raw(test), c.predict_raw(test))


@pytest.mark.parametrize(
    "kw, phrase",
    [
        ({"batch_size": 0}, r"batch_size must be in \[1, inf\), got 0"),
        ({"lr": 0.0}, r"lr must be in \(0, inf\), got 0.0"),
        ({"lr": -1e-3}, "lr must be in"),
        ({"patience": 0}, "patience must be in"),
        ({"seed": -1}, "seed must be in"),
        ({"max_epochs": 2.5}, "max_epochs must be an integer"),
        ({"weight_decay": -1.0}, "weight_decay must be in"),
        ({"grad_clip": 0.0}, "grad_clip must be in"),
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number, got inf"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"grad_clip": float("nan")}, "grad_clip must be a finite number"),
        ({"time_limit": float("inf")}, "time_limit must be a finite number"),
    ],
)
def test_bad_arguments_are_rejected(kw, phrase):
    with pytest.raises(MlmmError, match=phrase):
        Trainer(**kw)


def test_non_finite_loss_raises():
    with pytest.raises(MlmmError, match="training loss became .* lower the learning rate"):
        trainer(lr=1e30, max_epochs=5).fit(model(), data())


def test_data_that_does_not_match_the_model():
    other = (ModalitySpec("a", "vector", (4,)), SPECS[1])
    with pytest.raises(MlmmError, match="training data's modalities .* do not match"):
        trainer().fit(model(other), data())
    val = MultimodalDataset(
        other,
        TaskSpec("classification", 2),
        {"a": np.zeros((2, 4)), "b": np.zeros((2, 2))},
        np.array([0, 1]),
    )
    with pytest.raises(MlmmError, match="validation data's modalities"):
        trainer().fit(model(), data(), val)
    with pytest.raises(MlmmError, match="input data's modalities"):
        trainer(max_epochs=1).fit(model(), data()).predict_raw(val)
    with pytest.raises(MlmmError, match="task .* does not match"):
        trainer().fit(model(task=TaskSpec("classification", 3)), data())
    with pytest.raises(MlmmError, match="needs a model from mlmm.create_method"):
        trainer().fit(torch.nn.Linear(2, 2), data())


def test_all_empty_training_data():
    empty = data(4, observed=np.zeros((4, 2), bool), allow_empty=True)
    with pytest.raises(MlmmError, match="every training sample is empty"):
        trainer().fit(model(), empty)


def test_empty_training_rows_are_dropped_but_count_in_the_prior():
    observed = np.ones((40, 2), bool)
    observed[:4] = False  # rows 0..3 (labels 0, 1, 0, 1) carry nothing
    trained = trainer(max_epochs=1).fit(model(), data(observed=observed, allow_empty=True))
    assert trained.prior == [0.5, 0.5]


def test_predicting_an_empty_sample():
    train = data(30).subset(np.r_[np.arange(30), [0, 2, 4]])  # 18 zeros, 15 ones
    trained = trainer(max_epochs=1).fit(model(), train)
    assert trained.prior == pytest.approx([18 / 33, 15 / 33])
    test = data(6, seed=3)
    present = np.ones((6, 2), bool)
    present[2] = False
    gappy = test.with_presence(present, allow_empty=True)
    with pytest.raises(
        MlmmError, match=r"1 sample\(s\) have no modality present .* on_empty='prior'"
    ):
        trained.predict_raw(gappy)
    with pytest.raises(MlmmError, match="on_empty must be 'error' or 'prior'"):
        trained.predict_raw(gappy, on_empty="zero")
    proba = trained.predict_raw(gappy, on_empty="prior")
    np.testing.assert_allclose(proba[2], [18 / 33, 15 / 33])
    np.testing.assert_allclose(proba[[0, 1, 3, 4, 5]], trained.predict_raw(test)[[0, 1, 3, 4, 5]])
    assert trained.predict(gappy, on_empty="prior")[2] == 0


def test_regression_prior_and_units():
    reg = TaskSpec("regression")
    base = data()
    train = MultimodalDataset(SPECS, reg, base.inputs, 100.0 + 10.0 * base.targets)
    trained = trainer(max_epochs=1).fit(model(task=reg), train)
    assert trained.prior == pytest.approx([105.0])
    test = train.subset([0, 1]).with_presence(np.array([[1, 1], [0, 0]], bool), allow_empty=True)
    out = trained.predict(test, on_empty="prior")
    assert out.shape == (2,) and out[1] == pytest.approx(105.0)
    assert 50.0 < out[0] < 160.0  # in target units, not standardised ones
    with pytest.raises(MlmmError, match="predict_proba is for classification"):
        trained.predict_proba(test, on_empty="prior")


def test_time_limit_stops_training_and_keeps_a_complete_model():
    ds = mlmm.load_dataset("synthetic", n_samples=400)
    split = mlmm.train_val_test_split(ds, seed=0)
    model = mlmm.create_method("hemis", ds.specs, ds.task)
    trainer = mlmm.Trainer(max_epochs=10_000, patience=10_000, progress=False, time_limit=0.5)
    trained = trainer.fit(model, split.train, split.val)
    history = trained.histories[0]
    assert history.time_limited and 1 <= len(history.epochs) < 10_000
    assert history.stopped_by == "time_limit"
    assert trained.predict(split.test).shape == (len(split.test),)
    assert trained.trainer_config["time_limit"] == 0.5


def test_time_limit_ends_an_epoch_longer_than_the_limit_midway():
    """The limit was checked after each epoch only: one epoch of a large dataset ran to its
    end however long it took (measured: 9 s past a 1 s limit on 20,000 samples)."""
    import time

    m = model()
    forward = m.forward

    def slow(batch):  # an epoch of 15 batches takes 3 s or more
        time.sleep(0.2)
        return forward(batch)

    m.forward = slow
    trained = trainer(max_epochs=50, batch_size=2, time_limit=1.0).fit(m, data(40), data(8, 1))
    (history,) = trained.histories
    assert history.stopped_by == "time_limit" and len(history.epochs) == 1
    assert history.epochs[0]["seconds"] < 2.5, history.epochs
    assert math.isfinite(history.epochs[0]["val_loss"])  # the cut epoch is still validated


def test_stopped_by_names_what_ended_a_stage():
    ds = mlmm.load_dataset("synthetic", n_samples=200)
    split = mlmm.train_val_test_split(ds, seed=0)
    model = mlmm.create_method("hemis", ds.specs, ds.task)
    full = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    assert full.histories[0].stopped_by == "max_epochs"
    patient = mlmm.Trainer(max_epochs=500, patience=1, lr=0.05, progress=False)
    early = patient.fit(model, split.train, split.val).histories[0]
    assert early.stopped_by == "early_stopping" and len(early.epochs) < 500


def test_a_time_limit_never_reached_trains_exactly_as_none():
    """The per-batch check of the time limit only reads the clock: a run whose limit is never
    reached is bit-identical to one without a limit (same seed, same weights)."""
    states = []
    for limit in (None, 3600.0):
        trained = trainer(max_epochs=3, batch_size=8, time_limit=limit).fit(
            model(), data(40), data(8, 1)
        )
        assert not trained.histories[0].time_limited
        states.append(trained.model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_time_limit_must_be_positive():
    with pytest.raises(MlmmError, match="time_limit"):
        mlmm.Trainer(time_limit=0)


class TwoParts(MissingModalityModel):
    """Two linear parts whose validation losses are scripted per epoch; every validation
    records the weights it saw, so a test knows what each epoch's weights were."""

    def __init__(self, specs, task, schedule: dict[str, list[float]]) -> None:
        super().__init__(specs, task)
        self.a = torch.nn.Linear(3, task.output_dim)
        self.b = torch.nn.Linear(2, task.output_dim)
        self.schedule, self.seen = schedule, []

    def forward(self, batch):
        return self.output(batch, self.a(batch.inputs["a"]) + self.b(batch.inputs["b"]))

    def selection_parts(self):
        return {"a": ("a.",), "b": ("b.",)}

    def part_losses(self, output, batch):
        epoch = len(self.seen)
        self.seen.append({k: v.clone() for k, v in self.state_dict().items()})
        rows = torch.ones(len(batch), dtype=torch.bool)
        return {p: (torch.full((len(batch),), self.schedule[p][epoch]), rows) for p in "ab"}


def fit_two_parts(schedule, **kw):
    module = TwoParts(SPECS, BINARY, schedule)
    train, val = data(), data(20, seed=1, flip=True)  # the whole's val loss rises: best early
    trained = trainer(**kw).fit(module, train, val)
    return module, trained.histories[0], trained, val


def test_each_selection_part_keeps_the_weights_of_its_own_best_epoch():
    schedule = {"a": [5, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4], "b": [5, 4, 3, 2, 0.5] + [3.0] * 20}
    module, history, trained, val = fit_two_parts(schedule, max_epochs=25, patience=3)
    assert history.part_best_epochs == {"a": 2, "b": 5}
    state = module.state_dict()
    for key in ("a.weight", "a.bias"):
        torch.testing.assert_close(state[key], module.seen[1][key])
    for key in ("b.weight", "b.bias"):
        torch.testing.assert_close(state[key], module.seen[4][key])
    # the epochs differ, so the assembled weights are no single epoch's
    assert not torch.equal(module.seen[1]["b.weight"], module.seen[4]["b.weight"])
    # training stops only once every part and the whole went `patience` epochs without gain
    assert history.stopped_early and len(history.epochs) >= 5 + 3
    assert [row["val_loss[a]"] for row in history.epochs] == schedule["a"][: len(history.epochs)]
    # the reported loss is the assembled model's
    proba = trained.predict_raw(val)
    loss = -np.mean(np.log(proba[np.arange(val.n_samples), val.targets]))
    assert loss == pytest.approx(history.best_val_loss, rel=1e-4)


def test_a_part_without_validation_rows_follows_the_whole_model():
    nan = float("nan")
    schedule = {"a": [nan] * 30, "b": [5, 4, 3, 2, 0.5] + [3.0] * 25}
    module, history, _, _ = fit_two_parts(schedule, max_epochs=30, patience=3)
    assert history.part_best_epochs == {"b": 5}
    whole = history.best_epoch
    torch.testing.assert_close(module.state_dict()["a.weight"], module.seen[whole - 1]["a.weight"])
    assert history.stopped_early


def test_a_model_naming_parts_must_define_their_losses():
    class NoLosses(TwoParts):
        part_losses = MissingModalityModel.part_losses

    with pytest.raises(MlmmError, match="does not define part_losses"):
        trainer().fit(NoLosses(SPECS, BINARY, {}), data(), data(20, seed=1))


def test_val_accuracy_is_undefined_when_a_validation_score_is_nan():
    """A NaN score row is not read as class 0 (argmax over NaN): val_accuracy is NaN, as the
    evaluation's accuracy is (mlmm.eval.metrics.accuracy)."""
    module = model()

    def nan_first_row(module, inputs, output):
        if not module.training:  # validation only: training itself stays finite
            output.prediction[0] = float("nan")  # [B, K]
        return output

    module.register_forward_hook(nan_first_row)
    train, val = data(), data(20, seed=1)
    # every validation label is 0, so the old argmax read the NaN row as a correct answer
    val = MultimodalDataset(val.specs, val.task, val.inputs, np.zeros(20, dtype=np.int64))
    trained = trainer(max_epochs=2).fit(module, train, val)
    (history,) = trained.histories
    assert all(math.isnan(row["val_accuracy"]) for row in history.epochs)


def test_val_accuracy_counts_correct_rows_when_scores_are_finite():
    train, val = data(), data(20, seed=1)
    trained = trainer(max_epochs=2).fit(model(), train, val)
    for row in trained.histories[0].epochs:
        correct = row["val_accuracy"] * 20  # a count of the 20 validation rows
        assert 0 <= correct <= 20 and correct == pytest.approx(round(correct))


def test_a_batch_size_of_one_is_refused_not_a_training_that_trains_nothing():
    # every one-row batch was skipped as a lone trailing row: batch_size=1 trained nothing and
    # reported a training loss of 0 (r8's finding)
    with pytest.raises(MlmmError, match=r"batch_size must be at least 2, got 1.*use 2 or more"):
        Trainer(batch_size=1)
    Trainer(batch_size=2)  # the smallest batch that trains
