"""Studies: seeded, scored on the training split only, resumable, robust to failing trials."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import yaml

import mlmm
from mlmm.bench.store import APPLICATION_ID, ResultsStore, this_process
from mlmm.errors import MlmmError
from mlmm.tune import study as study_module
from mlmm.tune.space import Categorical, Float, Int, When
from mlmm.tune.study import TuneSettings, _pruning_hook, tune

#: A small space and budget: each trial trains 2 folds × 2 epochs of a tiny hemis.
SPACE = {"embed_dim": Int(4, 16), "dropout": Float(0.0, 0.5)}
TRAINER = {"max_epochs": 2, "patience": 2}


def tagged_dataset(n=90, seed=0):
    """Two vector modalities whose first column is ``1000 + sample index`` (a tag to see
    which samples a trial was given), plus informative noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    tag = 1000.0 + np.arange(n)
    a = np.column_stack([tag, y + rng.normal(0, 0.5, n)])
    b = np.column_stack([tag, y + rng.normal(0, 0.5, n), rng.normal(size=n)])
    return mlmm.from_arrays({"a": a, "b": b}, y, name="tagged")


SMALL = dict(
    missing="mcar:0.3",
    n_trials=3,
    seed=0,
    folds=2,
    space=SPACE,
    trainer=TRAINER,
    trainer_space={"lr": Float(1e-3, 1e-2, log=True)},
)


def small_tune(**kwargs):
    args = {**SMALL, **kwargs}
    return tune(tagged_dataset(), "hemis", **args)


class Spy:
    """Records the tags of every present row the trainer and the scoring see."""

    def __init__(self, monkeypatch):
        self.tags: set[int] = set()
        self.fits = 0
        fit, score = mlmm.Trainer.fit, study_module.validation_loss

        def spy_fit(trainer, model, train, val=None, info=None):
            self.fits += 1
            self.see(train)
            if val is not None:
                self.see(val)
            return fit(trainer, model, train, val, info)

        def spy_score(trained, data):
            self.see(data)
            return score(trained, data)

        monkeypatch.setattr(mlmm.Trainer, "fit", spy_fit)
        monkeypatch.setattr(study_module, "validation_loss", spy_score)

    def see(self, data):
        for j, spec in enumerate(data.specs):
            rows = data.observed[:, j]
            self.tags.update(int(t) - 1000 for t in data.inputs[spec.name][rows, 0])


def test_mlmm_tune_is_the_package_and_the_function():
    import mlmm.tune.space  # noqa: F401  (binds mlmm.tune to the package)

    assert mlmm.tune is sys.modules["mlmm.tune"] and callable(mlmm.tune)
    assert mlmm.tune.tune is tune


def test_same_seed_same_trials_and_another_seed_other_trials():
    first = mlmm.tune(tagged_dataset(), "hemis", **SMALL)
    again = small_tune()
    assert first.trials.drop(columns="seconds").equals(again.trials.drop(columns="seconds"))
    assert first.params == again.params and first.value == again.value
    other = small_tune(seed=1)
    assert not np.allclose(first.trials["dropout"], other.trials["dropout"])
    assert set(first.params) == {"embed_dim", "dropout"}  # the rest stays at its defaults
    assert set(first.trainer) == {"lr"}


def test_trials_see_only_the_training_split(monkeypatch):
    spy = Spy(monkeypatch)
    small_tune(n_trials=2)
    split = mlmm.train_val_test_split(tagged_dataset(), seed=0)
    assert spy.tags, "the spy saw nothing"
    assert spy.tags <= set(split.indices["train"].tolist())
    assert not spy.tags & set(split.indices["test"].tolist())
    assert not spy.tags & set(split.indices["val"].tolist())


def test_the_training_part_is_run_experiments_training_part():
    # the guarantee rests on tune and run_experiment splitting and masking alike: compare the
    # rows and the training missingness with what run_experiment itself trained on
    from mlmm.tune.study import training_part

    data = tagged_dataset()
    _, train = training_part(data, None, "mcar:0.3", 3, 0.2, 0.1)
    res = mlmm.run_experiment(
        data,
        "zero-impute",
        missing="mcar:0.3",
        seed=3,
        trainer={"max_epochs": 1, "progress": False},
    )
    # the tag column of a present modality (absent rows are zero-filled)
    tags = np.maximum(train.inputs["a"][:, 0], train.inputs["b"][:, 0])
    rows = (tags - 1000).astype(int)
    np.testing.assert_array_equal(np.sort(rows), res.split["train"])
    np.testing.assert_array_equal(train.observed, res.train_mask.present)


def test_a_stopped_study_resumes_without_rerunning_finished_trials(monkeypatch, tmp_path):
    store = tmp_path / "tune.db"
    uninterrupted = small_tune(n_trials=4, store=tmp_path / "other.db")
    first = small_tune(n_trials=2, store=store)
    spy = Spy(monkeypatch)
    resumed = small_tune(n_trials=4, store=store)
    assert spy.fits == 2 * 2  # two new trials × two folds; the first two were not rerun
    assert resumed.records[:2] == first.records
    columns = ["number", "state", "value", "dropout", "embed_dim", "trainer.lr"]
    assert resumed.trials[columns].equals(uninterrupted.trials[columns])
    with ResultsStore(store) as db:
        studies = db.studies()
    assert len(studies) == 1 and studies.n_trials[0] == 4
    assert studies.best_trial[0] == resumed.best_trial
    # a finished study asked for no more trials runs nothing
    spy.fits = 0
    assert small_tune(n_trials=3, store=store).best_trial == resumed.best_trial
    assert spy.fits == 0


KILLED = """
import sys, numpy as np, mlmm
from mlmm.tune.study import tune
rng = np.random.default_rng(0)
y = np.arange(120) % 2
data = mlmm.from_arrays({"a": y[:, None] + rng.normal(0, 0.7, (120, 3))}, y)
tune(data, "logistic-mean-impute", n_trials=500, folds=2, store=sys.argv[1],
     on_trial=lambda record: print("trial", record["number"], flush=True))
"""


def test_kill_9_during_a_study_loses_no_finished_trial(tmp_path):
    store = tmp_path / "tune.db"
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(KILLED))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(store)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        for line in proc.stdout:
            if line.startswith("trial 2"):
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with ResultsStore(store) as db:  # still an mlmm store, with the finished trials
        assert db._db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        key = db.studies().study_key[0]
        before = db.study_trials(key)
    assert len(before) >= 3
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    data = mlmm.from_arrays({"a": y[:, None] + rng.normal(0, 0.7, (120, 3))}, y)
    ran = []
    result = tune(
        data,
        "logistic-mean-impute",
        n_trials=len(before) + 1,
        folds=2,
        store=store,
        on_trial=lambda record: ran.append(record["number"]),
    )
    assert ran == [len(before)]  # only the missing trial ran
    assert result.records[: len(before)] == before
    assert result.study_key == key


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    # dropout >= 1 is refused by the method: those trials fail, the others complete
    space = {"dropout": Categorical([0.2, 1.5]), "embed_dim": Int(4, 16)}
    result = small_tune(n_trials=6, space=space, store=tmp_path / "tune.db")
    states = result.trials.set_index("number")["state"]
    assert len(states) == 6
    assert {"failed", "complete"} <= set(states)
    failed = result.trials[result.trials.state == "failed"]
    assert (failed.dropout == 1.5).all()
    assert failed.error.str.contains("dropout must be in").all()
    assert result.params["dropout"] == 0.2
    with ResultsStore(tmp_path / "tune.db") as db:
        assert db.studies().n_failed[0] == len(failed)


def test_a_study_whose_every_trial_fails_says_why():
    # sampled trainer values out of range (a given method space is built at its corners first)
    with pytest.raises(MlmmError, match="none of the 2 trial.*batch_size must be in"):
        small_tune(n_trials=2, trainer_space={"batch_size": Categorical([0, -1])})


def test_a_given_space_that_builds_at_neither_corner_stops_before_any_trial(monkeypatch):
    # was: every trial failed on it, said once the whole budget was spent
    spy = Spy(monkeypatch)
    with pytest.raises(MlmmError, match="search space .* cannot build 'hemis': dropout must be"):
        small_tune(n_trials=2, space={"dropout": Float(1.0, 2.0)})
    assert spy.fits == 0


def test_bad_budgets_and_spaces_are_one_line_errors():
    with pytest.raises(MlmmError, match="at least one trial, got trials=0") as err:
        small_tune(n_trials=0)
    assert "\n" not in str(err.value)
    with pytest.raises(MlmmError, match="timeout"):
        small_tune(timeout=0)
    with pytest.raises(MlmmError) as err:
        small_tune(space={"hiden": Int(8, 64)})
    assert "'hiden'" in str(err.value) and "embed_dim, hidden, depth" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(MlmmError, match="no hyperparameter 'hiden'"):
        small_tune(method_params={"hiden": 8})
    with pytest.raises(MlmmError, match="at least one trial"):
        TuneSettings(trials=-1)


def test_a_trainer_space_for_a_method_without_trainer_stops_before_any_trial(monkeypatch):
    # the reference family is fitted by scikit-learn: trials would differ in nothing
    monkeypatch.setattr(study_module, "score_point", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(MlmmError, match="fitted by scikit-learn, with no trainer") as err:
        tune(shared_data(), "logistic-mean-impute", trainer_space={"lr": Float(1e-3, 1e-2)})
    assert "trainer.lr" in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_trainer_parameter_stops_before_any_trial(monkeypatch):
    # was: every trial failed on Trainer(max_epoch=...), reported only after the whole budget
    spy = Spy(monkeypatch)
    with pytest.raises(
        MlmmError, match="unknown trainer parameter 'max_epoch'. Did you mean 'max_epochs'"
    ):
        small_tune(trainer={"max_epoch": 2})
    assert spy.fits == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"trainer": {"max_epochs": 0}}, "^max_epochs must be in"),
        ({"method_params": {"embed_dim": "abc"}}, "fixed hyperparameters .* embed_dim must be"),
        ({"method_params": {"embed_dim": -3}}, "fixed hyperparameters .* embed_dim must be in"),
        # every trial and fold would overwrite one folder's checkpoint (each with a warning)
        ({"trainer": {"checkpoint_dir": "ckpt"}}, "cannot share one checkpoint folder"),
    ],
)
def test_a_value_every_trial_would_fail_on_stops_before_any_trial(kwargs, match, monkeypatch):
    # was: each trial failed on it in turn, said only once the whole budget was spent
    spy = Spy(monkeypatch)
    with pytest.raises(MlmmError, match=match):
        small_tune(**kwargs)
    assert spy.fits == 0


def test_a_fixed_value_that_builds_beside_some_sampled_points_is_tuned():
    # masked-attention needs embed_dim divisible by n_heads: 10 fails at the default 4 heads
    space = {"n_heads": Categorical([5, 10])}
    args = {**SMALL, "space": space, "n_trials": 1, "method_params": {"embed_dim": 10}}
    result = tune(tagged_dataset(), "masked-attention", **args)
    assert result.params["embed_dim"] == 10 and result.params["n_heads"] in (5, 10)


def test_a_modality_absent_from_every_training_row_stops_before_any_trial(monkeypatch):
    spy = Spy(monkeypatch)
    data = tagged_dataset()
    data.inputs["b"][:] = np.nan
    data = mlmm.from_arrays(data.inputs, data.targets)
    with pytest.raises(MlmmError, match="^modality 'b' is absent from every training sample"):
        tune(data, "hemis", **{**SMALL, "missing": "none"})
    assert spy.fits == 0


def test_a_modality_a_validation_fold_trains_without_stops_before_any_trial(monkeypatch):
    spy = Spy(monkeypatch)
    data = tagged_dataset()
    data.inputs["b"][1:] = np.nan  # present in one row: the fold holding it out lacks it
    data = mlmm.from_arrays(data.inputs, data.targets)
    with pytest.raises(MlmmError, match="^modality 'b' is present in only 1 training sample"):
        settings = TuneSettings(trials=2, folds=2, seed=0)
        study_module.tune_training_data(data, "hemis", settings, space=SPACE, trainer=TRAINER)
    assert spy.fits == 0


def test_a_study_on_the_same_rows_with_other_groups_is_a_new_study(tmp_path):
    # was: the data hash left out the groups (and the lengths), so a study on other groups,
    # whose folds differ, resumed the trials scored on the old folds
    import dataclasses

    data = tagged_dataset()
    settings = TuneSettings(trials=2, folds=2, seed=0)
    args = {"space": SPACE, "trainer": TRAINER, "store": tmp_path / "t.db"}
    keys, ran = [], []
    for groups in (np.arange(90) % 10, np.arange(90) % 9):
        grouped = dataclasses.replace(data, groups=groups)
        result = study_module.tune_training_data(
            grouped, "hemis", settings, on_trial=ran.append, **args
        )
        keys.append(result.study_key)
    assert keys[0] != keys[1] and len(ran) == 4  # each ran its own two trials


def test_method_auto_is_not_tuned_and_says_how_to_train_it():
    with pytest.raises(MlmmError, match="method 'auto' is not tuned: .*mlmm train --method auto"):
        tune(tagged_dataset(), "auto", **SMALL)


def test_a_resumed_study_writes_the_same_parameters_file_as_a_fresh_one(tmp_path):
    # was: trials read back from the store had their keys sorted (dropout before embed_dim,
    # batch_size before lr), so two identical commands wrote two different files
    spaces = {"trainer_space": {"lr": Float(1e-3, 1e-2, log=True), "batch_size": Int(8, 32)}}
    fresh = small_tune(n_trials=2, store=tmp_path / "t.db", **spaces)
    resumed = small_tune(n_trials=2, store=tmp_path / "t.db", **spaces)
    assert list(fresh.params) == list(resumed.params) == ["embed_dim", "dropout"]
    assert list(fresh.trainer) == list(resumed.trainer) == ["lr", "batch_size"]
    fresh.save(tmp_path / "fresh.yaml")
    resumed.save(tmp_path / "resumed.yaml")
    assert (tmp_path / "fresh.yaml").read_bytes() == (tmp_path / "resumed.yaml").read_bytes()


def test_the_time_budget_stops_starting_trials():
    result = small_tune(n_trials=50, timeout=0.01)
    assert len(result.trials) == 1  # the first trial runs; none starts after the budget


def test_fixed_parameters_leave_the_space():
    result = small_tune(n_trials=2, method_params={"dropout": 0.1})
    assert "dropout" not in result.trials and result.params["dropout"] == 0.1


def test_pruning_reports_the_main_stage_and_stops_a_bad_trial():
    class FakeTrial:
        def __init__(self, prune):
            self.reported, self.prune = [], prune

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return self.prune

    optuna = pytest.importorskip("optuna")
    trial, seen = FakeTrial(prune=False), {}
    hook = _pruning_hook(trial, seen)
    hook("main", {"epoch": 1, "train_loss": 0.9, "val_loss": 0.7})
    hook("teacher", {"epoch": 1, "train_loss": 0.9, "val_loss": 0.1})  # a staged method
    assert trial.reported == [(1, 0.7)] and seen == {1: 0.7}
    with pytest.raises(optuna.TrialPruned):
        _pruning_hook(FakeTrial(prune=True), {})("main", {"epoch": 3, "val_loss": 2.0})


def test_a_nan_validation_loss_fails_the_trial_at_once(monkeypatch):
    # a NaN reached Optuna's median rule (a warning, a pruned trial with no value); before
    # pruning starts the trial trained on for nothing
    validate = mlmm.Trainer._validate

    def nan_when_hopeless(trainer, module, batch, info):
        row = validate(trainer, module, batch, info)
        return {**row, "val_loss": float("nan")} if trainer.lr < 1e-6 else row

    monkeypatch.setattr(mlmm.Trainer, "_validate", nan_when_hopeless)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "All-NaN slice" from the pruner
        result = small_tune(
            n_trials=5,
            method_params={"embed_dim": 8, "dropout": 0.0},
            trainer_space={"lr": Categorical([3e-3, 1e-7])},
            trainer={"max_epochs": 3, "patience": 3},
        )
    for record in result.records:
        if record["params"]["trainer.lr"] < 1e-6:
            assert record["state"] == "failed" and record["intermediate"] == {}
            assert "validation loss became nan at epoch 1" in record["error"]
        else:
            assert record["state"] == "complete"
    assert (result.trials.state == "failed").any() and result.trainer["lr"] == 3e-3
    seen = {}  # nothing reported to the trial (None: any call on it would raise)
    with pytest.raises(MlmmError, match="became inf at epoch 2"):
        _pruning_hook(None, seen)("main", {"epoch": 2, "val_loss": float("inf")})
    assert seen == {}


def test_a_pruned_trial_is_recorded_as_pruned(monkeypatch):
    monkeypatch.setattr(study_module, "PRUNE_STARTUP_TRIALS", 1)
    monkeypatch.setattr(study_module, "PRUNE_WARMUP_EPOCHS", 0)
    monkeypatch.setattr(study_module, "STARTUP_TRIALS", 1)
    # only the lr varies: one that cannot learn in 4 epochs against one that can; trials
    # with the same lr train identically, so only the hopeless ones fall below the median
    result = small_tune(
        n_trials=6,
        method_params={"embed_dim": 8, "dropout": 0.0},
        trainer_space={"lr": Categorical([3e-3, 1e-7])},
        trainer={"max_epochs": 4, "patience": 4},
    )
    pruned = result.trials[result.trials.state == "pruned"]
    assert len(pruned) >= 1
    assert (pruned["trainer.lr"] == 1e-7).all()
    assert result.trainer["lr"] == 3e-3
    for record in result.records:  # a pruned trial stopped after its first epoch
        if record["state"] == "pruned":
            assert record["intermediate"].keys() == {1}
            assert record["value"] == record["intermediate"][1]
        else:
            assert record["intermediate"].keys() == {1, 2, 3, 4}


def test_the_result_saves_a_parameters_file_train_reads(tmp_path):
    from mlmm.tune.study import read_params

    result = small_tune(n_trials=2)
    path = result.save(tmp_path / "best.yaml")
    params, trainer = read_params(path, "hemis")
    assert params == result.params and trainer == result.trainer
    with pytest.raises(MlmmError, match="tuned for method 'hemis', not 'late-fusion'"):
        read_params(path, "late-fusion")


def test_parameters_tuned_on_one_split_are_refused_for_another(tmp_path):
    # the study scored on seed 0's training part, which holds most of seed 1's test part
    from mlmm.tune.study import read_params

    path = small_tune(n_trials=1).save(tmp_path / "best.yaml")
    saved = yaml.safe_load(path.read_text())["study"]["data"]
    assert saved["split"] == {"seed": 0, "test_size": 0.2, "val_size": 0.1}
    same = {**saved, "split": dict(saved["split"])}
    assert read_params(path, "hemis", same)[0]  # the study's own split: accepted
    with pytest.raises(MlmmError, match="was tuned with split .* this test split"):
        read_params(path, "hemis", {**same, "split": {**saved["split"], "seed": 1}})
    with pytest.raises(MlmmError, match="was tuned with dataset"):
        read_params(path, "hemis", {**same, "dataset": "handwritten"})


def test_score_point_reproduces_a_trials_value_on_the_studys_folds():
    from mlmm.tune.study import score_point, study_folds, training_part

    result = small_tune(n_trials=2)
    _, train = training_part(tagged_dataset(), None, "mcar:0.3", 0, 0.2, 0.1)
    folds = study_folds(train, 2, 0)
    trainer = {**TRAINER, **result.trainer, "seed": 0}
    assert score_point(train, "hemis", result.params, trainer, folds) == result.value


def test_score_point_hands_each_folds_model_and_validation_rows_to_on_fold():
    from mlmm.tune.study import score_point, study_folds, training_part

    _, train = training_part(tagged_dataset(), None, "mcar:0.3", 0, 0.2, 0.1)
    folds = study_folds(train, 2, 0)
    seen, losses = [], []
    score_point(
        train, "hemis", {"embed_dim": 4}, {**TRAINER, "seed": 0}, folds, losses=losses,
        on_fold=lambda trained, val: seen.append((trained.predict_raw(val).shape, val.n_samples)),
    )  # fmt: skip
    assert len(seen) == len(losses) == 2
    assert [n for _, n in seen] == [len(val) for _, val in folds]
    assert all(shape == (n, 2) for shape, n in seen)


@pytest.mark.parametrize("n_folds", [1, 3])
def test_study_folds_keep_each_group_on_one_side(n_folds):
    from dataclasses import replace

    from mlmm.tune.study import study_folds

    train = mlmm.load_dataset("synthetic", n_samples=300)
    subjects = np.random.default_rng(0).permutation(np.arange(300) // 6)  # 50 subjects
    grouped = replace(train, groups=subjects)
    folds = study_folds(grouped, n_folds, seed=1)
    assert len(folds) == n_folds
    for fit, val in folds:
        assert len(val) and not set(subjects[fit]) & set(subjects[val])
    # without groups the same folds would mix subjects (so the check above can fail)
    fit, val = study_folds(train, n_folds, seed=1)[0]
    assert set(subjects[fit]) & set(subjects[val])


#: A study in a subprocess on a store: each trial's scoring sleeps (``SLOW`` seconds) so that
#: processes overlap; it waits for the file ``GO`` before tuning and prints the trials it ran.
SHARED = """
import sys, time, pathlib, numpy as np, mlmm
from mlmm.tune import study as study_module
store, go, slow, n_trials = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
score = study_module.validation_loss

def slow_score(trained, data):
    print("scoring", flush=True)
    time.sleep(slow)
    return score(trained, data)

study_module.validation_loss = slow_score
rng = np.random.default_rng(0)
y = np.arange(120) % 2
data = mlmm.from_arrays({"a": y[:, None] + rng.normal(0, 0.7, (120, 3))}, y)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.05)
result = study_module.tune(data, "logistic-mean-impute", n_trials=n_trials, folds=2, store=store,
                           on_trial=lambda record: print("trial", record["number"], flush=True))
print("best", result.best_trial, result.value, flush=True)
"""


def shared_data():
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    return mlmm.from_arrays({"a": y[:, None] + rng.normal(0, 0.7, (120, 3))}, y)


def start_study(tmp_path, store, slow, n_trials):
    script = tmp_path / "shared.py"
    script.write_text(textwrap.dedent(SHARED))
    args = [sys.executable, str(script), str(store), str(tmp_path / "go"), str(slow), str(n_trials)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_two_processes_share_a_study_and_ask_for_one_processs_trials(tmp_path):
    store, n_trials = tmp_path / "tune.db", 8  # past the random startup: TPE trials too
    procs = [start_study(tmp_path, store, 0.3, n_trials) for _ in range(2)]
    (tmp_path / "go").touch()
    outputs = [proc.communicate(timeout=300)[0].splitlines() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    ran = [[int(line.split()[1]) for line in out if line.startswith("trial")] for out in outputs]
    # each trial ran once, by one of them, and both worked
    assert sorted(ran[0] + ran[1]) == list(range(n_trials))
    assert ran[0] and ran[1]
    # whoever finishes reports the same best trial
    bests = [next(line for line in out if line.startswith("best")) for out in outputs]
    assert bests[0] == bests[1]
    # and the study is the one a single process asks for: same points, same scores
    alone = tune(shared_data(), "logistic-mean-impute", n_trials=n_trials, folds=2)
    with ResultsStore(store) as db:
        key = db.studies().study_key[0]
        shared = db.study_trials(key)
        assert db.trial_claims(key) == {}  # no claim left behind
    assert [(t["number"], t["state"], t["params"]) for t in shared] == [
        (r["number"], r["state"], r["params"]) for r in alone.records
    ]
    assert [t["value"] for t in shared] == pytest.approx([r["value"] for r in alone.records])
    assert bests[0] == f"best {alone.best_trial} {alone.value}"


def test_a_killed_processs_claimed_trial_is_run_by_the_next_process(tmp_path):
    store = tmp_path / "tune.db"
    proc = start_study(tmp_path, store, 600.0, 2)  # its first trial never ends
    (tmp_path / "go").touch()
    try:
        assert proc.stdout.readline().strip() == "scoring"  # trial 0 claimed and running
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    with ResultsStore(store) as db:
        key = db.studies().study_key[0]
        assert db.trial_claims(key) == {0: False}  # held by a dead process: not live
    ran = []
    result = tune(
        shared_data(),
        "logistic-mean-impute",
        n_trials=2,
        folds=2,
        store=store,
        on_trial=lambda record: ran.append(record["number"]),
    )
    assert ran == [0, 1]
    assert result.study_key == key
    with ResultsStore(store) as db:
        assert db.trial_claims(key) == {}


def test_a_claim_left_under_this_processs_own_name_does_not_block_it(tmp_path):
    # a container restarted with the same host name and pid finds its dead self's claim:
    # it is this process's name but no trial of this process runs it, so it is run now
    store = tmp_path / "tune.db"
    first = tune(shared_data(), "logistic-mean-impute", n_trials=1, folds=2, store=store)
    with ResultsStore(store) as db:
        db._db.execute(
            "INSERT INTO tune_claims (study_key, number, owner, started_at) VALUES (?, ?, ?, ?)",
            (first.study_key, 1, this_process(), time.time()),
        )
        db._db.commit()
        assert db.trial_claims(first.study_key) == {1: False}
    kwargs = dict(n_trials=2, folds=2, store=store, timeout=20.0)  # not forever, if it waits
    result = tune(shared_data(), "logistic-mean-impute", **kwargs)
    assert result.trials.number.tolist() == [0, 1]


def test_a_process_waiting_on_another_processs_trial_stops_at_its_timeout(tmp_path):
    store = tmp_path / "tune.db"
    first = tune(shared_data(), "logistic-mean-impute", n_trials=5, folds=2, store=store)
    other = f"{socket.gethostname()}:{os.getppid()}"  # alive, and not this process
    with ResultsStore(store) as db:  # trial 5 (past the random start) runs elsewhere
        db._db.execute(
            "INSERT INTO tune_claims (study_key, number, owner, started_at) VALUES (?, ?, ?, ?)",
            (first.study_key, 5, other, time.time()),
        )
        db._db.commit()
    start = time.perf_counter()
    kwargs = dict(n_trials=7, folds=2, store=store, timeout=1.0)
    result = tune(shared_data(), "logistic-mean-impute", **kwargs)
    # trial 6 waits on trial 5 (TPE reads it): neither runs here, and it stops waiting in time
    assert result.trials.number.tolist() == [0, 1, 2, 3, 4]
    assert time.perf_counter() - start < 1.0 + 4 * study_module.WAIT_SECONDS + 5.0
    with ResultsStore(store) as db:
        assert db.trial_claims(first.study_key) == {5: True}  # the other's claim untouched


def test_a_trial_the_pruner_may_stop_waits_for_the_trials_before_it(monkeypatch):
    done = {0: {}, 1: {}}  # trials 0 and 1 finished, 2 running elsewhere
    assert study_module._next_trial([3, 4], done, {2: True}) == 3  # random, unpruned: free
    # with the median rule from 2 trials on, trial 3 is judged against trials 0-2: it waits
    monkeypatch.setattr(study_module, "PRUNE_STARTUP_TRIALS", 2)
    assert study_module._next_trial([3, 4], done, {2: True}) is None
    assert study_module._next_trial([2, 3], done, {}) == 2  # the next in order never waits


def test_a_single_process_asks_for_the_trials_it_asked_for_before_sharing():
    # C of each trial of this study before studies were shared between processes (startup
    # trials 0-4 random, then TPE): one process alone must still ask for exactly these
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    data = mlmm.from_arrays(
        {
            "a": y[:, None] + rng.normal(0, 0.7, (120, 3)),
            "b": y[:, None] + rng.normal(0, 1.0, (120, 2)),
        },
        y,
    )
    result = tune(data, "logistic-mean-impute", n_trials=9, folds=2, missing="mcar:0.3")
    before = [7.114624, 0.403613, 2.475439, 6.099084, 0.069133, 0.001758, 0.002076, 0.031763]
    assert result.trials.C.tolist() == pytest.approx([*before, 0.021639], rel=1e-5, abs=5e-7)
    assert result.best_trial == 0


def test_a_conditional_hyperparameter_is_tuned_only_where_its_condition_holds(tmp_path):
    space = {
        "max_iter": Categorical([50, 200]),
        "C": When(Float(1e-2, 10.0, log=True), {"max_iter": 200}),
    }
    kwargs = dict(n_trials=7, folds=2, space=space, store=tmp_path / "t.db")  # past startup
    result = tune(shared_data(), "logistic-mean-impute", **kwargs)
    assert set(result.trials.state) == {"complete"}
    for record in result.records:
        assert ("C" in record["params"]) == (record["params"]["max_iter"] == 200)
    assert {r["params"]["max_iter"] for r in result.records} == {50, 200}
    assert ("C" in result.params) == (result.params["max_iter"] == 200)
    # replayed from the store with the trials that lack it, it asks for the same trials
    extended = tune(shared_data(), "logistic-mean-impute", **{**kwargs, "n_trials": 8})
    alone = tune(shared_data(), "logistic-mean-impute", **{**kwargs, "n_trials": 8, "store": None})
    assert [r["params"] for r in extended.records] == [r["params"] for r in alone.records]
    # a fixed parent switches its conditional dimension on in every trial
    fixed = tune(
        shared_data(), "logistic-mean-impute", n_trials=2, folds=2, space=space,
        method_params={"max_iter": 200},
    )  # fmt: skip
    assert all(set(r["params"]) == {"C"} for r in fixed.records)
    # so it does when the space leaves the fixed parent out (was: "not a dimension before it")
    alone = tune(
        shared_data(), "logistic-mean-impute", n_trials=1, folds=2,
        space={"C": space["C"]}, method_params={"max_iter": 200},
    )  # fmt: skip
    assert set(alone.records[0]["params"]) == {"C"}


def test_a_study_interrupted_mid_trial_gives_its_claim_back(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, mlmm.cli) while a trial trains

    monkeypatch.setattr(study_module, "score_point", interrupted)
    store = tmp_path / "t.db"
    with pytest.raises(KeyboardInterrupt):
        tune(shared_data(), "logistic-mean-impute", n_trials=2, folds=2, store=store)
    with ResultsStore(store) as db:
        key = db.studies().study_key[0]
        assert db.trial_claims(key) == {} and db.study_trials(key) == []
        assert db._db.execute("SELECT count(*) FROM heartbeats").fetchone()[0] == 0
