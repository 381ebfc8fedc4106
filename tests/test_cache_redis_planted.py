"""Whatever someone with access to Redis leaves under a user's keys, the cache goes on: a
lease without an expiry (or whose expiry is kept reset) holds a load one lease at most, and
a value that is not text of ours is a miss that the next fetch overwrites, not an outage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import pytest
import redis

from conftest import SLOW_MACHINE_REDIS_TIMEOUT
from snapgraph.cache import SnapshotCache
from snapgraph.cache_backends import FailoverStore, build_store

pytestmark = pytest.mark.redis
SECRET = b"test-cache-secret"
KEY = "list:{a}"
LEASE = f"snapgraph:lease:{KEY}"
ENTRY = f"snapgraph:{KEY}"


class Fetch:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> tuple[list[Any], list[Any]]:
        self.calls += 1
        return [["snap-1"]], []


def cache_on(redis_url: str, lease_seconds: float = 5) -> tuple[SnapshotCache, FailoverStore]:
    store = build_store(redis_url, max_entries=10, timeout=SLOW_MACHINE_REDIS_TIMEOUT)
    assert isinstance(store, FailoverStore)
    cache = SnapshotCache(store, secret=SECRET, ttl=30, stale_window=0, lease_seconds=lease_seconds)
    return cache, store


@contextmanager
def lease_kept_alive(client: redis.Redis) -> Iterator[None]:
    """Someone resets the lease's expiry to a second, every 100 ms, until the block ends."""
    done = threading.Event()

    def keep() -> None:
        while not done.wait(0.1):
            client.set(LEASE, "someone else", px=1000)

    client.set(LEASE, "someone else", px=1000)
    keeper = threading.Thread(target=keep, daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()


@pytest.mark.parametrize("planted", ["without an expiry", "with an expiry kept reset"])
async def test_a_planted_lease_holds_a_load_one_lease_at_most(redis_url: str, planted: str) -> None:
    lease_seconds = 2.5
    cache, store = cache_on(redis_url, lease_seconds)
    client = redis.Redis.from_url(redis_url)
    fetch = Fetch()
    try:
        if planted == "without an expiry":
            client.set(LEASE, "planted")
        keeping = nullcontext() if planted == "without an expiry" else lease_kept_alive(client)
        with keeping:
            started = time.monotonic()
            entry = await cache.load(KEY, fetch, list_type=None)
            waited = time.monotonic() - started
    finally:
        await store.close()
        client.close()
    print(f"a lease {planted}: answered after {waited:.2f} s (one lease: {lease_seconds} s)")
    assert len(entry.items) == 1 and fetch.calls == 1
    # One lease and what a few Redis commands take; two leases was the old bound.
    assert waited < 2 * lease_seconds


@pytest.mark.parametrize("planted", ["bytes that are not UTF-8", "a list"])
async def test_a_planted_value_is_a_miss_that_the_next_fetch_overwrites(
    redis_url: str, planted: str
) -> None:
    cache, store = cache_on(redis_url)
    client = redis.Redis.from_url(redis_url)
    if planted == "a list":
        client.rpush(ENTRY, b"\xff planted")
    else:
        client.set(ENTRY, b"\xff\xfe.planted", ex=60)
    fetch = Fetch()
    try:
        first = await cache.load(KEY, fetch, list_type=None)
        state_after_miss = store.state()
        second = await cache.load(KEY, fetch, list_type=None)
        state_after_hit = store.state()
        stored = client.get(ENTRY)
    finally:
        await store.close()
        client.close()
    assert (state_after_miss, state_after_hit) == ("redis", "redis")  # no outage
    assert fetch.calls == 1 and first.items == second.items == (("snap-1",),)
    assert stored is not None and b'"format":2' in stored  # overwritten with our entry
