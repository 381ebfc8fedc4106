"""What the cache keeps in process stays within its bounds, and what is too big to keep does
not cost the event loop: the sorted views kept beside a list are counted in the decoded
entries' bytes and go with their list; a long entry is decoded on a worker thread."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import tracemalloc
from typing import Any

import pytest

from snapgraph.cache import CachedList, SnapshotCache, Views, frozen
from snapgraph.cache_backends import MemoryStore
from snapgraph.graph.connection import VIEWS_PER_LIST, PageQuery, load_page
from snapgraph.graph.pages import Bounds, OrderKey, PageRequest, RowFilter
from snapgraph.lanes import SLICE
from snapgraph.metrics import Metrics
from snapgraph.reference.data import Dataset
from snapgraph.upstream.models import Credentials
from snapgraph.upstream.source import SnapshotList, SnapshotSource

SECRET = b"server-secret"
CURSOR_SECRET = b"cursor-secret"
VIEWS = 'snapgraph_cache_bytes{cache="views"}'


class ListClient:
    """An upstream client that answers every caller with the same items."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls = 0

    async def list_snapshots(self, credentials: Credentials, list_type: Any, **_: Any) -> list[Any]:
        self.calls += 1
        return [dict(item) for item in self.items]


def items(count: int) -> list[dict[str, Any]]:
    """`count` contract items of the reference upstream, sizes all different."""
    rows = Dataset.generated(users=count, per_user=1).snapshots[:count]
    return [{**row.fields, "size_bytes": n} for n, row in enumerate(rows)]


async def answer_of(cache: SnapshotCache, client: ListClient, user: str = "k") -> SnapshotList:
    source = SnapshotSource(
        client=client,  # type: ignore[arg-type]
        cache=cache,
        credentials=Credentials(api_key=user),
        request_id="r",
    )
    return await source.snapshots(None)


async def page(answer: SnapshotList, row_filter: RowFilter, order: Any = None) -> None:
    order = order or (OrderKey("size_bytes", descending=True),)
    query = PageQuery(None, PageRequest(first=10), order, row_filter)
    await load_page(answer, query, CURSOR_SECRET, max_size=100)


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def test_a_thousand_filters_over_one_list_stay_within_the_bound_and_go_with_it() -> None:
    """Each of 1,000 requests asks for another filter (a large one: 500 statuses), over one
    list of 2,000 items: the views kept are counted, never over the bound nor more than
    `VIEWS_PER_LIST`, and once the entry has expired the memory they took is back."""
    store = MemoryStore(100)
    cache = SnapshotCache(
        store, secret=SECRET, ttl=60, stale_window=0, lease_seconds=5, decoded_max_bytes=4 << 20
    )
    client = ListClient(items(2_000))
    statuses = frozenset(f"status-{n:04d}-" + "x" * 80 for n in range(500)) | {"ready"}
    gc.collect()
    tracemalloc.start()
    try:
        await answer_of(cache, client)
        gc.collect()
        before, before_rss = tracemalloc.get_traced_memory()[0], resident_bytes()
        most = 0
        for n in range(1_000):
            answer = await answer_of(cache, client)
            await page(answer, RowFilter(status=statuses, size_bytes=Bounds(n, None)))
            assert len(answer.views) <= VIEWS_PER_LIST
            assert cache._decoded.view_bytes == answer.views.nbytes
            assert cache._decoded._bytes <= cache._decoded.max_bytes
            most = max(most, cache._decoded.view_bytes)
        gc.collect()
        during, during_rss = tracemalloc.get_traced_memory()[0], resident_bytes()
        key = cache.key_for(Credentials(api_key="k"), None)
        await store.set(key, "expired", ttl=0)  # the entry expires from the store ...
        answer = await answer_of(cache, client)  # ... and this read fetches it again
        del answer
        gc.collect()
        after, after_rss = tracemalloc.get_traced_memory()[0], resident_bytes()
    finally:
        tracemalloc.stop()
    print(
        f"view bytes at most {most:,} (bound {cache._decoded.max_bytes:,}); traced memory: "
        f"{before:,} with the list, {during:,} after 1,000 filters, {after:,} once it expired; "
        f"resident: {before_rss:,}, {during_rss:,}, {after_rss:,}"
    )
    assert client.calls == 2
    assert 0 < most <= VIEWS_PER_LIST * (8 * 2_000 + 2048)
    assert cache._decoded.view_bytes == 0  # the new entry has no view yet
    assert abs(after - before) <= before / 10


async def test_views_count_against_the_bound_and_are_evicted_with_their_list() -> None:
    """With room for two lists' text and a few views, each list's views evict the least
    recently used list, views and all: what is counted never exceeds the bound."""
    cache = SnapshotCache(MemoryStore(100), secret=SECRET, ttl=30, stale_window=0, lease_seconds=5)
    client = ListClient(items(2_000))
    first = await answer_of(cache, client, "user-0")
    text = len((await cache.store.get(cache.key_for(Credentials(api_key="user-0"), None))) or "")
    cache._decoded.max_bytes = 2 * text + 4 * (8 * 2_000 + 1024)
    for user in range(6):
        answer = await answer_of(cache, client, f"user-{user}")
        for low in range(3):
            await page(answer, RowFilter(size_bytes=Bounds(low, None)))
            assert cache._decoded._bytes <= cache._decoded.max_bytes
    kept = [entry for _, entry in cache._decoded._entries.values()]
    assert 1 <= len(kept) <= 2
    assert cache._decoded.view_bytes == sum(entry.views.nbytes for entry in kept)
    # user-0's list was evicted, and its views with it: they count no more.
    assert first.views.nbytes > 0 and all(entry.views is not first.views for entry in kept)


async def test_equal_filters_share_one_view_under_a_digest() -> None:
    cache = SnapshotCache(MemoryStore(10), secret=SECRET, ttl=30, stale_window=0, lease_seconds=5)
    answer = await answer_of(cache, ListClient(items(50)))
    big = [f"status-{n}" * 20 for n in range(300)]
    await page(answer, RowFilter(status=frozenset(big)))
    await page(answer, RowFilter(status=frozenset(reversed(big))))  # the same filter
    assert len(answer.views) == 1
    names = list(answer.views._views)
    # A digest: none of the client's filter is kept as the view's key.
    assert len(names[0]) == 64 and "status" not in names[0]


async def test_metrics_show_the_bytes_of_the_views() -> None:
    metrics = Metrics()
    cache = SnapshotCache(
        MemoryStore(10), secret=SECRET, ttl=30, stale_window=0, lease_seconds=5, metrics=metrics
    )
    answer = await answer_of(cache, ListClient(items(1_000)))
    assert metrics.registry.get_sample_value("snapgraph_cache_bytes", {"cache": "views"}) == 0
    await page(answer, RowFilter())
    shown = metrics.registry.get_sample_value("snapgraph_cache_bytes", {"cache": "views"})
    print(f"{VIEWS} {shown}")
    assert shown == answer.views.nbytes >= 8 * 1_000


def test_views_are_kept_most_recently_used_last() -> None:
    views = Views()
    for name in "abc":
        views.put(name, name, nbytes=10, keep=2)
    assert views.get("a") is None and views.get("b") == "b" and views.nbytes == 20
    views.put("d", "d", nbytes=5, keep=2)  # "c" was used least recently
    assert views.get("c") is None and views.nbytes == 15


def test_a_long_entry_round_trips_line_by_line_and_an_older_one_line_entry_loads() -> None:
    rows = [[f"snap-{n}", n, None, 'é\n"x'] for n in range(2 * SLICE + 3)]
    entry = CachedList(frozen(rows), frozen([[1, None, ["id"]]]), 1000.5, "user", "f1")
    text = entry.dumps()
    assert text.count("\n") == 4  # the head, three slices of rows, the end
    assert CachedList.loads(text) == entry
    import orjson

    assert orjson.loads(text)["items"] == rows  # still one JSON value, for any reader
    one_line = orjson.dumps(orjson.loads(text)).decode()
    assert CachedList.loads(one_line) == entry
    empty = CachedList((), (), 1.0, None, "f2")
    assert CachedList.loads(empty.dumps()) == empty
    assert CachedList.loads(text.replace("\n]}", "\n]")) is None


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of every `CachedList.loads` call, recorded."""
    threads: list[int] = []
    real_loads = CachedList.loads.__func__  # type: ignore[attr-defined]

    def loads(cls: Any, text: str) -> Any:
        threads.append(threading.get_ident())
        return real_loads(cls, text)

    monkeypatch.setattr(CachedList, "loads", classmethod(loads))
    return threads


async def ticking(gaps: list[float], stop: asyncio.Event) -> None:
    """Ticks every 10 ms, noting each gap between two ticks."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def test_a_hit_on_an_entry_too_big_to_keep_decoded_decodes_off_the_event_loop(
    decodes: list[int],
) -> None:
    """30,000 items (some 7 MB stored) against a 1 MiB bound on decoded entries: every hit
    decodes it again, on a worker thread, while the event loop goes on ticking."""
    store = MemoryStore(10, max_bytes=64 << 20)
    cache = SnapshotCache(
        store, secret=SECRET, ttl=30, stale_window=0, lease_seconds=5, decoded_max_bytes=1 << 20
    )
    client = ListClient(items(30_000))
    await answer_of(cache, client)
    stored = await store.get(cache.key_for(Credentials(api_key="k"), None)) or ""
    started = time.perf_counter()
    CachedList.loads(stored.partition(".")[2])
    on_loop = time.perf_counter() - started
    decodes.clear()

    gaps: list[float] = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(ticking(gaps, stop))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    hits = await asyncio.gather(*(answer_of(cache, client) for _ in range(3)))
    hit_seconds = time.perf_counter() - started
    stop.set()
    await ticker
    print(
        f"stored {len(stored):,} chars; decode on the loop {on_loop * 1000:.0f} ms; three "
        f"concurrent hits {hit_seconds * 1000:.0f} ms, the longest tick gap meanwhile "
        f"{max(gaps) * 1000:.0f} ms"
    )
    assert client.calls == 1 and all(len(hit.rows) == 30_000 for hit in hits)
    assert len(decodes) == 1  # the three concurrent hits shared one decode ...
    assert threading.get_ident() not in decodes  # ... made on a worker thread


async def test_a_short_entry_is_kept_decoded(decodes: list[int]) -> None:
    store = MemoryStore(10)
    cache = SnapshotCache(store, secret=SECRET, ttl=30, stale_window=0, lease_seconds=5)
    client = ListClient(items(10))
    first = await answer_of(cache, client)
    key = cache.key_for(Credentials(api_key="k"), None)
    stored = await store.get(key) or ""
    await store.set(key, stored[:1] + stored[1:], 30)  # an equal text, as Redis gives
    cache._decoded.drop(key)
    for _ in range(3):
        assert (await answer_of(cache, client)).rows == first.rows
    assert decodes == [threading.get_ident()]  # once, on the loop: too short for a thread
