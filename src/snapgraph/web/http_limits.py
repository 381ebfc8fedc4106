"""The HTTP server's own limits, from `Settings`: how long a client may take over a request's
line and headers (`http_header_timeout`) and over its body (`http_body_timeout`), how long it
may leave an answer unread (`http_body_timeout` again), how large the line and headers may be
(`http_max_header_bytes`), how long a connection may stay idle before its first request or
between two (`http_keepalive_timeout`), how many connections one process serves
(`http_max_connections`) and how many of them one client address may hold
(`http_max_connections_per_client`).

uvicorn bounds two of these itself (`timeout_keep_alive` between requests, `limit_concurrency`);
on its httptools protocol nothing bounds the rest: a client may take forever over a head,
httptools buffers a header of any size before it hands it on, an answer the client never
reads waits in memory for ever, and pipelined requests are read and queued without end.
`LimitedHttpToolsProtocol` bounds them. It is the only code that reaches inside uvicorn (the
protocol's parser callbacks and its per-connection and per-request state, alike in uvicorn
0.51 and 0.54); tests/test_http_limits.py pins it over real sockets. The body is bounded where
the app reads it, by `BodyTimeoutMiddleware` (create_app adds it).

    config = server_config(create_app(settings), settings, host="0.0.0.0", port=8000)
    uvicorn.Server(config).run()
"""

from __future__ import annotations

import asyncio
import functools
import http
import json
import socket
import struct
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from snapgraph.settings import Settings

REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
# What a connection answered early (a body refused by its declared length) reads and drops
# before it closes, within the header timeout: above the largest body the gateway takes.
LINGER_BYTES = 2 << 20
HEADERS_TOO_LARGE = "REQUEST_HEADER_FIELDS_TOO_LARGE"

# Requests a connection may have waiting behind the one in progress (HTTP/1.1 pipelining).
# Browsers never pipeline; a client that does gets these answered, the last one with
# `Connection: close`, and resends the rest on a new connection (RFC 9112, 9.3.2).
MAX_QUEUED_REQUESTS = 8

# What a request line adds to its method and target: two spaces, the version and CRLF; each
# header adds ": " and CRLF to its name and value; the head ends with one more CRLF.
_LINE_OVERHEAD = len(b"  HTTP/1.1\r\n")
_HEADER_OVERHEAD = len(b": \r\n")
_END_OVERHEAD = len(b"\r\n")
# SO_LINGER on, with no time to linger: closing the socket resets the connection.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

# Each server's open connections by client address (uvicorn's ServerState is one per server
# and lives as long as it does).
_PEERS: weakref.WeakKeyDictionary[ServerState, Counter[str]] = weakref.WeakKeyDictionary()


def server_config(app: Callable[..., Any] | str, settings: Settings, **overrides: Any) -> Config:
    """uvicorn's `Config` for `app`, with the server's limits from `settings`; `overrides` are
    any other `uvicorn.Config` arguments (host, port, log_level, factory, workers...).

        server_config(app, settings, host=settings.host, port=settings.port)
    """
    options: dict[str, Any] = {
        "http": limited_protocol(ConnectionLimits.of(settings)),
        # The gateway serves no WebSocket; an upgraded connection would leave this protocol,
        # and its limits, behind.
        "ws": "none",
        # Annotated int by uvicorn, used as a delay for `loop.call_later`: a float works.
        "timeout_keep_alive": settings.http_keepalive_timeout,
        # uvicorn counts the connection that asks among those open (503 when the count
        # reaches the limit): one more, so that exactly http_max_connections are served.
        "limit_concurrency": settings.http_max_connections + 1,
        **overrides,
    }
    return uvicorn.Config(app, **options)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may take: seconds before its first byte (`idle_timeout`) and over
    a request's line and headers once begun (`head_timeout`), bytes of those (`max_head_bytes`),
    seconds with an answer the client takes none of (`write_timeout`), and how many
    connections its client address may hold (`max_per_client`, 0: any number)."""

    head_timeout: float
    max_head_bytes: int
    idle_timeout: float
    write_timeout: float
    max_per_client: int

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            head_timeout=settings.http_header_timeout,
            max_head_bytes=settings.http_max_header_bytes,
            idle_timeout=settings.http_keepalive_timeout,
            write_timeout=settings.http_body_timeout,
            max_per_client=settings.http_max_connections_per_client,
        )


def limited_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """The protocol class to hand uvicorn (`Config(http=...)`): `LimitedHttpToolsProtocol`
    with `limits` bound. A partial, not a class made on the fly: `serve --workers` pickles
    the config into each worker, and pickle finds a partial's class by its name."""
    # uvicorn only ever calls it with keyword arguments (server.py's create_protocol).
    return cast(type[asyncio.Protocol], functools.partial(LimitedHttpToolsProtocol, limits=limits))


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with each connection's share of the server bounded.

    - Client address: past `max_per_client` connections open from one address, a new one is
      closed as it opens, never counted among the server's.
    - Idle: a connection that has sent nothing is closed after `idle_timeout`, as uvicorn
      closes one idle between requests.
    - Head deadline: from a request's first byte (a blank line before it counts) until its
      headers are complete; past it the connection is closed.
    - Head size: the request line and headers over `max_head_bytes` are answered 431 in the
      gateway's error shape. Counted as bytes arrive, so at most one read (256 KiB) more is
      buffered: httptools would hold a header of any size whole before handing it on.
    - A request answered before its body is all in (a 404 or 415 to a POST) is the
      connection's last: the rest of its body would otherwise trickle in with no deadline.
    - Pipelining: past `MAX_QUEUED_REQUESTS` requests waiting behind the one in progress, no
      more are taken: those are answered, the last with `Connection: close`. uvicorn queues
      all it reads, and reads on after each answer however many wait: a client sending
      requests and never reading their answers held gigabytes.
    - Unread answers: when the client takes no byte of what is waiting to be sent for
      `write_timeout`, the connection is dropped with it. Any byte the kernel cannot take at
      once counts as waiting (uvicorn lets 64 KiB wait unnoticed, and a connection closing
      with bytes unsent never ends); a slow client that keeps taking some is never cut.

    Refusing a head stops reading requests: the answer is written, the sending side shut, and
    what the client still sends is read and dropped, up to `max_head_bytes` more and within
    the deadline, then the connection is closed. Closing at once, with the client's bytes
    unread, would send a reset, which may reach the client before the answer does (RFC 9112,
    9.6).
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        self._peer: str | None = None  # the client address this connection is counted under
        self._read_timer: asyncio.TimerHandle | None = None  # idle, head or linger deadline
        self._write_timer: asyncio.TimerHandle | None = None
        # In a head or between requests, not in a body: what arrives belongs to a head.
        self._in_head = True
        self._head_begun = False  # a byte of the current head has come: its deadline runs
        # Bytes that arrived since the head began. It may miss part of the read in which the
        # head began (after a body), never count a byte of a body: when a head completes
        # within a read, on_headers_complete counts it exactly.
        self._head_bytes = 0
        self._trailer_bytes = 0
        self._taking = True  # False once no more requests are read (refused, or too many)
        self._dropped = 0
        # Requests taken and not yet answered: the one in progress and those waiting.
        self._unanswered: list[RequestResponseCycle] = []

    # asyncio's protocol interface

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self._count_peer():
            # Not one of the server's connections: it never takes a place among them.
            self.connections.discard(self)
            self._taking = False
            transport.close()
            return
        # pause_writing from the first byte the kernel will not take, not past uvicorn's
        # 64 KiB (see the class docstring); resume_writing once nothing waits.
        transport.set_write_buffer_limits(high=0)
        self._arm_read_timer(self._limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        self._disarm_write_timer()
        self._uncount_peer()
        self._tell_unanswered()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._taking:
            self._drop(data)
            return
        if self._in_head:
            self._head_bytes += len(data)
            self._begin_head()
        super().data_received(data)
        if self._in_head and self._head_bytes > self._limits.max_head_bytes:
            self._refuse_head()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes(self.transport.get_write_buffer_size())

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm_write_timer()

    # httptools' parser callbacks (uvicorn's, extended)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begin_head()  # a head that began within a read that ended a body

    def on_headers_complete(self) -> None:
        self._disarm_read_timer()
        self._head_begun = False
        self._in_head = False
        self._head_bytes = 0
        self._trailer_bytes = 0
        if not self._taking:
            return  # a request pipelined behind a refused one: never run
        if self._head_size() > self._limits.max_head_bytes:
            self._refuse_head()
            return
        if len(self.pipeline) >= MAX_QUEUED_REQUESTS:
            self._take_no_more()
            return
        super().on_headers_complete()
        self._unanswered = [c for c in self._unanswered if not c.response_complete]
        self._unanswered.append(self.cycle)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
            return
        # A chunked body's trailers: httptools reports them as headers, and uvicorn would
        # append each to the request's headers with no bound (150 MB of trailer lines made
        # 2.3 GB). The gateway reads none: dropped, and counted against the head's cap.
        self._trailer_bytes += len(name) + len(value) + _HEADER_OVERHEAD
        if self._trailer_bytes > self._limits.max_head_bytes:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self._taking:  # a request not taken has no cycle of its own to take it
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._taking:
            return
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0

    # uvicorn's callback once an answer is written

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The latest request answered (none pipelined behind it) while its body is still
        # coming: answered early, and the rest would trickle in with no deadline.
        if (
            self._taking
            and self.cycle.response_complete
            and not self._in_head
            and not self.transport.is_closing()
        ):
            self._linger()

    # The limits: the client's address

    def _count_peer(self) -> bool:
        """Count this connection under its client's address; False if that has its share."""
        share = self._limits.max_per_client
        if share == 0 or self.client is None:
            return True
        peers = _PEERS.setdefault(self.server_state, Counter())
        address = self.client[0]
        if peers[address] >= share:
            return False
        peers[address] += 1
        self._peer = address
        return True

    def _uncount_peer(self) -> None:
        if self._peer is None:
            return
        peers = _PEERS[self.server_state]
        peers[self._peer] -= 1
        if peers[self._peer] <= 0:
            del peers[self._peer]
        self._peer = None

    # The limits: the head

    def _begin_head(self) -> None:
        if self._taking and not self._head_begun:
            self._head_begun = True
            self._arm_read_timer(self._limits.head_timeout)

    def _head_size(self) -> int:
        """The request line and headers as sent (give or take optional whitespace)."""
        line = len(self.parser.get_method()) + len(self.url) + _LINE_OVERHEAD
        headers = sum(len(name) + len(value) + _HEADER_OVERHEAD for name, value in self.headers)
        return line + headers + _END_OVERHEAD

    def _refuse_head(self) -> None:
        if not self._taking or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request's answer is still being written: a 431 would cut into it.
            self.transport.close()
            return
        self.transport.write(self._head_too_large())
        self._linger()

    def _head_too_large(self) -> bytes:
        message = (
            f"The request line and headers are larger than {self._limits.max_head_bytes} bytes."
        )
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
        self._taking = False
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self._read_timer is None:
            self._arm_read_timer(self._limits.head_timeout)

    def _drop(self, data: bytes) -> None:
        # Up to LINGER_BYTES are read and dropped before the close: a client that answers
        # only once its whole body is sent (httpx, curl) would otherwise meet a reset instead
        # of the 400 or 401 the gateway wrote, when its body was refused unread.
        self._dropped += len(data)
        if self._dropped > max(self._limits.max_head_bytes, LINGER_BYTES):
            self.transport.close()

    def _arm_read_timer(self, seconds: float) -> None:
        self._disarm_read_timer()
        self._read_timer = self.loop.call_later(seconds, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    # The limits: pipelining

    def _take_no_more(self) -> None:
        """Take no more requests: those waiting are answered, the last one closing."""
        self._taking = False
        self.cycle.keep_alive = False  # the last one taken, waiting: nothing follows it

    def _tell_unanswered(self) -> None:
        """Tell every request taken and unanswered that the client is gone. uvicorn tells the
        latest (`self.cycle`) alone: one in progress ahead of pipelined ones would wake from
        waiting to write and write to a closed transport, which uvloop answers with a
        RuntimeError, logged with its traceback as an ERROR for a client that merely left."""
        for cycle in self._unanswered:
            if not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
        self._unanswered = []

    # The limits: unread answers

    def _watch_writes(self, waiting: int) -> None:
        self._disarm_write_timer()
        self._write_timer = self.loop.call_later(
            self._limits.write_timeout, self._check_writes, waiting
        )

    def _disarm_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _check_writes(self, waited: int) -> None:
        """Drop the connection unless the client took some of what was waiting (`waited`
        bytes) since the last check; like nginx's send_timeout, a deadline on progress."""
        self._write_timer = None
        waiting = self.transport.get_write_buffer_size()
        if waiting < waited:
            self._watch_writes(waiting)
        else:
            self._reset()

    def _reset(self) -> None:
        """Drop the connection with a reset, discarding what waits to be sent, the kernel's
        share too. close() would wait for those bytes to go first, and a plain close of the
        socket would leave it to the kernel until they did: neither happens."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.transport.abort()


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
