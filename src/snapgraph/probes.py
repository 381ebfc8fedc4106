"""Probes that keep a fleet up: liveness, readiness, and the background check behind them.

- `/livez` (and `/healthz`): the process answers.
- `/readyz`: this replica can serve: 200 unless it is draining (503 from the first SIGTERM,
  so the balancer stops sending before in-flight requests end). The upstream's and the
  cache's state are in the body, from recent traffic and a background check every
  `CHECK_SECONDS`, never from a call per probe: a blip of the upstream must not take every
  replica out of the balancer, leaving the stale answers each one holds unserved.

    {"status": "ready", "upstream": "up", "upstreamSeenSecondsAgo": 1.2,
     "upstreamCircuit": "closed", "cache": "redis"}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from snapgraph.cache_backends import Store
from snapgraph.upstream.client import UpstreamClient

logger = logging.getLogger("snapgraph.probes")

CHECK_SECONDS = 10.0


@dataclass
class Readiness:
    """Whether this replica takes traffic; `draining` is set on the first SIGTERM."""

    draining: bool = False


async def livez(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    readiness: Readiness = request.app.state.readiness
    gateway = request.app.state.gateway
    health = gateway.client.health
    body = {
        "status": "draining" if readiness.draining else "ready",
        "upstream": health.state,
        "upstreamSeenSecondsAgo": health.seen_seconds_ago,
        "upstreamCircuit": gateway.client.breaker.state,
        "cache": gateway.store.state(),
    }
    return JSONResponse(body, status_code=503 if readiness.draining else 200)


@contextlib.asynccontextmanager
async def background_check(client: UpstreamClient, store: Store) -> AsyncIterator[None]:
    """Every `CHECK_SECONDS`: ping the cache, and the upstream when no traffic has lately."""
    task = asyncio.create_task(_check_forever(client, store), name="snapgraph-probe")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _check_forever(client: UpstreamClient, store: Store) -> None:
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        try:
            await store.status()  # marks a failed Redis down (and back up when it answers)
            if time.monotonic() - client.health.seen_at > CHECK_SECONDS:
                await client.is_reachable()
        except Exception:  # a probe must never die; the next one tries again
            logger.exception("background check failed")
