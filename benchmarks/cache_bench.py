"""Cache off versus cache on, in one run: upstream calls, throughput, latency.

    .venv/bin/python benchmarks/cache_bench.py [--requests 3000] [--users 20] [--concurrency 50]
        [--redis redis://127.0.0.1:6379/7]

The reference upstream runs in this process (so its calls can be counted) with a simulated
network latency; each gateway runs as its own `snapgraph serve` process, first with
SNAPGRAPH_CACHE_TTL=0 (the baseline), then with the default in-process cache, then (with
--redis) with the shared Redis cache. Prints the rows and their ratios to the baseline.
Numbers are for comparison within one run on one machine, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from snapgraph.reference.app import create_reference_app
from snapgraph.reference.data import Dataset
from snapgraph.serving import serve_in_thread

QUERY = {"query": "{ snapshots { id name sizeBytes createdAt } }"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def gateway(upstream_url: str, **env: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "serve", f"--port={port}", "--log-level=warning"],
        env={**os.environ, "SNAPGRAPH_UPSTREAM_URL": upstream_url, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                httpx.get(url + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait()


async def load(url: str, requests: int, users: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n % users)

    async def worker(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            user = queue.get_nowait()
            started = time.perf_counter()
            response = await http.post(
                "/graphql", json=QUERY, headers={"X-API-Key": f"key-{user:03d}"}
            )
            assert response.status_code == 200 and "errors" not in response.json(), response.text
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "throughput": requests / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def run(
    label: str, upstream: Any, upstream_url: str, args: argparse.Namespace, **env: str
) -> dict[str, Any]:
    with gateway(upstream_url, **env) as url:
        before = len(upstream.state.requests)
        result: dict[str, Any] = asyncio.run(load(url, args.requests, args.users, args.concurrency))
        result["upstream_calls"] = len(upstream.state.requests) - before
    result["label"] = label
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.02, help="upstream latency (s)")
    parser.add_argument("--redis", help="also measure the shared cache on this Redis (flushed)")
    args = parser.parse_args()

    upstream = create_reference_app(Dataset.generated(users=args.users), latency=args.latency)
    with serve_in_thread(upstream) as upstream_url:
        rows = [
            run("cache off (baseline)", upstream, upstream_url, args, SNAPGRAPH_CACHE_TTL="0"),
            run("memory cache", upstream, upstream_url, args),
        ]
        if args.redis:
            import redis

            redis.Redis.from_url(args.redis).flushdb()
            rows.append(
                run(
                    "redis cache",
                    upstream,
                    upstream_url,
                    args,
                    SNAPGRAPH_CACHE_URL=args.redis,
                    SNAPGRAPH_CACHE_SECRET="bench-secret",  # noqa: S106 (a throwaway bench key),
                )
            )

    print(
        f"{args.requests} requests, {args.users} users, concurrency {args.concurrency}, "
        f"upstream latency {args.latency * 1000:.0f} ms"
    )
    print(f"{'':22} {'upstream calls':>15} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['label']:22} {row['upstream_calls']:>15} {row['throughput']:>9.0f} "
            f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}"
        )
    off = rows[0]
    for row in rows[1:]:
        print(
            f"{row['label']} / baseline: "
            f"upstream calls x{row['upstream_calls'] / off['upstream_calls']:.4f}, "
            f"throughput x{row['throughput'] / off['throughput']:.2f}, "
            f"p50 latency x{row['p50_ms'] / off['p50_ms']:.2f}"
        )


if __name__ == "__main__":
    main()
