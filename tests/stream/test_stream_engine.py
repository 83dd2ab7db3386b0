"""The stream engine: windows, liveness, staleness and every bad-input policy."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.stream import EventStream, StreamEngine, StreamPolicy, replay
from mlmm.stream.datasets import step_times

from .conftest import feed


def regular(sensor, start, stop, rate=4.0, value=1.0):
    return [(t, sensor, value) for t in np.arange(start, stop, 1 / rate)]


def both(start, stop, a=1.0, b=1.0):
    events = regular("a", start, stop, value=a) + regular("b", start, stop, value=b)
    return sorted(events, key=lambda e: (e[0], e[1]))


def test_window_is_built_at_the_model_rate_and_answers_each_step(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=0.5))
    answers = feed(engine, both(0, 3.01)) + engine.close()
    assert [a.time for a in answers] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert all(a.present.all() and not a.empty for a in answers)
    first = model.calls[0]
    # the window (0, 1] holds readings 0.25, 0.5, 0.75, 1.0: four slots of value 1
    np.testing.assert_array_equal(first.inputs["a"][0, :, 0], [1, 1, 1, 1])
    assert answers[0].prediction == 1.0  # sigmoid(8) > 0.5


def test_slots_take_the_last_reading_and_a_faster_sensor_is_resampled(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0))
    # sensor a at 8 Hz (twice the model's 4 Hz) with values = time: slot k gets the reading at
    # (k + 1) / 4; b absent altogether
    events = [(t, "a", t) for t in np.arange(0, 1.01, 0.125)]
    answers = feed(engine, events) + engine.close()
    np.testing.assert_allclose(model.calls[0].inputs["a"][0, :, 0], [0.25, 0.5, 0.75, 1.0])
    assert answers[0].present.tolist() == [True, False]
    assert engine.stats["rate_mismatch"] >= 1  # counted, then resampled


def test_rate_mismatch_error_policy(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_rate_mismatch="error"))
    with pytest.raises(MlmmError, match="trained at 4 Hz"):
        feed(engine, [(t, "a", 1.0) for t in np.arange(0, 2, 0.125)])


def test_a_silent_sensor_is_missing_and_never_sent_as_data(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0))
    # b stops at t = 1.0: at the step t = 3 its newest reading is 2 s old
    events = sorted(regular("a", 0, 3.01) + regular("b", 0, 1.01, value=5.0))
    answers = feed(engine, events) + engine.close()
    last = answers[-1]
    assert last.time == 3.0 and last.present.tolist() == [True, False]
    assert last.age[1] == pytest.approx(2.0)
    assert (model.calls[-1].inputs["b"] == 0).all()  # absent rows are zero and marked absent


def test_hold_keeps_the_last_window_with_its_age_then_drops_it(model):
    policy = StreamPolicy(window=1.0, step=1.0, staleness="hold", horizon=2.5)
    engine = StreamEngine(model, policy)
    events = sorted(regular("a", 0, 5.01) + regular("b", 0, 1.01, value=5.0))
    answers = {a.time: a for a in feed(engine, events) + engine.close()}
    assert answers[2.0].present.tolist() == [True, True]  # b held from the step at 1.0
    assert answers[2.0].age[1] == pytest.approx(1.0)
    assert answers[3.0].age[1] == pytest.approx(2.0)
    assert answers[4.0].present.tolist() == [True, False]  # 3 s old > horizon 2.5
    held = model.calls[1]  # the step at 2.0 saw b's old window of 5s
    np.testing.assert_array_equal(held.inputs["b"][0, :, 0], [5, 5, 5, 5])


def test_nan_burst_inside_a_live_sensor_makes_it_missing_not_nan(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0))
    b = [(t, "b", np.nan if 1.0 < t <= 2.0 else 1.0) for t in np.arange(0, 3.01, 0.25)]
    answers = {a.time: a for a in feed(engine, sorted(regular("a", 0, 3.01) + b)) + engine.close()}
    assert engine.stats["nan"] == 4
    assert answers[2.0].present.tolist() == [True, False]
    assert answers[3.0].present.tolist() == [True, True]
    assert all(np.isfinite(d.inputs["b"]).all() for d in model.calls)


def test_nan_error_policy(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_nan="error"))
    with pytest.raises(MlmmError, match="NaN or inf in 1 reading"):
        engine.push(0.0, "a", np.array([np.nan]))


@pytest.mark.parametrize("on_empty", ["prior", "hold", "flag", "skip"])
def test_a_window_with_no_sensor_alive(model, on_empty):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_empty=on_empty))
    # a gap from 1 to 3: the steps at 2.0 and 3.0 see nothing
    events = both(0, 1.01) + both(3.25, 5.01)
    answers = {a.time: a for a in feed(engine, events) + engine.close()}
    assert engine.stats["empty"] == 2
    if on_empty == "skip":
        assert 2.0 not in answers and 3.0 not in answers and 4.0 in answers
    elif on_empty == "prior":
        assert answers[2.0].empty and answers[2.0].output.tolist() == [0.25, 0.75]
        assert answers[2.0].prediction == 1.0
    elif on_empty == "hold":  # the answer at 1.0 (sigmoid(8)) is repeated, flagged
        assert answers[2.0].empty and answers[3.0].empty
        np.testing.assert_allclose(answers[3.0].output, answers[1.0].output)
        assert answers[3.0].output[1] > 0.99
    else:
        assert answers[2.0].empty and np.isnan(answers[2.0].prediction)


def test_unknown_sensor(model):
    with pytest.raises(MlmmError, match="unknown sensor 'c'"):
        StreamEngine(model, StreamPolicy(1.0, 1.0)).push(0.0, "c", np.array([1.0]))
    engine = StreamEngine(model, StreamPolicy(1.0, 1.0, on_unknown="ignore"))
    answers = feed(engine, both(0, 2.01) + [(2.1, "c", 1.0)]) + engine.close()
    assert engine.stats["unknown"] == 1 and len(answers) == 2


def test_out_of_order_within_the_deadline_is_accepted(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, deadline=0.5))
    events = both(0, 2.01)
    late = events.pop(5)  # a reading at 0.5, delivered later but before 1.0 + deadline
    events.insert(9, late)
    answers = feed(engine, events) + engine.close()
    assert engine.stats["late"] == 0
    np.testing.assert_array_equal(model.calls[0].inputs[late[1]][0, :, 0], [1, 1, 1, 1])
    assert [a.time for a in answers] == [1.0, 2.0]


def test_late_reading_after_its_step_was_answered(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0))
    feed(engine, both(0, 1.6))
    assert feed(engine, [(0.9, "a", 1.0)]) == []
    assert engine.stats["late"] == 1
    strict = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_late="error"))
    feed(strict, both(0, 1.6))
    with pytest.raises(MlmmError, match="arrived after the step"):
        strict.push(0.9, "a", np.array([1.0]))


def test_duplicated_timestamps(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, deadline=1.0))
    feed(engine, both(0, 0.6) + [(0.5, "a", 9.0)])
    assert engine.stats["duplicate"] == 1
    feed(engine, both(0.75, 2.6))
    np.testing.assert_array_equal(model.calls[0].inputs["a"][0, :, 0], [1, 1, 1, 1])  # first kept
    strict = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_duplicate="error"))
    with pytest.raises(MlmmError, match="two readings at t=0.5"):
        feed(strict, both(0, 0.6) + [(0.5, "a", 9.0)])


def test_clock_reset_restarts_the_timeline(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0))
    first = feed(engine, both(100, 103.01))
    second = feed(engine, both(0, 2.01)) + engine.close()
    assert engine.stats["reset"] == 1
    assert [a.time for a in first] == [101.0, 102.0]
    assert [a.time for a in second] == [1.0, 2.0]  # the step at 103 was never due
    assert second[-1].time == 2.0 and second[-1].present.all()
    strict = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_reset="error"))
    feed(strict, both(100, 103.01))
    with pytest.raises(MlmmError, match="jumps back"):
        feed(strict, both(0, 1.0))


def test_a_far_future_timestamp_starts_a_new_timeline_instead_of_answering_every_step(model):
    # milliseconds sent as seconds: before on_jump, advance() built ~1e11 steps up to it
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=0.01))
    first = feed(engine, both(0, 3.01))
    engine.ingest("a", np.array([1e9]), np.array([[1.0]]))
    assert engine.stats["jump"] == 1 and len(engine.advance()) == 0
    later = feed(engine, both(1e9 + 0.25, 1e9 + 2.01))
    assert len(first) > 100 and 0 < len(later) < 200
    assert engine.policy.effective_jump_after == 100.0  # max(window, 10,000 steps)
    strict = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, on_jump="error"))
    feed(strict, both(0, 3.01))
    with pytest.raises(MlmmError, match="jumps ahead of the stream's clock"):
        strict.ingest("b", np.array([1e6]), np.array([[1.0]]))
    with pytest.raises(MlmmError, match="jump_after must be a positive number"):
        StreamPolicy(window=1.0, step=1.0, jump_after=0.0)


def test_predict_one_uses_the_explicit_clock(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=10.0))
    for t, sensor, value in both(0, 3.01):
        engine.ingest(sensor, np.array([t]), np.array([[value]]))
    answer = engine.predict_one(2.0)
    assert answer.time == 2.0 and answer.present.all()
    assert engine.predict_one(10.0).empty  # nothing in (9, 10]


def test_replay_equals_a_live_feed_and_is_deterministic(model):
    events = both(0, 6.01, a=0.5, b=-1.0)
    live = StreamEngine(model, StreamPolicy(window=1.0, step=0.5))
    expected = feed(live, events) + live.close()
    stream = EventStream.from_arrays(
        {
            s: (
                np.array([e[0] for e in events if e[1] == s]),
                np.array([[e[2]] for e in events if e[1] == s]),
            )
            for s in ("a", "b")
        }
    )
    for batch_steps in (1, 4):
        result = replay(model, stream, StreamPolicy(window=1.0, step=0.5), batch_steps=batch_steps)
        assert result.answers["time"].tolist() == [a.time for a in expected]
        np.testing.assert_allclose(result.outputs, [a.output for a in expected])


def test_policy_validation():
    with pytest.raises(MlmmError, match="staleness must be one of"):
        StreamPolicy(1.0, 1.0, staleness="forever")
    with pytest.raises(MlmmError, match="window must be a positive"):
        StreamPolicy(0.0, 1.0)
    with pytest.raises(MlmmError, match="reset_after must be a positive number"):
        StreamPolicy(1.0, 1.0, reset_after=0.0)
    with pytest.raises(MlmmError, match="rate_tolerance must be a relative difference >= 0"):
        StreamPolicy(1.0, 1.0, rate_tolerance=-0.1)


def test_a_policy_takes_numpy_seconds_but_not_a_bool():
    # np.float32(2.0) (a window read from an array) was refused and True taken as 1 s
    policy = StreamPolicy(np.float32(2.0), np.int64(1))
    assert (policy.window, policy.step) == (2.0, 1.0) and type(policy.window) is float
    for flag in (True, np.bool_(True)):
        with pytest.raises(MlmmError, match="window must be a positive number of seconds"):
            StreamPolicy(flag, 1.0)


def test_a_reading_out_of_order_within_reset_after_is_no_reset(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=1.0, deadline=0.5))
    for t in (0.0, 0.2, 0.4):
        engine.push(t, "a", np.array([1.0]))
    engine.push(0.3, "a", np.array([1.0]))  # out of order by 0.1 s, well within reset_after
    times, _ = engine._buffers[0].view()
    assert engine.stats["reset"] == 0 and times.tolist() == [0.0, 0.2, 0.3, 0.4]


def test_wrong_channel_count(model):
    with pytest.raises(MlmmError, match="sends 2 values per reading, the model expects 1"):
        StreamEngine(model, StreamPolicy(1.0, 1.0)).push(0.0, "a", np.array([1.0, 2.0]))


def test_age_as_an_input(model):
    from mlmm.data.specs import ModalitySpec

    model.specs = (*model.specs, ModalitySpec("age", "vector", (2,)))
    with pytest.raises(MlmmError, match="use StreamPolicy\\(age_input=True\\)"):
        StreamEngine(model, StreamPolicy(1.0, 1.0))
    policy = StreamPolicy(1.0, 1.0, staleness="hold", horizon=2.5, age_input=True)
    engine = StreamEngine(model, policy)
    events = sorted(regular("a", 0, 5.01) + regular("b", 0, 1.01, value=5.0))
    answers = feed(engine, events) + engine.close()
    ages = np.concatenate([d.inputs["age"] for d in model.calls])  # [S, 2]
    assert [a.time for a in answers] == [1.0, 2.0, 3.0, 4.0, 5.0]
    np.testing.assert_allclose(ages[:, 0], 0.0)  # a is live: its newest reading is at t
    np.testing.assert_allclose(ages[:, 1], [0.0, 1.0, 2.0, 2.5, 2.5])  # held, then capped
    assert all(d.observed[:, 2].all() for d in model.calls)
    with pytest.raises(MlmmError, match="unknown sensor 'age'"):
        engine.push(6.0, "age", np.array([0.0, 0.0]))


def test_age_input_needs_the_age_modality(model):
    with pytest.raises(MlmmError, match="needs a vector modality 'age' of shape \\(2,\\)"):
        StreamEngine(model, StreamPolicy(1.0, 1.0, age_input=True))


def _gappy_stream(seconds=160.0, seed=0):
    """Two 4 Hz sensors with random values and outages (both down at times): ~320 steps of
    0.5 s, more than one replay chunk."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, seconds, 0.25)
    tracks = {}
    for s in ("a", "b"):
        up = np.repeat(rng.random(len(t) // 8) > 0.4, 8)[: len(t)]  # 2 s up or down
        values = rng.normal(size=(len(t), 1)).astype(np.float32)
        tracks[s] = (t[up], values[up])
    return EventStream.from_arrays(tracks)


@pytest.mark.parametrize("staleness", ["drop", "hold"])
@pytest.mark.parametrize("on_empty", ["hold", "prior", "skip"])
def test_replay_over_many_chunks_equals_a_live_feed(model, staleness, on_empty):
    stream = _gappy_stream()
    horizon = 1.5 if staleness == "hold" else None  # held windows bridge only short outages
    policy = StreamPolicy(
        window=1.0, step=0.5, staleness=staleness, horizon=horizon, on_empty=on_empty
    )
    live = StreamEngine(model, policy)
    expected = feed(live, [(t, s, v[0]) for t, s, v in stream.events()]) + live.close()
    assert len(expected) + live.stats["skipped"] > 256 and live.stats["empty"] > 5
    for batch_steps in (1, 7, 300):
        result = replay(model, stream, policy, batch_steps=batch_steps)
        assert result.answers["time"].tolist() == [a.time for a in expected]
        assert result.answers["empty"].tolist() == [a.empty for a in expected]
        np.testing.assert_allclose(result.outputs, [a.output for a in expected])
        assert result.stats["empty"] == live.stats["empty"]


def test_an_answer_uses_only_readings_up_to_its_step(model):
    """Causality: replaying a stream whose readings after time T are changed gives the same
    answers at every step up to T, though a replay chunk delivers readings past T."""
    stream = _gappy_stream()
    cut = 60.0
    changed = stream.with_tracks(
        {
            s: type(tr)(tr.times, np.where(tr.times[:, None] > cut, 50.0, tr.values))
            for s, tr in stream.tracks.items()
        }
    )
    policy = StreamPolicy(window=1.0, step=0.5)
    before = replay(model, stream, policy, batch_steps=256)
    after = replay(model, changed, policy, batch_steps=256)
    upto = before.answers["time"].to_numpy() <= cut
    np.testing.assert_array_equal(before.outputs[upto], after.outputs[upto])
    assert not np.allclose(before.outputs[~upto], after.outputs[~upto])  # the change is seen


def test_respond_calls_the_model_once_per_block_of_steps(model):
    engine = StreamEngine(model, StreamPolicy(window=1.0, step=0.5))
    for s, track in _gappy_stream().tracks.items():
        engine.ingest(s, track.times, track.values)
    times = np.arange(1.0, 41.0, 0.5)  # 80 steps
    r = engine.respond(times, batch_steps=16)
    assert len(model.calls) == 5 and all(c.n_samples <= 16 for c in model.calls)
    assert sum(c.n_samples for c in model.calls) == int((~r["empty"]).sum())
    assert (r["latency_ms"] > 0).all() and r["keep"].all()


def test_on_empty_default_is_hold():
    assert StreamPolicy(window=1.0, step=1.0).on_empty == "hold"


def test_replay_over_the_span_before_outages_answers_the_edge_steps_empty(model):
    # every sensor down for the first 2 s and the last 2 s: the outaged stream starts at 2 and
    # ends before 8, so a plain replay moved its first step to 3 and answered nothing after 7.75;
    # over the original span the steps are those of the stream without outages
    t = np.arange(0, 10.0, 0.25)
    values = np.ones(len(t))
    full = EventStream.from_arrays({"a": (t, values), "b": (t, values)})
    up = (t >= 2) & (t < 8)
    left = full.with_tracks(
        {s: type(tr)(tr.times[up], tr.values[up]) for s, tr in full.tracks.items()}
    )
    policy = StreamPolicy(window=1.0, step=1.0)
    clean = replay(model, full, policy).answers
    result = replay(model, left, policy, start=full.start, end=full.end)
    answers = result.answers
    assert answers.time.tolist() == clean.time.tolist() == [float(s) for s in range(1, 10)]
    assert answers["empty"].tolist() == [True, True] + [False] * 6 + [True]
    assert result.stats["empty"] == 3
    assert answers.prediction.tolist()[:2] == [1.0, 1.0]  # the prior before any answer (hold)
    assert replay(model, left, policy).answers.time.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert replay(model, full, policy, end=4.5).answers.time.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_replay_checks_the_rate_where_push_does(model):
    # sensor a runs at 8 Hz for 10 s in the middle of 4 Hz: push checks every 32 readings and
    # saw it; replay delivers a chunk of 256 steps at once and checked only its newest 32
    # readings, so it counted nothing and on_rate_mismatch="error" raised only under push
    t = np.concatenate([np.arange(0, 20, 0.25), np.arange(20, 30, 0.125), np.arange(30, 60, 0.25)])
    stream = EventStream.from_arrays({"a": (t, np.ones(len(t))), "b": (t, np.ones(len(t)))})
    policy = StreamPolicy(window=1.0, step=1.0)
    engine = StreamEngine(model, policy)
    feed(engine, stream.events())
    assert engine.stats["rate_mismatch"] > 0
    assert replay(model, stream, policy).stats["rate_mismatch"] == engine.stats["rate_mismatch"]
    strict = StreamPolicy(window=1.0, step=1.0, on_rate_mismatch="error")
    with pytest.raises(MlmmError, match="runs at 8 Hz"):
        replay(model, stream, strict)


def test_replay_over_a_span_with_every_sensor_out_throughout_answers_every_step_empty(model):
    # fail:a@0+fail:b@0 leaves no reading at all: run_stream crashed (KeyError) once its replay
    # took the span; every step of the span is answered under on_empty, flagged
    t = np.arange(0, 5.0, 0.25)
    full = EventStream.from_arrays({"a": (t, np.ones(len(t))), "b": (t, np.ones(len(t)))})
    nothing = full.with_tracks({s: tr.between(99.0, 100.0) for s, tr in full.tracks.items()})
    policy = StreamPolicy(window=1.0, step=1.0)
    result = replay(model, nothing, policy, start=full.start, end=full.end)
    assert result.answers.time.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert result.answers["empty"].all() and result.stats["empty"] == 4
    assert (result.answers.prediction == 1.0).all()  # the prior's class (0.25, 0.75)
    assert not model.calls
    engine = StreamEngine(model, policy)  # an empty chunk was a bare reshape ValueError
    assert engine.push_many("a", np.empty(0), np.empty((0, 1))) == [] and engine.clock == -np.inf


def test_step_times_do_not_drift_so_push_and_replay_read_the_same_windows(model):
    # the next step was the previous one plus step: after many 0.1 s steps its rounding put a
    # step just before or after a reading at the step's exact time, differently for push (one
    # step at a time) and replay (a chunk of steps), so their windows and answers differed
    t = np.arange(0, 30.0, 0.25)
    values = np.sin(7 * t)  # each reading its own value: a missed one changes the answer
    stream = EventStream.from_arrays({"a": (t, values), "b": (t, values)})
    policy = StreamPolicy(window=1.0, step=0.1)
    engine = StreamEngine(model, policy)
    answers = feed(engine, stream.events()) + engine.close()
    result = replay(model, stream, policy)
    times = np.array([a.time for a in answers])
    np.testing.assert_array_equal(times, result.answers.time.to_numpy())
    np.testing.assert_array_equal(times, step_times(stream, policy))  # the training windows'
    np.testing.assert_array_equal(np.array([a.output for a in answers]), result.outputs)


def test_replay_up_to_an_end_counts_no_step_after_it(model):
    # the readings after end were delivered too: the steps they made due (5..8, empty) were
    # answered and counted in stats["empty"], then dropped from the answers (4 empty, 0 shown)
    t = np.arange(0, 5.0, 0.25)
    a = np.append(t, 9.0)
    stream = EventStream.from_arrays({"a": (a, np.ones(len(a))), "b": (t, np.ones(len(t)))})
    result = replay(model, stream, StreamPolicy(window=1.0, step=1.0), end=4.5)
    assert result.answers.time.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert result.stats["empty"] == int(result.answers["empty"].sum()) == 0


def test_push_replay_and_step_times_agree_on_a_last_step_rounded_past_the_end(model):
    # 2.0 + 14 * 0.1 is 3.4000000000000004 > 3.4: step_times (the training and reconstruction
    # windows) counted that step with its 1e-9 tolerance, push and replay dropped it
    t = np.append(np.arange(0, 3.4, 0.25), 3.4)
    stream = EventStream.from_arrays({"a": (t, np.ones(len(t))), "b": (t, np.ones(len(t)))})
    policy = StreamPolicy(window=2.0, step=0.1)
    engine = StreamEngine(model, policy)
    answers = feed(engine, stream.events()) + engine.close()
    times = step_times(stream, policy)
    assert len(times) == 15 and times[-1] > stream.end
    np.testing.assert_array_equal([a.time for a in answers], times)
    np.testing.assert_array_equal(replay(model, stream, policy).answers.time, times)
    np.testing.assert_array_equal(replay(model, stream, policy, end=3.4).answers.time, times)
