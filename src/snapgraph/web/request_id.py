"""`X-Request-ID` on every response (the caller's when it is a sane token, else a fresh one),
and one access line per request.

A pure ASGI middleware, so the explorer page, probes, metrics and 404s carry it as well as
`/graphql`; the endpoint reads the same id from `request.state.request_id` for its logs, and
leaves what the access line should say of the operation in `request.state.access`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from snapgraph.logs import access_logger, log_access

HEADER = "X-Request-ID"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_from(headers: Headers) -> str:
    given = headers.get(HEADER, "")
    return given if _SANE.fullmatch(given) else uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500  # if the app fails before it answers

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_logger.isEnabledFor(logging.INFO):  # nothing to build when it is off
                log_access(
                    {
                        **state.get("access", {}),
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],  # never the query string: it may hold a document
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                )
