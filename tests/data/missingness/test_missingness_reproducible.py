"""Pinned masks: the same seed gives the same mask in every process, and stays so."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mlmm.data.missingness import simulate
from mlmm.utils import rng_for

# Digests of the present masks the code gave when these were pinned (2026-11-30). Published
# results depend on them: a change here changes every benchmark's masks, so it must be on
# purpose. Python's hash seed (random per pytest process) plays no part in them.
PINNED = {
    "mcar:0.3": "d305243b3cf95539",
    "mcar:0.5:unit=samples": "b4a7e6a721f6eb62",
    "mcar:pix=0.8,fou=0.2": "aabb38c785f0e4e2",
    "mar:0.3:driver=fou": "94d1812e125b2b9c",
    "mnar:0.3": "0158a65ad69ace91",
    "mnar:0.4:mode=low:unit=samples": "3495301cfdd7af23",
    "burst:0.3:len=20": "c0a07cffed0f7dc5",
    "mcar:0.3:allow_empty": "b1548072bb5ca6d1",
}


@pytest.fixture(scope="module")
def pinned_data(make_data):
    rng = np.random.default_rng(7)
    observed = rng.random((300, 3)) < 0.8
    observed[~observed.any(axis=1), 0] = True
    return make_data(n=300, observed=observed, seed=3)


@pytest.mark.parametrize("spec", sorted(PINNED))
def test_masks_of_a_seed_never_change(pinned_data, spec):
    result = simulate(pinned_data, spec, rng_for(4, "test-mask", spec))[1]
    digest = hashlib.sha256(np.packbits(result.present).tobytes()).hexdigest()[:16]
    assert digest == PINNED[spec]


def test_train_and_test_streams_differ(pinned_data):
    train = simulate(pinned_data, "mcar:0.3", rng_for(4, "train-mask"))[1].removed
    test = simulate(pinned_data, "mcar:0.3", rng_for(4, "test-mask", "mcar:0.3"))[1].removed
    assert not np.array_equal(train, test)
    # independent draws: agreement near what two independent 30% masks give, not 100%
    assert abs(float((train == test).mean()) - (0.3**2 + 0.7**2)) < 0.1


# The train and validation streams (and fixed, and a default mar driver) pinned too: the ones
# above use the test stream only. Computed with the code before the q12 validation (4ab0e04).
PINNED_STREAMS = {
    ("mcar:0.3", "train-mask"): "022355993e400493",
    ("mcar:0.3", "val-mask"): "208685ac45d9c317",
    ("mcar:pix=0.8,fou=0.2", "train-mask"): "cec808dad470d99c",
    ("mar:0.3", "train-mask"): "0075d953b448dcf6",
    ("mnar:0.3", "val-mask"): "3365f01e0a303b6c",
    ("burst:0.3:len=20", "train-mask"): "40dede2e1390a4da",
    ("fixed:-kar:allow_empty", "train-mask"): "2643ca5b0f599d3f",
    ("fixed:-pix:allow_empty", "test-mask"): "ed99a429f79997f5",
}


def _digest(data, spec, rng) -> str:
    present = simulate(data, spec, rng)[1].present
    return hashlib.sha256(np.packbits(present).tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("spec, stream", sorted(PINNED_STREAMS))
def test_masks_of_every_stream_never_change(pinned_data, spec, stream):
    keys = (stream, spec) if stream == "test-mask" else (stream,)
    assert _digest(pinned_data, spec, rng_for(4, *keys)) == PINNED_STREAMS[spec, stream]
    # a numpy int seed (from a sweep array) is the same seed
    assert _digest(pinned_data, spec, rng_for(np.int64(4), *keys)) == PINNED_STREAMS[spec, stream]


def _recording_simulate(monkeypatch, *modules) -> list[str]:
    """Record the digest of every mask ``simulate`` gives inside ``modules``."""
    seen: list[str] = []
    for module in modules:

        def record(dataset, spec, seed, _simulate=module.simulate):
            out = _simulate(dataset, spec, seed)
            mask = np.ascontiguousarray(out[0].observed)
            seen.append(hashlib.sha256(mask.tobytes()).hexdigest()[:16])
            return out

        monkeypatch.setattr(module, "simulate", record)
    return seen


def test_the_masks_of_run_experiment_and_the_estimator_stay_pinned(monkeypatch):
    """The pins above call ``rng_for`` with the stream names written out; these go through the
    call sites (the training, validation and test streams of ``run_experiment``, its
    evaluation, and the estimator's fit), so renaming a stream there is caught too. Digests from
    the code at 4ab0e04."""
    import mlmm
    import mlmm.estimator
    import mlmm.eval.protocol
    import mlmm.experiment

    seen = _recording_simulate(monkeypatch, mlmm.experiment, mlmm.eval.protocol)
    mlmm.run_experiment(
        "synthetic",
        "logistic-mean-impute",
        dataset_params={"n_samples": 300},
        missing="mcar:0.3",
        test_missing=["mcar:0.5", "mnar:0.3"],
        seed=3,
        subsets=False,
    )
    assert sorted(set(seen)) == [
        "18b480e5eb083d8c",
        "91b4d5ec73758221",
        "c8bed0af5473e956",
        "da4a930bd5618f3d",
        "f18dd584c8a819ca",
    ]
    seen = _recording_simulate(monkeypatch, mlmm.estimator)
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(120, 3)), "b": rng.normal(size=(120, 2))}
    clf = mlmm.MissingModalityClassifier(
        method="logistic-mean-impute", train_missing="mcar:0.3", random_state=3
    )
    clf.fit(X, np.arange(120) % 3)
    assert seen[:2] == ["6ad8f92eb15f060e", "ae7b150901a6bcf9"]  # training, validation


def test_the_masks_of_the_benchmark_check_stay_pinned(monkeypatch):
    """``check_conditions`` (bench/execute.py) simulates every condition before a benchmark
    starts, on the streams its runs will draw: the same masks as ``run_experiment``'s above
    for the same run. Digests from the code at cde5617."""
    import mlmm.data.missingness
    from mlmm.bench.execute import check_conditions
    from mlmm.bench.spec import RunConfig

    seen = _recording_simulate(monkeypatch, mlmm.data.missingness)
    run = RunConfig(
        dataset="synthetic",
        dataset_params={"n_samples": 300},
        method="logistic-mean-impute",
        method_params={},
        train_missing="mcar:0.3",
        test_missing=("mcar:0.5", "mnar:0.3"),
        seed=3,
        budget={},
        test_size=0.2,
        val_size=0.1,
    )
    check_conditions([run])
    # training, validation, then each test condition: run_experiment's masks for this run
    assert seen == ["f18dd584c8a819ca", "91b4d5ec73758221", "da4a930bd5618f3d", "18b480e5eb083d8c"]


def test_the_training_mask_of_a_study_stays_pinned(monkeypatch):
    """A study tunes on ``training_part`` (tune/study.py): run_experiment's training mask for
    the same split and seed. Digest from the code at cde5617."""
    import mlmm.tune.study

    seen = _recording_simulate(monkeypatch, mlmm.data.missingness)
    _, train = mlmm.tune.study.training_part(
        "synthetic", {"n_samples": 300}, "mcar:0.3", 3, 0.2, 0.1
    )
    assert seen == ["f18dd584c8a819ca"]
    assert (
        hashlib.sha256(np.ascontiguousarray(train.observed).tobytes()).hexdigest()[:16] == seen[0]
    )


class _Drawn(Exception):
    """Stops ``mlmm tune --data`` once its mask is drawn."""


def test_the_training_mask_of_tune_data_stays_pinned(monkeypatch, tmp_path):
    """``mlmm tune --data`` (cli.py) masks the whole table before its study. Digest from the
    code at cde5617."""
    import pandas as pd
    from typer.testing import CliRunner

    import mlmm.tune.study
    from mlmm.cli import app

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a1", "a2", "b1"])
    frame["y"] = np.arange(60) % 2
    frame.to_csv(tmp_path / "table.csv", index=False)
    studied = []

    def tune_training_data(train, *args, **kwargs):  # the mask is drawn: no study needed
        studied.append(train)
        raise _Drawn

    seen = _recording_simulate(monkeypatch, mlmm.data.missingness)
    monkeypatch.setattr(mlmm.tune.study, "tune_training_data", tune_training_data)
    args = [
        "tune",
        "--data",
        str(tmp_path / "table.csv"),
        "--target",
        "y",
        "--modality",
        "a=a1,a2",
        "--modality",
        "b=b1",
        "--method",
        "logistic-mean-impute",
        "--missing",
        "mcar:0.3",
        "--seed",
        "3",
        "--store",
        str(tmp_path / "tune.db"),
    ]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, _Drawn), result.output
    assert seen == ["0087612a91506e73"]
    assert studied[0].observed.shape == (60, 2)  # a1, a2 | b1


def test_the_training_mask_of_the_auto_estimator_stays_pinned(monkeypatch):
    """``method="auto"`` masks all of the fit data (no validation split) before
    ``fit_auto``, which is stopped once the mask is drawn. Digest from the code at 494529f."""
    import mlmm
    import mlmm.estimator
    import mlmm.tune.auto

    given = []

    def fit_auto(train, **kwargs):  # the mask is drawn: no portfolio needed
        given.append(train)
        raise _Drawn

    seen = _recording_simulate(monkeypatch, mlmm.estimator)
    monkeypatch.setattr(mlmm.tune.auto, "fit_auto", fit_auto)
    rng = np.random.default_rng(0)
    X = {"a": rng.normal(size=(120, 3)), "b": rng.normal(size=(120, 2))}
    clf = mlmm.MissingModalityClassifier(method="auto", train_missing="mcar:0.3", random_state=3)
    with pytest.raises(_Drawn):
        clf.fit(X, np.arange(120) % 3)
    assert seen == ["9e90a160b59584e4"]
    mask = np.ascontiguousarray(given[0].observed)
    assert mask.shape == (120, 2) and not mask.all()  # every row: nothing held out, some masked
    assert hashlib.sha256(mask.tobytes()).hexdigest()[:16] == seen[0]


def test_the_imputation_mask_of_run_experiment_stays_pinned(monkeypatch):
    """``imputation_scores`` (eval/imputation.py) hides its own seeded mask on the test part;
    pinned through ``run_experiment``, which passes it the run's seed (one epoch: the mask
    does not depend on the model). Digest from the code at 494529f."""
    import mlmm
    import mlmm.eval.imputation

    seen = _recording_simulate(monkeypatch, mlmm.eval.imputation)
    result = mlmm.run_experiment(
        "synthetic",
        "mean-impute",
        dataset_params={"n_samples": 300},
        missing="mcar:0.3",
        seed=3,
        subsets=False,
        trainer={"max_epochs": 1},
    )
    assert seen == ["a6d96a7a3782273c"]
    assert list(result.table[result.table.scope == "imputation"].condition.unique()) == ["mcar:0.5"]


def test_the_masks_of_a_stream_run_stay_pinned(monkeypatch):
    """``run_stream`` (stream/experiment.py) draws the test outages (``apply_outages``, one
    stream per term and sensor) and the training missingness of its windows
    (``train_on_stream``); stopped once both are drawn: the complete-data model is not
    trained and the masked one stops at its creation. Digests from the code at 494529f."""
    import mlmm
    import mlmm.stream.experiment as experiment

    seen = _recording_simulate(monkeypatch, experiment)
    outages = []
    apply_outages, train_on_stream = experiment.apply_outages, experiment.train_on_stream

    def record_outages(stream, spec, seed):
        left, lost = apply_outages(stream, spec, seed)
        outages.append(lost.down)
        return left, lost

    def train(stream, method, policy, specs, train_missing, *args):
        if train_missing == "none":  # no mask drawn for it: not trained
            return None
        return train_on_stream(stream, method, policy, specs, train_missing, *args)

    def create_method(*args, **kwargs):  # the training mask is drawn: no training needed
        raise _Drawn

    monkeypatch.setattr(experiment, "apply_outages", record_outages)
    monkeypatch.setattr(experiment, "train_on_stream", train)
    monkeypatch.setattr(mlmm, "create_method", create_method)
    with pytest.raises(_Drawn):
        experiment.run_stream(
            "synthetic",
            "late-fusion",
            outage="burst:0.3:len=2s",
            train_missing="burst:0.3:len=2",
            seed=3,
            stream_params={"duration": 60.0},
        )
    assert seen == ["8bdb341c4f634078"]
    (down,) = outages
    assert all(0 < d.mean() < 1 for d in down.values())  # each sensor loses some readings
    assert {s: hashlib.sha256(d.tobytes()).hexdigest()[:16] for s, d in down.items()} == {
        "s0": "89630be8d6236647",
        "s1": "9cdf48ca2a1f0dd6",
        "s2": "158d25f5574ca809",
    }
