"""Daphnet Freezing of Gait recordings from your own files: the UCI release or TimeEval CSV.

Two layouts of the same recordings (three 3-axis accelerometers at 64 Hz, values in mg)::

    dataset_fog_release/dataset/S01R01.txt   UCI: space-separated, no header, 11 columns:
        time (ms), ankle, thigh ("leg"), trunk acceleration (horizontal forward, vertical,
        horizontal lateral each), annotation (0 = not part of the experiment, 1 = experiment
        without freeze, 2 = freeze)
    Daphnet_S06R02E0/S06R02E0.csv            TimeEval: header, comma-separated, 11 columns:
        timestamp (datetime, or an integer sample index), the same 9 channels in the same
        order, is_anomaly (1 = freeze)

Readings annotated 0 are dropped (the release's reference code, ``x_fi.m`` and ``do_test.m``,
windows the whole recording and drops the frames annotated 0 from its scores); each remaining
contiguous stretch is one experiment segment (what TimeEval's ``E0``, ``E1``... files appear
to be). The segments of a file, then of the files of a folder in name order, are joined end
to end on one clock (each starts one reading interval after the previous one ends: the time
between them is not kept, and a window over a junction holds readings of both), or one is
chosen with ``segment=``. :func:`read_daphnet` returns the arrays; ``mlmm.stream.daphnet_stream``
(``mlmm stream daphnet --stream-param path=FILE``) makes the stream the experiments replay.

Reference: M. Bächlin, M. Plotnik, D. Roggen, I. Maidan, J. M. Hausdorff, N. Giladi,
G. Tröster, "Wearable assistant for Parkinson's disease patients with the freezing of gait
symptom", IEEE Transactions on Information Technology in Biomedicine 14(2):436-446, 2010
(the data set: UCI Machine Learning Repository, doi:10.24432/C56K78, CC BY 4.0).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlmm.errors import MlmmError

__all__ = ["DAPHNET_CHANNELS", "DAPHNET_RATE_HZ", "DaphnetRecording", "read_daphnet"]

DAPHNET_CHANNELS = (
    "ankle_horiz_fwd",
    "ankle_vert",
    "ankle_horiz_lateral",
    "leg_horiz_fwd",
    "leg_vert",
    "leg_horiz_lateral",
    "trunk_horiz_fwd",
    "trunk_vert",
    "trunk_horiz_lateral",
)
"""The 9 value columns in file order (TimeEval's names; the UCI release has no header)."""
DAPHNET_RATE_HZ = 64.0
"""The sensors' rate: an integer TimeEval timestamp counts readings at this rate."""
_COLUMNS = 1 + len(DAPHNET_CHANNELS) + 1
_PATTERNS = ("S*R*.txt", "S*R*.csv")


@dataclass(frozen=True)
class DaphnetRecording:
    """Experiment readings of one or more Daphnet files on one clock.

    Attributes
    ----------
    times : ndarray of float, shape (n,)
        Seconds; the first kept reading at 0, later segments joined end to end.
    values : ndarray of float32, shape (n, 9)
        :data:`DAPHNET_CHANNELS`, in mg.
    freeze : ndarray of int8, shape (n,)
        1 during a freeze of gait (UCI annotation 2, TimeEval ``is_anomaly`` 1), else 0.
    segments : list of dict
        Per experiment segment: ``file``, ``line`` (its first line in the file), ``start``
        (stream seconds), ``readings``.
    meta : dict
        ``source`` (the path read), ``layout`` (``"uci"`` or ``"timeeval"``), ``dropped`` (the
        readings annotated 0 in the files read), ``rate_hz`` (measured: readings per second within segments).
    """

    times: np.ndarray
    values: np.ndarray
    freeze: np.ndarray
    segments: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def read_daphnet(path: str | os.PathLike, segment: int | None = None) -> DaphnetRecording:
    """Read Daphnet readings from a UCI ``.txt``, a TimeEval ``.csv`` or a folder of them.

    Parameters
    ----------
    path : path
        A file ``S<ss>R<rr>.txt`` (UCI release) or ``S<ss>R<rr>E<e>.csv`` (TimeEval), or a
        folder holding such files (all of one layout), read in name order.
    segment : int, optional
        Keep only this experiment segment (0-based, counted over the files in order);
        TimeEval's ``S06R02E0`` looks like ``segment=0`` of ``S06R02.txt`` (inferred from its
        timestamps: TimeEval's conversion script is not published with it). None: every
        segment, joined end to end.

    Returns
    -------
    DaphnetRecording

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> rows = [f"{15 * i} " + " ".join(["10"] * 9) + f" {1 if i < 6 else 0}" for i in range(9)]
    >>> _ = (folder / "S01R01.txt").write_text("\\n".join(rows) + "\\n")
    >>> rec = read_daphnet(folder / "S01R01.txt")
    >>> rec.values.shape, rec.meta["dropped"], round(float(rec.times[-1]), 3)
    ((6, 9), 3, 0.075)
    """
    if segment is not None and (
        isinstance(segment, bool) or not isinstance(segment, (int, np.integer))
    ):
        raise MlmmError(f"segment must be an integer (0-based) or None, got {segment!r}")
    files = _files(path)
    parts = []  # (file, first line, times ms [k], values [k, 9], freeze [k])
    dropped = 0
    for file in files:
        rows = _read_uci(file) if file.suffix.lower() == ".txt" else _read_timeeval(file)
        lines, times, values, labels = rows
        _check_times(file, lines, times)
        if file.suffix.lower() == ".txt":
            keep = labels != 0
            dropped += int((~keep).sum())
            freeze = (labels == 2).astype(np.int8)
        else:
            keep = np.ones(len(labels), dtype=bool)
            freeze = (labels == 1).astype(np.int8)
        # experiment segments: the stretches between readings annotated 0
        edges = np.diff(np.concatenate([[0], keep.astype(np.int8), [0]]))
        for lo, hi in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
            parts.append((file, int(lines[lo]), times[lo:hi], values[lo:hi], freeze[lo:hi]))
    if not parts:
        raise MlmmError(
            f"{path} holds no experiment reading (every reading is annotated 0, 'not part of "
            "the experiment'); expected readings annotated 1 or 2: check the file"
        )
    if segment is not None:
        if not 0 <= segment < len(parts):
            raise MlmmError(
                f"segment must be in [0, {len(parts)}) ({path} holds {len(parts)} experiment "
                f"segment(s)), got {segment}"
            )
        parts = [parts[segment]]
    # the reading interval that joins segments: the mean within segments (15.625 ms; the
    # timestamps, whole milliseconds, step 15 or 16)
    span = sum(float(p[2][-1] - p[2][0]) for p in parts)
    steps = sum(len(p[2]) - 1 for p in parts)
    interval = span / steps if steps and span > 0 else 1000.0 / DAPHNET_RATE_HZ
    clock, times, segments = 0.0, [], []
    for file, line, part_times, _, _ in parts:
        start = clock
        times.append(start + (part_times - part_times[0]) / 1000.0)
        clock = float(times[-1][-1]) + interval / 1000.0
        segments.append(
            {"file": str(file), "line": line, "start": start, "readings": len(part_times)}
        )
    return DaphnetRecording(
        times=np.concatenate(times),
        values=np.concatenate([p[3] for p in parts]).astype(np.float32),
        freeze=np.concatenate([p[4] for p in parts]),
        segments=segments,
        meta={
            "source": str(path),
            "layout": "uci" if files[0].suffix.lower() == ".txt" else "timeeval",
            "dropped": dropped,
            "rate_hz": 1000.0 / interval,
        },
    )


def _files(path) -> list[Path]:
    if path is None or str(path) == "":
        raise MlmmError(
            "daphnet needs path=FILE or FOLDER (UCI S<ss>R<rr>.txt or TimeEval .csv); pass "
            "path= (on the CLI: --stream-param path=FILE)"
        )
    where = Path(str(path)).expanduser()
    if where.is_file():
        if where.suffix.lower() not in (".txt", ".csv"):
            raise MlmmError(
                f"{where} is neither a UCI .txt nor a TimeEval .csv, expected a Daphnet file "
                "such as S01R01.txt or S06R02E0.csv"
            )
        return [where]
    if not where.is_dir():
        raise MlmmError(f"{where} does not exist; expected a Daphnet .txt or .csv, or a folder")
    files = sorted({f for pattern in _PATTERNS for f in where.glob(pattern) if f.is_file()})
    if not files:
        raise MlmmError(
            f"{where} holds no Daphnet file (expected S<ss>R<rr>.txt from the UCI release's "
            "dataset/ folder, or TimeEval S<ss>R<rr>E<e>.csv); point path= at that folder"
        )
    kinds = {f.suffix.lower() for f in files}
    if len(kinds) > 1:
        raise MlmmError(
            f"{where} holds both .txt and .csv Daphnet files (the same recordings in two "
            "layouts?); expected one layout: point path= at one file or a folder of one kind"
        )
    return files


def _number(file: Path, line: int, cell: str, what: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = np.nan
    if not np.isfinite(value):
        raise MlmmError(
            f"{file} line {line}: {what} {cell[:40]!r} is not a finite number, expected "
            "numbers in every column (a damaged or different file?): fix or remove that line"
        )
    return value


def _rows(file: Path, lines: list[tuple[int, list[str]]], start_column: int):
    """``(numbers [n, 11 - start_column], labels [n])`` from the columns ``start_column`` on,
    every row's column count and every cell checked (a bad one named by its line)."""
    for line, cells in lines:
        if len(cells) != _COLUMNS:
            raise MlmmError(
                f"{file} line {line} has {len(cells)} columns, expected {_COLUMNS} (time, "
                f"{len(DAPHNET_CHANNELS)} acceleration channels, label): is it a Daphnet file?"
            )
    flat = [cell for _, cells in lines for cell in cells[start_column:]]
    kinds = [
        "label" if k == _COLUMNS - 1 else ("time" if k == 0 else "value") for k in range(_COLUMNS)
    ]
    try:  # every cell at once (a UCI file holds about 1.7 million); a bad one is found below
        numbers = np.array(flat, dtype=np.float64).reshape(len(lines), _COLUMNS - start_column)
        suspects = np.flatnonzero(~np.isfinite(numbers).all(axis=1))
    except ValueError:  # a cell numpy cannot read: cell by cell, the first bad one raises
        numbers = np.array(
            [
                [_number(file, line, cells[k], kinds[k]) for k in range(start_column, _COLUMNS)]
                for line, cells in lines
            ],
            dtype=np.float64,
        ).reshape(len(lines), _COLUMNS - start_column)
        suspects = []
    for i in suspects:  # NaN or inf read as numbers: named by their line
        line, cells = lines[i]
        for k in range(start_column, _COLUMNS):
            _number(file, line, cells[k], kinds[k])
    return numbers, numbers[:, -1]


def _check_labels(file: Path, line_numbers: np.ndarray, labels: np.ndarray, allowed) -> np.ndarray:
    bad = ~np.isin(labels, allowed)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise MlmmError(
            f"{file} line {int(line_numbers[first])}: label {labels[first]:g} is not one of "
            f"{list(allowed)} ({_LABEL_MEANING[len(allowed)]}); fix that line"
        )
    return labels.astype(np.int8)


_LABEL_MEANING = {
    3: "UCI annotation: 0 not part of the experiment, 1 no freeze, 2 freeze",
    2: "TimeEval is_anomaly: 0 no freeze, 1 freeze",
}


def _text(file: Path) -> str:
    try:
        raw = file.read_bytes()
    except OSError as err:
        raise MlmmError(f"{file} could not be read ({err.strerror}); check the path") from None
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise MlmmError(
            f"{file} line {line} holds a NUL byte, expected plain text; the file is damaged "
            "or not a Daphnet file: fetch it again"
        )
    return raw.decode("utf-8", errors="replace")


def _lines(file: Path, text: str | None = None) -> list[tuple[int, str]]:
    """``(line number, stripped text)`` of the non-blank lines."""
    text = _text(file) if text is None else text
    out = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
    out = [(i, s) for i, s in out if s]
    if not out:
        raise MlmmError(f"{file} is empty, expected Daphnet readings: fetch or write it again")
    return out


def _plain_table(text: str) -> np.ndarray | None:
    """The ``[n, 11]`` numbers of a well-formed UCI file with numpy's C reader (a few times
    faster than checking cell by cell), or None (a blank line, a bad cell or row, NaN), for
    the checks that name the line."""
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty file: "input contained no data"
            numbers = np.loadtxt(io.StringIO(text), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    if numbers.shape != (lines, _COLUMNS) or not np.isfinite(numbers).all():
        return None
    return numbers


def _read_uci(file: Path):
    text = _text(file)
    numbers = _plain_table(text)
    if numbers is not None:  # no blank line: row k is line k + 1
        line_numbers = np.arange(1, len(numbers) + 1)
    else:
        lines = [(i, s.split()) for i, s in _lines(file, text)]
        numbers, _ = _rows(file, lines, 0)
        line_numbers = np.array([i for i, _ in lines])
    labels = _check_labels(file, line_numbers, numbers[:, -1], (0, 1, 2))
    return line_numbers, numbers[:, 0], numbers[:, 1:-1], labels


def _read_timeeval(file: Path):
    lines = [(i, [c.strip() for c in s.split(",")]) for i, s in _lines(file)]
    header = lines[0][1]
    try:  # the TimeEval header ends in is_anomaly; a reading (even a datetime one) in a number
        float(header[-1])
        has_header = False
    except ValueError:
        has_header = True
    if has_header:
        if len(header) != _COLUMNS:
            raise MlmmError(
                f"{file} line {lines[0][0]} (the header) has {len(header)} columns, expected "
                f"{_COLUMNS}: timestamp, {', '.join(DAPHNET_CHANNELS)}, is_anomaly"
            )
        # the values are read by position: a header naming the channels in another order
        # would put the trunk's readings under the ankle silently
        moved = [
            (name, k)
            for k, name in enumerate(header[1:-1])
            if name in DAPHNET_CHANNELS and DAPHNET_CHANNELS[k] != name
        ]
        if moved:
            name, k = moved[0]
            raise MlmmError(
                f"{file} line {lines[0][0]} (the header) names column {k + 2} {name!r}, expected "
                f"{DAPHNET_CHANNELS[k]!r} there (the channels are read in the order timestamp, "
                f"{', '.join(DAPHNET_CHANNELS)}, is_anomaly): reorder the columns"
            )
        lines = lines[1:]
        if not lines:
            raise MlmmError(f"{file} holds a header and no reading; expected Daphnet readings")
    numbers, labels = _rows(file, lines, 1)
    line_numbers = np.array([i for i, _ in lines])
    labels = _check_labels(file, line_numbers, labels, (0, 1))
    stamps = [cells[0] for _, cells in lines]
    return line_numbers, _timestamps_ms(file, line_numbers, stamps), numbers[:, :-1], labels


def _timestamps_ms(file: Path, line_numbers: np.ndarray, stamps: list[str]) -> np.ndarray:
    """Milliseconds: a datetime (``1970-01-01 00:04:40.000``) as such, an integer as a
    reading index at :data:`DAPHNET_RATE_HZ`."""
    try:
        int(stamps[0])
        as_index = True
    except ValueError:
        as_index = False
    out = np.empty(len(stamps), dtype=np.float64)
    for i, stamp in enumerate(stamps):
        try:
            if as_index:
                out[i] = int(stamp) * 1000.0 / DAPHNET_RATE_HZ
            else:
                moment = np.datetime64(stamp.replace(" ", "T"), "us")
                if np.isnat(moment):  # "NaT" parses, and its huge negative count read "goes back"
                    raise ValueError(stamp)
                out[i] = moment.astype(np.int64) / 1000.0
        except ValueError:
            kind = "an integer index" if as_index else "a datetime such as 1970-01-01 00:04:40.000"
            raise MlmmError(
                f"{file} line {int(line_numbers[i])}: timestamp {stamp[:40]!r} is not {kind} "
                "(as the first row's); fix that line"
            ) from None
    if as_index and len(out) > 1:
        step = float(np.median(np.diff(out))) / (1000.0 / DAPHNET_RATE_HZ)  # in readings
        if step != 1:  # milliseconds (15 or 16 apart) read as indices: a clock 15.6x too slow
            raise MlmmError(
                f"{file}: the integer timestamps step by {step:g} (median), expected a reading "
                "index stepping by 1 (TimeEval's integer timestamp, read at 64 Hz); if they are "
                "milliseconds, write them as datetimes such as 1970-01-01 00:04:40.000"
            )
    return out


def _check_times(file: Path, line_numbers: np.ndarray, times: np.ndarray) -> None:
    if len(times) < 2:
        return
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        i = int(bad[0]) + 1
        what = "repeats" if times[i] == times[i - 1] else "goes back before"
        raise MlmmError(
            f"{file} line {int(line_numbers[i])}: time {what} the previous reading's (line "
            f"{int(line_numbers[i - 1])}), expected strictly increasing times (rows sorted, "
            "each once): sort the file or remove the repeated row"
        )
