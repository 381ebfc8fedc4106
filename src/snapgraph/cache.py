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
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
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


@dataclass(frozen=True)
class CachedList:
    """An upstream answer as cached: checked rows, the report of broken items, when and for
    which query they were fetched.

    `fetch_id` tells one fetch from the next (a waiting process spots a new entry by it);
    anything derived from this entry (a view, a serialized GraphQL answer) is kept in
    `derived`, or carries the same `fetch_id`, so it expires with it.
    """

    items: Sequence[Sequence[Any]]  # rows of JSON values, frozen: shared by every reader
    broken: Sequence[Any]
    fetched_at: float
    list_type: str | None
    fetch_id: str
    stale: bool = False
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.fetched_at)

    def dumps(self) -> str:
        return orjson.dumps(
            {
                "format": ENTRY_FORMAT,
                "fetched_at": self.fetched_at,
                "query": {"type": self.list_type},
                "fetch_id": self.fetch_id,
                "items": self.items,
                "broken": self.broken,
            },
            default=_thawed,
        ).decode()

    @classmethod
    def loads(cls, text: str) -> CachedList | None:
        """Parse a stored entry; None for anything unreadable (treated as a miss)."""
        try:
            raw = orjson.loads(text)
            if raw["format"] != ENTRY_FORMAT or not isinstance(raw["items"], list):
                return None
            return cls(
                frozen_rows(raw["items"]),
                frozen(raw["broken"]),
                float(raw["fetched_at"]),
                raw["query"]["type"],
                raw["fetch_id"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


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
        lookups = (metrics or Metrics()).cache_lookups
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

    def key_for(self, credentials: Credentials, list_type: str | None) -> str:
        """`cache_key` under this cache's secret (the one that also signs its entries)."""
        return cache_key(self._secret, credentials, list_type)

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
            return None
        known = self._decoded.get(key, stored)
        if known is not None:
            return known
        signature, _, text = stored.partition(".")
        if not self._signed_here(key, signature, text):
            logger.warning("ignoring a cache entry whose signature does not match its key")
            return None
        entry = CachedList.loads(text)
        if entry is not None:
            self._decoded.put(key, stored, entry)
        return entry

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
        give_up_at = time.monotonic() + 2 * self.lease_seconds
        while time.monotonic() < give_up_at:
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
            landed = await self._wait_for_other_process(key, previous, seen)
            if isinstance(landed, CachedList):
                self._counted["shared"].inc()
                return landed
            if landed is _FAILED_ELSEWHERE:
                # The holder's fetch failed: share its outcome rather than pay another timeout.
                return self._stale_or_raise(previous, UpstreamUnavailable())
        # The lease kept changing hands without an entry landing: fetch without it.
        return await self._fetch_and_store(key, fetch, list_type, previous)

    async def _wait_for_other_process(
        self, key: str, previous: CachedList | None, seen: str | None
    ) -> CachedList | object | None:
        """Poll until another process stores a new entry (returned), reports that its fetch
        failed (`_FAILED_ELSEWHERE`: a note other than `seen`), or drops its lease without
        either (None). Never longer than a lease lasts: a lease written without an expiry
        must not block anyone."""
        until = time.monotonic() + self.lease_seconds
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
    bounded by the total length of those texts (the decoded form is a few times larger)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, CachedList]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str, stored: str) -> CachedList | None:
        known = self._entries.get(key)
        # Identity first: the memory store hands back the very object it was given.
        if known is None or not (known[0] is stored or known[0] == stored):
            return None
        self._entries.move_to_end(key)
        return known[1]

    def put(self, key: str, stored: str, entry: CachedList) -> None:
        self._drop(key)
        if len(stored) > self.max_bytes:
            return
        self._entries[key] = (stored, entry)
        self._bytes += len(stored)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        known = self._entries.pop(key, None)
        if known is not None:
            self._bytes -= len(known[0])
