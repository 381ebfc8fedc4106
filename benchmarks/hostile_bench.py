"""What a hostile request costs the gateway, and what it does to another caller, in one run.

    .venv/bin/python benchmarks/hostile_bench.py                    # this checkout
    .venv/bin/python benchmarks/hostile_bench.py --before 910c6dd   # and an older commit beside

For each hostile request (issue 18's rows that can be sent to a plain upstream): the gateway
process's CPU per request (read from /proc, the request sent alone, several times), what the
hostile caller got, and a bystander's p50/p99 for a small cached query, idle and while the
hostile request is sent in a loop. Then resident memory before and after 1,000 distinct
hostile inputs from a credentialed caller, and once their lists' TTL has passed.

`--before REV` runs the same against `git worktree` of REV (its src/ on PYTHONPATH), in the
same process tree, so the two columns compare on one machine at one time. Numbers compare
rows within one run; they are not absolutes.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
import orjson
from bench import cpu_seconds, gateway, rss_mib, upstream

HERE = Path(__file__).parent
ALICE = {"X-API-Key": "alice"}
BOB = {"X-API-Key": "bob"}
PAGE = """query ($order: [SnapshotOrder!], $filter: SnapshotFilter) {
  snapshotsConnection(orderBy: $order, filter: $filter, first: 5) {
    edges { cursor node { id } }
  }
}"""
ALIASED_PAGES = (
    "query ($order: [SnapshotOrder!]) { "
    + " ".join(
        f"p{n}: snapshotsConnection(orderBy: $order) {{ edges {{ cursor }} }}" for n in range(10)
    )
    + " }"
)


@dataclass(frozen=True)
class Hostile:
    name: str
    json: dict[str, Any]
    credential: dict[str, str]

    @cached_property
    def body(self) -> bytes:
        """Encoded once: encoding 55,000 objects per send would charge the bystander (same
        process, same GIL) with the benchmark's own work."""
        return orjson.dumps(self.json)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **self.credential}

    def send(self, http: httpx.Client) -> httpx.Response:
        return http.post("/graphql", content=self.body, headers=self.headers)


HOSTILE = [
    Hostile(
        "anonymous, orderBy of 55,000 keys (0.94 MB)",
        {"query": PAGE, "variables": {"order": [{"field": "NAME"}] * 55_000}},
        {},
    ),
    Hostile(
        "anonymous, status filter of 85,000 strings",
        {"query": PAGE, "variables": {"filter": {"status": ["ready"] * 85_000}}},
        {},
    ),
    Hostile(
        "alice, 10 aliases x orderBy of 55,000 keys",
        {"query": ALIASED_PAGES, "variables": {"order": [{"field": "NAME"}] * 55_000}},
        ALICE,
    ),
    Hostile(
        "alice, nameContains of 100,000 characters",
        {"query": PAGE, "variables": {"filter": {"nameContains": "x" * 100_000}}},
        ALICE,
    ),
]


def outcome(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    codes = sorted({error["extensions"]["code"] for error in body.get("errors", [])})
    return f"{response.status_code} {','.join(codes) or 'ok'} ({len(response.content):,} B)"


def cpu_per_request(url: str, pid: int, hostile: Hostile, count: int) -> tuple[float, str]:
    with httpx.Client(base_url=url, timeout=120) as http:
        hostile.send(http)  # warm
        before = cpu_seconds(pid)
        for _ in range(count):
            response = hostile.send(http)
        spent = cpu_seconds(pid) - before
    return spent / count * 1000, outcome(response)


@contextmanager
def looping(url: str, send: Callable[[httpx.Client], object]) -> Iterator[None]:
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while not stop.is_set():
                # Refused unread, the connection may close behind the answer: send again.
                with contextlib.suppress(httpx.TransportError):
                    send(http)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def bystander_latencies(url: str, seconds: float) -> tuple[float, float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            http.post("/graphql", json={"query": "{ snapshots { id } }"}, headers=BOB)
            latencies.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]


def memory(url: str, pid: int, count: int, ttl: float) -> tuple[float, float, float]:
    """Resident memory at a steady state (after a first round of such inputs and their TTL),
    after `count` more distinct ones, and once their TTL has passed."""
    with httpx.Client(base_url=url, timeout=120) as http:
        send_distinct(http, count, offset=count)  # the steady state they are measured from
        time.sleep(ttl + 1)
        http.post("/graphql", json={"query": PAGE}, headers=ALICE)
        before = rss_mib(pid)
        send_distinct(http, count, offset=0)
        after = rss_mib(pid)
        time.sleep(ttl + 1)
        http.post("/graphql", json={"query": PAGE}, headers=ALICE)  # a new list replaces it
        settled = rss_mib(pid)
    return before, after, settled


def send_distinct(http: httpx.Client, count: int, offset: int) -> None:
    for n in range(offset, offset + count):
        name = f"{n:05d}" + "y" * 4_000
        orders = [{"field": f} for f in ("NAME", "STATUS", "SIZE_BYTES")][: 1 + n % 3]
        variables = {"filter": {"nameContains": name}, "order": orders}
        http.post("/graphql", json={"query": PAGE, "variables": variables}, headers=ALICE)


def run(label: str, upstream_url: str, source: str | None, args: argparse.Namespace) -> None:
    ttl = "3"
    with gateway(upstream_url, source, cache_ttl=ttl) as (url, pid):
        idle = bystander_latencies(url, args.seconds)
        print(f"\n## {label}\nbystander idle: p50 {idle[0]:.1f} ms, p99 {idle[1]:.1f} ms")
        print("| hostile request | answer | gateway CPU ms/request | bystander p50 / p99 ms |")
        print("|---|---|--:|--:|")
        for hostile in HOSTILE:
            cpu_ms, answer = cpu_per_request(url, pid, hostile, args.count)
            with looping(url, hostile.send):
                p50, p99 = bystander_latencies(url, args.seconds)
            print(f"| {hostile.name} | {answer} | {cpu_ms:.1f} | {p50:.1f} / {p99:.1f} |")
        before, after, settled = memory(url, pid, args.distinct, float(ttl))
        print(
            f"resident memory: {before:.0f} MiB before {args.distinct:,} distinct hostile "
            f"inputs, {after:.0f} MiB after, {settled:.0f} MiB once their TTL passed "
            f"({(settled - before) / before:+.0%})"
        )


@contextmanager
def worktree(revision: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="snapgraph-before-") as directory:
        path = str(Path(directory) / "tree")
        subprocess.run(["git", "worktree", "add", "--detach", path, revision], check=True)
        try:
            yield str(Path(path) / "src")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", path], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-user", type=int, default=100)
    parser.add_argument(
        "--count",
        type=int,
        default=20,
        help="hostile requests per CPU figure (/proc counts 10 ms ticks)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per bystander phase")
    parser.add_argument("--distinct", type=int, default=1_000)
    parser.add_argument("--before", help="also run this older revision, in a git worktree")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(f"# hostile requests, {args.per_user} snapshots per user, commit {commit}")
    with upstream(args.per_user) as (upstream_url, _):
        if args.before:
            with worktree(args.before) as source:
                run(f"before ({args.before})", upstream_url, source, args)
        run(f"after ({commit})", upstream_url, None, args)


if __name__ == "__main__":
    main()
