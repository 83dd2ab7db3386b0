"""Streams: models that keep answering while sensors drop in and out.

:class:`StreamEngine` turns per-sensor events (timestamp, sensor, values), each at its own
rate, into the windows a trained model expects and answers at every step from what arrived
within the window; a silent sensor is a missing modality. :func:`replay` runs a recorded
:class:`EventStream` through it; :func:`apply_outages` simulates sensor outages on the time
axis; :mod:`mlmm.stream.datasets` holds the built-in streams. See ``docs/streams.md``.
"""

from mlmm.stream.datasets import (
    STREAMS,
    basicmotions_stream,
    daphnet_stream,
    load_stream,
    stream_specs,
    synthetic_stream,
    time_split,
    window_dataset,
)
from mlmm.stream.engine import Answer, StreamEngine, StreamPolicy, StreamResult, replay
from mlmm.stream.events import EventStream, Track
from mlmm.stream.outages import Outages, apply_outages, parse_outages

__all__ = [
    "STREAMS",
    "Answer",
    "EventStream",
    "Outages",
    "StreamEngine",
    "StreamPolicy",
    "StreamResult",
    "Track",
    "apply_outages",
    "basicmotions_stream",
    "daphnet_stream",
    "load_stream",
    "parse_outages",
    "replay",
    "stream_specs",
    "synthetic_stream",
    "time_split",
    "window_dataset",
]
