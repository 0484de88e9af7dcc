"""Load test of `bertfit serve`: 1, 16 and 64 concurrent clients, with micro-batching on and off; or under faults.

Starts `python -m bertfit serve MODEL_DIR` on a free loopback port once per mode (micro-batching on:
``--max-batch-size 64 --max-wait-ms 5`` by default; off: ``--max-batch-size 1 --max-wait-ms 0``), sends a fixed
count of one-text ``POST /predict`` requests from N concurrent clients (one connection each) per level, and prints
a Markdown table with the throughput, the p50/p99 latency and the error count (any non-200 answer or failed
connection).

``--faults`` starts the micro-batching server once and sends the good load twice, alone and then while
``--bad-clients`` other clients send bad requests back to back (malformed JSON, bodies over the size limit, empty
and whitespace texts, lone surrogates, wrong types, too many or too long texts, a foreign Host header); it prints
the good requests' errors, throughput and latency both ways, and the status codes each kind of bad request got.

    python benchmarks/serve_load.py runs/serve_model [--requests 512] [--clients 1,16,64]
    python benchmarks/serve_load.py runs/serve_model --faults [--clients 64] [--bad-clients 8]

Texts are drawn from examples/sms_spam.csv. Clients and server share this machine's CPU cores.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
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
    parser.add_argument("--faults", action="store_true", help="good load alone and alongside bad requests")
    parser.add_argument("--bad-clients", type=int, default=8, help="--faults: clients sending bad requests")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    texts = _texts()

    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    print(
        f"# {args.requests} one-text requests per level; {machine}; server --precision {args.precision}, "
        f"{args.threads or 'default'} torch threads; server and clients on the same machine"
    )
    micro = ["--max-batch-size", args.max_batch_size, "--max-wait-ms", args.max_wait_ms]
    if args.faults:
        with _server(args.model_dir, [*micro, "--precision", args.precision], args.threads) as url:
            _print_faults(url, texts, levels[-1], args.requests, args.bad_clients)
        return
    print("| mode | clients | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    modes = {"micro-batching": micro, "batch size 1": ["--max-batch-size", "1", "--max-wait-ms", "0"]}
    for mode, options in modes.items():
        with _server(args.model_dir, [*options, "--precision", args.precision], args.threads) as url:
            for clients in levels:
                # Warm-up at the same concurrency: the first forward pass of each new batch shape builds its
                # oneDNN kernels (notably in bf16), which a long-running server has long since done.
                asyncio.run(_drive(url, texts, clients, min(args.requests, 256)))
                latencies, errors, seconds = asyncio.run(_drive(url, texts, clients, args.requests))
                print(f"| {mode} | {_row(clients, args.requests, latencies, errors, seconds)}", flush=True)


def _row(clients: int, requests: int, latencies: list[float], errors: int, seconds: float) -> str:
    p50, p99 = (np.percentile(latencies, q) * 1000 if latencies else float("nan") for q in (50, 99))
    return f"{clients} | {requests} | {errors} | {requests / seconds:.1f} | {p50:.1f} | {p99:.1f} |"


def _print_faults(url: str, texts: list[str], clients: int, requests: int, bad_clients: int) -> None:
    asyncio.run(_drive(url, texts, clients, min(requests, 256)))  # warm-up, as above
    print("| good requests | clients | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    latencies, errors, seconds = asyncio.run(_drive(url, texts, clients, requests))
    print(f"| alone | {_row(clients, requests, latencies, errors, seconds)}", flush=True)
    latencies, errors, seconds, bad = asyncio.run(_drive_with_faults(url, texts, clients, requests, bad_clients))
    print(f"| with {bad_clients} bad clients | {_row(clients, requests, latencies, errors, seconds)}")
    print("\n| bad request | sent | answers |")
    print("| --- | ---: | --- |")
    for kind, answers in bad.items():
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(answers.items(), key=str))
        print(f"| {kind} | {sum(answers.values())} | {counts} |")


def bad_requests(
    max_texts: int = 256, max_chars: int = 10_000, max_body_bytes: int = 4_000_000
) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Bad ``POST /predict`` requests by kind: (body, extra headers), for a server with these limits."""

    def body(payload: object) -> bytes:
        return json.dumps(payload).encode()  # ensure_ascii: a lone surrogate travels as the JSON escape \ud800

    return {
        "malformed JSON": (b'{"texts": ["unclosed"', {}),
        "body over the limit": (body({"texts": ["x" * (max_body_bytes + 1)]}), {}),
        "empty text": (body({"texts": ["fine", ""]}), {}),
        "whitespace and NUL text": (body({"texts": [" \t\n\u200b\x00"]}), {}),
        "lone surrogates": (body({"texts": ["broken \ud83d emoji", "\udc00"]}), {}),
        "wrong types": (body({"texts": [1, None, {"a": "b"}]}), {}),
        "not a list": (body({"texts": "one text"}), {}),
        "too many texts": (body({"texts": ["a"] * (max_texts + 1)}), {}),
        "text too long": (body({"texts": ["x" * (max_chars + 1)]}), {}),
        "foreign Host": (body({"texts": ["fine"]}), {"Host": "rebound.example"}),
    }


async def _drive_with_faults(
    url: str, texts: list[str], clients: int, requests: int, bad_clients: int, **limits: int
) -> tuple[list[float], int, float, dict[str, Counter]]:
    """:func:`_drive`, while ``bad_clients`` clients send :func:`bad_requests` in turn until it is done; also the
    answers (status code, or the transport error's name) per kind of bad request."""
    requests_by_kind = bad_requests(**limits)
    answers: dict[str, Counter] = {kind: Counter() for kind in requests_by_kind}
    kinds = list(requests_by_kind)
    done = asyncio.Event()

    async def bad_client(first: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in itertools.count(first):
                if done.is_set():
                    return
                kind = kinds[i % len(kinds)]
                content, headers = requests_by_kind[kind]
                try:
                    response = await http.post(
                        "/predict", content=content, headers={"content-type": "application/json", **headers}
                    )
                    answers[kind][response.status_code] += 1
                except httpx.HTTPError as err:
                    answers[kind][type(err).__name__] += 1

    bad = [asyncio.create_task(bad_client(i)) for i in range(bad_clients)]
    latencies, errors, seconds = await _drive(url, texts, clients, requests)
    done.set()
    await asyncio.gather(*bad)
    return latencies, errors, seconds, answers


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
