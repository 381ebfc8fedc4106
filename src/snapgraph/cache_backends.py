"""Where cache entries live, behind one small `Store` interface.

- `MemoryStore`: in-process, bounded by entries and by bytes (LRU), expiring by TTL. Ours
  rather than aiocache's SimpleMemoryCache: that one has no bound, and bounding it meant
  overriding its private methods (and it schedules a timer per key for expiry).
- `RedisStore` (redis_store.py): one Redis node, a Redis Cluster or a Sentinel-watched master,
  shared by every gateway process; it also offers the lease (`SET NX PX`) that lets one
  process fetch while the others wait.
- `FailoverStore`: Redis first; when Redis fails, the in-process store for a short while,
  then Redis again, so a flapping Redis degrades the gateway instead of breaking it.

Values are JSON text (never pickle): whoever can write to a shared Redis must not be able to
run code in the gateway. (The cache keeps decoded entries frozen, so that readers who share
one cannot change it: see cache.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from snapgraph.errors import ConfigError

logger = logging.getLogger("snapgraph.cache")


class StoreFailure(Exception):
    """A shared store failed (refused, timed out, broke a connection); its message is the
    underlying error's type name, never a message that may carry an address or a secret."""


_STORE_ERRORS = (StoreFailure, OSError, asyncio.TimeoutError)
REDIS_MISSING = "names a Redis, but redis-py is not installed: pip install 'snapgraph[redis]'"


class Store(Protocol):
    """The cache's storage: text values with a TTL, plus a lease for cross-process fetches."""

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float) -> None: ...
    async def acquire_lease(self, key: str, token: str, seconds: float) -> bool: ...
    async def lease_held(self, key: str) -> bool: ...
    async def release_lease(self, key: str, token: str) -> None: ...
    async def status(self) -> str: ...
    def state(self) -> str: ...
    async def close(self) -> None: ...


class MemoryStore:
    """In-process, bounded; its lease always succeeds (the in-process single flight suffices).

    Values are text, counted by length: a value larger than the whole bound is not kept.
    """

    def __init__(self, max_entries: int, max_bytes: int = 128 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._values: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._values)

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> str | None:
        held = self._values.get(key)
        if held is None:
            return None
        expires_at, value = held
        if time.monotonic() >= expires_at:
            self._drop(key)
            return None
        self._values.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        self._drop(key)
        if len(value) > self.max_bytes:
            return
        self._values[key] = (time.monotonic() + ttl, value)
        self._bytes += len(value)
        while len(self._values) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._values)))

    def _drop(self, key: str) -> None:
        held = self._values.pop(key, None)
        if held is not None:
            self._bytes -= len(held[1])

    async def acquire_lease(self, key: str, token: str, seconds: float) -> bool:
        return True

    async def lease_held(self, key: str) -> bool:
        return False

    async def release_lease(self, key: str, token: str) -> None:
        return None

    async def status(self) -> str:
        return "memory"

    def state(self) -> str:
        """What the store is, from what it knows (no I/O)."""
        return "memory"

    async def close(self) -> None:
        self._values.clear()
        self._bytes = 0


class FailoverStore:
    """Redis while it answers; the in-process store for `retry_after` seconds after it fails."""

    def __init__(self, primary: Store, fallback: Store, *, retry_after: float = 1.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_after = retry_after
        self._down_until = 0.0
        # Which store granted each lease: it is released there, even if Redis failed (or
        # came back) in between, so another replica is not left polling a forgotten lease.
        self._lease_stores: dict[tuple[str, str], Store] = {}

    @property
    def degraded(self) -> bool:
        return time.monotonic() < self._down_until

    async def get(self, key: str) -> str | None:
        value: str | None = await self._call("get", key)
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._call("set", key, value, ttl)

    async def acquire_lease(self, key: str, token: str, seconds: float) -> bool:
        store: Store = self.fallback if self.degraded else self.primary
        try:
            acquired = await store.acquire_lease(key, token, seconds)
        except _STORE_ERRORS as exc:
            self._mark_down(exc)
            store = self.fallback
            acquired = await store.acquire_lease(key, token, seconds)
        if acquired:
            self._lease_stores[(key, token)] = store
        return acquired

    async def lease_held(self, key: str) -> bool:
        return bool(await self._call("lease_held", key))

    async def release_lease(self, key: str, token: str) -> None:
        store = self._lease_stores.pop((key, token), None)
        if store is None:
            await self._call("release_lease", key, token)
            return
        if store is self.primary and self.degraded:
            return  # the lease expires by itself; asking a hung Redis would cost another wait
        try:
            await store.release_lease(key, token)
        except _STORE_ERRORS as exc:
            self._mark_down(exc)  # the lease expires by itself on a Redis that failed

    async def status(self) -> str:
        try:
            await self.primary.status()
        except _STORE_ERRORS:
            self._mark_down()
            return "degraded"
        self._down_until = 0.0
        return "redis"

    def state(self) -> str:
        """ "degraded" while serving from the in-process store after a Redis error."""
        return "degraded" if self.degraded else "redis"

    async def close(self) -> None:
        await self.primary.close()
        await self.fallback.close()

    async def _call(self, method: str, *args: Any) -> Any:
        if not self.degraded:
            try:
                return await getattr(self.primary, method)(*args)
            except _STORE_ERRORS as exc:
                self._mark_down(exc)
        return await getattr(self.fallback, method)(*args)

    def _mark_down(self, exc: BaseException | None = None) -> None:
        if not self.degraded:
            logger.warning(
                "Redis cache unavailable (%s); serving from the in-process cache for %.1fs",
                _failure_name(exc),
                self.retry_after,
            )
        self._down_until = time.monotonic() + self.retry_after


def _failure_name(exc: BaseException | None) -> str:
    if exc is None:
        return "ping failed"
    return str(exc) if isinstance(exc, StoreFailure) else type(exc).__name__


def build_store(
    cache_url: str, *, max_entries: int, max_bytes: int = 128 << 20, timeout: float = 0.5
) -> Store:
    """The store a `SNAPGRAPH_CACHE_URL` names: memory://, or Redis (any topology) with an
    in-process fallback; `timeout` bounds each Redis command."""
    memory = MemoryStore(max_entries, max_bytes)
    if cache_url == "memory://":
        return memory
    try:
        from snapgraph.redis_store import RedisStore
    except ImportError:
        raise ConfigError("SNAPGRAPH_CACHE_URL", REDIS_MISSING, None) from None
    return FailoverStore(RedisStore.from_url(cache_url, op_timeout=timeout), memory)
