"""The HTTP server's own limits (web/http_limits.py), seen from a client over a real socket: a
head or body that stops coming, an idle connection, a head too large, too many connections.

What is asserted is what a client sees (an answer, a closed connection, a refusal while it is
still sending); a bound on a wait only catches a server that never acts. Times to the cut and
a bystander's latencies are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from conftest import Gateway, Upstream, wait_for
from snapgraph import Settings
from snapgraph.web.http_limits import HeadLimits, LimitedHttpToolsProtocol, server_config

# How long a test waits for the server to act before it calls the server stuck: far above
# every limit the tests set, so that it only ever catches a limit that does not hold.
BOUND = 15.0
QUICK = {"http_header_timeout": 0.5, "http_body_timeout": 0.5, "http_keepalive_timeout": 0.5}
SLOW_HEADS = {"http_header_timeout": 60.0}  # where the head's deadline must not be what acts
TYPENAME = json.dumps({"query": "{ __typename }"}).encode()


# --- a client that speaks HTTP/1.1 over a bare socket ---------------------------------------


class Client:
    """A connection to the gateway: bytes sent as given, responses read one at a time (what
    comes after one, a pipelined answer, is kept for the next), and the server's close."""

    def __init__(self, gateway: Gateway) -> None:
        host, port = gateway.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=BOUND)
        self._unread = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """Its status, headers (lower-cased names) and body (by Content-Length)."""
        while b"\r\n\r\n" not in self._unread:
            self._receive("a whole response head")
        head, _, self._unread = self._unread.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self._unread) < length:
            self._receive("the whole body")
        body, self._unread = self._unread[:length], self._unread[length:]
        return int(status_line.split()[1]), headers, body

    def status(self) -> int:
        return self.response()[0]

    def closed_by_server(self) -> float:
        """Seconds until the server closed the connection, sending nothing more first."""
        assert not self._unread, f"the server sent more: {self._unread[:100]!r}"
        started = time.perf_counter()
        try:
            assert self.sock.recv(1) == b"", "the server sent something instead of closing"
        except TimeoutError:
            pytest.fail(f"the connection was still open after {BOUND} s")
        return time.perf_counter() - started

    def _receive(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"closed before {what}: {self._unread[:100]!r}"
        self._unread += chunk


def post_head(path: str, length: int, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n".encode()
        + extra
        + b"\r\n"
    )


def get(path: str, extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: gateway\r\n".encode() + extra + b"\r\n"


def code_of(body: bytes) -> str:
    code: str = json.loads(body)["errors"][0]["extensions"]["code"]
    return code


@contextmanager
def bystander(url: str) -> Iterator[list[tuple[int, float]]]:
    """Another client posting `{ __typename }` in a loop: yields its (status, ms) answers."""
    answers: list[tuple[int, float]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                started = time.perf_counter()
                status = http.post("/graphql", json={"query": "{ __typename }"}).status_code
                answers.append((status, (time.perf_counter() - started) * 1000))
                time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield answers
    finally:
        stop.set()
        thread.join(timeout=60)
    latencies = [ms for _, ms in answers]
    if latencies:
        print(
            f"bystander: n={len(latencies)} p50={statistics.median(latencies):.1f} ms "
            f"max={max(latencies):.1f} ms"
        )


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.sock.close()


# --- the head: its deadline ----------------------------------------------------------------


def test_a_request_line_left_half_sent_is_cut(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **QUICK)
    with Client(gateway) as client:
        client.send(b"POST /gra")
        print(f"cut after {client.closed_by_server():.2f} s")


def test_a_connection_that_sends_nothing_is_cut(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **QUICK)
    with Client(gateway) as client:
        print(f"cut after {client.closed_by_server():.2f} s")


def trickle_until_closed(client: Client) -> float:
    """Send a byte every 50 ms (never idle, never done) until the server closes: seconds."""
    started = time.perf_counter()
    client.sock.settimeout(0.05)
    while time.perf_counter() - started < BOUND:
        try:
            assert client.sock.recv(1) == b"", "the server sent something instead of closing"
            return time.perf_counter() - started
        except TimeoutError:
            pass
        try:
            client.send(b"x")
        except (BrokenPipeError, ConnectionResetError):
            return time.perf_counter() - started
    pytest.fail(f"the connection was still open after {BOUND} s")


def test_headers_trickling_in_are_cut_though_bytes_keep_coming(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **QUICK)
    with Client(gateway) as client:
        client.send(b"GET /livez HTTP/1.1\r\nX-Slow: ")
        print(f"cut after {trickle_until_closed(client):.2f} s")


def test_a_second_request_that_stalls_on_a_kept_alive_connection_is_cut(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **{**QUICK, "http_keepalive_timeout": 60.0})
    with Client(gateway) as client:
        client.send(get("/livez"))
        assert client.status() == 200
        client.send(b"GET /liv")
        print(f"cut after {client.closed_by_server():.2f} s")


def test_an_idle_keep_alive_connection_is_closed(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **{**QUICK, "http_header_timeout": 60.0})
    with Client(gateway) as client:
        client.send(get("/livez"))
        assert client.status() == 200
        print(f"closed after {client.closed_by_server():.2f} s idle")


def test_requests_one_after_another_on_a_connection_are_all_served(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """The deadlines are per request: neither a head's nor the keep-alive's cuts a client that
    keeps sending requests, each whole, pipelined or one after another."""
    gateway = start_gateway(upstream.url, **QUICK)
    request = post_head("/graphql", len(TYPENAME)) + TYPENAME
    with Client(gateway) as client:
        client.send(request * 3)  # pipelined, in one write
        assert [client.status() for _ in range(3)] == [200] * 3
        for _ in range(8):  # 0.8 s in all: past every deadline, none of them exceeded
            time.sleep(0.1)
            client.send(request)
            assert client.status() == 200


# --- the body ------------------------------------------------------------------------------


def test_a_body_left_half_sent_is_answered_408_and_the_connection_closed(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **QUICK)
    with Client(gateway) as client:
        started = time.perf_counter()
        client.send(post_head("/graphql", len(TYPENAME)) + TYPENAME[:10])
        status, headers, body = client.response()
        print(f"answered after {time.perf_counter() - started:.2f} s")
        assert status == 408
        assert code_of(body) == "REQUEST_TIMEOUT"
        assert headers["content-type"] == "application/json"
        assert headers["x-request-id"]  # inside the request-id middleware: logged as any other
        client.closed_by_server()


def test_a_body_sent_in_time_in_pieces_is_served(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **{**QUICK, "http_body_timeout": 30.0})
    with Client(gateway) as client:
        client.send(post_head("/graphql", len(TYPENAME)))
        for byte in TYPENAME:
            client.send(bytes([byte]))
            time.sleep(0.01)  # each piece a read of its own: the deadline is the whole body's
        status, _, body = client.response()
        assert status == 200 and json.loads(body) == {"data": {"__typename": "Query"}}


def test_a_request_answered_before_its_body_arrived_is_not_held_by_the_rest(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """A 404 to a POST is answered without its body being read. The rest of that body, coming
    slowly, would hold the connection with no deadline (the head's and the body's are over,
    and each byte stops the keep-alive's), so that answer is the connection's last."""
    gateway = start_gateway(upstream.url, **{**QUICK, "http_body_timeout": 60.0})
    with Client(gateway) as client:
        client.send(post_head("/nowhere", 1000) + b"{")
        assert client.status() == 404
        print(f"closed after {trickle_until_closed(client):.2f} s")


# --- the head: its size --------------------------------------------------------------------


def test_a_64_kib_header_is_answered_431_and_the_connection_closed(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    with Client(gateway) as client:
        client.send(get("/livez", b"X-Big: " + b"a" * (64 << 10) + b"\r\n"))
        status, headers, body = client.response()
        assert status == 431
        assert code_of(body) == "REQUEST_HEADER_FIELDS_TOO_LARGE"
        assert headers["connection"] == "close"
        client.closed_by_server()


def test_a_64_kib_header_is_refused_before_it_ends(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """httptools holds a header whole before it hands it on: the bytes are counted as they
    come, not once the header is complete (this one never is)."""
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    with Client(gateway) as client:
        client.send(b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * (64 << 10))
        assert client.status() == 431
        client.closed_by_server()


def test_many_headers_over_the_cap_together_are_answered_431(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    many = b"".join(b"X-Header-%d: %s\r\n" % (n, b"v" * 100) for n in range(400))  # 47 KiB
    with Client(gateway) as client:
        client.send(get("/livez", many))
        assert client.status() == 431


def test_a_head_under_the_cap_with_a_large_body_is_served(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """Only the line and headers count: 30 KiB of headers pass, and 500 KB of body (JSON
    whitespace) arriving in the same reads as the head are not taken for more head."""
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    padded = b'{"query": "{ __typename }"' + b" " * 500_000 + b"}"
    headers = b"X-Big: " + b"a" * (30 << 10) + b"\r\n"
    with Client(gateway) as client:
        client.send(post_head("/graphql", len(padded), headers) + padded)
        status, _, body = client.response()
        assert status == 200, body


class BigSender:
    """A client sending one request line and a 32 MiB header, as fast as the server reads."""

    SIZE = 32 << 20

    def __init__(self, gateway: Gateway, payload: bytes) -> None:
        self.sock = Client(gateway).sock
        self.payload = payload
        self.sent = 0
        self.error: OSError | None = None
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        view = memoryview(self.payload)
        try:
            while self.sent < len(view):
                self.sent += self.sock.send(view[self.sent : self.sent + 65536])
        except OSError as exc:  # reset or broken pipe: refused while still sending
            self.error = exc

    def answer(self) -> tuple[bytes, bool]:
        """What the server said before it closed, and whether this client was still sending."""
        received = b""
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
                if len(received) >= 12:
                    break
        except ConnectionResetError:
            pass
        return received, self.thread.is_alive()


@contextmanager
def peak_memory_growth() -> Iterator[list[int]]:
    """This process's (the server's) resident memory, sampled: yields [growth at its peak]."""

    def resident() -> int:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before, peak, stop = resident(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.01):
            peak[0] = max(peak[0], resident() - before)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def test_32_mib_headers_are_refused_while_still_being_sent_and_others_are_served(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    payload = b"GET /livez HTTP/1.1\r\nX-Big: " + b"a" * BigSender.SIZE
    with ExitStack() as stack, peak_memory_growth() as growth, bystander(gateway.url) as answers:
        wait_for(lambda: answers, "the bystander's first answer")
        senders = [BigSender(gateway, payload) for _ in range(8)]  # at once
        for sender in senders:
            stack.callback(sender.sock.close)
            sender.thread.start()
        outcomes = [sender.answer() for sender in senders]
        for sender in senders:
            sender.thread.join(timeout=BOUND)
        wait_for(lambda: len(answers) >= 3, "three bystander answers")
    print(f"sent before the refusal: {[s.sent >> 10 for s in senders]} KiB")
    print(f"resident memory at its peak: +{growth[0] >> 20} MiB")
    for (received, still_sending), sender in zip(outcomes, senders, strict=True):
        # Answered 431 while still sending, or reset (the 431 may be lost to it): never read whole.
        assert received.startswith(b"HTTP/1.1 431") or not received, received[:100]
        assert still_sending or sender.error is not None
        assert sender.sent < len(payload)
    assert {status for status, _ in answers} == {200}


# --- connections ---------------------------------------------------------------------------


def test_half_sent_connections_beyond_the_limit_get_503_then_are_cut_and_service_resumes(
    start_gateway: Callable[..., Gateway], upstream: Upstream, clients: list[Client]
) -> None:
    gateway = start_gateway(
        upstream.url, http_max_connections=20, http_header_timeout=2.0, http_body_timeout=2.0
    )
    for _ in range(40):
        clients.append(Client(gateway))
        clients[-1].send(b"POST /graphql HTTP/1.1\r\nHost: gateway\r\n")
    started = time.perf_counter()
    answer = httpx.post(gateway.url + "/graphql", json={"query": "{ __typename }"}, timeout=BOUND)
    print(f"while 40 are half sent: {answer.status_code} in {time.perf_counter() - started:.3f} s")
    assert answer.status_code in (200, 503)
    cut = [client.closed_by_server() for client in clients]
    print(f"the 40 cut after at most {max(cut):.2f} s more")
    answer = httpx.post(gateway.url + "/graphql", json={"query": "{ __typename }"}, timeout=BOUND)
    assert answer.status_code == 200


def test_exactly_the_connection_limit_is_served_and_the_next_gets_503(
    start_gateway: Callable[..., Gateway], upstream: Upstream, clients: list[Client]
) -> None:
    """Idle connections count: with 4 open, a 5th is served; with 5 open, a 6th gets 503.
    (The server accepts in the order the client connected, so the idle ones are in first.)"""
    gateway = start_gateway(upstream.url, http_max_connections=5, **SLOW_HEADS)
    clients.extend(Client(gateway) for _ in range(4))
    request = post_head("/graphql", len(TYPENAME), b"Connection: close\r\n") + TYPENAME
    with Client(gateway) as fifth:
        fifth.send(request)
        assert fifth.status() == 200
    clients.append(Client(gateway))
    with Client(gateway) as sixth:
        sixth.send(request)
        assert sixth.status() == 503
    for client in clients:
        client.sock.close()

    def served() -> bool:
        answer = httpx.post(gateway.url + "/graphql", json={"query": "{ __typename }"})
        return answer.status_code == 200

    wait_for(served, "a request served once the idle connections closed")


# --- the configuration and what it relies on in uvicorn -----------------------------------


def test_server_config_carries_every_limit_and_pickles_for_the_workers() -> None:
    settings = Settings.from_environ(
        {},
        upstream_url="http://upstream.test",
        http_header_timeout=3.0,
        http_keepalive_timeout=2.5,
        http_max_header_bytes=8192,
        http_max_connections=7,
    )
    config = server_config("snapgraph.workers:worker_app", settings, factory=True, port=1)
    assert config.timeout_keep_alive == 2.5
    assert config.limit_concurrency == 8  # uvicorn refuses once its count reaches it
    assert config.port == 1 and config.factory
    # serve --workers spawns each worker with the config pickled: the limits must survive it.
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301  (bytes we just made)
    protocol: Any = copy.http
    assert protocol.func is LimitedHttpToolsProtocol
    assert protocol.keywords == {"limits": HeadLimits(timeout=3.0, max_bytes=8192)}


def test_uvicorn_still_has_every_hook_the_limited_protocol_extends() -> None:
    """The protocol overrides uvicorn's methods (parser callbacks, connection events) and is
    built with its constructor's arguments: a release that renamed one would leave a limit
    unenforced without an error. The tests above show each limit at work."""
    ours = {
        name
        for name, value in vars(LimitedHttpToolsProtocol).items()
        if callable(value) and not name.startswith("_")
    }
    assert ours - set(vars(HttpToolsProtocol)) == set()
    parameters = list(inspect.signature(HttpToolsProtocol.__init__).parameters)
    assert parameters == ["self", "config", "server_state", "app_state", "_loop"]
