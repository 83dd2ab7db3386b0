"""Built-in streams and the window datasets cut from them."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.stream import (
    EventStream,
    StreamPolicy,
    basicmotions_stream,
    daphnet_stream,
    load_stream,
    stream_specs,
    synthetic_stream,
    time_split,
    window_dataset,
)
from mlmm.stream.datasets import step_times


def test_basicmotions_stream_keeps_official_splits_apart_and_is_seeded():
    train, test = basicmotions_stream("train", 0), basicmotions_stream("test", 0)
    assert set(train.meta["recordings"]).isdisjoint(test.meta["recordings"])
    assert len(train.meta["recordings"]) == 40 and train.n_events == 8000
    assert np.array_equal(
        basicmotions_stream("train", 0).meta["recordings"], train.meta["recordings"]
    )
    assert not np.array_equal(
        basicmotions_stream("train", 1).meta["recordings"], train.meta["recordings"]
    )
    # the truth changes with the recording: recording r starts at 10 r seconds
    labels = train.truth_at(np.arange(40) * 10.0 + 5)
    from mlmm.data.datasets import load_dataset

    data = load_dataset("basicmotions")
    assert np.array_equal(labels, data.targets[train.meta["recordings"]])
    np.testing.assert_array_equal(
        train.track("acc").values[100:200], data.inputs["acc"][train.meta["recordings"][1]]
    )


def test_daphnet_stream_is_the_shipped_file():
    stream = daphnet_stream()
    assert stream.sensors == ("ankle", "leg", "trunk") and stream.truth is None
    ankle = stream.track("ankle")
    assert len(ankle.times) == 7040 and ankle.times[-1] == pytest.approx(109.984)
    # first row of S06R02E0.csv: 101,1000,297,-9,953,303,330,942,-145
    np.testing.assert_array_equal(ankle.values[0], [101, 1000, 297])
    np.testing.assert_array_equal(stream.track("trunk").values[0], [330, 942, -145])
    assert stream.meta["license"] == "CC BY 4.0"


def _daphnet_csv(path, rows, freeze=()):
    """The built-in excerpt's first ``rows`` readings written back as TimeEval CSV."""
    from mlmm.data.datasets._files import read_npz

    arrays = read_npz("daphnet_s06r02.npz")
    header = "timestamp," + ",".join(f"c{k}" for k in range(9)) + ",is_anomaly"
    lines = [header]
    for k in range(rows):
        stamp = str(np.datetime64(280_000 + int(arrays["time_ms"][k]), "ms")).replace("T", " ")
        label = int(k in freeze)
        lines.append(",".join(map(str, [stamp, *arrays["values"][k].tolist(), label])))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_daphnet_stream_of_your_file_is_the_built_in_one_read_from_it(tmp_path):
    # the same readings through read_daphnet: the experiments see the same stream
    path = _daphnet_csv(tmp_path / "S06R02E0.csv", 500)
    yours, built_in = load_stream("daphnet", path=str(path)), daphnet_stream()
    assert yours.sensors == built_in.sensors and yours.truth is None
    for sensor in yours.sensors:
        np.testing.assert_array_equal(
            yours.track(sensor).values, built_in.track(sensor).values[:500]
        )
        np.testing.assert_allclose(yours.track(sensor).times, built_in.track(sensor).times[:500])
    assert yours.meta["task"] == "reconstruction" and yours.meta["layout"] == "timeeval"
    assert str(path) in yours.meta["source"]


def test_daphnet_freeze_task_has_a_truth_track_and_needs_a_freeze(tmp_path):
    path = _daphnet_csv(tmp_path / "S06R02E0.csv", 300, freeze=range(100, 160))
    stream = daphnet_stream(path, task="freeze")
    assert stream.meta["class_names"] == ("no-freeze", "freeze")
    times = stream.track("ankle").times
    assert stream.truth_at(times[[99, 100, 159, 160]]).tolist() == [0, 1, 1, 0]
    with pytest.raises(MlmmError, match="task='freeze' needs a recording with a freeze"):
        daphnet_stream(task="freeze")  # the excerpt's is_anomaly is 0 throughout
    with pytest.raises(MlmmError, match="unknown daphnet task 'freez'"):
        daphnet_stream(path, task="freez")
    with pytest.raises(MlmmError, match="segment must be in"):
        daphnet_stream(segment=1)


def test_daphnet_time_split_windows_never_cross_the_cut():
    stream = daphnet_stream()
    before, after = time_split(stream, 0.7)
    policy = StreamPolicy(window=0.5, step=0.25)
    specs = stream_specs(stream, 0.5, rate=64.0)
    train = window_dataset(before, specs, policy)
    test = window_dataset(after, specs, policy)
    cut = after.start
    assert train.meta["times"].max() <= cut
    assert (test.meta["times"] - 0.5 >= cut - 1e-9).all()
    assert train.task.kind == "regression" and train.observed.all()


def test_synthetic_stream_ground_truth_and_rates():
    stream = synthetic_stream(duration=200, seed=2)
    assert [round(stream.track(s).rate()) for s in stream.sensors] == [10, 20, 5]
    means = stream.meta["means"]
    # the mean reading of s0 during each regime is that regime's mean
    regime = stream.truth_at(stream.track("s0").times).astype(int)
    for k in np.unique(regime):
        got = stream.track("s0").values[regime == k].mean(0)
        np.testing.assert_allclose(got, means[k, 0], atol=0.25)
    assert len(np.unique(stream.truth.values)) > 1  # it switches
    again = synthetic_stream(duration=200, seed=2)
    np.testing.assert_array_equal(again.track("s2").values, stream.track("s2").values)


def test_window_dataset_targets_and_time_order():
    stream = synthetic_stream(duration=60, seed=0)
    policy = StreamPolicy(window=2.0, step=1.0)
    data = window_dataset(stream, stream_specs(stream, 2.0), policy)
    assert data.meta["time_ordered"] is True
    assert [s.shape for s in data.specs] == [(20, 2), (40, 2), (10, 2)]
    np.testing.assert_array_equal(data.targets, stream.truth_at(data.meta["times"]))


def test_load_stream_unknown_name():
    with pytest.raises(MlmmError, match="unknown stream 'dafnet'"):
        load_stream("dafnet")


def test_docs_snippets_run():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "streams.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks
    namespace: dict = {}  # the blocks build on each other, as in a session
    for block in blocks:
        exec(compile(block, "docs/streams.md", "exec"), namespace)


def test_window_dataset_with_hold_and_ages_trains_a_model():
    import mlmm
    from mlmm.stream import apply_outages, replay

    stream = synthetic_stream(duration=120, seed=0)
    left, _ = apply_outages(stream, "burst:0.3:len=3s", seed=0)
    policy = StreamPolicy(window=2.0, step=1.0, staleness="hold", age_input=True)
    specs = stream_specs(stream, 2.0, age=True)
    data = window_dataset(left, specs, policy)
    age = data.inputs["age"]
    assert data.observed[:, -1].all() and (age >= 0).all() and (age <= 10.0).all()
    assert (age > 1.0).any()  # some held windows are old
    model = mlmm.create_method("late-fusion", data.specs, data.task)
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    result = replay(trained, left, policy, batch_steps=64)
    assert len(result.answers) and result.answers["present_age"].all()


def test_a_stream_parameter_it_does_not_take_is_one_line():
    with pytest.raises(MlmmError, match="stream 'synthetic' has no parameter 'durration'. Did you"):
        load_stream("synthetic", durration=100)
    with pytest.raises(MlmmError, match="stream 'daphnet' has no parameter 'duration'"):
        load_stream("daphnet", duration=100)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"duration": "abc"}, "duration must be a number of seconds, got 'abc'"),
        ({"mean_dwell": float("nan")}, "mean_dwell must be a number"),
        ({"n_sensors": 2.5}, "n_sensors must be an integer"),
        ({"channels": True}, "channels must be an integer"),
        # a 0 Hz rate was a ZeroDivisionError, a negative one an empty track
        ({"rates": (0.0, 10.0, 5.0)}, r"rates must be finite numbers > 0 Hz, got \[0.0, 10.0"),
        ({"rates": (-5.0, 10.0, 5.0)}, "rates must be finite numbers > 0 Hz"),
        ({"noise": (1.0, float("nan"), 1.0)}, "noise must be finite numbers >= 0"),
    ],
)
def test_synthetic_stream_parameters_of_the_wrong_type_are_one_line(params, message):
    # --stream-param duration=abc was "TypeError: '<=' not supported between 'str' and 'int'"
    with pytest.raises(MlmmError, match=message):
        synthetic_stream(**params)


@pytest.mark.parametrize("n_readings", [0, 1])
def test_specs_of_a_sensor_out_for_the_whole_stream_say_so(n_readings):
    # it said "window 2 s holds no reading of 'b'; lengthen it", which no window fixes
    t = np.arange(0.0, 20.0, 0.1)
    stream = EventStream.from_arrays(
        {"a": (t, np.ones(len(t))), "b": (t[:n_readings], np.ones(n_readings))}, name="log"
    )
    with pytest.raises(MlmmError, match=f"sensor 'b' has {n_readings} reading.*too few.*rate="):
        stream_specs(stream, 2.0)
    specs = stream_specs(stream, 2.0, rate=10.0)  # the fix it names
    assert [s.shape for s in specs] == [(20, 1), (20, 1)]


def test_window_dataset_at_given_step_times_keeps_the_steps_of_an_edge_outage():
    # daphnet's reconstruction cut its steps from the outaged stream: every sensor down at
    # the start moved them all (step_times of the stream before outages keeps them)
    t = np.arange(0.0, 10.0, 0.25)
    full = EventStream.from_arrays({"a": (t, np.ones(len(t)))})
    left = full.between(3.0, 11.0)
    policy = StreamPolicy(window=1.0, step=1.0)
    specs = stream_specs(full, 1.0)
    times = step_times(full, policy)
    data = window_dataset(left, specs, policy, allow_empty=True, times=times)
    np.testing.assert_array_equal(data.meta["times"], np.arange(1.0, 10.0))
    assert data.observed[:, 0].tolist() == [False] * 3 + [True] * 6  # (2, 3] holds only 3.0
    assert window_dataset(left, specs, policy, allow_empty=True).meta["times"][0] == 4.0
