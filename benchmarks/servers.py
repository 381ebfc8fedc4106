"""Upstreams for the benchmark, each run as its own process.

python benchmarks/servers.py reference PORT USERS PER_USER
    the reference upstream; users key-000, key-001, ... with PER_USER snapshots each
python benchmarks/servers.py sink PORT
    answers 200 to anything (an OTLP collector that keeps nothing, for the tracing rows)
python benchmarks/servers.py stub PORT PER_USER [LATENCY_MS]
    a stub REST service that accepts any X-API-Key and answers PER_USER generated
    snapshots for it, rendered once per key (as a compiled service with its own cache
    would): the fast baseline every gateway is compared with, and for the memory row
    10,000 distinct users without 10,000 users in a database
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from functools import lru_cache

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from snapgraph.reference.app import create_reference_app
from snapgraph.reference.data import Dataset


def stub_app(per_user: int, latency: float = 0.0) -> Starlette:
    @lru_cache(maxsize=1024)
    def body_for(key: str) -> bytes:
        user = hashlib.sha256(key.encode()).hexdigest()[:12]
        return json.dumps(
            [
                {
                    "id": f"snap-{user}-{n}",
                    "name": f"{user} snapshot {n}",
                    "status": "ready",
                    "source_vm_id": f"vm-{user}",
                    "snapshot_type": "full",
                    "type": "user",
                    "vcpu_count": 2,
                    "memory_mb": 2048,
                    "size_bytes": 3 * 2**30 + n,
                    "is_public": False,
                    "created_at": "2026-11-20T08:30:00Z",
                    "updated_at": "2026-11-20T08:30:00Z",
                }
                for n in range(per_user)
            ]
        ).encode()

    async def snapshots(request: Request) -> Response:
        key = request.headers.get("x-api-key")
        if not key:
            return Response(b'{"detail":"Not authenticated"}', status_code=401)
        if latency:
            await asyncio.sleep(latency)
        if request.query_params.get("type") == "system":
            return Response(b"[]", media_type="application/json")  # no public ones here
        return Response(body_for(key), media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    return Starlette(routes=[Route("/v1/snapshots", snapshots), Route("/health", health)])


def sink_app() -> Starlette:
    async def accept(request: Request) -> Response:
        await request.body()
        return Response(b"")

    return Starlette(
        routes=[Route("/health", accept), Route("/v1/traces", accept, methods=["POST"])]
    )


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "sink":
        app = sink_app()
    elif kind == "reference":
        users, per_user = int(sys.argv[3]), int(sys.argv[4])
        app = create_reference_app(Dataset.generated(users=users, per_user=per_user))
    else:
        latency = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0
        app = stub_app(int(sys.argv[3]), latency)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
