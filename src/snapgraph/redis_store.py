"""The shared cache in Redis: one node, a Redis Cluster, or a master watched by Sentinel.

`SNAPGRAPH_CACHE_URL` names the topology by its scheme (see redis_url.py):

    store = RedisStore.from_url(url, op_timeout=0.5)

redis-py speaks all three; aiocache's Redis backend (0.12.3, its latest release) builds its
own single-node connection pool and offers no lease, so the store talks to redis-py directly.
The credentials in the URL authenticate to the Redis nodes; sentinels are asked without
them (Sentinel's own `requirepass` is not supported yet).

Every key the cache hands us carries its Redis Cluster hash tag (`list:{digest}`), so one
user's entry, lease and failure note live in one slot: the lease's compare-and-delete script
touches one key, and a failover moves a user's keys together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from snapgraph.cache_backends import StoreFailure
from snapgraph.redis_url import RedisTarget, parse_redis_url

NAMESPACE = "snapgraph"
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def connect(target: RedisTarget, *, op_timeout: float) -> tuple[Any, tuple[Any, ...]]:
    """A redis-py asyncio client for the target, and the clients it leans on (the
    sentinels), which must be closed with it. Every socket wait is bounded by `op_timeout`,
    and retries are few: the cache falls back to the in-process store rather than make a
    caller wait on a Redis that hangs or is failing over."""
    sockets: dict[str, Any] = {
        "socket_timeout": op_timeout,
        "socket_connect_timeout": op_timeout,
        "ssl": target.tls,
    }
    common = {
        **sockets,
        "username": target.username,
        "password": target.password,
        "decode_responses": True,
        # A value that is not UTF-8 (planted: ours are) reads as text with U+FFFD in it, which
        # fails its signature: a miss the next fetch overwrites. Strict decoding would raise,
        # and the store would take Redis for down on every read of that key.
        "encoding_errors": "replace",
    }
    if target.topology == "cluster":
        nodes = [ClusterNode(host, port) for host, port in target.nodes]
        cluster = RedisCluster(
            startup_nodes=nodes,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), 2),
            require_full_coverage=False,
            **common,
        )
        return cluster, ()
    if target.topology == "sentinel":
        # redis-py leaves Sentinel.__init__ unannotated.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=sockets, **common
        )
        master = sentinel.master_for(target.service or "", db=target.db)
        return master, tuple(sentinel.sentinels)
    host, port = target.nodes[0]
    return redis.Redis(host=host, port=port, db=target.db, **common), ()


class RedisStore:
    """Shared by every gateway process that points at the same Redis; every key has a TTL."""

    def __init__(
        self,
        client: Any,
        *,
        op_timeout: float = 0.5,
        helpers: tuple[Any, ...] = (),
        gated: bool = False,
    ) -> None:
        self.redis = client
        self._helpers = list(helpers)  # clients closed with ours (a Sentinel's sentinels)
        # A bound on each call as a whole: redis-py's socket timeout bounds one read, and a
        # cluster client may retry or follow a redirect within one call.
        self.op_budget = 4 * op_timeout
        # `gated` (Redis Cluster): until a command succeeds, at first and after any failure,
        # commands go one at a time. redis-py's cluster client, on uvloop, breaks connections
        # when many commands arrive while it (re)discovers the cluster (seen with 50
        # concurrent first commands). Those waiting when one fails fail with it, at once.
        self._gate = asyncio.Lock() if gated else None
        self._proven = False
        self._failures = 0

    @classmethod
    def from_url(cls, url: str, *, op_timeout: float = 0.5) -> RedisStore:
        target = parse_redis_url(url)
        client, helpers = connect(target, op_timeout=op_timeout)
        gated = target.topology == "cluster"
        return cls(client, op_timeout=op_timeout, helpers=helpers, gated=gated)

    async def get(self, key: str) -> str | None:
        value: str | None = await self._run(
            lambda: _string_or_none(self.redis.get(_entry_key(key)))
        )
        return value

    async def set(self, key: str, value: str, ttl: float) -> None:
        # Milliseconds, so sub-second TTLs (failure notes) work.
        await self._run(lambda: self.redis.set(_entry_key(key), value, px=max(1, int(ttl * 1000))))

    async def acquire_lease(self, key: str, token: str, seconds: float) -> bool:
        lease = _lease_key(key)
        acquired = await self._run(
            lambda: self.redis.set(lease, token, nx=True, px=int(seconds * 1000))
        )
        return bool(acquired)

    async def lease_held(self, key: str) -> bool:
        return bool(await self._run(lambda: self.redis.exists(_lease_key(key))))

    async def release_lease(self, key: str, token: str) -> None:
        # Delete only our own lease: it may have expired and been taken by another process.
        await self._run(lambda: self.redis.eval(_RELEASE_SCRIPT, 1, _lease_key(key), token))

    async def status(self) -> str:
        await self._run(lambda: self.redis.ping())
        return "redis"

    def state(self) -> str:
        return "redis"

    async def close(self) -> None:
        await self.redis.aclose()
        for helper in self._helpers:
            await helper.aclose()

    async def _run(self, command: Callable[[], Awaitable[Any]]) -> Any:
        """Run one command, made only when it runs (a caller cancelled at the gate leaves
        no coroutine behind); the wait at the gate counts against the same budget."""
        if self._gate is None or self._proven:
            return await self._bounded(command)
        failures_seen = self._failures
        try:
            async with asyncio.timeout(self.op_budget):
                await self._gate.acquire()
        except TimeoutError as exc:
            raise StoreFailure("TimeoutError") from exc
        try:
            if self._failures != failures_seen:
                raise StoreFailure("an earlier command failed")
            result = await self._bounded(command)
            self._proven = True
            return result
        finally:
            self._gate.release()

    async def _bounded(self, command: Callable[[], Awaitable[Any]]) -> Any:
        try:
            async with asyncio.timeout(self.op_budget):
                return await command()
        except Exception as exc:
            # Whatever comes out of the client (a refusal, a timeout, a connection it
            # closed under us) is the cache failing, not the request: the caller falls back
            # to the in-process store.
            self._proven = False
            self._failures += 1
            raise StoreFailure(type(exc).__name__) from exc


async def _string_or_none(reply: Awaitable[Any]) -> Any:
    """A GET's reply; None, a miss, when the key holds another type (a list, a hash: planted,
    since we write strings only). The SET of the next fetch replaces it: it is no outage."""
    try:
        return await reply
    except redis.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE"):
            return None
        raise


def _entry_key(key: str) -> str:
    return f"{NAMESPACE}:{key}"


def _lease_key(key: str) -> str:
    return f"{NAMESPACE}:lease:{key}"
