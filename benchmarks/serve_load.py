"""Load test of `bertfit serve`: 1, 16 and 64 concurrent clients, with micro-batching on and off.

Starts `python -m bertfit serve MODEL_DIR` on a free loopback port once per mode (micro-batching on:
``--max-batch-size 64 --max-wait-ms 5`` by default; off: ``--max-batch-size 1 --max-wait-ms 0``), sends a fixed
count of one-text ``POST /predict`` requests from N concurrent clients (one connection each) per level, and prints
a Markdown table with the throughput, the p50/p99 latency and the error count (any non-200 answer or failed
connection).

    python benchmarks/serve_load.py runs/serve_model [--requests 512] [--clients 1,16,64]

Texts are drawn from examples/sms_spam.csv. Clients and server share this machine's CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--requests", type=int, default=512, help="requests per concurrency level")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--precision", default="auto", help="the server's --precision (auto: bf16 where supported)")
    parser.add_argument("--max-batch-size", default="64", help="the micro-batching server's --max-batch-size")
    parser.add_argument("--max-wait-ms", default="5", help="the micro-batching server's --max-wait-ms")
    parser.add_argument("--threads", type=int, help="torch threads of the server (OMP_NUM_THREADS); default: torch's")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    texts = _texts()

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"# {args.requests} one-text requests per level; {machine}; server --precision {args.precision}, "
        f"{args.threads or 'default'} torch threads; server and clients on the same machine"
    )
    print("| mode | clients | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    modes = {
        "micro-batching": ["--max-batch-size", args.max_batch_size, "--max-wait-ms", args.max_wait_ms],
        "batch size 1": ["--max-batch-size", "1", "--max-wait-ms", "0"],
    }
    for mode, options in modes.items():
        with _server(args.model_dir, [*options, "--precision", args.precision], args.threads) as url:
            for clients in levels:
                # Warm-up at the same concurrency: the first forward pass of each new batch shape builds its
                # oneDNN kernels (notably in bf16), which a long-running server has long since done.
                asyncio.run(_drive(url, texts, clients, min(args.requests, 256)))
                latencies, errors, seconds = asyncio.run(_drive(url, texts, clients, args.requests))
                p50, p99 = (np.percentile(latencies, q) * 1000 if latencies else float("nan") for q in (50, 99))
                print(
                    f"| {mode} | {clients} | {args.requests} | {errors} | {args.requests / seconds:.1f} | "
                    f"{p50:.1f} | {p99:.1f} |",
                    flush=True,
                )


def _texts() -> list[str]:
    with open(ROOT / "examples" / "sms_spam.csv", newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)][:2000]


class _server:
    """`bertfit serve` in a subprocess on a free loopback port, stopped on exit."""

    def __init__(self, model_dir: Path, options: list[str], threads: int | None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [sys.executable, "-m", "bertfit", "serve", str(model_dir), "--port", str(self.port), *options]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)

    def __enter__(self) -> str:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with code {self.process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("the server did not start within 120 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def _drive(url: str, texts: list[str], clients: int, requests: int) -> tuple[list[float], int, float]:
    """Send ``requests`` one-text requests from ``clients`` concurrent clients; latencies (s), errors, wall time."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def client() -> None:
        nonlocal errors
        # One connection per client, as independent callers have: a shared httpx pool serializes at 64 clients.
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in counter:
                start = time.perf_counter()
                try:
                    response = await http.post("/predict", json={"texts": [texts[i % len(texts)]]})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - start


if __name__ == "__main__":
    main()
