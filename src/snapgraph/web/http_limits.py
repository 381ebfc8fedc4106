"""The HTTP server's own limits, from `Settings`: how long a client may take over a request's
line and headers (`http_header_timeout`) and over its body (`http_body_timeout`), how large
the line and headers may be (`http_max_header_bytes`), how long an idle keep-alive connection
stays open (`http_keepalive_timeout`) and how many connections one process serves
(`http_max_connections`).

uvicorn bounds the last two itself (`timeout_keep_alive`, `limit_concurrency`); on its
httptools protocol nothing bounds the head: a client may take forever over it, and httptools
buffers a header of any size before it hands it on. `LimitedHttpToolsProtocol` bounds both.
It is the only code that reaches inside uvicorn (the protocol's parser callbacks and its
per-connection state, alike in uvicorn 0.51 and 0.54); tests/test_http_limits.py pins
it over real sockets. The body is bounded where the app reads it, by `BodyTimeoutMiddleware`
(create_app adds it).

    config = server_config(create_app(settings), settings, host="0.0.0.0", port=8000)
    uvicorn.Server(config).run()
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from snapgraph.settings import Settings

REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
HEADERS_TOO_LARGE = "REQUEST_HEADER_FIELDS_TOO_LARGE"

# What a request line adds to its method and target: two spaces, the version and CRLF; each
# header adds ": " and CRLF to its name and value; the head ends with one more CRLF.
_LINE_OVERHEAD = len(b"  HTTP/1.1\r\n")
_HEADER_OVERHEAD = len(b": \r\n")
_END_OVERHEAD = len(b"\r\n")


def server_config(app: Callable[..., Any] | str, settings: Settings, **overrides: Any) -> Config:
    """uvicorn's `Config` for `app`, with the server's limits from `settings`; `overrides` are
    any other `uvicorn.Config` arguments (host, port, log_level, factory, workers...).

        server_config(app, settings, host=settings.host, port=settings.port)
    """
    options: dict[str, Any] = {
        "http": limited_protocol(HeadLimits.of(settings)),
        # Annotated int by uvicorn, used as a delay for `loop.call_later`: a float works.
        "timeout_keep_alive": settings.http_keepalive_timeout,
        # uvicorn counts the connection that asks among those open (503 when the count
        # reaches the limit): one more, so that exactly http_max_connections are served.
        "limit_concurrency": settings.http_max_connections + 1,
        **overrides,
    }
    return uvicorn.Config(app, **options)


@dataclass(frozen=True)
class HeadLimits:
    """How long a request's line and headers may take once begun, and how many bytes they
    may hold in all."""

    timeout: float
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> HeadLimits:
        return cls(timeout=settings.http_header_timeout, max_bytes=settings.http_max_header_bytes)


def limited_protocol(limits: HeadLimits) -> type[asyncio.Protocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`): `LimitedHttpToolsProtocol`
    with `limits` bound. A partial, not a class made on the fly: `serve --workers` pickles
    the config into each worker, and pickle finds a partial's class by its name."""
    # uvicorn only ever calls it with keyword arguments (server.py's create_protocol).
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpToolsProtocol, limits=limits))


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size cap on each request's head.

    - Deadline: from the connection's start (for its first request) or a request's first byte
      (for the next ones) until its headers are complete; past it the connection is closed.
      Between requests uvicorn's keep-alive timeout applies instead.
    - Size: the request line and headers over `max_bytes` are answered 431 in the gateway's
      error shape. Counted as bytes arrive, so at most one read (256 KiB) more is buffered:
      httptools would hold a header of any size whole before handing it on.
    - A request answered before its body is all in (a 404 or 415 to a POST) is the
      connection's last: the rest of its body would otherwise trickle in with no deadline.

    Refusing stops reading requests: the answer is written, the sending side shut, and what
    the client still sends is read and dropped, up to `max_bytes` more and within the
    deadline, then the connection is closed. Closing at once, with the client's bytes unread,
    would send a reset, which may reach the client before the answer does (RFC 9112, 9.6).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None
        # In a head or between requests, not in a body: what arrives belongs to a head.
        self._in_head = True
        # Bytes that arrived since the head began. It may miss part of the read in which the
        # head began (after a body), never count a byte of a body: when a head completes
        # within a read, on_headers_complete counts it exactly.
        self._head_bytes = 0
        self._lingering = False  # nothing more is read as requests: see the class docstring
        self._dropped = 0

    # asyncio's protocol interface

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._drop(data)
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self._limits.max_bytes:
            self._refuse_head()

    # httptools' parser callbacks (uvicorn's, extended)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the first request's runs from the connection's start
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._in_head = False
        self._head_bytes = 0
        if self._lingering:
            return  # a request pipelined behind a refused one: never run
        if self._head_size() > self._limits.max_bytes:
            self._refuse_head()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._lingering:  # a refused request has no cycle to take it
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._lingering:
            return
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    # uvicorn's callback once an answer is written

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The latest request answered (none pipelined behind it) while its body is still
        # coming: answered early, and the rest would trickle in with no deadline.
        if self.cycle.response_complete and not self._in_head and not self.transport.is_closing():
            self._linger()

    # The limits

    def _head_size(self) -> int:
        """The request line and headers as sent (give or take optional whitespace)."""
        line = len(self.parser.get_method()) + len(self.url) + _LINE_OVERHEAD
        headers = sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers)
        return line + headers + _END_OVERHEAD

    def _refuse_head(self) -> None:
        if self._lingering or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request's answer is still being written: a 431 would cut into it.
            self.transport.close()
            return
        self.transport.write(self._head_too_large())
        self._linger()

    def _head_too_large(self) -> bytes:
        message = f"The request line and headers are larger than {self._limits.max_bytes} bytes."
        body = error_body(message, HEADERS_TOO_LARGE)
        status = http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
        head = [b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        return b"".join(head) + body

    def _linger(self) -> None:
        self._lingering = True
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self._head_timer is None:
            self._arm_head_timer()

    def _drop(self, data: bytes) -> None:
        self._dropped += len(data)
        if self._dropped > self._limits.max_bytes:
            self.transport.close()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_timer = self.loop.call_later(self._limits.timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class BodyTimeoutMiddleware:
    """Bounds the time a request's body may take to arrive: `seconds` from the app's call (the
    headers are in) until the last chunk, counted only while the app waits for one. Past it
    the app is cancelled (its own `except Exception` cannot catch that) and the client gets
    408 in the gateway's error shape, with `Connection: close`; if an answer had begun, the
    connection is just closed (uvicorn closes an answer the app left unfinished).

    Pure ASGI, inside RequestIdMiddleware so that the 408 has a request id and an access line:

        app.add_middleware(BodyTimeoutMiddleware, seconds=30)
    """

    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        deadline = asyncio.get_running_loop().time() + self.seconds
        try:
            async with asyncio.timeout(None) as body_deadline:
                bounded = _bounded_receive(receive, body_deadline, deadline)
                await self.app(scope, bounded, tracked_send)
        except TimeoutError:
            if not body_deadline.expired():
                raise  # the app's own
            if not started:
                await send_request_timeout(send, self.seconds)


def _bounded_receive(receive: Receive, timeout: asyncio.Timeout, deadline: float) -> Receive:
    """`receive`, with `timeout` set to `deadline` while the app waits for a body chunk, until
    the last one has come."""
    body_done = False

    async def bounded() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()  # only a disconnect is left to wait for: no deadline
        timeout.reschedule(deadline)
        try:
            message = await receive()
        finally:
            if not timeout.expired():  # an expiring one is cancelling the app: let it
                timeout.reschedule(None)
        body_done = message["type"] != "http.request" or not message.get("more_body", False)
        return message

    return bounded


async def send_request_timeout(send: Send, seconds: float) -> None:
    body = error_body(f"The request body did not arrive within {seconds:g} s.", REQUEST_TIMEOUT)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (b"connection", b"close"),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": http.HTTPStatus.REQUEST_TIMEOUT.value,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": body})


def error_body(message: str, code: str) -> bytes:
    """The gateway's error shape: `{"errors": [{"message": ..., "extensions": {"code": ...}}]}`."""
    error = {"message": message, "extensions": {"code": code}}
    return json.dumps({"errors": [error]}, separators=(",", ":")).encode()
