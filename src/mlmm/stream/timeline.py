"""A stream run's timeline as a self-contained HTML page (PNG data URI, matplotlib Agg).

One panel per model: which sensors were up at each step (a band per sensor), what the model
answered against the truth, and where it was wrong (red ticks). Read from the results store's
``stream_steps`` (or :attr:`StreamRun.steps`), never from the run itself.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from mlmm.errors import MlmmError
from mlmm.utils import atomic_write

__all__ = ["timeline_html", "write_timeline"]


def _panel(fig, grid, steps: pd.DataFrame, sensors: list[str], model: str) -> None:
    up_axis, answer_axis = grid.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    times = steps["time"].to_numpy()
    live = steps["live"].astype(str)
    for row, sensor in enumerate(sensors):
        up = np.array([sensor in value.split("+") for value in live])
        up_axis.fill_between(times, row + 0.1, row + 0.9, where=up, step="mid", color="tab:green")
    up_axis.set_yticks(np.arange(len(sensors)) + 0.5, sensors)
    up_axis.set_ylim(0, len(sensors))
    up_axis.set_title(f"{model}: sensors up (green)", fontsize=9, loc="left")
    answer_axis.step(times, steps["truth"], where="mid", color="0.6", label="truth")
    answer_axis.plot(times, steps["prediction"], ".", markersize=3, label="answer")
    wrong = (steps["prediction"] != steps["truth"]).to_numpy() & steps["truth"].notna().to_numpy()
    if wrong.any():
        low = np.nanmin(steps[["prediction", "truth"]].to_numpy()) - 0.4
        answer_axis.plot(
            times[wrong], np.full(wrong.sum(), low), "|", color="tab:red", label="wrong"
        )
    answer_axis.set_xlabel("stream time (s)")
    answer_axis.legend(fontsize=7, loc="upper right", ncols=3)


def timeline_html(steps: pd.DataFrame, title: str = "stream timeline") -> str:
    """The timeline page of a classification run's steps (``model, time, prediction, truth,
    live``); one panel per model."""
    needed = {"model", "time", "prediction", "truth", "live"}
    if not needed <= set(steps.columns) or steps.empty:
        raise MlmmError(f"a timeline needs stream steps with columns {sorted(needed)}")
    from matplotlib.figure import Figure

    models = list(dict.fromkeys(steps["model"]))
    sensors = sorted({s for v in steps["live"].astype(str) for s in v.split("+") if s != "none"})
    fig = Figure(figsize=(11, 3.2 * len(models)), dpi=90, layout="constrained")
    for grid, model in zip(
        fig.subfigures(len(models), 1, squeeze=False)[:, 0], models, strict=True
    ):
        _panel(fig, grid, steps[steps["model"] == model], sensors, model)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"</head><body><h1>{html.escape(title)}</h1><figure><img src='data:image/png;base64,"
        f"{data}' alt='{html.escape(title)}'></figure></body></html>"
    )


def write_timeline(steps: pd.DataFrame, path: str | Path, title: str = "stream timeline") -> Path:
    """Write :func:`timeline_html` to ``path`` (atomically)."""
    path = Path(path)
    page = timeline_html(steps, title)
    with atomic_write(path) as fh:
        fh.write(page)
    return path
