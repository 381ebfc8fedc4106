"""The per-user cache of upstream answers: its key, its entry format, and coalescing.

    cache = SnapshotCache(store, secret=secret, ttl=30, stale_window=300, lease_seconds=6)
    key = cache.key_for(credentials, "user")
    result = await cache.load(key, fetch=lambda: client.list_snapshots(...), list_type="user")

Guarantees, each pinned by tests:
- One user's entry is reachable only with that user's credentials (`cache_key`).
- Concurrent misses of one key make one upstream call: an in-process single flight, and
  across processes a Redis lease (`Store.acquire_lease`) that expires if its holder dies.
  Different keys never wait on each other.
- Entries are signed with the secret and bound to their key; a forged or swapped one is a miss.
- Only successful answers are stored. When the upstream is unavailable, an entry up to
  `stale_window` seconds past its TTL is served instead, flagged `stale`.
- An entry holds the answer as checked at fetch time (rows and a report of broken items), so
  a hit validates nothing. The last entries read are also kept decoded (bounded by bytes):
  when the store returns the very text that was verified before, a hit costs a dict lookup
  and a string comparison instead of an HMAC and a JSON parse. Decoded entries are frozen
  (tuples, read-only mappings): every request that hits one shares it.
- The views kept beside a decoded entry (`Views`: sorted pages of its rows) count against the
  same byte bound and go with it.
- A long text is verified and decoded on a worker thread, once for all the hits that want it
  at the same time: an entry too large to keep decoded costs each hit a decode, never the
  event loop's time.
- A wait on another process's lease lasts at most one lease (`lease_seconds`) in all, whatever
  is in Redis (a lease without an expiry, or one whose expiry someone keeps resetting).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

import orjson

from snapgraph.cache_backends import Store
from snapgraph.errors import UpstreamUnavailable
from snapgraph.lanes import SLICE, heavy_lane
from snapgraph.metrics import Metrics
from snapgraph.tracing import Tracing
from snapgraph.upstream.models import ROW_FIELDS, Credentials

logger = logging.getLogger("snapgraph.cache")

ENTRY_FORMAT = 2  # 2: checked rows and a broken-item report (1 held the raw items)
_POLL_SECONDS = 0.01
_FAILURE = "failed:"
_NOTE_SECONDS = 2.0  # how long a failure note lives in the store
# How far a note's stamp may lie behind the reader's clock: replicas' clocks may disagree by
# this much, and a note copied out of Redis and written back later is ignored beyond it.
_NOTE_SKEW_SECONDS = 10.0
_FAILED_ELSEWHERE = object()
# Texts up to this length (some 1,000 rows, a millisecond or two of parsing) are verified and
# decoded on the event loop; a thread's start and hand-back would cost as much.
_DECODE_INLINE_CHARS = 1 << 18


def cache_key(secret: bytes, credentials: Credentials, list_type: str | None) -> str:
    """The key of one caller's answer to one upstream query.

    Seeded by, in order: the caller's `Authorization` header, the caller's `X-API-Key`
    header, the upstream query (`type`), and the row layout (`ROW_FIELDS`: a release that
    changes it never reads an older release's rows from a shared Redis). It is an HMAC-SHA256
    under the server's secret, so a key reveals no credential and cannot be computed by
    someone who reads the cache. The digest sits in braces, a Redis Cluster hash tag: every
    key derived from this one (its lease, its failure note) lands in the same slot.
    """
    seed = orjson.dumps(
        ["list", credentials.authorization, credentials.api_key, list_type, ROW_FIELDS]
    )
    return "list:{" + hmac.new(secret, seed, hashlib.sha256).hexdigest() + "}"


class Views:
    """Views of one entry's rows (a sorted, filtered page source each), by name, the most
    recently used last. While the entry is kept decoded, their bytes count against the
    decoded entries' bound (`count_in`), so they go when it goes.

        view = entry.views.get(name)
        entry.views.put(name, view, nbytes=8 * len(view.rows) + 1024, keep=8)
    """

    def __init__(self) -> None:
        self._views: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self._counter: Callable[[int], None] | None = None

    def __len__(self) -> int:
        return len(self._views)

    def get(self, name: str) -> Any | None:
        held = self._views.get(name)
        if held is None:
            return None
        self._views.move_to_end(name)
        return held[0]

    def put(self, name: str, view: Any, *, nbytes: int, keep: int) -> None:
        """Keep `view` under `name`, and at most `keep` views in all (the least recently
        used go); `nbytes` is what keeping it costs, as the caller estimates it."""
        self._remove(name)
        while self._views and len(self._views) >= keep:
            self._remove(next(iter(self._views)))
        self._views[name] = (view, nbytes)
        self._grow(nbytes)

    def count_in(self, counter: Callable[[int], None] | None) -> None:
        """Report each change of `nbytes` to `counter` from now on (None: to no one)."""
        self._counter = counter

    def _remove(self, name: str) -> None:
        held = self._views.pop(name, None)
        if held is not None:
            self._grow(-held[1])

    def _grow(self, by: int) -> None:
        self.nbytes += by
        if self._counter is not None:
            self._counter(by)


def caller_identity(secret: bytes, credentials: Credentials) -> str:
    """Who is asking, for the circuit breaker: an HMAC of one credential's value, the API key
    when there is one, else the bearer token, so one key sent as `X-API-Key`, as a bearer
    token, or both (with a junk token beside it too), for any list type, is one caller: a
    caller must not pass for several by spelling one credential several ways."""
    value = credentials.api_key or _bearer_token(credentials.authorization)
    seed = orjson.dumps(["caller", value])
    return hmac.new(secret, seed, hashlib.sha256).hexdigest()


def _bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization


@dataclass(frozen=True)
class CachedList:
    """An upstream answer as cached: checked rows, the report of broken items, when and for
    which query they were fetched.

    `fetch_id` tells one fetch from the next (a waiting process spots a new entry by it);
    anything derived from this entry is kept with it, or carries the same `fetch_id`, so it
    expires with it: in `views`, what grows with the number of orders and filters asked for
    (counted in bytes, against the decoded entries' bound); in `derived`, one object per
    kind (the data source's answer over these rows), part of the entry's decoded form.
    """

    items: Sequence[Sequence[Any]]  # rows of JSON values, frozen: shared by every reader
    broken: Sequence[Any]
    fetched_at: float
    list_type: str | None
    fetch_id: str
    stale: bool = False
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    views: Views = field(default_factory=Views, compare=False, repr=False)

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.fetched_at)

    def dumps(self) -> str:
        """The entry as one JSON object, its items last and `SLICE` rows to a line (JSON
        allows the newlines): see `_entry_json` for why."""
        head = orjson.dumps(
            {
                "format": ENTRY_FORMAT,
                "fetched_at": self.fetched_at,
                "query": {"type": self.list_type},
                "fetch_id": self.fetch_id,
                "broken": self.broken,
            },
            default=_thawed,
        )
        slices = (self.items[start : start + SLICE] for start in range(0, len(self.items), SLICE))
        lines = b",\n".join(orjson.dumps(rows, default=_thawed)[1:-1] for rows in slices)
        return b"\n".join((head[:-1] + b',"items":[', lines, b"]}")).decode()

    @classmethod
    def loads(cls, text: str) -> CachedList | None:
        """Parse a stored entry; None for anything unreadable (treated as a miss)."""
        try:
            raw, slices = _entry_json(text)
            if raw["format"] != ENTRY_FORMAT:
                return None
            return cls(
                _joined(frozen_rows(rows) for rows in slices),
                frozen(raw["broken"]),
                float(raw["fetched_at"]),
                raw["query"]["type"],
                raw["fetch_id"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


def _entry_json(text: str) -> tuple[Any, Iterator[list[Any]]]:
    """A stored entry's JSON object, and its items: slices of rows, each parsed when taken.

    `dumps` writes the items `SLICE` rows to a line (no JSON string holds a raw newline, so
    the lines are ours), and each line is parsed on its own, on a worker thread for a long
    text: orjson holds the GIL for a whole parse, so a 27 MB text parsed at once would still
    stop the event loop for its 0.3 to 0.5 s, while a line takes a few milliseconds. And a
    slice is frozen before the next is parsed: its lists die young, instead of piling up
    for the garbage collector's full passes (each stopped the loop for 100 to 200 ms).
    A text on one line (as written before entries were split) is parsed whole."""
    head, newline, rest = text.partition("\n")
    if not newline:
        raw = orjson.loads(text)
        if not isinstance(raw["items"], list):
            raise TypeError("items")
        return raw, iter([raw["items"]])
    raw = orjson.loads(head + "]}")
    lines, _, last = rest.rpartition("\n")
    if last != "]}" or raw["items"] != []:
        raise ValueError("not a stored entry")
    return raw, (orjson.loads(f"[{line.removesuffix(',')}]") for line in lines.split("\n") if line)


def _joined(slices: Iterable[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(itertools.chain.from_iterable(slices))


# A fetch answers with the checked items (rows: lists of JSON scalars) and the report of
# broken ones (any JSON values).
Fetch = Callable[[], Awaitable[tuple[list[Any], list[Any]]]]


class SnapshotCache:
    """Serves upstream answers from a `Store`, fetching each missing key once."""

    def __init__(
        self,
        store: Store,
        *,
        secret: bytes,
        ttl: float,
        stale_window: float,
        lease_seconds: float,
        metrics: Metrics | None = None,
        decoded_max_bytes: int = 64 << 20,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        metrics = metrics or Metrics()
        lookups = metrics.cache_lookups
        # Bound once: labels() is a dict lookup under a lock, on every request otherwise.
        self._counted: dict[str, _Counted] = {
            result: lookups.labels(result=result)
            for result in ("hit", "miss", "coalesced", "shared", "stale")
        }
        if tracing is not None and tracing.enabled:
            # Each lookup also becomes an event on the current span; off, nothing is added.
            self._counted = {
                result: _TracedCount(counter, result, tracing)
                for result, counter in self._counted.items()
            }
        self._secret = secret
        self.ttl = ttl
        self.stale_window = stale_window
        self.lease_seconds = lease_seconds
        self._inflight: dict[str, asyncio.Future[CachedList]] = {}
        self._decoded = _DecodedEntries(decoded_max_bytes)
        # Decodes under way on a worker thread, by key: concurrent hits on one long text
        # share one decode (each would otherwise hold a decoded copy of it at once).
        self._decoding: dict[str, tuple[str, asyncio.Future[CachedList | None]]] = {}
        metrics.watch_view_bytes(lambda: self._decoded.view_bytes)

    def key_for(self, credentials: Credentials, list_type: str | None) -> str:
        """`cache_key` under this cache's secret (the one that also signs its entries)."""
        return cache_key(self._secret, credentials, list_type)

    def caller_of(self, credentials: Credentials) -> str:
        """`caller_identity` under this cache's secret."""
        return caller_identity(self._secret, credentials)

    async def load(
        self, key: str, fetch: Fetch, *, list_type: str | None, refresh: bool = False
    ) -> CachedList:
        """The entry for `key`: cached when fresh (unless `refresh`), else fetched once."""
        if self.ttl == 0:
            return _new_entry(*await fetch(), list_type)
        previous = await self._read(key)
        if previous is not None and previous.age < self.ttl and not refresh:
            self._counted["hit"].inc()
            return previous
        flight = self._inflight.get(key)
        if flight is None:
            self._counted["miss"].inc()
            flight = asyncio.ensure_future(self._refresh(key, fetch, list_type, previous))
            self._inflight[key] = flight
            flight.add_done_callback(lambda done: self._land(key, done))
        else:
            self._counted["coalesced"].inc()
        # shield: one caller hanging up must not cancel the fetch the others wait for.
        return await asyncio.shield(flight)

    def _land(self, key: str, flight: asyncio.Future[CachedList]) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        if not flight.cancelled():
            flight.exception()  # retrieved here, so no "never retrieved" warning if all left

    async def _read(self, key: str) -> CachedList | None:
        stored = await self.store.get(key)
        if stored is None:
            self._decoded.drop(key)  # expired or evicted from the store: so is its decoded form
            return None
        known = self._decoded.get(key, stored)
        if known is not None:
            return known
        entry = await self._decode(key, stored)
        if entry is not None:
            self._decoded.put(key, stored, entry)
        return entry

    async def _decode(self, key: str, stored: str) -> CachedList | None:
        """The stored text verified and decoded: a short one here, a long one on a worker
        thread (the HMAC releases the GIL; the parse takes it a line at a time), once for all
        the readers of that text at the time."""
        if len(stored) <= _DECODE_INLINE_CHARS:
            return self._verified(key, stored)
        under_way = self._decoding.get(key)
        if under_way is None or not (under_way[0] is stored or under_way[0] == stored):
            decode = asyncio.ensure_future(asyncio.to_thread(self._verified, key, stored))
            under_way = (stored, decode)
            self._decoding[key] = under_way
            decode.add_done_callback(lambda done: self._decoded_off_loop(key, done))
        # shield: a reader hanging up must not cancel the decode the others wait for.
        return await asyncio.shield(under_way[1])

    def _decoded_off_loop(self, key: str, decode: asyncio.Future[CachedList | None]) -> None:
        under_way = self._decoding.get(key)
        if under_way is not None and under_way[1] is decode:
            del self._decoding[key]
        if not decode.cancelled():
            decode.exception()  # retrieved here, so no "never retrieved" warning if all left

    def _verified(self, key: str, stored: str) -> CachedList | None:
        signature, _, text = stored.partition(".")
        if not self._signed_here(key, signature, text):
            logger.warning("ignoring a cache entry whose signature does not match its key")
            return None
        return CachedList.loads(text)

    async def _signed_text(self, key: str, entry: CachedList) -> str:
        """The entry as stored: signature, dot, JSON. For a long list each step takes some
        10 ms, so the event loop gets a turn between them (in the heavy lane); the HMAC, which
        releases the GIL, runs on a worker thread."""
        if len(entry.items) <= SLICE:
            text = entry.dumps()
            return f"{self._sign(key, text)}.{text}"
        async with heavy_lane():
            await asyncio.sleep(0)
            text = entry.dumps()
            await asyncio.sleep(0)
            signature = await asyncio.to_thread(self._sign, key, text)
            return f"{signature}.{text}"

    def _signed_here(self, key: str, signature: str, text: str) -> bool:
        # As bytes: compare_digest raises on a str with non-ASCII characters (a planted value).
        return hmac.compare_digest(signature.encode(), self._sign(key, text).encode())

    def _sign(self, key: str, text: str) -> str:
        """Binds a value to its key: whoever can write to a shared Redis but lacks the secret
        cannot plant or swap entries, not even by copying one user's entry to another's key."""
        return hmac.new(self._secret, f"{key}\n{text}".encode(), hashlib.sha256).hexdigest()

    async def _refresh(
        self, key: str, fetch: Fetch, list_type: str | None, previous: CachedList | None
    ) -> CachedList:
        token = secrets.token_hex(16)
        # The failure note already there is an older fetch's: any other is news to us.
        seen = await self._failure_note(key)
        # One lease in all, however often the lease changes hands: a holder's fetch ends
        # within it (the upstream deadline is shorter), and a lease planted without an expiry,
        # or whose expiry someone keeps resetting, must not hold anyone longer.
        give_up_at = time.monotonic() + self.lease_seconds
        while True:
            if await self.store.acquire_lease(key, token, self.lease_seconds):
                try:
                    # Another process may have stored a fresh entry and let go of its lease
                    # between our read and our lease: use it rather than fetch again.
                    stored = await self._read(key)
                    if stored is not None and _newer(stored, previous, self.ttl):
                        self._counted["shared"].inc()
                        return stored
                    # Or its fetch failed while we were on our way: share that outcome too.
                    if await self._failed_since(key, seen):
                        return self._stale_or_raise(previous, UpstreamUnavailable())
                    return await self._fetch_and_store(key, fetch, list_type, previous)
                finally:
                    await self.store.release_lease(key, token)
            landed = await self._wait_for_other_process(key, previous, seen, give_up_at)
            if isinstance(landed, CachedList):
                self._counted["shared"].inc()
                return landed
            if landed is _FAILED_ELSEWHERE:
                # The holder's fetch failed: share its outcome rather than pay another timeout.
                return self._stale_or_raise(previous, UpstreamUnavailable())
            if time.monotonic() >= give_up_at:
                break
        # The lease outlasted a lease, or kept changing hands without an entry: fetch anyway.
        return await self._fetch_and_store(key, fetch, list_type, previous)

    async def _wait_for_other_process(
        self, key: str, previous: CachedList | None, seen: str | None, until: float
    ) -> CachedList | object | None:
        """Poll until another process stores a new entry (returned), reports that its fetch
        failed (`_FAILED_ELSEWHERE`: a note other than `seen`), or drops its lease without
        either (None); or until `until` (None)."""
        while time.monotonic() < until:
            await asyncio.sleep(_POLL_SECONDS)
            entry = await self._read(key)
            if entry is not None and (previous is None or entry.fetch_id != previous.fetch_id):
                return entry
            if await self._failed_since(key, seen):
                return _FAILED_ELSEWHERE
            if not await self.store.lease_held(key):
                return None
        return None

    async def _fetch_and_store(
        self, key: str, fetch: Fetch, list_type: str | None, previous: CachedList | None
    ) -> CachedList:
        try:
            items, broken = await fetch()
        except UpstreamUnavailable as exc:
            await self._note_failure(key)
            return self._stale_or_raise(previous, exc)
        entry = _new_entry(items, broken, list_type)
        stored = await self._signed_text(key, entry)
        await self.store.set(key, stored, ttl=self.ttl + self.stale_window)
        self._decoded.put(key, stored, entry)
        return entry

    def _stale_or_raise(self, previous: CachedList | None, error: Exception) -> CachedList:
        if previous is not None and previous.age < self.ttl + self.stale_window:
            self._counted["stale"].inc()
            return replace(previous, stale=True)
        raise error

    async def _note_failure(self, key: str) -> None:
        """Tell processes waiting on our lease that the upstream failed (signed, short-lived).
        A waiter takes a note for a new failure when it differs from the one it saw as it
        began (each note has a random id): not by comparing times, since replicas' clocks
        disagree. The stamp only lets a reader ignore a note written back long after it was
        made (`_NOTE_SKEW_SECONDS`): the signature alone would let whoever can write to Redis
        replay an old failure at will.
        In-process waiters share our flight instead: a memory store needs no note."""
        if self.store.state() == "memory":
            return
        note = f"{secrets.token_hex(16)}:{time.time()!r}"
        signed = f"{self._sign(_FAILURE + key, note)}.{note}"
        await self.store.set(_FAILURE + key, signed, _NOTE_SECONDS)

    async def _failure_note(self, key: str) -> str | None:
        """The validly signed, recent failure note on `key`, if there is one."""
        if self.store.state() == "memory":
            return None  # notes are only written to a shared store
        stored = await self.store.get(_FAILURE + key)
        if stored is None:
            return None
        signature, _, note = stored.partition(".")
        if not self._signed_here(_FAILURE + key, signature, note):
            return None  # forged (or another secret's): no failure to share
        _, _, stamp = note.partition(":")
        try:
            recent = float(stamp) >= time.time() - _NOTE_SKEW_SECONDS
        except ValueError:
            return None
        return note if recent else None

    async def _failed_since(self, key: str, seen: str | None) -> bool:
        """Whether a fetch failed after `seen` (the note there when our refresh began) was
        read: a note is written per failure, so a different one is a later failure."""
        note = await self._failure_note(key)
        return note is not None and note != seen


class _Counted(Protocol):
    def inc(self) -> None: ...


class _TracedCount:
    """A lookup counter that also marks the lookup on the current span."""

    def __init__(self, counter: _Counted, result: str, tracing: Tracing) -> None:
        self._counter = counter
        self._result = result
        self._tracing = tracing

    def inc(self) -> None:
        self._counter.inc()
        self._tracing.cache_event(self._result)


def _newer(entry: CachedList, previous: CachedList | None, ttl: float) -> bool:
    fresh = entry.age < ttl
    return fresh and (previous is None or entry.fetch_id != previous.fetch_id)


def _new_entry(items: list[Any], broken: list[Any], list_type: str | None) -> CachedList:
    rows = frozen_rows(items)
    return CachedList(rows, frozen(broken), time.time(), list_type, secrets.token_hex(8))


def frozen_rows(rows: list[Any]) -> tuple[tuple[Any, ...], ...]:
    """Rows (lists of JSON scalars) as tuples: C-speed, since a row holds nothing mutable."""
    if not all(type(row) is list for row in rows):
        raise TypeError("cache entries hold rows: lists of JSON scalars")
    return tuple(map(tuple, rows))


def frozen(value: Any) -> Any:
    """A JSON value no caller can change: lists become tuples, objects read-only mappings."""
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    if isinstance(value, dict):
        return MappingProxyType({key: frozen(item) for key, item in value.items()})
    return value


def _thawed(value: Any) -> Any:
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"cannot store a {type(value).__name__} in a cache entry")


class _DecodedEntries:
    """The last entries read, decoded, each with the exact stored text it was verified from;
    bounded by bytes: the length of those texts (the decoded rows take a few times more) plus
    the bytes of the views kept beside them (`Views.nbytes`). An entry's views are counted
    from when it is put here until it is dropped; a view added to an entry held nowhere else
    lives only as long as the requests that hold that entry."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, CachedList]] = OrderedDict()
        self._bytes = 0
        self.view_bytes = 0

    def get(self, key: str, stored: str) -> CachedList | None:
        known = self._entries.get(key)
        # Identity first: the memory store hands back the very object it was given.
        if known is None or not (known[0] is stored or known[0] == stored):
            return None
        self._entries.move_to_end(key)
        return known[1]

    def put(self, key: str, stored: str, entry: CachedList) -> None:
        self.drop(key)
        if len(stored) > self.max_bytes:
            return
        self._entries[key] = (stored, entry)
        self._bytes += len(stored)
        entry.views.count_in(self._views_grew)
        self._views_grew(entry.views.nbytes)  # the views it has already; then evicts

    def drop(self, key: str) -> None:
        known = self._entries.pop(key, None)
        if known is not None:
            views = known[1].views
            views.count_in(None)
            self._bytes -= len(known[0]) + views.nbytes
            self.view_bytes -= views.nbytes

    def _views_grew(self, by: int) -> None:
        """Count `by` more bytes of views (fewer when negative), and drop the least recently
        used entries while over the bound (the entry whose views grew is usually the most
        recent: it goes last)."""
        self._bytes += by
        self.view_bytes += by
        while self._bytes > self.max_bytes:
            self.drop(next(iter(self._entries)))
