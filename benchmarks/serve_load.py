"""Load test of `mlmm serve` on loopback: throughput, latency, errors; micro-batching on vs off.

For each method (default `late-fusion` and `hemis`, trained on `handwritten`), the script
starts `mlmm serve` in a subprocess on 127.0.0.1 (a free port), then:

1. N concurrent asyncio clients (a minimal keep-alive HTTP/1.1 client, one connection each)
   send single-sample `POST /predict` requests,
   one after another, for T seconds (and at most --max-requests in all): throughput,
   p50/p99 latency, 5xx and lost requests (a connection error or timeout), first with
   micro-batching on, then with the server started with `--no-micro-batch`;
2. one client, sequential requests: the single-request p50 over HTTP;
3. in this process: single-sample p50 of the exported ONNX graph (onnxruntime) vs the same
   graph in PyTorch, and vs `TrainedModel.predict_proba` (the whole Python predict path).

Every sample is a test sample of `handwritten` with MCAR 0.5 applied (at least one modality
kept), so the requests exercise many presence patterns. Bounded in time and count, it stops
by itself and always stops the servers it started.

Run:   python benchmarks/serve_load.py --clients 32 --seconds 60
Smoke: python benchmarks/serve_load.py --clients 4 --seconds 2 --epochs 1 --smoke
Writes <out>/serve_load.{json,md} (not with --smoke) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

import mlmm  # noqa: E402
from mlmm.data.missingness import simulate  # noqa: E402
from mlmm.utils import rng_for  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, micro_batch: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "mlmm.cli", "serve", str(run), "--port", str(port)]
    if not micro_batch:
        args.append("--no-micro-batch")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # graceful: uvicorn finishes the requests in flight
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-500:]}")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("server did not become healthy in time")


class Connection:
    """A minimal keep-alive HTTP/1.1 client for ``POST /predict`` (one request at a time).

    httpx spends more CPU per request than the server does, and on 2 shared cores that cost
    is taken from the server being measured; this client only writes the request and reads
    the status line, the headers and ``content-length`` bytes of body.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        if "content-length" not in fields:
            raise ConnectionError(f"response without content-length: {lines[0]}")
        payload = await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, bodies: list[bytes], clients: int, seconds: float, max_requests: int):
    """``clients`` workers, one keep-alive connection each, posting single-sample bodies one
    after another until the deadline or the count."""
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lost = 0
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal lost, sent
        i = k
        conn = Connection(host, int(port))
        while time.perf_counter() < deadline and sent < max_requests:
            sent += 1
            body = bodies[i % len(bodies)]
            i += clients
            t0 = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(conn.post("/predict", body), 30.0)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                lost += 1
                conn.close()
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "requests": int(sum(statuses.values())),
        "wall_s": wall,
        "throughput_rps": sum(statuses.values()) / wall,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "errors_5xx": int(sum(n for s, n in statuses.items() if s >= 500)),
        "errors_4xx": int(sum(n for s, n in statuses.items() if 400 <= s < 500)),
        "lost": lost,
    }


def samples(seed: int, n: int) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Single-sample JSON bodies of handwritten test samples under MCAR 0.5, and the arrays."""
    import json

    data = mlmm.load_dataset("handwritten")
    split = mlmm.train_val_test_split(data, test_size=0.2, val_size=0.1, seed=seed)
    test, _ = simulate(split.test, "mcar:0.5", rng_for(seed, "load-mask"))
    rows = np.arange(min(n, test.n_samples))
    bodies = []
    for i in rows:
        instance = {
            m: test.inputs[m][i].tolist()
            for j, m in enumerate(test.modality_names)
            if test.observed[i, j]
        }
        bodies.append(json.dumps({"instances": [instance]}).encode())
    arrays = {
        m: np.where(test.observed[rows, j, None], test.inputs[m][rows], np.nan)
        for j, m in enumerate(test.modality_names)
    }
    return bodies, arrays


def single_sample_p50(trained, onnx_path: Path, arrays: dict[str, np.ndarray], reps: int) -> dict:
    """p50 (ms) of one sample through onnxruntime, the same graph in PyTorch, and predict_proba."""
    from mlmm.serve.export import _Graph, onnx_session

    session = onnx_session(onnx_path)
    graph = _Graph(trained).eval()
    names = list(arrays)
    times = {"onnxruntime": [], "pytorch_graph": [], "predict_proba": []}
    for r in range(reps):
        i = r % len(next(iter(arrays.values())))
        present = np.array([[not np.isnan(arrays[m][i]).all() for m in names]])
        raw = {m: np.nan_to_num(arrays[m][i : i + 1]).astype(np.float32) for m in names}
        feed = {**raw, "present": present}
        t0 = time.perf_counter()
        session.run(["probabilities"], feed)
        t1 = time.perf_counter()
        with torch.no_grad():
            graph(*(torch.from_numpy(raw[m]) for m in names), torch.from_numpy(present))
        t2 = time.perf_counter()
        trained.predict_proba({m: arrays[m][i : i + 1] for m in names})
        t3 = time.perf_counter()
        times["onnxruntime"].append(t1 - t0)
        times["pytorch_graph"].append(t2 - t1)
        times["predict_proba"].append(t3 - t2)
    return {k: float(np.median(v) * 1000) for k, v in times.items()}


async def measure(run: Path, bodies: list[bytes], args) -> dict:
    out = {}
    for micro in (True, False):
        port = free_port()
        proc = start_server(run, port, micro)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_healthy(url, proc)
            await load(url, bodies, min(4, args.clients), min(1.0, args.seconds), 200)  # warm-up
            out["batched" if micro else "unbatched"] = await load(
                url, bodies, args.clients, args.seconds, args.max_requests
            )
            if micro:
                out["single_client"] = await load(url, bodies, 1, args.seconds / 2, 2000)
        finally:
            stop_server(proc)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="late-fusion,hemis")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reps", type=int, default=300, help="single-sample timing repeats")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--smoke", action="store_true", help="print only; write nothing")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    bodies, arrays = samples(args.seed, 400)
    rows, record_runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            res = mlmm.run_experiment(
                "handwritten",
                method,
                missing="mcar:0.5",
                seed=args.seed,
                subsets=False,
                trainer={"max_epochs": args.epochs, "progress": False},
            )
            run = Path(tmp) / method
            res.trained.save(run)
            from mlmm.serve.export import export_onnx

            export_onnx(res.trained, Path(tmp) / f"{method}.onnx")
            http = asyncio.run(measure(run, bodies, args))
            single = single_sample_p50(res.trained, Path(tmp) / f"{method}.onnx", arrays, args.reps)
            record_runs[method] = {"http": http, "single_sample_ms": single}
            b, u, s = http["batched"], http["unbatched"], http["single_client"]
            rows.append(
                {
                    "method": method,
                    "clients": args.clients,
                    "rps batched": round(b["throughput_rps"], 1),
                    "rps unbatched": round(u["throughput_rps"], 1),
                    "gain": round(b["throughput_rps"] / max(u["throughput_rps"], 1e-9), 2),
                    "p50 ms (batched)": round(b["p50_ms"], 2),
                    "p99 ms (batched)": round(b["p99_ms"], 2),
                    "p50 ms (1 client)": round(s["p50_ms"], 2),
                    "5xx": b["errors_5xx"] + u["errors_5xx"] + s["errors_5xx"],
                    "lost": b["lost"] + u["lost"] + s["lost"],
                    "onnx/pytorch p50": round(single["onnxruntime"] / single["pytorch_graph"], 2),
                }
            )
    table = pd.DataFrame(rows)
    command = "python benchmarks/serve_load.py " + " ".join(sys.argv[1:])
    record = {
        "command": command,
        "machine": machine(),
        "settings": vars(args) | {"out": str(args.out)},
        "runs": record_runs,
    }
    checks = {
        "zero 5xx and zero lost": bool((table["5xx"] == 0).all() and (table["lost"] == 0).all()),
        "single-request p50 <= 5 ms": bool((table["p50 ms (1 client)"] <= 5).all()),
        "micro-batching >= 3x": bool((table["gain"] >= 3).all()),
        "onnx p50 <= pytorch p50": bool((table["onnx/pytorch p50"] <= 1).all()),
    }
    if args.smoke:
        print(table.to_string(index=False))
        for k, v in checks.items():
            print(f"{k}: {v}")
        return
    note = (
        f"`mlmm serve` on 127.0.0.1, {args.clients} concurrent single-sample clients for "
        f"{args.seconds:g}s per setting; handwritten test samples under MCAR 0.5; models "
        f"trained {args.epochs} epochs. onnx/pytorch: single-sample p50 of the exported graph "
        f"in onnxruntime over the same graph in PyTorch."
    )
    write_report(args.out, "serve_load", "Serving under load", note, record, table, checks)


if __name__ == "__main__":
    main()
