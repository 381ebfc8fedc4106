"""snapgraph against the REST upstream it fronts, at real list sizes, in one run.

    make bench                       # N = 100, 1000, 10000; 5 s per row; 32 connections
    .venv/bin/python benchmarks/bench.py --sizes 100 1000 --seconds 5 --connections 32

For each N (snapshots per user) two REST upstreams run as their own processes, and wrk
loads them directly first: a stub that answers each key's N snapshots from bytes rendered
once (the floor of what a REST service costs), and the package's reference upstream
(FastAPI + SQLite, what the contract's own implementation costs). Then `snapgraph serve`
(its own process, over the stub) warm with the same document, warm with a different
document each request (field subsets, aliases, fragments: 500 of them, so the compiled path
runs without the response cache's help), and with caching off. Each row shows req/s, p50,
p99, the server's CPU ms per request (read from /proc), the upstream calls the row caused,
and req/s as a ratio to each upstream row, all measured in the same run.

Then, at the largest N, how another user's small request fares while big lists are served
(its p99 idle and under load), and the resident memory of one gateway after 10,000 users with
100 snapshots each were served (a stub that accepts any key).

Numbers compare rows within one run on one machine; they are not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).parent
FULL = (
    "id name status sourceVmId snapshotType type ociImage vcpuCount memoryMb sizeBytes "
    "isPublic lastError createdAt updatedAt"
)
SAME_DOCUMENT = f"{{ snapshots {{ {FULL} }} }}"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def process(args: list[str], url: str, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server process until the block ends; yields its pid once `url` answers."""
    child = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{args} did not start") from None
                time.sleep(0.1)
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=20)


@contextmanager
def upstream(per_user: int, latency_ms: float = 0.0) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, str(HERE / "servers.py"), "stub", str(port), str(per_user)]
    with process([*args, str(latency_ms)], url + "/health") as pid:
        yield url, pid


@contextmanager
def reference_upstream(per_user: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, str(HERE / "servers.py"), "reference", str(port), "2", str(per_user)]
    with process(args, url + "/openapi.json") as pid:
        yield url, pid


@contextmanager
def gateway(
    upstream_url: str,
    source: str | None = None,
    environ: dict[str, str] | None = None,
    **settings: str,
) -> Iterator[tuple[str, int]]:
    """`snapgraph serve` as its own process; `source` runs another checkout's src/ instead;
    `environ` adds variables other than settings (OTEL_*)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"SNAPGRAPH_UPSTREAM_URL": upstream_url, "SNAPGRAPH_LOG_LEVEL": "warning"}
    if source is not None:
        env["PYTHONPATH"] = source
    env.update({f"SNAPGRAPH_{k.upper()}": v for k, v in settings.items()})
    env.update(environ or {})
    args = [sys.executable, "-m", "snapgraph", "serve", f"--port={port}"]
    with process(args, url + "/healthz", env) as pid:
        yield url, pid


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def upstream_calls(gateway_url: str) -> float:
    text = httpx.get(gateway_url + "/metrics").text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("snapgraph_upstream_requests_total{")
    )


@dataclass
class Row:
    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    upstream_calls: float | None
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(
    url: str, script: str, seconds: int, connections: int
) -> tuple[float, float, float, int, int]:
    """req/s, p50 ms, p99 ms, requests, non-2xx + socket errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            lua.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(lua.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    percent = {
        p: float(v) * _UNITS[u] for p, v, u in re.findall(r"\s(\d+)%\s+([\d.]+)(us|ms|s)\b", out)
    }
    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    bad += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return rate, percent.get("50", 0.0), percent.get("99", 0.0), total, bad


def lua_for(bodies: list[str], headers: dict[str, str], method: str = "POST") -> str:
    quoted = ",\n".join(json.dumps(body) for body in bodies)
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
    )
    return f"""
wrk.method = "{method}"
{header_lines}
local bodies = {{ {quoted} }}
local i = math.random(#bodies)
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def measure(
    name: str,
    url: str,
    pid: int,
    script: str,
    args: argparse.Namespace,
    gateway_url: str | None = None,
) -> Row:
    calls_before = upstream_calls(gateway_url) if gateway_url else None
    cpu_before = cpu_seconds(pid)
    rate, p50, p99, total, bad = wrk(url, script, args.seconds, args.connections)
    cpu = (cpu_seconds(pid) - cpu_before) * 1000 / max(total, 1)
    calls = (
        upstream_calls(gateway_url) - calls_before
        if gateway_url and calls_before is not None
        else None
    )
    return Row(name, rate, p50, p99, cpu, calls, bad)


def different_documents(count: int) -> list[str]:
    """Documents that differ in aliases, field subsets and fragments, as many frontends send."""
    fields = FULL.split()
    documents = []
    for n in range(count):
        chosen = [fields[(n + k) % len(fields)] for k in range(1 + n % len(fields))]
        alias = f"list{n}"
        selection = " ".join(chosen)
        if n % 3 == 0:
            fragment = f"fragment F{n} on Snapshot {{ {selection} }}"
            body = f"{{ {alias}: snapshots {{ ...F{n} }} }} {fragment}"
        elif n % 3 == 1:
            body = f"{{ {alias}: snapshots {{ ... on Snapshot {{ {selection} }} __typename }} }}"
        else:
            aliased = " ".join(f"f{i}: {field}" for i, field in enumerate(chosen))
            body = f"{{ {alias}: snapshots {{ {aliased} }} }}"
        documents.append(json.dumps({"query": body}))
    return documents


def rows_for_size(size: int, args: argparse.Namespace) -> list[Row]:
    key = {"X-API-Key": "key-000", "Content-Type": "application/json"}
    same = lua_for([json.dumps({"query": SAME_DOCUMENT})], key)
    varied = lua_for(different_documents(500), key)
    rows = []
    with upstream(size, args.upstream_latency_ms) as (upstream_url, upstream_pid):
        direct = lua_for([""], {"X-API-Key": "key-000"}, method="GET")
        rows.append(
            measure(
                "stub REST upstream, called directly",
                upstream_url + "/v1/snapshots",
                upstream_pid,
                direct,
                args,
            )
        )
        with reference_upstream(size) as (reference_url, reference_pid):
            rows.append(
                measure(
                    "reference upstream (FastAPI + SQLite), called directly",
                    reference_url + "/v1/snapshots",
                    reference_pid,
                    direct,
                    args,
                )
            )
        with gateway(upstream_url, cache_ttl="300") as (url, pid):
            httpx.post(url + "/graphql", json={"query": SAME_DOCUMENT}, headers=key)
            rows.append(
                measure("snapgraph, warm, same document", url + "/graphql", pid, same, args, url)
            )
            rows.append(
                measure(
                    "snapgraph, warm, a different document each time",
                    url + "/graphql",
                    pid,
                    varied,
                    args,
                    url,
                )
            )
        if args.before:
            with gateway(upstream_url, args.before, cache_ttl="300") as (url, pid):
                httpx.post(url + "/graphql", json={"query": SAME_DOCUMENT}, headers=key)
                name = "snapgraph before this wave, warm, same document"
                rows.append(measure(name, url + "/graphql", pid, same, args, url))
        with gateway(upstream_url, cache_ttl="0") as (url, pid):
            rows.append(measure("snapgraph, cache off", url + "/graphql", pid, same, args, url))
    return rows


def print_table(size: int, rows: list[Row]) -> None:
    stub, reference = rows[0].requests_per_second, rows[1].requests_per_second
    print(f"\nN = {size} snapshots per user")
    print(
        "| row | req/s | × stub | × reference | p50 ms | p99 ms | CPU ms/req "
        "| upstream calls | errors |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        calls = "—" if row.upstream_calls is None else f"{row.upstream_calls:.0f}"
        rate = row.requests_per_second
        print(
            f"| {row.name} | {rate:,.0f} | {rate / stub:.2f} | {rate / reference:.2f} | "
            f"{row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.cpu_ms:.2f} | {calls} | {row.errors} |"
        )


def stall(size: int, args: argparse.Namespace) -> None:
    """Another user's small request while one user's big lists are served."""
    small = lua_for(
        [json.dumps({"query": "{ snapshots(type: SYSTEM) { id } }"})],
        {"X-API-Key": "key-001", "Content-Type": "application/json"},
    )
    loads = {
        "each refetched (Cache-Control: no-cache)": lua_for(
            [json.dumps({"query": SAME_DOCUMENT})],
            {
                "X-API-Key": "key-000",
                "Content-Type": "application/json",
                "Cache-Control": "no-cache",
            },
        ),
        "from the cache, a different document each time": lua_for(
            different_documents(500), {"X-API-Key": "key-000", "Content-Type": "application/json"}
        ),
    }
    with upstream(size) as (upstream_url, _), gateway(upstream_url, cache_ttl="300") as (url, _pid):
        _, _, idle_p99, _, _ = wrk(url + "/graphql", small, args.seconds, 1)
        print(f"\nAnother user's small query, p99: idle {idle_p99:.1f} ms")
        for name, big in loads.items():
            loader = subprocess.Popen(
                [sys.executable, __file__, "--load-only", url, str(args.seconds + 2)],
                stdin=subprocess.PIPE,
                text=True,
            )
            assert loader.stdin is not None
            loader.stdin.write(big)
            loader.stdin.close()
            time.sleep(1)
            _, _, busy_p99, _, _ = wrk(url + "/graphql", small, args.seconds, 1)
            loader.wait()
            print(
                f"- while 4 connections fetch {size}-item lists, {name}: {busy_p99:.1f} ms "
                f"({busy_p99 / max(idle_p99, 0.001):.0f}× idle)"
            )


def memory(args: argparse.Namespace) -> None:
    """RSS of one gateway after 10,000 users with 100 snapshots each were served once."""
    import asyncio

    port = free_port()
    stub_url = f"http://127.0.0.1:{port}"
    with (
        process(
            [sys.executable, str(HERE / "servers.py"), "stub", str(port), "100"],
            stub_url + "/health",
        ),
        gateway(stub_url, cache_ttl="600") as (url, pid),
    ):
        before = rss_mib(pid)

        async def fill() -> None:
            limits = httpx.Limits(max_connections=32)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
                semaphore = asyncio.Semaphore(32)

                async def one(n: int) -> None:
                    async with semaphore:
                        for attempt in range(3):
                            try:
                                await http.post(
                                    "/graphql",
                                    json={"query": SAME_DOCUMENT},
                                    headers={"X-API-Key": f"user-{n}"},
                                )
                                return
                            except httpx.TransportError:
                                # A pooled connection the server closed as it was reused (a
                                # keep-alive race on a busy machine): that user again.
                                if attempt == 2:
                                    raise

                await asyncio.gather(*(one(n) for n in range(args.users)))

        asyncio.run(fill())
        after = rss_mib(pid)
    print(
        f"\nResident memory, {args.users:,} users × 100 snapshots cached: {before:.0f} MiB at "
        f"start, {after:.0f} MiB after ({after / before:.1f}×; bounded by "
        "SNAPGRAPH_CACHE_MAX_BYTES and SNAPGRAPH_RESPONSE_CACHE_MAX_BYTES)"
    )


def tracing(args: argparse.Namespace) -> None:
    """The cost of tracing: the same warm request with tracing off, on (every request traced
    and exported over OTLP/HTTP to a sink that discards), and, given --before, a checkout
    without tracing at all: off must cost what no tracing costs."""
    key = {"X-API-Key": "key-000", "Content-Type": "application/json"}
    same = lua_for([json.dumps({"query": SAME_DOCUMENT})], key)
    size = min(args.sizes)
    rows: list[Row] = []
    sink_port = free_port()
    sink_url = f"http://127.0.0.1:{sink_port}"
    sink_args = [sys.executable, str(HERE / "servers.py"), "sink", str(sink_port)]
    with upstream(size) as (upstream_url, _), process(sink_args, sink_url + "/health"):
        variants: list[tuple[str, str | None, dict[str, str]]] = [
            ("tracing off", None, {}),
            ("tracing on, OTLP export", None, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink_url}),
        ]
        if args.before:
            variants.append(("before tracing existed", args.before, {}))
        for name, source, otel in variants:
            with gateway(upstream_url, source, otel, cache_ttl="300") as (url, pid):
                httpx.post(url + "/graphql", json={"query": SAME_DOCUMENT}, headers=key)
                rows.append(measure(name, url + "/graphql", pid, same, args, url))
    off = rows[0]
    hooks_us = _tracing_hooks_off_us()
    print(f"\nTracing, N = {size}, warm, same document")
    print(
        f"With tracing off, a request's tracing hooks cost {hooks_us:.2f} µs of CPU in all "
        f"({100 * hooks_us / 1000 / off.cpu_ms:.2f}% of the {off.cpu_ms:.3f} ms it costs)."
    )
    print("| row | req/s | × off | p50 ms | p99 ms | CPU ms/req | × off CPU |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        print(
            f"| {row.name} | {row.requests_per_second:,.0f} "
            f"| {row.requests_per_second / off.requests_per_second:.2f} "
            f"| {row.p50_ms:.2f} | {row.p99_ms:.2f} | {row.cpu_ms:.3f} "
            f"| {row.cpu_ms / off.cpu_ms:.2f} |"
        )


def _tracing_hooks_off_us() -> float:
    """Every tracing hook one cached request passes, with tracing off, timed in process."""
    import timeit

    from snapgraph.tracing import Tracing

    tracing = Tracing()
    headers = {"x-api-key": "key-000"}

    def one_request() -> None:
        with tracing.request(headers) as span:
            span.named("Dashboard", "query", SAME_DOCUMENT)
            tracing.cache_event("hit")
            span.finished(200, [])
            _ = span.trace_id

    runs = 200_000
    return min(timeit.repeat(one_request, number=runs, repeat=5)) / runs * 1e6


PAGE_DOCUMENT = (
    "query Page($after: String) { snapshotsConnection(first: 50, after: $after) "
    f"{{ pageInfo {{ hasNextPage endCursor }} edges {{ cursor node {{ {FULL} }} }} }} }}"
)


def pages(size: int, args: argparse.Namespace) -> None:
    """One 50-item page out of `size` snapshots, warm, beside the full list: the same
    document again (the response cache answers), and every page of a walk in turn with the
    response cache off (each page built by the compiled path from the cached, sorted list)."""
    key = {"X-API-Key": "key-000", "Content-Type": "application/json"}
    full = lua_for([json.dumps({"query": SAME_DOCUMENT})], key)
    rows: list[Row] = []
    with upstream(size) as (upstream_url, _):
        for response_cache in ("on", "off"):
            settings = {"cache_ttl": "300"}
            if response_cache == "off":
                settings["response_cache_max_bytes"] = "0"
            with gateway(upstream_url, **settings) as (url, pid):
                cursors = _walk(url, key)  # also warms the list and its sorted view
                one = lua_for([_page_body(cursors[len(cursors) // 2])], key)
                walk = lua_for([_page_body(cursor) for cursor in cursors], key)
                graphql = url + "/graphql"
                cache = f"response cache {response_cache}"
                rows.append(measure(f"full list, {cache}", graphql, pid, full, args, url))
                if response_cache == "on":
                    name = f"one 50-item page, same page, {cache}"
                    rows.append(measure(name, graphql, pid, one, args, url))
                name = f"50-item pages of a walk, a different page each time, {cache}"
                rows.append(measure(name, graphql, pid, walk, args, url))
    full_cpu = {row.name.split(", ")[-1]: row.cpu_ms for row in rows if row.name.startswith("full")}
    print(f"\nPages: one 50-item page out of N = {size} snapshots, warm, beside the full list")
    columns = ["req/s", "p50 ms", "p99 ms", "CPU ms/req", "CPU × full list", "upstream calls"]
    print("| row | " + " | ".join(columns) + " | errors |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for row in rows:
        ratio = row.cpu_ms / full_cpu[row.name.split(", ")[-1]]
        print(
            f"| {row.name} | {row.requests_per_second:,.0f} | {row.p50_ms:.1f} | "
            f"{row.p99_ms:.1f} | {row.cpu_ms:.2f} | {ratio:.3f} | {row.upstream_calls:.0f} "
            f"| {row.errors} |"
        )


def _page_body(after: str | None) -> str:
    return json.dumps({"query": PAGE_DOCUMENT, "variables": {"after": after}})


def _walk(url: str, headers: dict[str, str]) -> list[str | None]:
    """The `after` of every page of a walk through the list (None: the first page)."""
    cursors: list[str | None] = [None]
    while True:
        body = httpx.post(url + "/graphql", content=_page_body(cursors[-1]), headers=headers)
        info = body.json()["data"]["snapshotsConnection"]["pageInfo"]
        if not info["hasNextPage"]:
            return cursors
        cursors.append(info["endCursor"])


def load_only(url: str, seconds: int) -> None:
    script = sys.stdin.read()
    wrk(url + "/graphql", script, seconds, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--users", type=int, default=10_000, help="users for the memory row")
    parser.add_argument("--upstream-latency-ms", type=float, default=0.0)
    parser.add_argument("--before", help="src/ of an older checkout, measured warm in the same run")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["tables", "stall", "memory", "tracing", "pages"],
        help="what to measure: tables stall memory tracing pages",
    )
    parser.add_argument("--load-only", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_only:
        load_only(args.load_only[0], int(args.load_only[1]))
        return
    print(
        f"# snapgraph benchmark: {platform.node()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    if "tables" in args.parts:
        for size in args.sizes:
            print_table(size, rows_for_size(size, args))
    if "stall" in args.parts:
        stall(max(args.sizes), args)
    if "memory" in args.parts:
        memory(args)
    if "tracing" in args.parts:
        tracing(args)
    if "pages" in args.parts:
        pages(max(args.sizes), args)


if __name__ == "__main__":
    main()
