"""File-format loaders: time to read each generated fixture, and a 1 GB `.csd` streamed.

Issue 13 targets: each loader reads its generated fixture in < 2 s; a 1 GB MOSEI-sized `.csd`
file streams without being loaded whole. The fixtures are the ones the tests write, in the
exact formats (`tests/data/formats/`); each load runs in a fresh process so that its time
includes nothing cached from another load, and its peak resident memory is its own.

The large file: a CMU-MOSEI text `.csd` (`/<root>/data/<video>/{features, intervals}`) of
`--videos` videos with `--steps` 300-d GloVe steps each (about 1.08 GB at the defaults,
uncompressed), beside small audio, vision and label files; `load_mosei(source="csd")` reads
one labelled segment of `--seq-len` steps per video. The growth of that process's peak RSS
over its RSS before the call (imports done) is compared with the file's size: a loader that
reads the file video by video stays far below it (what it returns is 2,000 x 20 x 300
floats, 48 MB, plus the other modalities).

Run:  python benchmarks/formats.py [--videos 2000] [--steps 450] [--skip-large]
Writes <out>/formats.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import machine, write_report  # noqa: E402

TESTS = HERE.parent / "tests" / "data" / "formats"

#: loader -> (test module whose writer makes the fixture, code that writes it under `root`,
#: code that loads it)
FIXTURES = {
    "mosi (MulT pickle, converted)": (
        "test_mosi",
        "_write_pickle(root)",
        "load_mosi(root, trust_pickle=True)",
    ),
    "mosi (converted cache, a second load)": (
        "test_mosi",
        "_write_pickle(root); load_mosi(root, trust_pickle=True)",
        "load_mosi(root, trust_pickle=True)",
    ),
    "mosi (SDK .csd)": (
        "test_mosi",
        "_write_mosi_csd(root)",
        "load_mosi(root, source='csd', seq_len=6, folds=FOLDS)",
    ),
    "iemocap (MMIN .h5 + .npy)": ("test_mmin_iemocap", "_write(root)", "load_iemocap(root)"),
    "avmnist (MultiBench .npy)": ("test_avmnist", "_write(root)", "load_avmnist(root, n_valid=2)"),
    "mmimdb (hdf5)": ("test_mmimdb", "_write(root)", "load_mmimdb(root)"),
    "mmimdb (raw JPEG + JSON)": (
        "test_mmimdb",
        "_write_raw(root)",
        "load_mmimdb(root, image_size=4, text_dim=16)",
    ),
    "brats (NIfTI)": (
        "test_brats",
        "_case(root / 'HGG', 'Brats18_CBICA_AAA_1'); _case(root / 'LGG', 'Brats18_TCIA09_1_1')",
        "load_brats(root, downsample=2, expected_shape=SHAPE, orientation='LPS')",
    ),
    "food101 (JPEG folder + CSV)": (
        "test_food101",
        "_write(root)",
        "load_food101(root, image_size=4, text_dim=32)",
    ),
}

_CHILD = """
import json, resource, sys, time, warnings
from pathlib import Path
sys.path.insert(0, {tests!r})
warnings.simplefilter("ignore")
import mlmm.utils  # torch, as in any session that trains: its import is not the loader's time
if {module!r}:  # the test module's writers and constants, underscored names included
    globals().update(vars(__import__({module!r})))
from mlmm.data.formats import *
root = Path({root!r})
{write}
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
ds = {load}
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "n_samples": ds.n_samples,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "baseline_rss_mb": baseline}}))
"""


def _child(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=1800
    )
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fixture_rows() -> list[dict]:
    rows = []
    for name, (module, write, load) in FIXTURES.items():
        with tempfile.TemporaryDirectory() as root:
            code = _CHILD.format(tests=str(TESTS), module=module, root=root, write=write, load=load)
            result = _child(code)
        rows.append(
            {
                "loader (fixture)": name,
                "samples": result["n_samples"],
                "read s": round(result["seconds"], 3),
                "under 2 s": result["seconds"] < 2.0,
            }
        )
        print(rows[-1], flush=True)
    return rows


_LARGE = """
import h5py, json, numpy as np
from pathlib import Path
from mlmm.data.formats.mosi import CSD_FILES
root = Path({root!r}); files = CSD_FILES["mosei"]
rng = np.random.default_rng(0)
videos = [f"video{{i:05d}}" for i in range({videos})]
def write(path, name, width, steps, compression=None, label=False):
    with h5py.File(path, "w") as f:
        data = f.create_group(f"{{name}}/data")
        for v in videos:
            g = data.create_group(v)
            if label:  # one opinion segment per video: its first 10 s, a score in [-3, 3]
                g["features"] = np.array([[rng.uniform(-3, 3)] + [0.0] * 6], dtype="<f4")
                g["intervals"] = np.array([[0.0, 10.0]])
                continue
            times = np.arange(steps) * (60.0 / steps)
            g["features"] = rng.standard_normal((steps, width), dtype=np.float32)
            g["intervals"] = np.stack([times, times + 60.0 / steps], axis=1)
        meta = f.create_group(f"{{name}}/metadata")
        text = h5py.special_dtype(vlen=str)
        meta.create_dataset("root name", (1,), dtype=text, data=[json.dumps(name)])
write(root / files["text"], "glove_vectors", 300, {steps})
write(root / files["audio"], "COVAREP", 74, 20)
write(root / files["vision"], "FACET 4.2", 35, 20)
write(root / files["labels"], "All Labels", 7, 0, label=True)
folds = {{"train": videos[: len(videos) // 2], "valid": [], "test": videos[len(videos) // 2:]}}
(root / "folds.json").write_text(json.dumps(folds))
print(json.dumps({{"bytes": (root / files["text"]).stat().st_size}}))
"""


def large_csd(videos: int, steps: int, seq_len: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        written = _child(_LARGE.format(root=root, videos=videos, steps=steps))
        write_seconds = time.perf_counter() - t0
        load = (
            f"load_mosei(root, source='csd', task='regression', seq_len={seq_len}, "
            "folds=root / 'folds.json')"
        )
        code = _CHILD.format(tests=str(TESTS), module="", root=root, write="", load=load)
        result = _child(code)
    size_mb = written["bytes"] / 2**20
    return {
        "text .csd size (MB)": round(size_mb, 1),
        "videos x steps x width": f"{videos} x {steps} x 300",
        "write s": round(write_seconds, 1),
        "load s": round(result["seconds"], 1),
        "segments loaded": result["n_samples"],
        "RSS before the load, imports done (MB)": round(result["baseline_rss_mb"], 1),
        "peak RSS of the loading process (MB)": round(result["peak_rss_mb"], 1),
        "peak RSS growth / file size": round(
            (result["peak_rss_mb"] - result["baseline_rss_mb"]) / size_mb, 3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    rows = fixture_rows()
    checks: dict = {"every fixture read in < 2 s": all(r["under 2 s"] for r in rows)}
    record = {
        "command": "python benchmarks/formats.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "fixtures": rows,
    }
    if not args.skip_large:
        large = large_csd(args.videos, args.steps, args.seq_len)
        print(large, flush=True)
        record["large_csd"] = large
        checks.update({f"large .csd: {k}": v for k, v in large.items()})
        checks["large .csd streamed (peak RSS growth < half the file)"] = bool(
            large["peak RSS growth / file size"] < 0.5
        )
    record["checks"] = checks
    note = (
        "Each fixture is written by the tests' own writer (tests/data/formats/) and read in a "
        "fresh process with mlmm and torch imported (as in a session that trains); `read s` is "
        "the loader call alone (imports and writing excluded). The "
        "first MulT-pickle load checks the pickle in a restricted reader and converts it once "
        "to the documented cache; later loads read the cache."
    )
    write_report(
        Path(args.out), "formats", "File-format loaders", note, record, pd.DataFrame(rows), checks
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
