"""The GRU sequence encoder on variable-length rows: packed sequences vs gru_last_valid.

`SequenceEncoder(architecture="gru")` reads each row up to its own length through packed
sequences (`pack_padded_sequence`), except while tracing (ONNX export), where it runs
`mlmm.nn.encoders.gru_last_valid` on the padded batch. This measures both paths on the same
inputs (lengths uniform in 1..T): the median seconds of a forward pass (inference) and of a
forward + backward pass (training), one thread, and the largest difference between them.

Run:  OMP_NUM_THREADS=1 python benchmarks/gru_unpacked.py [--reps 25]
Writes <out>/gru_unpacked.{json,md} with the machine it ran on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import machine, write_report  # noqa: E402

import mlmm.nn.encoders as encoders  # noqa: E402

#: (batch, padded steps, channels, hidden, depth): the default build_encoder sizes
#: (hidden 256 // 4 = 64, depth 2 = one GRU layer), a deeper GRU, long sequences, a tiny one
SHAPES = [(64, 12, 2, 16, 2), (256, 50, 8, 64, 2), (256, 50, 8, 64, 3), (32, 200, 4, 64, 2)]


def _median_seconds(encoder, x, lengths, train: bool, reps: int) -> float:
    times = []
    encoder.train(train)
    for _ in range(reps + 2):  # two warm-up passes
        start = time.perf_counter()
        if train:
            encoder(x, lengths).sum().backward()
        else:
            with torch.no_grad():
                encoder(x, lengths)
        times.append(time.perf_counter() - start)
    kept = sorted(times[2:])
    return kept[len(kept) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for b, t, c, h, depth in SHAPES:
        encoder = encoders.SequenceEncoder(c, 32, h, depth, 0.0, "gru")
        x = torch.randn(b, t, c)
        lengths = torch.randint(1, t + 1, (b,))
        with torch.no_grad():
            encoder.eval()
            encoders.PACKED_GRU = True
            packed = encoder(x, lengths)
            encoders.PACKED_GRU = False
            diff = float((encoder(x, lengths) - packed).abs().max())
        for train in (False, True):
            seconds = {}
            for path in ("packed", "unpacked"):
                encoders.PACKED_GRU = path == "packed"
                seconds[path] = _median_seconds(encoder, x, lengths, train, args.reps)
            rows.append(
                {
                    "batch": b,
                    "steps": t,
                    "channels": c,
                    "hidden": h,
                    "gru_layers": encoder.body.num_layers,
                    "pass": "forward+backward" if train else "forward (no grad)",
                    "packed_ms": 1e3 * seconds["packed"],
                    "unpacked_ms": 1e3 * seconds["unpacked"],
                    "unpacked/packed": seconds["unpacked"] / seconds["packed"],
                    "max_abs_diff": diff,
                }
            )
            print(rows[-1], flush=True)
    encoders.PACKED_GRU = True
    table = pd.DataFrame(rows)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "reps": args.reps,
        "rows": rows,
    }
    forward = table[table["pass"].str.startswith("forward (")]
    checks = {
        "largest unpacked/packed, forward": float(forward["unpacked/packed"].max()),
        "smallest unpacked/packed, forward": float(forward["unpacked/packed"].min()),
        "largest |unpacked - packed|": float(table["max_abs_diff"].max()),
    }
    note = (
        "Median of the reps after two warm-up passes, one thread. The packed path skips the "
        "padding; gru_last_valid runs every padded step, one layer and direction at a time."
    )
    write_report(args.out, "gru_unpacked", "GRU encoder: packed vs unpacked", note, record,
                 table, checks)  # fmt: skip


if __name__ == "__main__":
    main()
