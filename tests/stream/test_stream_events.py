"""EventStream and Track: validation, cuts in time, the truth in force."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.stream import EventStream, Track


def test_a_track_must_be_sorted_and_shaped():
    with pytest.raises(MlmmError, match="out of order"):
        EventStream.from_arrays({"a": (np.array([0.0, 2.0, 1.0]), np.zeros(3))})
    with pytest.raises(MlmmError, match="one row of values per timestamp"):
        Track(np.arange(3.0), np.zeros((2, 1)))


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ([0.0, 1.0, 1.0, 2.0], "1 repeated timestamp.*t=1.*np.unique"),
        ([0.0, np.nan, 2.0], "timestamp nan .*finite seconds"),
        ([0.0, 1.0, np.inf], "timestamp inf"),
    ],
)
def test_a_track_with_repeated_or_non_finite_timestamps_is_refused(times, message):
    # a repeated time counted twice in the sensor's rate (a model built for 2x the readings);
    # a NaN time fell out of the order check and of every window
    with pytest.raises(MlmmError, match=message):
        EventStream.from_arrays({"a": (np.array(times), np.zeros(len(times)))})


def test_the_truth_track_is_checked_like_a_sensor_track():
    # an unsorted truth track scored every step against the wrong label, silently
    sensor = {"a": (np.arange(10.0), np.zeros(10))}
    with pytest.raises(MlmmError, match="the truth track has timestamps out of order"):
        EventStream.from_arrays(sensor, truth=(np.array([5.0, 0.0]), np.array([1.0, 0.0])))
    with pytest.raises(MlmmError, match="the truth track has 1 repeated"):
        EventStream.from_arrays(sensor, truth=(np.array([0.0, 0.0]), np.array([1.0, 0.0])))


def test_a_cut_keeps_the_truth_in_force_at_its_start():
    # regime 1 from t=0, regime 2 from t=10; a cut at 5 must still answer 1 until 10
    stream = EventStream.from_arrays(
        {"a": (np.arange(20.0), np.zeros(20))}, truth=(np.array([0.0, 10.0]), np.array([1.0, 2.0]))
    )
    part = stream.between(5.0, 20.0)
    assert part.truth_at(np.array([5.0, 9.0, 12.0])).tolist() == [1.0, 1.0, 2.0]
    assert part.start == 5.0 and len(part.track("a").times) == 15


def test_events_are_in_time_order_across_sensors():
    stream = EventStream.from_arrays(
        {"a": (np.array([0.0, 1.0]), np.array([1.0, 2.0])), "b": (np.array([0.5]), np.array([9.0]))}
    )
    assert [(t, s) for t, s, _ in stream.events()] == [(0.0, "a"), (0.5, "b"), (1.0, "a")]


def test_truth_is_required_to_score():
    stream = EventStream.from_arrays({"a": (np.arange(3.0), np.zeros(3))})
    with pytest.raises(MlmmError, match="no truth track"):
        stream.truth_at(np.array([1.0]))
