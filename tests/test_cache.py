"""The cache's own guarantees: keys, entries, bounds, single flight."""

from __future__ import annotations

import asyncio
import re

import pytest

from conftest import Clock, wait_for_async
from snapgraph.cache import CachedList, SnapshotCache, cache_key, frozen
from snapgraph.cache_backends import MemoryStore
from snapgraph.errors import UpstreamBadResponse, UpstreamUnavailable
from snapgraph.metrics import Metrics
from snapgraph.upstream.models import Credentials

SECRET = b"server-secret"


def test_key_depends_on_every_seed_and_hides_them() -> None:
    keys = {
        cache_key(SECRET, Credentials(authorization="Bearer a"), None),
        cache_key(SECRET, Credentials(authorization="Bearer b"), None),
        cache_key(SECRET, Credentials(api_key="Bearer a"), None),
        cache_key(SECRET, Credentials(authorization="Bearer a", api_key="k"), None),
        cache_key(SECRET, Credentials(authorization="Bearer a"), "user"),
        cache_key(SECRET, Credentials(authorization="Bearer a"), "system"),
        cache_key(b"other-secret", Credentials(authorization="Bearer a"), None),
    }
    assert len(keys) == 7
    # "list:" and a hex digest (in a hash tag's braces), nothing else: no credential text
    # can appear in a key.
    assert all(re.fullmatch(r"list:\{[0-9a-f]{64}\}", key) for key in keys)


def test_key_changes_with_the_row_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    import snapgraph.cache

    credentials = Credentials(api_key="k1")
    before = cache_key(SECRET, credentials, "user")
    # A release whose rows hold other fields never reads an older release's rows.
    monkeypatch.setattr(snapgraph.cache, "ROW_FIELDS", (*snapgraph.cache.ROW_FIELDS, "new"))
    assert cache_key(SECRET, credentials, "user") != before


def test_key_is_stable_for_the_same_caller_and_query() -> None:
    one = cache_key(SECRET, Credentials(api_key="k1"), "user")
    assert one == cache_key(SECRET, Credentials(api_key="k1"), "user")


def test_credentials_never_print() -> None:
    text = repr(Credentials(authorization="Bearer tok", api_key="key"))
    assert "tok" not in text and "key'" not in text


def test_entry_round_trips_and_garbage_is_a_miss() -> None:
    entry = CachedList(frozen([["a", 2**40]]), frozen([[1, None, ["id"]]]), 1000.5, "user", "f1")
    assert CachedList.loads(entry.dumps()) == entry
    assert CachedList.loads("not json") is None
    assert CachedList.loads('{"format": 99}') is None


def make_cache(
    store: MemoryStore | None = None, metrics: Metrics | None = None, **kwargs: float
) -> SnapshotCache:
    options = {"ttl": 30.0, "stale_window": 300.0, "lease_seconds": 5.0, **kwargs}
    store = store if store is not None else MemoryStore(100)
    return SnapshotCache(store, secret=SECRET, metrics=metrics, **options)


class CountingFetch:
    """A fetch that counts its calls; a `held` one answers only once `answer` is set."""

    def __init__(self, items: list | None = None, held: bool = False) -> None:
        self.calls = 0
        self.items = items if items is not None else [["a"]]
        self.error: Exception | None = None
        self.started = asyncio.Event()
        self.answer = asyncio.Event()
        if not held:
            self.answer.set()

    async def __call__(self) -> tuple[list, list]:
        self.calls += 1
        self.started.set()
        await self.answer.wait()
        if self.error is not None:
            raise self.error
        return [list(item) for item in self.items], []


def lookups(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("snapgraph_cache_lookups_total", {"result": result})
    return value or 0.0


async def test_concurrent_misses_of_one_key_fetch_once() -> None:
    metrics = Metrics()
    cache, fetch = make_cache(metrics=metrics), CountingFetch(held=True)
    loads = [asyncio.ensure_future(cache.load("k", fetch, list_type=None)) for _ in range(100)]

    async def all_waiting() -> bool:
        return lookups(metrics, "coalesced") == 99

    # The fetch answers once the 99 others wait on it: none of them can find it done.
    await wait_for_async(all_waiting, "99 loads waiting on the first one's fetch")
    fetch.answer.set()
    results = await asyncio.gather(*loads)
    assert fetch.calls == 1
    assert all(result.items == (("a",),) for result in results)


async def test_different_keys_never_share_a_fetch() -> None:
    cache = make_cache()
    stuck = CountingFetch([["user-0"]], held=True)
    first = asyncio.ensure_future(cache.load("k0", stuck, list_type=None))
    await stuck.started.wait()
    fetches = [CountingFetch([[f"user-{n}"]]) for n in range(1, 5)]
    async with asyncio.timeout(30):  # they never wait for k0's fetch, which never ends
        results = await asyncio.gather(
            *(cache.load(f"k{n}", fetch, list_type=None) for n, fetch in enumerate(fetches, 1))
        )
    assert [r.items for r in results] == [((f"user-{n}",),) for n in range(1, 5)]
    assert [f.calls for f in fetches] == [1] * 4
    assert not first.done()
    stuck.answer.set()
    assert (await first).items == (("user-0",),)


async def test_a_cached_value_cannot_be_changed_by_the_request_that_reads_it() -> None:
    cache, fetch = make_cache(), CountingFetch()
    first = await cache.load("k", fetch, list_type=None)
    with pytest.raises(TypeError):
        first.items[0][0] = "tampered"  # type: ignore[index]
    with pytest.raises(AttributeError):
        first.items.append(["injected"])  # type: ignore[attr-defined]
    second = await cache.load("k", fetch, list_type=None)
    assert second.items == (("a",),) and fetch.calls == 1


async def test_a_caller_hanging_up_does_not_cancel_the_shared_fetch() -> None:
    cache, fetch = make_cache(), CountingFetch(held=True)
    impatient = asyncio.ensure_future(cache.load("k", fetch, list_type=None))
    patient = asyncio.ensure_future(cache.load("k", fetch, list_type=None))
    await fetch.started.wait()  # both wait on the fetch (patient ran before it started)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    fetch.answer.set()  # only now: the fetch outlived the caller who left
    assert (await patient).items == (("a",),)
    assert fetch.calls == 1


async def test_errors_are_not_cached() -> None:
    cache, fetch = make_cache(), CountingFetch()
    fetch.error = UpstreamBadResponse()
    with pytest.raises(UpstreamBadResponse):
        await cache.load("k", fetch, list_type=None)
    fetch.error = None
    assert (await cache.load("k", fetch, list_type=None)).items == (("a",),)
    assert fetch.calls == 2


async def test_ttl_zero_turns_caching_off() -> None:
    store = MemoryStore(10)
    cache, fetch = make_cache(store, ttl=0), CountingFetch()
    await cache.load("k", fetch, list_type=None)
    await cache.load("k", fetch, list_type=None)
    assert fetch.calls == 2 and len(store) == 0


async def test_stale_entry_is_served_only_within_the_window(clock: Clock) -> None:
    cache, fetch = make_cache(ttl=10, stale_window=20), CountingFetch()
    await cache.load("k", fetch, list_type=None)
    fetch.error = UpstreamUnavailable()
    clock.advance(29)  # past the TTL, within the stale window
    stale = await cache.load("k", fetch, list_type=None)
    assert stale.stale and stale.items == (("a",),) and stale.age == 29
    clock.advance(1)  # TTL + window: over (the memory store still holds the entry)
    with pytest.raises(UpstreamUnavailable):
        await cache.load("k", fetch, list_type=None)
    assert fetch.calls == 3


async def test_memory_store_stays_at_its_bound_under_100k_users() -> None:
    store = MemoryStore(max_entries=1_000)
    for n in range(100_000):
        await store.set(f"user-{n}", "[]", ttl=60.0)
    assert len(store) == 1_000
    assert await store.get("user-99999") == "[]"
    assert await store.get("user-0") is None


async def test_memory_store_stays_within_its_byte_bound() -> None:
    store = MemoryStore(max_entries=100_000, max_bytes=1 << 20)
    for n in range(1_000):
        await store.set(f"user-{n}", "x" * 10_000, ttl=60.0)
    assert store.stored_bytes <= 1 << 20
    assert len(store) == (1 << 20) // 10_000
    assert await store.get("user-999") is not None and await store.get("user-0") is None
    await store.set("huge", "x" * (2 << 20), ttl=60.0)  # larger than the bound: not kept
    assert await store.get("huge") is None and await store.get("user-999") is not None


async def test_memory_store_entries_expire() -> None:
    store = MemoryStore(max_entries=10)
    await store.set("k", "v", ttl=0.0)
    assert await store.get("k") is None and store.stored_bytes == 0


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("a", "1", ttl=60.0)
    await store.set("b", "2", ttl=60.0)
    await store.get("a")
    await store.set("c", "3", ttl=60.0)
    assert [await store.get(k) for k in "abc"] == ["1", None, "3"]


async def test_a_forged_or_swapped_entry_is_a_miss() -> None:
    store = MemoryStore(10)
    cache = make_cache(store)
    alice, bob = CountingFetch([["alice-1"]]), CountingFetch([["bob-1"]])
    await cache.load("alice", alice, list_type=None)
    await cache.load("bob", bob, list_type=None)
    # Someone with write access to the store, but not the secret:
    await store.set("alice", (await store.get("bob")) or "", ttl=60.0)
    forged = CachedList([["planted"]], [], 1e12, None, "x").dumps()
    await store.set("bob", "0" * 64 + "." + forged, ttl=60.0)
    assert (await cache.load("alice", alice, list_type=None)).items == (("alice-1",),)
    assert (await cache.load("bob", bob, list_type=None)).items == (("bob-1",),)
    assert (alice.calls, bob.calls) == (2, 2)
