"""Outages on the time axis: Gilbert-Elliott per sensor, sensor failure, recorded gaps."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.stream import EventStream, apply_outages, parse_outages


def stream(n=20000, rate=10.0):
    times = np.arange(n) / rate
    return EventStream.from_arrays({"a": (times, np.ones((n, 1))), "b": (times, np.ones((n, 1)))})


def runs(down: np.ndarray) -> np.ndarray:
    edges = np.diff(np.concatenate([[0], down.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def test_burst_matches_rate_and_mean_length_per_sensor_and_is_seeded():
    left, lost = apply_outages(stream(), "burst:0.3:len=20", seed=3)
    for sensor in ("a", "b"):
        assert lost.fraction_down()[sensor] == pytest.approx(0.3, abs=0.05)
        assert runs(lost.down[sensor]).mean() == pytest.approx(20, rel=0.2)
        assert len(left.track(sensor).times) == int((~lost.down[sensor]).sum())
    assert not np.array_equal(lost.down["a"], lost.down["b"])  # independent chains
    _, again = apply_outages(stream(), "burst:0.3:len=20", seed=3)
    _, other = apply_outages(stream(), "burst:0.3:len=20", seed=4)
    assert np.array_equal(again.down["a"], lost.down["a"])
    assert not np.array_equal(other.down["a"], lost.down["a"])


def test_burst_length_in_seconds_and_per_sensor_rates():
    _, lost = apply_outages(stream(), "burst:a=0.4,b=0:len=2s", seed=0)
    assert runs(lost.down["a"]).mean() == pytest.approx(20, rel=0.2)  # 2 s at 10 Hz
    assert lost.fraction_down()["b"] == 0.0
    assert lost.fraction_down()["a"] == pytest.approx(0.4, abs=0.06)


def test_whole_sensor_failure_from_a_time():
    left, lost = apply_outages(stream(100), "fail:b@4", seed=0)
    assert left.track("b").times.max() == pytest.approx(3.9)
    assert len(left.track("a").times) == 100
    assert lost.is_down("b", np.array([3.95, 4.0, 9.0])).tolist() == [False, True, True]


def test_every_sensor_failing_from_the_start_is_one_line_not_a_bare_valueerror():
    left, lost = apply_outages(stream(100), "fail:a@0+fail:b@0", seed=0)
    assert lost.fraction_down() == {"a": 1.0, "b": 1.0}
    with pytest.raises(MlmmError, match="no reading on any sensor"):
        _ = left.start
    with pytest.raises(MlmmError, match="no reading on any sensor"):
        _ = left.end


def test_recorded_gaps_from_a_file(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("sensor,start,end\na,1.0,2.0\nb,5,5.5\n")
    left, lost = apply_outages(stream(100), f"gaps:{path}", seed=0)
    assert lost.down["a"].sum() == 10 and lost.down["b"].sum() == 5
    assert not ((left.track("a").times >= 1.0) & (left.track("a").times < 2.0)).any()
    combined, both = apply_outages(stream(100), f"gaps:{path}+fail:a@9", seed=0)
    assert both.down["a"].sum() == 20


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("storm:0.3", "unknown outage kind 'storm'"),
        ("burst:0.3", "burst needs a rate and a mean outage length"),
        ("burst:1.5:len=3", "outage rate must be in"),
        ("burst:0.9:len=2", "too short for outage rate"),
        ("burst:0.3:len=0s", "len must be > 0 seconds"),  # was: one reading, silently
        ("burst:0.3:len=-2s", "len must be > 0 seconds"),
        ("fail:a", "fail:SENSOR@SECONDS"),
        ("fail:a@-5", "after the stream's start, >= 0"),  # was: 'a' down throughout
        ("gaps:/nonexistent.csv", "not found"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(MlmmError, match=message):
        apply_outages(stream(100), spec)


def test_unknown_sensor_in_a_spec():
    with pytest.raises(MlmmError, match="unknown sensor 'c'"):
        apply_outages(stream(100), "fail:c@1")


def test_none_is_no_outage():
    assert parse_outages("none") == []
    left, lost = apply_outages(stream(100), "none")
    assert left.n_events == 200 and not any(d.any() for d in lost.down.values())
