"""The shared cache on a real Redis: across processes, with Redis failing and returning."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from conftest import (
    ALICE_BEARER,
    ALICE_KEY,
    BOB_KEY,
    QUERY,
    SLOW_MACHINE_REDIS_TIMEOUT,
    Clock,
    FaultyUpstream,
    Upstream,
    data_of,
    first_answer,
    free_port,
    ids,
    run_concurrently,
    sample,
    wait_for,
    wait_for_async,
)
from redis_servers import binaries_or_skip

pytestmark = pytest.mark.redis
SECRET = "test-cache-secret"
CREDENTIAL_TEXTS = ["demo-alice-key", "demo-alice-token", "demo-bob-key"]
MISS = 'snapgraph_cache_lookups_total{result="miss"}'
ALICE_DEV = {
    "id": "snap-alice-dev",
    "status": "ready",
    "snapshot_type": "full",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


@contextmanager
def gateway_processes(upstream_url: str, cache_url: str, count: int) -> Iterator[list[str]]:
    """`snapgraph serve` in `count` processes of their own, as replicas would run (started
    side by side: each start costs seconds)."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "snapgraph",
                "serve",
                f"--port={port}",
                f"--upstream-url={upstream_url}",
                f"--cache-url={cache_url}",
                f"--cache-secret={SECRET}",
                f"--cache-timeout={SLOW_MACHINE_REDIS_TIMEOUT}",
                "--log-level=warning",
            ],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url, process in zip(urls, processes, strict=True):
            first_answer(lambda url=url: httpx.get(url + "/healthz", timeout=1), process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)


def test_entries_are_shared_through_redis_with_ttls_and_no_credentials(
    upstream: Upstream, start_gateway, redis_url: str
) -> None:
    settings = {"cache_secret": SECRET, "cache_timeout": SLOW_MACHINE_REDIS_TIMEOUT}
    one = start_gateway(upstream.url, cache_url=redis_url, **settings)
    two = start_gateway(upstream.url, cache_url=redis_url, **settings)
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
    faulty: FaultyUpstream, redis_url: str
) -> None:
    faulty.respond(200, json.dumps([ALICE_DEV]))
    # Held until both processes have missed: one fetches, the other can only wait on its
    # lease (none can come late and find the entry stored).
    faulty.hold()

    def alices() -> int:
        return sum(1 for headers in faulty.received if headers.get("x-api-key") == "demo-alice-key")

    with gateway_processes(faulty.url, redis_url, 2) as (first, second):

        async def both() -> list[dict]:
            halves = asyncio.gather(
                run_concurrently(first, [ALICE_KEY] * 50),
                run_concurrently(second, [ALICE_KEY] * 50),
            )
            async with httpx.AsyncClient(timeout=30) as http:

                async def both_missed() -> bool:
                    texts = [(await http.get(url + "/metrics")).text for url in (first, second)]
                    return alices() == 1 and all(sample(text, MISS) == 1 for text in texts)

                await wait_for_async(both_missed, "both processes missing, one fetching")
            faulty.release()
            first_half, second_half = await halves
            return [*first_half, *second_half]

        results = asyncio.run(both())
        metrics = [httpx.get(url + "/metrics").text for url in (first, second)]
    assert all(ids(result) == {"snap-alice-dev"} for result in results)
    # The processes' background checks (no credential) may add a call: count Alice's.
    assert alices() == 1
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
    import concurrent.futures
    import threading

    from snapgraph.cache import cache_key
    from snapgraph.redis_store import NAMESPACE
    from snapgraph.upstream.models import Credentials

    key = cache_key(SECRET.encode(), Credentials(api_key="demo-alice-key"), None)
    lease = f"{NAMESPACE}:lease:{key}"
    gateway = start_gateway(
        upstream.url,
        cache_url=redis_url,
        cache_secret=SECRET,
        cache_timeout=SLOW_MACHINE_REDIS_TIMEOUT,
    )
    # The gateway's own Redis store, watched: `waiting` is set once it has found the lease held.
    redis_store = gateway.app.state.gateway.store.primary
    lease_held, waiting = redis_store.lease_held, threading.Event()

    async def watched_lease_held(key: str) -> bool:
        held: bool = await lease_held(key)
        if held:
            waiting.set()
        return held

    redis_store.lease_held = watched_lease_held
    client = redis_client(redis_url)
    client.set(lease, "crashed-holder", px=60_000)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(gateway.query, QUERY, ALICE_KEY)
        assert waiting.wait(timeout=30), "the gateway never waited on the lease"
        assert upstream.requests == []  # no fetch while the crashed process's lease stands
        client.pexpire(lease, 1)  # it expires
        assert "snap-alice-dev" in ids(answer.result(timeout=30))
    assert len(upstream.requests) == 1  # then it fetched itself
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
        assert process.poll() is None, f"redis-server on port {port} exited"
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
        # Back on Redis once the fallback window (1 s) is over: polled, never slept through.
        wait_for(lambda: gateway.http.get("/readyz").json()["cache"] == "redis", "back on Redis")
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

    gateway = start_gateway(
        upstream.url,
        cache_url=redis_url,
        cache_secret=SECRET,
        cache_timeout=SLOW_MACHINE_REDIS_TIMEOUT,
    )
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

    faulty.respond(200, "[]", delay=5.0)
    replicas = [
        start_gateway(
            faulty.url,
            cache_url=redis_url,
            cache_secret=SECRET,
            upstream_deadline=1.5,
            cache_stale_window=0,
            cache_timeout=SLOW_MACHINE_REDIS_TIMEOUT,
        )
        for _ in range(3)
    ]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda replica: replica.post(QUERY, ALICE_KEY).json(), replicas))
    assert [r["errors"][0]["extensions"]["code"] for r in results] == ["UPSTREAM_UNAVAILABLE"] * 3
    # One replica fetched and timed out; the others took its failure instead of trying again.
    assert len(faulty.received) == 1


class Replicas:
    """Two caches on one Redis, as two replicas have: `holder` takes the lease and runs
    `fetch`, held until the test calls `finish`; `waiter` waits on that lease (`waiting` is set
    once it has found it held)."""

    def __init__(self, redis_url: str) -> None:
        from snapgraph.cache import SnapshotCache
        from snapgraph.redis_store import RedisStore

        self.stores = [RedisStore.from_url(redis_url) for _ in range(2)]
        self.holder, self.waiter = (
            SnapshotCache(store, secret=SECRET.encode(), ttl=30, stale_window=0, lease_seconds=30)
            for store in self.stores
        )
        self.calls, self.fetching, self.waiting = 0, asyncio.Event(), asyncio.Event()
        self._outcome: asyncio.Future[list] = asyncio.get_running_loop().create_future()
        lease_held = self.stores[1].lease_held

        async def watched_lease_held(key: str) -> bool:
            held: bool = await lease_held(key)
            if held:
                self.waiting.set()
            return held

        self.stores[1].lease_held = watched_lease_held
        self.note_reads = 0  # how often the waiter has read the failure note
        get = self.stores[1].get

        async def watched_get(key: str) -> str | None:
            self.note_reads += key.startswith("failed:")
            return await get(key)

        self.stores[1].get = watched_get

    async def fetch(self) -> tuple[list, list]:
        self.calls += 1
        self.fetching.set()
        return await asyncio.shield(self._outcome), []

    def finish(self, items: list | None = None, error: Exception | None = None) -> None:
        if error is not None:
            self._outcome.set_exception(error)
        else:
            self._outcome.set_result(items or [])

    async def both_load(self, key: str, between: Callable[[], Awaitable[None]]) -> list:
        """The holder's load, then the waiter's; `between` runs once the waiter waits."""
        first = asyncio.ensure_future(self.holder.load(key, self.fetch, list_type=None))
        await asyncio.wait_for(self.fetching.wait(), 30)  # the holder has the lease
        second = asyncio.ensure_future(self.waiter.load(key, self.fetch, list_type=None))
        await asyncio.wait_for(self.waiting.wait(), 30)
        await between()
        return await asyncio.gather(first, second, return_exceptions=True)

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


async def test_a_failure_is_shared_even_when_the_holders_clock_is_behind(
    redis_url: str, clock: Clock
) -> None:
    """The waiter takes the holder's failure note as new however their wall clocks disagree
    (here the holder's runs 5 s behind the waiter's when it writes the note)."""
    from snapgraph.errors import UpstreamUnavailable

    replicas = Replicas(redis_url)

    async def holder_fails_with_its_clock_behind() -> None:
        clock.advance(-5)
        replicas.finish(error=UpstreamUnavailable())

    try:
        results = await replicas.both_load("list:{a}", holder_fails_with_its_clock_behind)
    finally:
        await replicas.close()
    assert [type(result) for result in results] == [UpstreamUnavailable] * 2
    assert replicas.calls == 1  # the waiter shared the failure instead of paying another timeout


async def test_a_failure_note_written_back_later_is_not_shared(
    redis_url: str, clock: Clock
) -> None:
    """Whoever can write to Redis, but lacks the secret, cannot make a user's requests fail by
    writing back a failure note copied a minute earlier: the waiter goes on waiting and
    shares the holder's answer."""
    copied = await _a_failure_note(redis_url)
    clock.advance(60)
    redis.Redis.from_url(redis_url).delete(NOTE_KEY)  # expired long since
    await _the_waiter_shares_the_answer_though(copied, redis_url)


async def test_a_failure_note_there_before_the_wait_began_is_not_shared(redis_url: str) -> None:
    """A note of a failure before this refresh began is old news: the waiter shares the
    answer of the fetch it waits on, not that failure."""
    note = await _a_failure_note(redis_url)
    redis.Redis.from_url(redis_url).set(NOTE_KEY, note, ex=30)  # there for the whole test
    await _the_waiter_shares_the_answer_though(note, redis_url)


NOTE_KEY = "snapgraph:failed:list:{a}"  # the failure note of the key these tests load


async def _the_waiter_shares_the_answer_though(note: str, redis_url: str) -> None:
    """The holder answers once the waiter has read `note` (written back as it waits) twice;
    the waiter must share that answer, not take the note for a failure."""
    replicas = Replicas(redis_url)

    async def write_back_then_answer() -> None:
        await replicas.stores[1].set("failed:list:{a}", note, 30)
        read_before = replicas.note_reads
        await wait_for_async(
            lambda: asyncio.sleep(0, result=replicas.note_reads >= read_before + 2),
            "the waiter's polls",
        )
        replicas.finish([["snap-1"]])

    try:
        results = await replicas.both_load("list:{a}", write_back_then_answer)
    finally:
        await replicas.close()
    assert [_row_count(result) for result in results] == [1, 1], results
    assert replicas.calls == 1


async def _a_failure_note(redis_url: str) -> str:
    """A failure note as a real failed fetch leaves it."""
    from snapgraph.errors import UpstreamUnavailable

    replicas = Replicas(redis_url)
    try:
        await replicas.both_load("list:{a}", _failing(replicas, UpstreamUnavailable()))
        note = await replicas.stores[0].get("failed:list:{a}")
    finally:
        await replicas.close()
    assert note is not None
    return note


def _failing(replicas: Replicas, error: Exception) -> Callable[[], Awaitable[None]]:
    async def fail() -> None:
        replicas.finish(error=error)

    return fail


def _row_count(result: object) -> object:
    """An entry's number of rows; an exception as itself."""
    rows = getattr(result, "items", None)
    return result if rows is None else len(rows)


async def test_a_planted_value_with_non_ascii_characters_is_ignored(redis_url: str) -> None:
    """A value nobody signed, even one the HMAC comparison cannot take as text, is ignored:
    the entry is fetched again and the failure note is no failure."""
    from snapgraph.cache import SnapshotCache
    from snapgraph.redis_store import RedisStore

    store = RedisStore.from_url(redis_url)
    cache = SnapshotCache(store, secret=SECRET.encode(), ttl=30, stale_window=0, lease_seconds=5)
    try:
        await store.set("list:{a}", "é.planted", 30)
        await store.set("failed:list:{a}", "é.planted", 30)

        async def fetch() -> tuple[list, list]:
            return [["snap-1"]], []

        entry = await cache.load("list:{a}", fetch, list_type=None)
    finally:
        await store.close()
    assert len(entry.items) == 1
