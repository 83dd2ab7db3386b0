"""Training checkpoints: a training stopped after an epoch and resumed ends bit-identical to
an uninterrupted one (weights, history, predictions), with dropout, shuffling, early
stopping, selection parts and stages; a checkpoint of another run or a corrupt one is
ignored with one warning."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

import mlmm
from mlmm.methods.representation.hemis import HeMIS
from mlmm.train import resume


class _Stop(Exception):
    """The failure injected after an epoch."""


def _split():
    ds = mlmm.load_dataset("synthetic", n_samples=160, seed=3)
    return mlmm.train_val_test_split(ds, seed=0)


def _trainer(checkpoint_dir=None, stop_after=None, **kwargs):
    seen = []

    def on_epoch(stage, row):
        seen.append((stage, row["epoch"]))
        if stop_after is not None and len(seen) == stop_after:
            raise _Stop

    options = {"max_epochs": 25, "batch_size": 16, "patience": 2, "lr": 1e-2, "progress": False}
    options["seed"] = 4
    return mlmm.Trainer(
        **{**options, **kwargs},
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=0,
        on_epoch=on_epoch,
    )


def _histories(trained):
    rows = []
    for history in trained.histories:
        data = history.to_dict()
        data["epochs"] = [{k: v for k, v in r.items() if k != "seconds"} for r in data["epochs"]]
        data.pop("seconds")
        rows.append(data)
    return rows


def _same(a, b, split):
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert json.dumps(_histories(a)) == json.dumps(_histories(b))
    assert torch.equal(
        torch.as_tensor(a.predict_proba(split.test)), torch.as_tensor(b.predict_proba(split.test))
    )


@pytest.mark.parametrize(
    ("method", "params", "stop_after"),
    [
        ("hemis", {"dropout": 0.3, "modality_dropout": 0.3}, 5),  # dropout, shuffling
        ("late-fusion", {}, 4),  # selection parts: each head its own best epoch
        ("mmin", {"encoder_training": "pretrained-frozen"}, 10),  # stopped in its 2nd stage
    ],
)
def test_resumed_training_is_identical(tmp_path, capsys, method, params, stop_after):
    split = _split()
    model = mlmm.create_method(method, split.train.specs, split.train.task, **params)
    reference = _trainer().fit(model, split.train, split.val)
    assert any(h.stopped_early for h in reference.histories)  # early stopping is exercised
    total = sum(len(h.epochs) for h in reference.histories)
    assert stop_after < total

    folder = tmp_path / "ckpt"
    model = mlmm.create_method(method, split.train.specs, split.train.task, **params)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=stop_after).fit(model, split.train, split.val)
    assert (folder / resume.STATE_FILE).is_file()
    capsys.readouterr()
    model = mlmm.create_method(method, split.train.specs, split.train.task, **params)
    resumed_trainer = _trainer(folder)
    resumed = resumed_trainer.fit(model, split.train, split.val)
    assert "resuming from epoch" in capsys.readouterr().err
    _same(reference, resumed, split)


def test_finished_checkpoint_trains_nothing_and_is_removed(tmp_path, capsys):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    first = _trainer(folder, max_epochs=4).fit(model, split.train, split.val)
    assert (folder / resume.STATE_FILE).is_file()  # kept: the caller removes it once saved
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    trainer = _trainer(folder, stop_after=1, max_epochs=4)  # would raise if any epoch ran
    again = trainer.fit(model, split.train, split.val)
    assert "training had finished" in capsys.readouterr().err
    _same(first, again, split)
    resume.remove_checkpoint(folder)
    assert not folder.exists()


def test_checkpoint_of_another_run_is_ignored_with_a_warning(tmp_path):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=2, max_epochs=4).fit(model, split.train, split.val)
    reference = _trainer(seed=5, max_epochs=4).fit(
        mlmm.create_method("hemis", split.train.specs, split.train.task), split.train, split.val
    )
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.warns(UserWarning, match=r"another run \(different seed\)") as caught:
        other = _trainer(folder, seed=5, max_epochs=4).fit(model, split.train, split.val)
    assert len([w for w in caught if "checkpoint" in str(w.message)]) == 1
    assert "\n" not in str(caught[0].message)
    _same(reference, other, split)  # trained from epoch 1, not from the other run's weights


@pytest.mark.parametrize("damage", ["state", "edited", "tensors"])
def test_corrupt_checkpoint_is_ignored_with_a_warning(tmp_path, damage):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=2, max_epochs=4).fit(model, split.train, split.val)
    if damage == "state":
        (folder / resume.STATE_FILE).write_text('{"format": "mlmm-training-check')
        match = "not valid JSON"
    elif damage == "edited":  # still JSON, with a wrong value: a hash tells
        state = json.loads((folder / resume.STATE_FILE).read_text())
        state["running"]["since_best"] = 99
        (folder / resume.STATE_FILE).write_text(json.dumps(state))
        match = "checkpoint.json does not match its SHA-256"
    else:
        (tensors,) = folder.glob("state-*.safetensors")
        data = bytearray(tensors.read_bytes())
        data[-5] ^= 0xFF
        tensors.write_bytes(bytes(data))
        match = "does not match its SHA-256"
    reference = _trainer(max_epochs=4).fit(
        mlmm.create_method("hemis", split.train.specs, split.train.task), split.train, split.val
    )
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.warns(UserWarning, match=match):
        again = _trainer(folder, max_epochs=4).fit(model, split.train, split.val)
    _same(reference, again, split)


def test_no_checkpoint_dir_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    split = _split()
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _trainer(max_epochs=2).fit(model, split.train, split.val)
    assert list(tmp_path.iterdir()) == []


def test_beside_names_the_hidden_folder(tmp_path):
    assert resume.beside(tmp_path / "model", "checkpoint") == tmp_path / ".model.checkpoint"


def test_killed_cli_training_resumes_and_ends_as_an_uninterrupted_one(
    tmp_path, slow_hemis_plugin, killed_mid_training
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlmm.train.checkpoint import load_artifact

    slow_hemis_plugin(0.02)
    out = tmp_path / "model"
    command = [
        sys.executable, "-m", "mlmm", "--plugin", "slow_hemis_plugin", "train",
        "--dataset", "synthetic", "--dataset-param", "n_samples=120", "--method", "slow-hemis",
        "--epochs", "20", "--seed", "0", "--quiet", "--out", str(out),
    ]  # fmt: skip
    source = str(Path(mlmm.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), source])}
    folder = resume.beside(out, "checkpoint")
    killed_mid_training(command, tmp_path, env, folder, resume.STATE_FILE, epochs=3)
    assert not out.exists() and (folder / resume.STATE_FILE).is_file()

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from epoch" in done.stderr and " of 20 " in done.stderr
    assert not folder.exists()  # removed once the model is saved

    reference = mlmm.run_experiment(
        "synthetic",
        "hemis",  # slow-hemis without the sleep: the same weights from the same seed
        dataset_params={"n_samples": 120},
        seed=0,
        trainer={"max_epochs": 20, "progress": False},
    )
    config, weights = load_artifact(out)
    expected = reference.trained.model.state_dict()
    assert weights.keys() == expected.keys()
    for key in weights:
        assert torch.equal(weights[key], expected[key].cpu()), key
    assert [
        {k: v for k, v in row.items() if k != "seconds"} for row in config["histories"][0]["epochs"]
    ] == [
        {k: v for k, v in row.items() if k != "seconds"}
        for row in reference.trained.histories[0].epochs
    ]


def test_data_parallel_training_ignores_the_checkpoint_dir_with_a_warning(tmp_path, monkeypatch):
    from mlmm.train import trainer as trainer_module

    split = _split()
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    monkeypatch.setattr(trainer_module.distributed, "current", lambda: object())
    trainer = _trainer(tmp_path / "ckpt")
    with pytest.warns(UserWarning, match="data-parallel training does not resume"):
        assert trainer._open_checkpoint(model, split.train, split.val) is None
    assert not (tmp_path / "ckpt").exists()


def test_a_second_training_on_the_same_folder_is_refused_in_one_line(tmp_path):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    running = resume.TrainingCheckpoint.open(folder, {"a": "b"}, None, model)  # "another run"
    try:
        with pytest.raises(mlmm.MlmmError, match="in use by another training") as caught:
            _trainer(folder, max_epochs=2).fit(model, split.train, split.val)
        assert "\n" not in str(caught.value)
        assert list(folder.iterdir()) == []  # the refused training wrote nothing
    finally:
        running.close()
    assert not folder.exists()  # made by the first, which wrote nothing: removed
    _trainer(folder, max_epochs=2).fit(model, split.train, split.val)  # free again
    assert (folder / resume.STATE_FILE).is_file()


def test_the_folder_is_locked_even_if_its_empty_parent_vanishes_meanwhile(tmp_path, monkeypatch):
    # a finished bench run removes the empty `.STORE.checkpoints` parent; a training creating its
    # own folder in that instant ran without its lock (r10's finding): the lock is retried
    import os

    split = _split()
    folder = tmp_path / "parent" / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    real_open, calls = os.open, []

    def vanishing_open(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:  # the parent is removed between mkdir and open
            (tmp_path / "parent" / "ckpt").rmdir()
            (tmp_path / "parent").rmdir()
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(resume.os, "open", vanishing_open)
    running = resume.TrainingCheckpoint.open(folder, {"a": "b"}, None, model)
    monkeypatch.setattr(resume.os, "open", real_open)
    try:
        assert len(calls) == 2 and folder.is_dir()
        with pytest.raises(mlmm.MlmmError, match="in use by another training"):
            _trainer(folder, max_epochs=2).fit(model, split.train, split.val)
    finally:
        running.close()


def test_a_write_killed_midway_leaves_the_last_checkpoint_and_is_cleaned_up(tmp_path):
    import subprocess
    import sys

    from mlmm.utils import temporary_prefix

    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=3, max_epochs=6).fit(model, split.train, split.val)
    # killed in the next write: its tensor file renamed in place, checkpoint.json not yet;
    # an earlier kill, inside the tensor file's write, left its temporary file
    (written,) = folder.glob("state-*.safetensors")
    orphan = folder / "state-0123456789abcdef.safetensors"
    orphan.write_bytes(b"a tensor file whose checkpoint.json was never written")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process that is gone
    killed = temporary_prefix(folder / "state-fedcba9876543210.safetensors")
    killed = killed.replace(f".p{os.getpid()}-", f".p{child.pid}-", 1)
    stray = folder / f"{killed}x1y2z3.tmp"
    stray.write_bytes(b"half a tensor file")

    reference = _trainer(max_epochs=6).fit(
        mlmm.create_method("hemis", split.train.specs, split.train.task), split.train, split.val
    )
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the last complete checkpoint is used, no warning
        resumed = _trainer(folder, max_epochs=6).fit(model, split.train, split.val)
    _same(reference, resumed, split)
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 2 and resume.STATE_FILE in left  # one tensor file: the last one
    assert not orphan.exists() and not stray.exists() and not written.exists()


def test_the_key_holds_the_device_trained_on_not_the_one_asked_for(tmp_path, monkeypatch):
    from mlmm.train import trainer as trainer_module

    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=2, max_epochs=4, device="auto").fit(
            model, split.train, split.val
        )
    other = "cpu" if torch.cuda.is_available() else "cuda"
    plain = _trainer(folder, max_epochs=4, device="auto")
    key = resume.run_key(model, split.train, split.val, {**plain.config(), "device": other})
    monkeypatch.setattr(  # "auto" is another device on the machine that resumes
        trainer_module, "resolve_device", lambda device: torch.device(other)
    )
    with pytest.warns(UserWarning, match=r"another run \(different device\)"):
        checkpoint = plain._open_checkpoint(model, split.train, split.val)
    checkpoint.close()
    assert checkpoint.key == key and not checkpoint.loaded


def test_a_rerun_with_other_epochs_starts_again_and_says_why(tmp_path):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=2, max_epochs=4).fit(model, split.train, split.val)
    longer = _trainer(folder, max_epochs=6)  # mlmm train --epochs 6 after --epochs 4
    with pytest.warns(UserWarning, match=r"another run \(different max_epochs\); training starts"):
        checkpoint = longer._open_checkpoint(model, split.train, split.val)
    checkpoint.close()
    assert not checkpoint.loaded and checkpoint.running is None


class _RandomBetweenStages(HeMIS):
    """hemis in two stages, re-drawing its last layer between them (as a method that builds
    a new head for its second stage would): resuming between the stages must keep that draw."""

    def fit(self, trainer, train, val):
        first = trainer.fit_module(self, train, val, stage="first", max_epochs=3)
        with torch.no_grad():  # from the global generator, as a new layer's initialisation
            torch.nn.init.normal_(list(self.parameters())[-1], std=0.1)
        return [first, trainer.fit_module(self, train, val, stage="second")]


def test_resumed_between_stages_keeps_what_ran_between_them(tmp_path, capsys):
    split = _split()

    def model():
        return _RandomBetweenStages(split.train.specs, split.train.task, dropout=0.3)

    reference = _trainer().fit(model(), split.train, split.val)
    first_epochs = len(reference.histories[0].epochs)
    folder = tmp_path / "ckpt"
    with pytest.raises(_Stop):  # stopped in the second stage's first epoch, before its write
        _trainer(folder, stop_after=first_epochs + 1).fit(model(), split.train, split.val)
    state = json.loads((folder / resume.STATE_FILE).read_text())
    assert state["running"] is None and len(state["completed"]) == 1  # written between stages
    capsys.readouterr()
    resumed = _trainer(folder).fit(model(), split.train, split.val)
    assert "resuming at the start of stage 'second'" in capsys.readouterr().err
    _same(reference, resumed, split)


def test_a_refused_checkpoint_frees_its_folder(tmp_path):
    split = _split()
    folder = tmp_path / "ckpt"
    model = mlmm.create_method("hemis", split.train.specs, split.train.task)
    with pytest.raises(_Stop):
        _trainer(folder, stop_after=2, max_epochs=4).fit(model, split.train, split.val)
    (folder / resume.STATE_FILE).write_text("[" * 100_000)  # past the recursion limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the caller's filter makes the warning an exception
        with pytest.raises(UserWarning, match="not valid JSON"):
            resume.TrainingCheckpoint.open(folder, {}, None, model)
    resume.TrainingCheckpoint.open(folder, {}, None, model).close()  # not locked any more
