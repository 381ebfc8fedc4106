"""The HTTP server's own limits (web/http_limits.py), seen from a client over a real socket: a
head or body that stops coming, an idle connection, a head too large, too many connections (in
all, or from one address), pipelined requests piling up, an answer the client never reads.

What is asserted is what a client sees (an answer, a closed connection, a refusal while it is
still sending); a bound on a wait only catches a server that never acts. Times to the cut and
a bystander's latencies are printed (`pytest -s`), never asserted.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import pickle
import select
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from conftest import Gateway, Upstream, wait_for
from snapgraph import Settings
from snapgraph.reference.data import Dataset
from snapgraph.web.http_limits import (
    MAX_QUEUED_REQUESTS,
    ConnectionLimits,
    LimitedHttpToolsProtocol,
    server_config,
)

# How long a test waits for the server to act before it calls the server stuck: far above
# every limit the tests set, so that it only ever catches a limit that does not hold.
BOUND = 15.0
QUICK = {"http_header_timeout": 0.5, "http_body_timeout": 0.5, "http_keepalive_timeout": 0.5}
SLOW_HEADS = {"http_header_timeout": 60.0}  # where the head's deadline must not be what acts
TYPENAME = json.dumps({"query": "{ __typename }"}).encode()


# --- a client that speaks HTTP/1.1 over a bare socket ---------------------------------------


class Client:
    """A connection to the gateway: bytes sent as given, responses read one at a time (what
    comes after one, a pipelined answer, is kept for the next), and the server's close.
    `source`: the client's own address (any of 127/8 is this machine's); `receive_buffer`:
    its socket's, in bytes (small for a client that reads nothing)."""

    def __init__(
        self, gateway: Gateway, source: str = "127.0.0.1", receive_buffer: int | None = None
    ) -> None:
        host, port = gateway.url.removeprefix("http://").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:  # before connecting: the window is agreed then
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.bind((source, 0))
        self.sock.settimeout(BOUND)
        self.sock.connect((host, int(port)))
        self._unread = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, pause: float = 0.0) -> tuple[int, dict[str, str], bytes]:
        """Its status, headers (lower-cased names) and body (by Content-Length); `pause`:
        seconds to wait between two reads of the body (a slow client)."""
        while b"\r\n\r\n" not in self._unread:
            self._receive("a whole response head")
        head, _, self._unread = self._unread.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(self._unread) < length:
            time.sleep(pause)
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

    def refused(self) -> bool:
        """Whether the server closed this connection without answering a request sent on it
        (the request may meet the close, and a reset)."""
        try:
            self.send(get("/livez"))
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True

    def dropped_by_server(self) -> float:
        """Seconds until the server dropped the connection, this client reading nothing of
        what it sent (a read would make room for more: the client would not be stalled)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        started = time.perf_counter()
        if not poller.poll(BOUND * 1000):
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


def test_a_connection_that_sends_nothing_is_closed_as_an_idle_keep_alive_one(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """Before its first byte a connection gets the keep-alive's grace, not a head's: a client
    opening connections to hold them costs each its place for 5 s (by default), not 10."""
    gateway = start_gateway(upstream.url, **{**QUICK, "http_header_timeout": 60.0})
    with Client(gateway) as client:
        print(f"cut after {client.closed_by_server():.2f} s")


def trickle_until_closed(client: Client, byte: bytes = b"x") -> float:
    """Send `byte` every 50 ms (never idle, never done) until the server closes: seconds."""
    started = time.perf_counter()
    client.sock.settimeout(0.05)
    while time.perf_counter() - started < BOUND:
        try:
            assert client.sock.recv(1) == b"", "the server sent something instead of closing"
            return time.perf_counter() - started
        except TimeoutError:
            pass
        try:
            client.send(byte)
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


def test_blank_lines_trickling_in_between_requests_are_cut(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """A blank line before a request is allowed (RFC 9112, 2.2): it begins no request in the
    parser, yet it is a byte of the next head, and starts its deadline. Each one stops the
    keep-alive's timer: this connection was held for ever."""
    gateway = start_gateway(upstream.url, **QUICK)
    with Client(gateway) as client:
        client.send(get("/livez"))
        assert client.status() == 200
        seconds = trickle_until_closed(client, b"\r\n")
        print(f"cut after {seconds:.2f} s")


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


# --- connections from one client address ---------------------------------------------------

# Neither deadline acts in these tests: the cap alone closes a connection.
PER_CLIENT = {
    "http_max_connections_per_client": 5,
    "http_header_timeout": 60.0,
    "http_keepalive_timeout": 60.0,
}


def test_a_connection_past_its_address_share_is_closed_while_the_others_are_served(
    start_gateway: Callable[..., Gateway], upstream: Upstream, clients: list[Client]
) -> None:
    gateway = start_gateway(upstream.url, http_max_connections=7, **PER_CLIENT)
    clients.extend(Client(gateway) for _ in range(5))
    for client in clients:
        client.send(get("/livez"))
        assert client.status() == 200
    for _ in range(5):  # closed as they open: none takes a place among the server's 7
        with Client(gateway) as sixth:
            started = time.perf_counter()
            assert sixth.refused()
    print(f"the sixth closed after {time.perf_counter() - started:.3f} s")
    with Client(gateway, source="127.0.0.2") as other:  # another address has its own share
        other.send(get("/livez"))
        assert other.status() == 200
    for client in clients:  # the first five are still served
        client.send(get("/livez"))
        assert client.status() == 200
    clients.pop().sock.close()

    def admitted() -> bool:
        with Client(gateway) as client:
            return not client.refused()

    wait_for(admitted, "a connection let in once one of the five closed")


def test_with_the_share_off_one_address_may_open_more(
    start_gateway: Callable[..., Gateway], upstream: Upstream, clients: list[Client]
) -> None:
    gateway = start_gateway(upstream.url, **{**PER_CLIENT, "http_max_connections_per_client": 0})
    clients.extend(Client(gateway) for _ in range(7))
    for client in clients:
        client.send(get("/livez"))
        assert client.status() == 200


# --- pipelining ----------------------------------------------------------------------------


def test_a_client_pipelining_past_the_queue_gets_the_first_answers_then_a_close(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """Requests waiting behind the one in progress are bounded: a client that sends 30 at
    once has the first ones answered, the last of them with `Connection: close`, and is to
    send the rest again on a new connection (RFC 9112, 9.3.2)."""
    gateway = start_gateway(upstream.url, **SLOW_HEADS)
    with Client(gateway) as client:
        client.send(get("/livez") * 30)  # one write: one read on the server's side
        answers = []
        for _ in range(30):
            status, headers, _ = client.response()
            answers.append(status)
            if headers.get("connection") == "close":
                break
        client.closed_by_server()
    print(f"answered {len(answers)} of 30 (1 in progress + {MAX_QUEUED_REQUESTS} waiting)")
    assert set(answers) == {200}
    assert len(answers) < 30


class PipeliningSender:
    """A client sending `count` copies of a request, pipelined, as fast as the server takes
    them, on a thread; it reads nothing (a small receive buffer: the answers back up at once)."""

    def __init__(self, gateway: Gateway, request: bytes, count: int) -> None:
        self.client = Client(gateway, receive_buffer=4096)
        self.payload = request * count
        self.sent = 0
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        view = memoryview(self.payload)
        try:
            while self.sent < len(view):
                self.sent += self.client.sock.send(view[self.sent : self.sent + 65536])
        except OSError:  # reset or broken pipe: cut while still sending (or timed out)
            pass


def test_a_pipelining_client_that_never_reads_is_cut_with_little_memory_taken(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """8 MB of `GET /livez`, pipelined, nothing read: uvicorn alone read them all, queued
    262,000 requests (+600 MB here; 2.5 GB in the review, from one client) and never cut the
    connection."""
    gateway = start_gateway(upstream.url, **{**SLOW_HEADS, "http_body_timeout": 1.0})
    request = get("/livez")
    with peak_memory_growth() as growth:
        sender = PipeliningSender(gateway, request, (8 << 20) // len(request))
        with sender.client:
            print(f"cut after {sender.client.dropped_by_server():.2f} s")
            sender.thread.join(timeout=BOUND)
    print(f"{sender.sent >> 10} KiB sent; resident memory at its peak: +{growth[0] >> 20} MiB")
    assert growth[0] < 100 << 20


# --- answers the client does not read ------------------------------------------------------

FIELDS = (
    "id name status sourceVmId snapshotType type ociImage vcpuCount memoryMb sizeBytes "
    "isPublic lastError createdAt updatedAt"
)
ITEMS = 10_000
ALIAS_BYTES = 3_000_000  # one alias of FIELDS over ITEMS items: 3.3 MB as JSON


def kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer grows to (net.ipv4.tcp_wmem's third value)."""
    with open("/proc/sys/net/ipv4/tcp_wmem", encoding="ascii") as values:
        return int(values.read().split()[2])


def large_answer(
    start_gateway: Callable[..., Gateway], start_upstream: Callable[..., Upstream], **settings: Any
) -> tuple[Gateway, bytes]:
    """A gateway, and a request whose answer is twice what the kernel buffers for a socket:
    more than the kernel can take for a client that reads nothing, so the rest waits in the
    server. `snapshots` aliased over a 10,000-item list: for a caller with a credential."""
    aliases = 1 + 2 * kernel_send_buffer_max() // ALIAS_BYTES
    upstream = start_upstream(Dataset.generated(1, per_user=ITEMS))
    values = aliases * (ITEMS + 100) * (len(FIELDS.split()) + 1)  # system snapshots; items
    gateway = start_gateway(upstream.url, max_result_values=values, **settings)
    query = "{ " + " ".join(f"a{n}: snapshots {{ {FIELDS} }}" for n in range(aliases)) + " }"
    body = json.dumps({"query": query}).encode()
    return gateway, post_head("/graphql", len(body), b"X-API-Key: key-000\r\n") + body


def test_an_answer_the_client_never_reads_is_dropped_after_the_write_timeout(
    start_gateway: Callable[..., Gateway], start_upstream: Callable[..., Upstream]
) -> None:
    """Nothing else would ever end it: the head and the body are in, the answer is being
    written. The connection is reset, so the client, reading nothing, sees the cut."""
    gateway, request = large_answer(
        start_gateway, start_upstream, http_body_timeout=1.0, http_keepalive_timeout=60.0
    )
    with Client(gateway, receive_buffer=4096) as client:
        client.send(request)
        print(f"dropped after {client.dropped_by_server():.2f} s unread")


def test_a_slow_reader_that_keeps_taking_the_answer_is_not_cut(
    start_gateway: Callable[..., Gateway], start_upstream: Callable[..., Upstream]
) -> None:
    """The write timeout bounds a stall, not the answer: at 64 KiB every 30 ms (2 MB/s at
    most) the server's share of the answer takes twice the timeout to go, yet it moves all
    the while (a deadline on the whole answer would cut this client)."""
    gateway, request = large_answer(start_gateway, start_upstream, http_body_timeout=1.5)
    with Client(gateway, receive_buffer=65536) as client:
        client.send(request)
        started = time.perf_counter()
        status, _, body = client.response(pause=0.03)
    print(f"{len(body) >> 20} MiB read in {time.perf_counter() - started:.1f} s")
    assert status == 200 and body.endswith(b"]}}")


class Recorder(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def server_errors() -> Iterator[list[logging.LogRecord]]:
    """What the server logs at ERROR or above (uvicorn's "Exception in ASGI application",
    with its traceback), while the block runs."""
    records: list[logging.LogRecord] = []
    handler = Recorder(records)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_a_client_gone_while_pipelined_answers_wait_is_no_error(
    start_gateway: Callable[..., Gateway], start_upstream: Callable[..., Upstream]
) -> None:
    """A large answer the client does not read, two requests pipelined behind it: the second
    waits to write when the connection is dropped. uvicorn told only the last that the
    client was gone; the second wrote to the closed transport, and uvloop's RuntimeError was
    logged with a 60-line traceback, once per such client."""
    gateway, request = large_answer(
        start_gateway, start_upstream, http_body_timeout=1.0, http_keepalive_timeout=60.0
    )
    with server_errors() as errors, Client(gateway, receive_buffer=4096) as client:
        client.send(request + get("/livez") * 2)
        print(f"dropped after {client.dropped_by_server():.2f} s unread")
        # The second woke when the connection went; a whole request on another one takes
        # longer than that wake-up.
        assert httpx.get(gateway.url + "/livez").status_code == 200
    assert not errors, [record.getMessage() for record in errors]


# --- the configuration and what it relies on in uvicorn -----------------------------------


def test_server_config_carries_every_limit_and_pickles_for_the_workers() -> None:
    settings = Settings.from_environ(
        {},
        upstream_url="http://upstream.test",
        http_header_timeout=3.0,
        http_keepalive_timeout=2.5,
        http_max_header_bytes=8192,
        http_max_connections=7,
        http_body_timeout=4.0,
        http_max_connections_per_client=6,
    )
    config = server_config("snapgraph.workers:worker_app", settings, factory=True, port=1)
    assert config.timeout_keep_alive == 2.5
    assert config.limit_concurrency == 8  # uvicorn refuses once its count reaches it
    assert config.port == 1 and config.factory
    # serve --workers spawns each worker with the config pickled: the limits must survive it.
    copy = pickle.loads(pickle.dumps(config))  # noqa: S301  (bytes we just made)
    protocol: Any = copy.http
    assert protocol.func is LimitedHttpToolsProtocol
    assert protocol.keywords == {
        "limits": ConnectionLimits(
            head_timeout=3.0,
            max_head_bytes=8192,
            idle_timeout=2.5,
            write_timeout=4.0,
            max_per_client=6,
        )
    }


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
    # The state it reads and sets: setting an attribute uvicorn renamed would do nothing,
    # without an error (the tests above would show the limit gone, not why).
    protocol = inspect.getsource(HttpToolsProtocol.__init__)
    for name in ("server_state", "connections", "client", "pipeline", "cycle"):
        assert f"self.{name}" in protocol, name
    cycle = inspect.getsource(RequestResponseCycle.__init__)
    for name in ("disconnected", "keep_alive", "message_event", "response_complete"):
        assert f"self.{name} =" in cycle, name


def test_trailers_of_a_chunked_body_are_bounded_like_a_head(
    start_gateway: Callable[..., Gateway], upstream: Upstream
) -> None:
    """httptools hands a chunked body's trailers over as headers, which uvicorn appends to
    the request's without bound: 150 MB of trailer lines held 2.3 GB."""
    gateway = start_gateway(upstream.url)
    head = (
        b"POST /graphql HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    )
    trailers = b"X-Trailer: " + b"t" * 1_000 + b"\r\n"
    with Client(gateway) as client:
        client.send(head)
        sent = 0
        try:
            while sent < 16 << 20:
                client.send(trailers)
                sent += len(trailers)
        except (ConnectionResetError, BrokenPipeError):
            pass
        print(f"the gateway took {sent:,} bytes of trailers before it closed")
        assert sent < 16 << 20, "16 MiB of trailers were all taken"
    assert httpx.get(gateway.url + "/livez").status_code == 200
