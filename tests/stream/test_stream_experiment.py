"""run_stream and `mlmm stream`: baselines, reconstruction scores, the stored tables."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from mlmm import cli
from mlmm.bench.store import ResultsStore
from mlmm.errors import MlmmError
from mlmm.stream import EventStream, StreamPolicy, experiment, replay
from mlmm.stream.baselines import ZeroFilled, hold_last_prediction
from mlmm.stream.datasets import daphnet_stream, step_times, synthetic_stream, time_split
from mlmm.stream.experiment import run_stream
from mlmm.stream.outages import apply_outages

from .conftest import RecordingModel


def test_synthetic_run_has_every_model_and_scope():
    run = run_stream(
        "synthetic",
        "late-fusion",
        outage="burst:s0=0.4:len=2s",
        train_missing="burst:0.3:len=5",
        epochs=2,
        stream_params={"duration": 150},
        step=0.5,
        time_bins=90,  # 0.5 s bins, each with an answer: their keys must not round together
    )
    summary = run.summary()
    time_rows = run.table[run.table.scope == "time"]
    assert not time_rows.duplicated(["model", "key"]).any()
    assert time_rows.groupby("model").size().min() > 80  # nearly every bin has answers
    models = [
        "late-fusion (train none)",
        "late-fusion (train burst:0.3:len=5)",
        "hold-last-prediction",
        "zero-filled",
    ]
    assert summary.index.tolist() == models
    assert set(run.table.scope) == {"overall", "time", "live", "latency", "outage_length"}
    # accuracy while s0 (the only sensor with outages) is down, by the length of its outage
    lengths = run.table[run.table.scope == "outage_length"]
    assert lengths.key.str.match(r"s0:(0-0\.5s|0\.5-1s|1-2s|2-4s|>=4s)$").all()
    assert (lengths.metric == "accuracy").all() and lengths.value.between(0, 1).all()
    test = time_split(synthetic_stream(duration=150), 0.7)[1]
    _, lost = apply_outages(test, "burst:s0=0.4:len=2s", seed=0)
    times = run.steps[run.steps.model == models[0]].time.to_numpy()
    n_down = int(lost.is_down("s0", times).sum())
    assert n_down > 0 and lengths.groupby("model").n.sum().eq(n_down).all()
    assert (summary["accuracy"].between(0, 1)).all()
    assert run.down["s0"] > 0.2 and run.down["s1"] == 0.0
    assert "s1+s2" in set(run.table[run.table.scope == "live"].key)  # s0 was down sometimes
    loss = summary["accuracy_no_outage"] - summary["accuracy"]
    np.testing.assert_allclose(summary["loss_vs_no_outage"].dropna(), loss.dropna())


def test_daphnet_reconstruction_scores_each_sensor_against_both_baselines():
    run = run_stream(
        "daphnet", "mean-impute", outage="fail:trunk@5", train_missing="none", epochs=1
    )
    sensor = run.table[run.table.scope == "sensor"]
    assert set(sensor.model) == {"mean-impute", "hold-last-value", "training-mean"}
    assert set(sensor.key) == {"trunk"} and (sensor.value > 0).all()
    lengths = run.table[run.table.scope == "outage_length"]
    assert len(lengths) and lengths.key.str.startswith("trunk:").all()
    # trunk is down from 5 s to the end: the open last bin, once labelled "trunk:4-infs"
    assert "trunk:>=4s" in set(lengths.key) and not lengths.key.str.contains("inf").any()
    overall = run.table[run.table.scope == "overall"].set_index("model")
    by_sensor = sensor.set_index("model")
    assert set(overall.index) == set(by_sensor.index) and (overall.metric == "nrmse").all()
    # one sensor down: the overall NRMSE and count are that sensor's
    np.testing.assert_allclose(overall.value, by_sensor.value[overall.index])
    assert overall.n.tolist() == by_sensor.n[overall.index].tolist()


@pytest.mark.parametrize(
    "outage", ["fail:trunk@0", "fail:ankle@0+fail:leg@0+fail:trunk@0"], ids=["one", "every"]
)
def test_daphnet_with_sensors_out_for_the_whole_test_part_scores_every_step(outage):
    # a sensor out throughout has no reading to hold (IndexError); every sensor out left no
    # reading at all to cut the steps from (a bare ValueError in the window assembly)
    run = run_stream("daphnet", "mean-impute", outage=outage, train_missing="none", epochs=1)
    sensor = run.table[run.table.scope == "sensor"]
    n_steps = len(step_times(time_split(daphnet_stream(), 0.7)[1], StreamPolicy(0.5, 0.25)))
    assert (sensor.n == n_steps).all() and np.isfinite(sensor.value).all()
    held = sensor[sensor.model == "hold-last-value"].value.to_numpy()
    assert np.isfinite(held).all() and (held > 0).all()  # the training mean stands in


def test_a_bad_training_missingness_fails_before_any_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the spec was checked")

    monkeypatch.setattr(experiment, "train_on_stream", no_training)
    with pytest.raises(MlmmError, match="missing rate must be in"):
        run_stream("synthetic", "late-fusion", train_missing="mcar:1.5", epochs=1)
    with pytest.raises(MlmmError, match="step must be a positive number of seconds, got 0"):
        run_stream("synthetic", "late-fusion", step=0.0, epochs=1)  # not the default 1 s
    with pytest.raises(MlmmError, match="basicmotions takes 'seed' from the run"):
        run_stream("basicmotions", stream_params={"seed": 3}, epochs=1)
    # epochs=0 trained nothing and stored the untrained models' scores as a run
    with pytest.raises(MlmmError, match="epochs must be a positive integer, got 0"):
        run_stream("synthetic", "late-fusion", epochs=0)


def test_a_step_or_window_too_long_for_the_stream_is_one_line_before_training(monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the step was checked")

    monkeypatch.setattr(experiment, "train_on_stream", no_training)
    # a step of 1000 s trained on a single window and failed with "modality 's0' is absent
    # from every training sample"
    with pytest.raises(MlmmError, match=r"step of 1000 s leaves .* 1 step\(s\) in its test") as err:
        run_stream("synthetic", "late-fusion", step=1000.0, epochs=1)
    message = str(err.value)
    assert "\n" not in message and "test part 179.95 s" in message
    most = float(message.split("give a step of at most ")[1].split(" s")[0])
    assert most == 19.772  # (179.95 - 2) / 9, rounded down: 10 steps fit in the test part
    policy = experiment.StreamPolicy(window=2.0, step=most)
    _, test = experiment.time_split(experiment.load_stream("synthetic"), 0.7)
    assert len(experiment.step_times(test, policy)) == experiment.MIN_STREAM_STEPS
    with pytest.raises(MlmmError, match="window of 1000 s is longer than the test part"):
        run_stream("synthetic", "late-fusion", window=1000.0, epochs=1)


def test_the_longest_step_or_window_advised_for_a_long_stream_fits():
    # the bound was printed with :g (6 significant digits): 1999.777 s became 1999.78 s, a
    # step that leaves 9 steps in the test part, refused again
    parts = {  # _check_steps reads only each part's start and end
        "training": SimpleNamespace(start=0.0, end=42_000.0),
        "test": SimpleNamespace(start=42_000.0, end=60_000.0),
    }
    for policy in (
        experiment.StreamPolicy(window=2.0, step=1e5),
        experiment.StreamPolicy(window=20_000.0, step=1.0),
    ):
        with pytest.raises(MlmmError, match="at most") as err:
            experiment._check_steps("synthetic", parts, policy)
        most = float(str(err.value).split("at most ")[1].split(" s")[0])
        advised = (
            experiment.StreamPolicy(window=2.0, step=most)
            if policy.step > 1
            else experiment.StreamPolicy(window=most, step=1.0)
        )
        assert most in (1999.777, 17991.0)
        assert len(experiment.step_times(parts["test"], advised)) == experiment.MIN_STREAM_STEPS


def test_mlmm_stream_with_a_step_longer_than_the_stream_says_so(monkeypatch, capsys, tmp_path):
    argv = ["mlmm", "stream", "synthetic", "--step", "1000", "--store", str(tmp_path / "s.db")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "step of 1000 s" in err and "give a step of at most" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_daphnet_needs_a_method_that_imputes():
    with pytest.raises(MlmmError, match="does not impute"):
        run_stream("daphnet", "late-fusion", outage="fail:trunk@5", train_missing="none", epochs=1)


def stream(values_a, values_b, labels):
    times = np.arange(len(values_a)) / 4.0
    return EventStream.from_arrays(
        {"a": (times, np.asarray(values_a)[:, None]), "b": (times, np.asarray(values_b)[:, None])},
        truth=(times, np.asarray(labels, dtype=float)),
    )


def test_hold_last_prediction_repeats_the_last_complete_answer():
    model = RecordingModel()
    n = 24
    a = np.r_[np.full(8, 5.0), np.full(16, -5.0)]
    b = np.r_[np.full(8, 5.0), np.full(16, -5.0)]
    # b is lost from reading 8 on: the model's own answers flip to 0, the held ones stay 1
    s = stream(a, b, np.zeros(n))
    left = s.with_tracks({"a": s.track("a"), "b": s.track("b").between(0, 2.0)})
    result = replay(model, left, StreamPolicy(1.0, 1.0))
    held = hold_last_prediction(result, ("a", "b"))
    assert result.answers.prediction.tolist()[-1] == 0.0
    assert held.answers.prediction.tolist()[-1] == 1.0
    assert not held.answers.correct.iloc[-1]  # the truth is 0 throughout


def test_zero_filled_tells_the_model_everything_is_present():
    model = RecordingModel()
    wrapped = ZeroFilled(model)
    s = stream(np.ones(12), np.ones(12), np.zeros(12))
    left = s.with_tracks({"a": s.track("a"), "b": s.track("b").between(0, 0.5)})
    replay(wrapped, left, StreamPolicy(1.0, 1.0))
    assert model.calls[-1].observed.all()
    assert (model.calls[-1].inputs["b"] == 0).all()


def test_cli_stream_prints_and_stores(monkeypatch, capsys, tmp_path):
    db = tmp_path / "stream.db"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "mlmm",
            "stream",
            "synthetic",
            "--epochs",
            "1",
            "--stream-param",
            "duration=100",
            "--outage",
            "burst:0.3:len=2s",
            "--train-missing",
            "none",
            "--store",
            str(db),
            "--timeline",
            str(tmp_path / "timeline.html"),
        ],
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr().out
    assert exc.value.code in (0, None)
    assert "score per set of live sensors" in out and "score over time" in out
    assert "p99_ms" in out
    with ResultsStore(db) as store:
        runs = store.stream_runs()
        assert runs.status.tolist() == ["done"]
        assert json.loads(runs.config[0])["on_empty"] == "hold"  # the documented default
        results = store.stream_results()
        assert {"overall", "time", "live", "latency"} <= set(results.scope)
        assert len(store.stream_steps(runs.run_key[0])) > 0
    page = (tmp_path / "timeline.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page


def test_cli_stream_bad_outage_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(
        sys,
        "argv",
        ["mlmm", "stream", "synthetic", "--outage", "storm:1", "--store", str(tmp_path / "s.db")],
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "unknown outage kind 'storm'" in capsys.readouterr().err


def test_cli_stream_timeline_of_the_reconstruction_stream_is_refused_before_training(
    monkeypatch, capsys, tmp_path
):
    page, db = tmp_path / "t.html", tmp_path / "s.db"
    argv = ["mlmm", "stream", "daphnet", "--timeline", str(page), "--store", str(db)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "daphnet scores reconstruction" in capsys.readouterr().err
    assert not page.exists() and not db.exists()


@pytest.mark.parametrize("method", ["late-fusion", "hemis", "masked-attention"])
def test_registered_methods_answer_through_their_own_predict_path(method):
    import mlmm
    from mlmm.stream import apply_outages, stream_specs, synthetic_stream, window_dataset

    stream = synthetic_stream(duration=60, seed=3)
    policy = StreamPolicy(window=2.0, step=1.0)
    data = window_dataset(stream, stream_specs(stream, 2.0), policy)
    model = mlmm.create_method(method, data.specs, data.task)
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    left, _ = apply_outages(stream, "burst:0.4:len=2s", seed=0)
    result = replay(trained, left, policy, batch_steps=16)
    live = ~result.answers["empty"].to_numpy()
    assert np.isfinite(result.outputs[live]).all()
    np.testing.assert_allclose(result.outputs[live].sum(axis=1), 1.0, rtol=1e-6)
    # the same windows through TrainedModel.predict_proba give the same probabilities
    windows = window_dataset(left, data.specs, policy)
    expected = trained.predict_proba(windows)
    np.testing.assert_allclose(result.outputs[live], expected, rtol=1e-5, atol=1e-6)


def test_timeline_needs_steps():
    from mlmm.stream.timeline import timeline_html

    with pytest.raises(MlmmError, match="a timeline needs stream steps"):
        timeline_html(pd.DataFrame({"time": [1.0]}))


def test_accuracy_on_empty_prior_is_the_replay_under_on_empty_prior():
    """Under the default on_empty="hold" the table also reports what on_empty="prior" would
    have scored; it is the accuracy of the same run with on_empty="prior"."""
    kwargs = dict(
        outage="burst:0.6:len=4s",  # every sensor down together at times
        train_missing="burst:0.3:len=2",
        epochs=1,
        stream_params={"duration": 150},
        baselines=False,
    )
    held = run_stream("synthetic", "late-fusion", **kwargs).summary()
    prior = run_stream("synthetic", "late-fusion", on_empty="prior", **kwargs).summary()
    assert (held["empty_fraction"] > 0).all()
    np.testing.assert_allclose(held["accuracy_on_empty_prior"], prior["accuracy"])
    assert "accuracy_on_empty_prior" not in prior


def test_every_sensor_down_at_the_end_is_scored_not_dropped():
    # the test part (70-100 s) lost every sensor from 90 s: its last 9 steps were never
    # answered, so they were neither scored nor counted in empty_fraction (0.0)
    common = {"train_missing": "none", "epochs": 1, "stream_params": {"duration": 100}}
    run = run_stream("synthetic", outage="fail:s0@20+fail:s1@20+fail:s2@20", **common)
    clean = run_stream("synthetic", outage="none", baselines=False, **common)
    overall = run.table[(run.table.scope == "overall") & (run.table.metric == "accuracy")]
    n_clean = clean.table[clean.table.scope == "overall"].n.iloc[0]
    assert (overall.n == n_clean).all()
    assert run.summary().loc["late-fusion (train none)", "empty_fraction"] == pytest.approx(9 / 28)
    assert run.steps.groupby("model").time.max().eq(99.0).all()
    # under on_empty="skip" those steps are not answered, yet they still count as empty
    outage = "fail:s0@20+fail:s1@20+fail:s2@20"
    skip = run_stream("synthetic", outage=outage, on_empty="skip", baselines=False, **common)
    assert skip.summary().loc["late-fusion (train none)", "empty_fraction"] == pytest.approx(9 / 28)
    assert skip.table[skip.table.scope == "overall"].n.eq(19).all()


def test_outage_length_runs_to_the_next_delivered_reading_also_at_the_end():
    # readings 0..4 s, lost at 1, 2 and 4: the first outage lasts 1 -> 3 s, the last one
    # (still down at the end) one interval, as a one-reading outage elsewhere; it read 0 s
    down = np.array([False, True, True, False, True])
    lengths = experiment._outage_lengths(down, np.arange(5.0), np.array([1.0, 2.5, 4.0]))
    assert lengths.tolist() == [2.0, 2.0, 1.0]


def _daphnet_uci_file(path):
    """The built-in excerpt's first 2,400 readings as a UCI release file: annotation 0 (not
    part of the experiment) before, between and after two stretches, freezes (2) in each."""
    from mlmm.data.datasets._files import read_npz

    arrays = read_npz("daphnet_s06r02.npz")
    annotation = np.ones(2400, dtype=int)
    annotation[:64] = annotation[1200:1264] = annotation[-50:] = 0
    annotation[600:800] = annotation[1900:2100] = 2
    rows = [
        " ".join(map(str, [5000 + int(t), *v, a]))
        for t, v, a in zip(
            arrays["time_ms"][:2400], arrays["values"][:2400], annotation, strict=True
        )
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("task", ["reconstruction", "freeze"])
def test_cli_stream_runs_your_daphnet_file_through_the_same_experiment(
    monkeypatch, capsys, tmp_path, task
):
    path, db = _daphnet_uci_file(tmp_path / "S06R02.txt"), tmp_path / "stream.db"
    argv = ["mlmm", "stream", "daphnet", "--stream-param", f"path={path}", "--epochs", "1"]
    argv += ["--outage", "fail:trunk@5", "--train-missing", "none", "--store", str(db)]
    if task == "freeze":  # a classification stream: late-fusion by default, a timeline drawn
        argv += ["--stream-param", "task=freeze", "--timeline", str(tmp_path / "t.html")]
    else:
        argv += ["--method", "mean-impute"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr().out
    assert exc.value.code in (0, None)
    with ResultsStore(db) as store:
        config = json.loads(store.stream_runs().config[0])
        results = store.stream_results()
    assert config["stream_params"]["path"] == str(path)
    if task == "freeze":
        assert config["method"] == "late-fusion" and "score per set of live sensors" in out
        assert "accuracy" in set(results.metric) and (tmp_path / "t.html").exists()
    else:
        assert "NRMSE per sensor while it is down" in out
        sensor = results[results.scope == "sensor"]
        assert set(sensor.key) == {"trunk"} and np.isfinite(sensor.value).all()


def test_an_edited_daphnet_file_is_a_new_stream_run_not_the_old_one_replaced(tmp_path):
    # the run key hashed the path string alone: rerunning on an edited recording at the same
    # path replaced the stored results of the old one (r2's finding)
    path = _daphnet_uci_file(tmp_path / "S06R02.txt")
    keys = []
    for edit in (False, False, True):
        if edit:
            lines = path.read_text().splitlines()
            first = lines[100].split()
            lines[100] = " ".join([first[0], str(float(first[1]) + 1000.0), *first[2:]])
            path.write_text("\n".join(lines) + "\n")
        run = experiment.run_stream(
            "daphnet",
            "mean-impute",
            "fail:trunk@5",
            "none",
            epochs=1,
            stream_params={"path": str(path)},
        )
        with ResultsStore(tmp_path / "s.db") as store:
            keys.append(store.start_stream_run(run.config))
    assert keys[0] == keys[1] != keys[2]
