"""The shared cache on a real Redis: across processes, with Redis failing and returning."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from redis_servers import binaries_or_skip

from conftest import (
    ALICE_BEARER,
    ALICE_KEY,
    BOB_KEY,
    QUERY,
    FaultyUpstream,
    Upstream,
    data_of,
    first_answer,
    free_port,
    ids,
    run_concurrently,
    sample,
)

pytestmark = pytest.mark.redis
SECRET = "test-cache-secret"
CREDENTIAL_TEXTS = ["demo-alice-key", "demo-alice-token", "demo-bob-key"]


@contextmanager
def gateway_process(upstream_url: str, cache_url: str, **settings: str) -> Iterator[str]:
    """`snapgraph serve` in its own process, as a replica would run."""
    port = free_port()
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapgraph",
            "serve",
            f"--port={port}",
            f"--upstream-url={upstream_url}",
            f"--cache-url={cache_url}",
            f"--cache-secret={SECRET}",
            "--log-level=warning",
            *flags,
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        first_answer(lambda: httpx.get(url + "/healthz", timeout=1), process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_entries_are_shared_through_redis_with_ttls_and_no_credentials(
    upstream: Upstream, start_gateway, redis_url: str
) -> None:
    one = start_gateway(upstream.url, cache_url=redis_url, cache_secret=SECRET)
    two = start_gateway(upstream.url, cache_url=redis_url, cache_secret=SECRET)
    for headers in (ALICE_KEY, ALICE_BEARER, BOB_KEY):
        data_of(one.query(QUERY, headers))
        data_of(two.query(QUERY, headers))
    assert len(upstream.requests) == 3  # the second gateway found every entry in Redis

    client = redis_client(redis_url)
    keys = list(client.scan_iter("*"))
    assert len(keys) == 3
    for key in keys:
        assert client.ttl(key) > 0, f"{key} has no expiry"
        stored = key + client.get(key)
        assert not any(text in stored for text in CREDENTIAL_TEXTS)
        assert '"format":2' in stored and "snap-" in stored  # JSON, readable, no pickle
    client.close()


def test_100_concurrent_queries_across_two_processes_make_one_upstream_call(
    start_upstream, redis_url: str
) -> None:
    upstream = start_upstream(latency=0.5)
    with (
        gateway_process(upstream.url, redis_url) as first,
        gateway_process(upstream.url, redis_url) as second,
    ):

        async def both() -> list[dict]:
            halves = await asyncio.gather(
                run_concurrently(first, [ALICE_KEY] * 50),
                run_concurrently(second, [ALICE_KEY] * 50),
            )
            return [*halves[0], *halves[1]]

        results = asyncio.run(both())
        metrics = [httpx.get(url + "/metrics").text for url in (first, second)]
    assert all("snap-alice-dev" in ids(result) for result in results)
    # The processes' background checks (no credential) may add a call: count Alice's.
    alices = [r for r in upstream.requests if r.headers.get("x-api-key") == "demo-alice-key"]
    assert len(alices) == 1
    assert (
        sum(sample(text, 'snapgraph_upstream_requests_total{outcome="200"}') for text in metrics)
        == 1
    )
    assert (
        sum(sample(text, 'snapgraph_cache_lookups_total{result="shared"}') for text in metrics) == 1
    )


def test_a_lease_left_by_a_crashed_process_expires(
    upstream: Upstream, start_gateway, redis_url: str
) -> None:
    from snapgraph.cache import cache_key
    from snapgraph.redis_store import NAMESPACE
    from snapgraph.upstream.models import Credentials

    key = cache_key(SECRET.encode(), Credentials(api_key="demo-alice-key"), None)
    gateway = start_gateway(upstream.url, cache_url=redis_url, cache_secret=SECRET)
    client = redis_client(redis_url)
    client.set(f"{NAMESPACE}:lease:{key}", "crashed-holder", px=400)
    started = time.monotonic()
    assert "snap-alice-dev" in ids(gateway.query(QUERY, ALICE_KEY))
    assert time.monotonic() - started >= 0.3  # it waited for the lease, then fetched itself
    assert len(upstream.requests) == 1
    client.close()


def test_redis_down_still_serves_and_readyz_says_degraded(
    upstream: Upstream, start_gateway
) -> None:
    gateway = start_gateway(
        upstream.url, cache_url=f"redis://127.0.0.1:{free_port()}/0", cache_secret=SECRET
    )
    for _ in range(3):
        assert "snap-alice-dev" in ids(gateway.query(QUERY, ALICE_KEY))
    assert len(upstream.requests) == 1  # the in-process fallback cached it
    ready = gateway.http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert (body["status"], body["upstream"], body["cache"]) == ("ready", "up", "degraded")


@contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen]:
    binaries_or_skip()  # a failure, not a skip, under CI
    binary = shutil.which("redis-server")
    assert binary is not None
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_gateway_rides_out_a_redis_restart_and_reconnects(
    upstream: Upstream, start_gateway
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server(port):
        gateway = start_gateway(upstream.url, cache_url=url, cache_secret=SECRET)
        data_of(gateway.query(QUERY, ALICE_KEY))
        assert gateway.http.get("/readyz").json()["cache"] == "redis"
    # Redis is gone: still served, from upstream and the in-process fallback.
    assert "snap-bob-db" in ids(gateway.query(QUERY, BOB_KEY))
    assert gateway.http.get("/readyz").json()["cache"] == "degraded"
    with redis_server(port):
        time.sleep(1.1)  # the fallback window passes
        assert gateway.http.get("/readyz").json()["cache"] == "redis"
        gateway.query(QUERY, {"Authorization": "Bearer demo-bob-token"})
        client = redis.Redis(port=port)
        assert len(list(client.scan_iter("snapgraph:list:*"))) == 1  # written to Redis again
        client.close()


def test_an_entry_copied_to_another_users_key_in_redis_is_ignored(
    upstream: Upstream, start_gateway, redis_url: str
) -> None:
    from snapgraph.cache import cache_key
    from snapgraph.redis_store import NAMESPACE
    from snapgraph.upstream.models import Credentials

    gateway = start_gateway(upstream.url, cache_url=redis_url, cache_secret=SECRET)
    gateway.query(QUERY, ALICE_KEY)
    gateway.query(QUERY, BOB_KEY)

    def key(api_key: str) -> str:
        return f"{NAMESPACE}:" + cache_key(SECRET.encode(), Credentials(api_key=api_key), None)

    client = redis_client(redis_url)
    client.set(key("demo-alice-key"), client.get(key("demo-bob-key")), ex=60)
    client.close()
    alice = ids(gateway.query(QUERY, ALICE_KEY))
    assert "snap-alice-dev" in alice and "snap-bob-db" not in alice
    assert len(upstream.requests) == 3  # the swapped entry was a miss


def test_a_lease_without_expiry_blocks_a_user_no_longer_than_a_lease_lasts(
    upstream: Upstream, start_gateway, redis_url: str
) -> None:
    from snapgraph.cache import cache_key
    from snapgraph.redis_store import NAMESPACE
    from snapgraph.upstream.models import Credentials

    key = cache_key(SECRET.encode(), Credentials(api_key="demo-alice-key"), None)
    # Lease = upstream deadline + 1 s = 1.5 s.
    gateway = start_gateway(
        upstream.url, cache_url=redis_url, cache_secret=SECRET, upstream_deadline=0.5
    )
    client = redis_client(redis_url)
    client.set(f"{NAMESPACE}:lease:{key}", "planted, no expiry")  # anyone with Redis access
    started = time.monotonic()
    assert "snap-alice-dev" in ids(gateway.query(QUERY, ALICE_KEY))
    waited = time.monotonic() - started
    print(f"answered after {waited:.2f} s")
    assert waited < 10  # bounded: without a bound it would wait as long as the key exists
    assert len(upstream.requests) == 1
    client.close()


def test_a_stalled_upstream_costs_each_user_one_timeout_not_one_per_replica(
    faulty: FaultyUpstream, start_gateway, redis_url: str
) -> None:
    import concurrent.futures

    faulty.respond(200, "[]", delay=3.0)
    replicas = [
        start_gateway(
            faulty.url,
            cache_url=redis_url,
            cache_secret=SECRET,
            upstream_deadline=0.5,
            cache_stale_window=0,
        )
        for _ in range(3)
    ]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda replica: replica.post(QUERY, ALICE_KEY).json(), replicas))
    assert [r["errors"][0]["extensions"]["code"] for r in results] == ["UPSTREAM_UNAVAILABLE"] * 3
    # One replica fetched and timed out; the others took its failure instead of trying again.
    assert len(faulty.received) == 1
