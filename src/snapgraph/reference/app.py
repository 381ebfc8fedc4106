"""The reference upstream: `GET /v1/snapshots` exactly as the contract describes it.

Data lives in an embedded SQLite database seeded from a `Dataset`. Authentication:
`Authorization: Bearer <token>` (OAuth2PasswordBearer) and/or `X-API-Key: <key>`. Every
credential sent must be valid and, when both are sent, name the same user; otherwise 401.
An invalid `type` gets FastAPI's 422 with the contract's `detail` shape.

Each request is recorded in `app.state.requests` (the tests count upstream calls there).

    uvicorn.run(create_reference_app(Dataset.demo()))
"""

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel

from snapgraph.reference.data import Dataset

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


class SnapshotInfo(BaseModel):
    """The contract's item schema (for /openapi.json); responses are sent as stored."""

    id: str
    name: str | None = None
    status: str
    source_vm_id: str | None = None
    snapshot_type: str
    type: str = "user"
    oci_image: str | None = None
    vcpu_count: int | None = None
    memory_mb: int | None = None
    size_bytes: int = 0
    is_public: bool = False
    last_error: str | None = None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class RecordedRequest:
    """What the upstream received: every request, before authentication."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


def open_database(dataset: Dataset) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.executescript(
        """
        CREATE TABLE credentials (kind TEXT, secret TEXT, user_id TEXT, PRIMARY KEY (kind, secret));
        CREATE TABLE snapshots (
            id TEXT PRIMARY KEY, owner TEXT, type TEXT NOT NULL, is_public INTEGER NOT NULL,
            created_at TEXT NOT NULL, body TEXT NOT NULL
        );
        """
    )
    for user in dataset.users:
        db.execute("INSERT INTO credentials VALUES ('token', ?, ?)", (user.token, user.id))
        db.execute("INSERT INTO credentials VALUES ('api_key', ?, ?)", (user.api_key, user.id))
    for row in dataset.snapshots:
        body = row.fields
        db.execute(
            "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
            (
                body["id"],
                row.owner,
                body.get("type", "user"),
                int(body.get("is_public", False)),
                body["created_at"],
                json.dumps(body),
            ),
        )
    db.commit()
    return db


def create_reference_app(dataset: Dataset | None = None, *, latency: float = 0.0) -> FastAPI:
    """The contract, implemented, over SQLite seeded with `dataset` (default: the demo).

    `latency` delays every answer by that many seconds, like a real service far away
    (the benchmarks and the coalescing tests use it).
    """
    db = open_database(dataset or Dataset.demo())
    app = FastAPI(
        title="VM sandbox snapshots (snapgraph reference upstream)",
        version="1.0.0",
        docs_url=None,
        redoc_url=None,
    )
    app.state.requests = []

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        recorded = RecordedRequest(
            request.url.path, dict(request.query_params), dict(request.headers)
        )
        app.state.requests.append(recorded)
        if latency:
            await asyncio.sleep(latency)
        return await call_next(request)

    def user_for(kind: str, secret: str) -> str | None:
        row = db.execute(
            "SELECT user_id FROM credentials WHERE kind = ? AND secret = ?", (kind, secret)
        ).fetchone()
        return None if row is None else str(row[0])

    async def authenticated_user(
        token: Annotated[str | None, Depends(oauth2_scheme)],
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> str:
        users = {
            user_for(kind, secret)
            for kind, secret in (("token", token), ("api_key", x_api_key))
            if secret is not None
        }
        if not users or None in users or len(users) > 1:
            raise HTTPException(
                status_code=401,
                detail="Not authenticated",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return users.pop()  # type: ignore[return-value]

    @app.get(
        "/v1/snapshots",
        response_model=list[SnapshotInfo],
        summary="List Snapshots",
        description="List user's own snapshots plus public system snapshots.",
    )
    async def list_snapshots(
        user: Annotated[str, Depends(authenticated_user)],
        type: Annotated[str | None, Query(pattern="^(user|system)$")] = None,
    ) -> Any:
        sql = "SELECT body FROM snapshots WHERE (owner = ? OR (type = 'system' AND is_public = 1))"
        params: list[str] = [user]
        if type is not None:
            sql += " AND type = ?"
            params.append(type)
        rows = db.execute(sql + " ORDER BY created_at DESC, id", params).fetchall()
        return JSONResponse([json.loads(body) for (body,) in rows])

    return app
