"""Daphnet reader on small generated files in both layouts (UCI ``.txt``, TimeEval ``.csv``)."""

from __future__ import annotations

import numpy as np
import pytest

from mlmm.data.formats import read_daphnet
from mlmm.errors import MlmmError

HEADER = (
    "timestamp,ankle_horiz_fwd,ankle_vert,ankle_horiz_lateral,leg_horiz_fwd,leg_vert,"
    "leg_horiz_lateral,trunk_horiz_fwd,trunk_vert,trunk_horiz_lateral,is_anomaly"
)


def _times_ms(n, start=0):
    """Whole milliseconds at 64 Hz, as the release writes them (15 or 16 ms apart)."""
    return [start + int(k * 1000 / 64) for k in range(n)]


def _values(n, seed=0):
    return np.random.default_rng(seed).integers(-3000, 3000, size=(n, 9))


def _uci(path, annotations, seed=0):
    """``S<ss>R<rr>.txt``: time ms, 9 channels, annotation; space-separated, no header."""
    values = _values(len(annotations), seed)
    times = _times_ms(len(annotations), start=1000)
    lines = [
        " ".join(map(str, [t, *v, a])) for t, v, a in zip(times, values, annotations, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return np.array(times), values


def _timeeval(path, labels, stamps="datetime", seed=0):
    """TimeEval CSV: header, datetime (or integer index) timestamps, is_anomaly."""
    values = _values(len(labels), seed)
    ms = _times_ms(len(labels), start=280_000)
    if stamps == "datetime":
        cells = [
            str(np.datetime64(0, "ms") + np.timedelta64(t, "ms")).replace("T", " ") for t in ms
        ]
    else:
        cells = [str(k) for k in range(len(labels))]
    rows = [",".join(map(str, [c, *v, y])) for c, v, y in zip(cells, values, labels, strict=True)]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    return np.array(ms), values


def test_uci_file_drops_annotation_zero_and_joins_the_experiment_segments(tmp_path):
    # 0 = not part of the experiment (the release README): dropped, as the
    # release's reference code drops it; the two stretches between are TimeEval's E0 and E1
    annotations = [0, 0, 1, 1, 2, 2, 1, 0, 0, 0, 1, 2, 1, 0]
    times, values = _uci(tmp_path / "S01R01.txt", annotations)
    rec = read_daphnet(tmp_path / "S01R01.txt")
    kept = np.array(annotations) != 0
    np.testing.assert_array_equal(rec.values, values[kept])
    assert rec.values.dtype == np.float32 and rec.values.shape == (8, 9)
    assert rec.freeze.tolist() == [0, 0, 1, 1, 0, 0, 1, 0]  # annotation 2 = freeze
    assert rec.meta["dropped"] == 6 and rec.meta["layout"] == "uci"
    assert [s["line"] for s in rec.segments] == [3, 11]
    assert [s["readings"] for s in rec.segments] == [5, 3]
    # within a segment the file's own clock; the second starts one reading after the first
    np.testing.assert_allclose(rec.times[:5], (times[2:7] - times[2]) / 1000)
    interval = rec.times[4] / 4
    assert rec.segments[1]["start"] == pytest.approx(rec.times[4] + interval)
    np.testing.assert_allclose(
        rec.times[5:], rec.segments[1]["start"] + (times[10:13] - times[10]) / 1000
    )
    assert np.all(np.diff(rec.times) > 0)
    one = read_daphnet(tmp_path / "S01R01.txt", segment=1)
    np.testing.assert_array_equal(one.values, values[10:13])
    assert one.times[0] == 0.0 and one.freeze.tolist() == [0, 1, 0]


@pytest.mark.parametrize("stamps", ["datetime", "index"])
def test_timeeval_csv_reads_datetime_or_index_timestamps_at_64_hz(tmp_path, stamps):
    # the aeon copy's timestamps are datetimes 15-16 ms apart: 64 Hz, not the docstring's 256
    ms, values = _timeeval(tmp_path / "S06R02E0.csv", [0] * 5 + [1] * 3 + [0] * 4, stamps)
    rec = read_daphnet(tmp_path / "S06R02E0.csv")
    np.testing.assert_array_equal(rec.values, values)
    assert rec.freeze.tolist() == [0] * 5 + [1] * 3 + [0] * 4
    assert rec.meta["layout"] == "timeeval" and rec.meta["dropped"] == 0
    assert rec.meta["rate_hz"] == pytest.approx(64.0, rel=1e-2)  # ms-truncated stamps
    if stamps == "datetime":
        np.testing.assert_allclose(rec.times, (ms - ms[0]) / 1000)
    else:
        np.testing.assert_allclose(rec.times, np.arange(12) / 64)


def test_a_folder_reads_its_files_in_name_order(tmp_path):
    _uci(tmp_path / "S01R02.txt", [1, 1, 1], seed=2)
    _uci(tmp_path / "S01R01.txt", [1, 2, 0, 1], seed=1)
    (tmp_path / "README").write_text("not a recording\n")
    rec = read_daphnet(tmp_path)
    assert [s["file"].rsplit("/", 1)[-1] for s in rec.segments] == [
        "S01R01.txt",
        "S01R01.txt",
        "S01R02.txt",
    ]
    np.testing.assert_array_equal(rec.values[-3:], _values(3, seed=2))
    assert rec.values.shape == (6, 9) and np.all(np.diff(rec.times) > 0)


def test_the_same_recording_reads_the_same_in_both_layouts(tmp_path):
    annotations = [1, 1, 2, 2, 1, 1]
    times, values = _uci(tmp_path / "S02R01.txt", annotations)
    stamps = [str(np.datetime64(int(t), "ms")).replace("T", " ") for t in times]
    rows = [
        ",".join(map(str, [s, *v, int(a == 2)]))
        for s, v, a in zip(stamps, values, annotations, strict=True)
    ]
    (tmp_path / "S02R01E0.csv").write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    uci = read_daphnet(tmp_path / "S02R01.txt")
    timeeval = read_daphnet(tmp_path / "S02R01E0.csv")
    for field in ("times", "values", "freeze"):
        np.testing.assert_array_equal(getattr(uci, field), getattr(timeeval, field))


def _replace_line(path, number, text):
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: _replace_line(p, 3, "2000 1 2 3 4 5 6 7 8 1"), r"line 3 has 10 columns"),
        (lambda p: _replace_line(p, 2, "1015 1 2 x 4 5 6 7 8 9 1"), r"line 2: value 'x' is not"),
        (lambda p: _replace_line(p, 2, "1015 1 2 nan 4 5 6 7 8 9 1"), r"line 2: value 'nan'"),
        (lambda p: _replace_line(p, 3, "1015 1 2 3 4 5 6 7 8 9 1"), r"line 3: time repeats"),
        (lambda p: _replace_line(p, 3, "900 1 2 3 4 5 6 7 8 9 1"), r"line 3: time goes back"),
        (lambda p: _replace_line(p, 4, "1046 1 2 3 4 5 6 7 8 9 3"), r"line 4: label 3 is not"),
        (lambda p: _replace_line(p, 4, "1046 1 2 3 4 5 6 7 8 9 1.5"), r"line 4: label 1.5"),
        (lambda p: p.write_text(""), r"S01R01\.txt is empty"),
        (lambda p: p.write_text("\n\n"), r"S01R01\.txt is empty"),
        (lambda p: p.write_bytes(b"1000 1 2\x003"), r"line 1 holds a NUL byte"),
        (lambda p: _uci(p, [0, 0, 0]), r"holds no experiment reading .*annotated 0"),
    ],
)
def test_a_damaged_uci_file_is_one_line_naming_the_file_and_line(tmp_path, damage, message):
    path = tmp_path / "S01R01.txt"
    _uci(path, [1, 1, 1, 2, 1])
    damage(path)
    with pytest.raises(MlmmError, match=message) as err:
        read_daphnet(path)
    assert "\n" not in str(err.value)
    if "line" in message:
        assert "S01R01.txt" in str(err.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text(HEADER + "\n"), r"holds a header and no reading"),
        (lambda p: _replace_line(p, 1, "timestamp,a,b,is_anomaly"), r"line 1 \(the header\) has 4"),
        (
            lambda p: _replace_line(p, 1, HEADER.replace("ankle", "x").replace("trunk", "ankle")),
            r"line 1 \(the header\) names column 8 'ankle_horiz_fwd', expected 'trunk_horiz_fwd'",
        ),
        (lambda p: _replace_line(p, 3, "yesterday,1,2,3,4,5,6,7,8,9,0"), r"line 3: timestamp"),
        (lambda p: _replace_line(p, 4, "1970-01-01 00:04:40.047,1,2,3,4,5,6,7,8,9,2"), "label 2"),
        (lambda p: _replace_line(p, 4, "1970-01-01 00:04:40.015,1,2,3,4,5,6,7,8,9,0"), "repeats"),
    ],
)
def test_a_damaged_timeeval_file_is_one_line(tmp_path, damage, message):
    path = tmp_path / "S06R02E0.csv"
    _timeeval(path, [0, 0, 1, 0, 0])
    damage(path)
    with pytest.raises(MlmmError, match=message) as err:
        read_daphnet(path)
    assert "\n" not in str(err.value) and "S06R02E0.csv" in str(err.value)


def test_integer_timestamps_in_milliseconds_are_refused_not_read_as_a_slow_clock(tmp_path):
    # an index at 64 Hz steps by 1; milliseconds (15 or 16 apart) read as one gave times
    # 15.6x too long and a rate of 4.1 Hz, silently
    path = tmp_path / "S06R02E0.csv"
    _timeeval(path, [0, 1, 1, 0, 0])
    lines = path.read_text().splitlines()
    ms = [str(280_000 + int(k * 1000 / 64)) for k in range(5)]
    lines[1:] = [f"{t},{row.split(',', 1)[1]}" for t, row in zip(ms, lines[1:], strict=True)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MlmmError, match=r"integer timestamps step by 15\.5 .*datetimes") as err:
        read_daphnet(path)
    assert "\n" not in str(err.value) and "S06R02E0.csv" in str(err.value)
    # an index that skips a lost reading still reads, at 64 Hz
    skipped = [3, 4, 5, 7, 8]
    lines[1:] = [f"{k},{row.split(',', 1)[1]}" for k, row in zip(skipped, lines[1:], strict=True)]
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(read_daphnet(path).times, np.array([0, 1, 2, 4, 5]) / 64)


def test_a_nat_timestamp_is_named_as_such_not_as_time_going_back(tmp_path):
    path = tmp_path / "S06R02E0.csv"
    _timeeval(path, [0, 0, 1, 0, 0])
    _replace_line(path, 4, "NaT,1,2,3,4,5,6,7,8,9,0")
    with pytest.raises(MlmmError, match=r"line 4: timestamp 'NaT' is not a datetime"):
        read_daphnet(path)


def test_paths_and_segments_that_do_not_fit_are_one_line(tmp_path):
    with pytest.raises(MlmmError, match="holds no Daphnet file"):
        read_daphnet(tmp_path)
    with pytest.raises(MlmmError, match="does not exist"):
        read_daphnet(tmp_path / "nowhere.txt")
    with pytest.raises(MlmmError, match="needs path="):
        read_daphnet(None)
    (tmp_path / "notes.json").write_text("{}")
    with pytest.raises(MlmmError, match="neither a UCI .txt nor a TimeEval .csv"):
        read_daphnet(tmp_path / "notes.json")
    _uci(tmp_path / "S01R01.txt", [1, 1, 0, 1])
    with pytest.raises(MlmmError, match=r"segment must be in \[0, 2\).*got 2"):
        read_daphnet(tmp_path, segment=2)
    with pytest.raises(MlmmError, match="segment must be an integer"):
        read_daphnet(tmp_path, segment="first")
    _timeeval(tmp_path / "S01R01E0.csv", [0, 1])
    with pytest.raises(MlmmError, match="both .txt and .csv"):
        read_daphnet(tmp_path)


def test_a_timeeval_file_without_its_header_keeps_its_first_reading(tmp_path):
    # a datetime first cell is no number: the header is told by its last cell (is_anomaly)
    path = tmp_path / "S06R02E0.csv"
    _, values = _timeeval(path, [0, 1, 0])
    path.write_text(path.read_text().split("\n", 1)[1])
    np.testing.assert_array_equal(read_daphnet(path).values, values)


def test_blank_lines_and_crlf_read_as_the_plain_file_with_the_right_line_numbers(tmp_path):
    # a plain file takes numpy's fast reader, one with blank lines the cell-by-cell one
    path = tmp_path / "S01R01.txt"
    _, values = _uci(path, [0, 1, 1, 2, 1])
    plain = read_daphnet(path)
    lines = path.read_text().splitlines()
    path.write_bytes(("\r\n".join(lines[:2] + ["", "  "] + lines[2:]) + "\r\n\r\n").encode())
    spaced = read_daphnet(path)
    for field in ("times", "values", "freeze"):
        np.testing.assert_array_equal(getattr(plain, field), getattr(spaced, field))
    assert plain.segments[0]["line"] == 2 and spaced.segments[0]["line"] == 2
    _replace_line(path, 6, "1046 1 2 3 4 5 6 7 8 9 7")  # the 4th reading, after 2 blank lines
    with pytest.raises(MlmmError, match=r"S01R01\.txt line 6: label 7 is not one of"):
        read_daphnet(path)
