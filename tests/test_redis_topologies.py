"""The shared cache on a real Redis Cluster and a real Sentinel setup, through their failovers.

The servers are Debian's redis-server and redis-sentinel on loopback ports (redis_servers.py):
a cluster of three masters with a replica each, and a master with a replica watched by three
sentinels.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from conftest import (
    ALICE_BEARER,
    ALICE_KEY,
    BOB_KEY,
    QUERY,
    SLOW_MACHINE_REDIS_TIMEOUT,
    Upstream,
    data_of,
    ids,
    run_concurrently,
)
from redis_servers import (
    Cluster,
    SentinelSetup,
    redis_cluster,
    redis_node,
    redis_sentinel,
    wait_until,
)

pytestmark = pytest.mark.redis
SECRET = "test-cache-secret"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture
def sentinel(tmp_path: Path) -> Iterator[SentinelSetup]:
    with redis_sentinel(tmp_path) as running:
        yield running


def _entry_keys(cluster: Cluster) -> list[str]:
    return cluster.keys("snapgraph:list:*")


def _flush(cluster: Cluster) -> None:
    for server in cluster.servers:
        if server.alive() and server.client().info("replication")["role"] == "master":
            server.client().flushall()


def _until_stored(query: Callable[[], object], stored: Callable[[], object]) -> None:
    """Query until the answer is in Redis: on a loaded machine a first write may pass
    SNAPGRAPH_CACHE_TIMEOUT, and the gateway then rightly keeps the entry to itself for a
    second (its TTL here is shorter, so a later query writes again)."""

    def queried_and_stored() -> bool:
        query()
        return bool(stored())

    wait_until(queried_and_stored, "the entry written to Redis")


def test_two_gateways_share_entries_through_the_cluster_each_user_in_one_slot(
    cluster: Cluster, upstream: Upstream, start_gateway
) -> None:
    _flush(cluster)
    settings = {"cache_secret": SECRET, "cache_timeout": SLOW_MACHINE_REDIS_TIMEOUT}
    one = start_gateway(upstream.url, cache_url=cluster.url, **settings)
    two = start_gateway(upstream.url, cache_url=cluster.url, **settings)
    for headers in (ALICE_KEY, BOB_KEY):
        data_of(one.query(QUERY, headers))
        data_of(two.query(QUERY, headers))
    assert len(upstream.requests) == 2  # the second gateway read both entries from the cluster
    assert one.http.get("/readyz").json()["cache"] == "redis"

    keys = _entry_keys(cluster)
    assert len(keys) == 2
    for key in keys:
        tag = key[key.index("{") :]
        lease_slot = key_slot(f"snapgraph:lease:list:{tag}".encode())
        note_slot = key_slot(f"snapgraph:failed:list:{tag}".encode())
        assert key_slot(key.encode()) == lease_slot == note_slot
        assert cluster.master_of(key).client().pttl(key) > 0


def test_concurrent_misses_on_two_gateways_make_one_upstream_call_over_the_cluster(
    cluster: Cluster, start_upstream, start_gateway
) -> None:
    _flush(cluster)
    upstream = start_upstream(latency=0.3)
    settings = {"cache_secret": SECRET, "cache_timeout": SLOW_MACHINE_REDIS_TIMEOUT}
    gateways = [start_gateway(upstream.url, cache_url=cluster.url, **settings) for _ in range(2)]

    async def both() -> list[dict]:
        halves = await asyncio.gather(
            *(run_concurrently(gateway.url, [ALICE_KEY] * 30) for gateway in gateways)
        )
        return [*halves[0], *halves[1]]

    results = asyncio.run(both())
    assert all("snap-alice-dev" in ids(result) for result in results)
    alices = [r for r in upstream.requests if r.headers.get("x-api-key") == "demo-alice-key"]
    assert len(alices) == 1  # the lease, in the user's slot, coalesced both gateways


def test_a_cluster_master_failover_is_ridden_out_and_the_new_master_takes_writes(
    cluster: Cluster, upstream: Upstream, start_gateway
) -> None:
    _flush(cluster)
    gateway = start_gateway(upstream.url, cache_url=cluster.url, cache_secret=SECRET, cache_ttl=0.5)
    _until_stored(lambda: data_of(gateway.query(QUERY, ALICE_BEARER)), lambda: _entry_keys(cluster))
    (alices,) = _entry_keys(cluster)
    killed = cluster.kill_master_of(alices)

    # Every request during and after the failover is answered in full, within a bound.
    started = time.monotonic()
    while cluster.master_of(alices).client().exists(alices) == 0:
        began = time.monotonic()
        assert "snap-alice-dev" in ids(gateway.query(QUERY, ALICE_BEARER))
        assert time.monotonic() - began < 3.0
        assert time.monotonic() - started < 30, "no entry reached the promoted master"
        time.sleep(0.1)
    assert cluster.master_of(alices).port != killed.port


def test_the_sentinel_master_serves_and_a_failover_moves_writes_to_the_promoted_replica(
    sentinel: SentinelSetup, upstream: Upstream, start_gateway
) -> None:
    gateway = start_gateway(
        upstream.url, cache_url=sentinel.url, cache_secret=SECRET, cache_ttl=0.5
    )
    _until_stored(  # written to the master
        lambda: data_of(gateway.query(QUERY, ALICE_KEY)),
        lambda: sentinel.master.client().keys("snapgraph:list:*"),
    )
    assert gateway.http.get("/readyz").json()["cache"] == "redis"
    sentinel.failover()

    promoted = sentinel.replica.client()
    promoted.flushall()  # so that an entry there can only be a write made after the failover
    started = time.monotonic()
    while not promoted.keys("snapgraph:list:*"):
        began = time.monotonic()
        assert "snap-bob-db" in ids(gateway.query(QUERY, BOB_KEY))
        assert time.monotonic() - began < 3.0
        assert time.monotonic() - started < 30, "no entry reached the promoted master"
        time.sleep(0.1)
    assert gateway.http.get("/readyz").json()["cache"] == "redis"


def test_a_hanging_redis_costs_a_request_a_bounded_wait_then_the_gateway_degrades_and_returns(
    tmp_path: Path, upstream: Upstream, start_gateway
) -> None:
    with redis_node(tmp_path) as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        gateway = start_gateway(upstream.url, cache_url=url, cache_secret=SECRET)
        data_of(gateway.query(QUERY, ALICE_KEY))
        server.process.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            began = time.monotonic()
            assert "snap-bob-db" in ids(gateway.query(QUERY, BOB_KEY))
            # Bounded by the Redis timeouts (0.5 s a read, 2 s a command), far below the
            # upstream deadline; without them the request would wait as long as Redis hangs.
            assert time.monotonic() - began < 4.0
            assert gateway.http.get("/readyz").json()["cache"] == "degraded"
        finally:
            server.process.send_signal(signal.SIGCONT)

        def back_on_redis() -> bool:
            gateway.query(QUERY, ALICE_BEARER)  # a request after the fallback window retries
            return bool(gateway.http.get("/readyz").json()["cache"] == "redis")

        wait_until(back_on_redis, "the gateway to use Redis again", timeout=15)
        assert server.client().keys("snapgraph:list:*")


def test_requests_queued_at_the_cluster_gate_behind_a_hanging_redis_fail_together(
    tmp_path: Path,
) -> None:
    """The gate (one command at a time until Redis answers again) must not turn N waiting
    requests into N timeouts in a row: they share the budget and the first one's failure."""
    import redis.asyncio

    from snapgraph.cache_backends import StoreFailure
    from snapgraph.redis_store import RedisStore

    with redis_node(tmp_path) as server:

        async def scenario() -> tuple[float, float]:
            client = redis.asyncio.Redis(port=server.port, socket_timeout=0.5)
            store = RedisStore(client, op_timeout=0.5, gated=True)
            await store.set("list:{a}", "x", 10)  # proven: commands run side by side
            server.process.send_signal(signal.SIGSTOP)
            try:
                timings = []
                for _ in range(2):  # side by side; then queued at the gate
                    began = time.monotonic()
                    results = await asyncio.gather(
                        *(store.get("list:{a}") for _ in range(10)), return_exceptions=True
                    )
                    timings.append(time.monotonic() - began)
                    assert all(isinstance(result, StoreFailure) for result in results)
            finally:
                server.process.send_signal(signal.SIGCONT)
                await store.close()
            return timings[0], timings[1]

        side_by_side, gated = asyncio.run(scenario())
    # One command's budget is 2 s; ten in a row at the gate would take 20 s.
    assert side_by_side < 3.0 and gated < 3.0, (side_by_side, gated)
