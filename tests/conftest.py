"""Shared fixtures: every upstream is reached over real HTTP (uvicorn on a free port); so is
every gateway, except in modules that ask for one in process (`start_in_process_gateway`)."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from ports import free_port  # noqa: F401  (the tests import it from here)
from snapgraph import Settings, create_app
from snapgraph.reference.app import create_reference_app
from snapgraph.reference.data import Dataset
from snapgraph.serving import serve_in_thread

ALICE_KEY = {"X-API-Key": "demo-alice-key"}
ALICE_BEARER = {"Authorization": "Bearer demo-alice-token"}
BOB_KEY = {"X-API-Key": "demo-bob-key"}
QUERY = "{ snapshots { id } }"


FIRST_REDIS_URL = os.environ.get("SNAPGRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_database_below(url: str, count: int) -> str:
    """`url` with its database number lowered by `count`."""
    base, _, database = url.rpartition("/")
    assert database.isdigit(), f"{url}: the test Redis URL must end in /<database number>"
    lowered = int(database) - count
    assert lowered >= 0, f"{url}: not enough Redis databases below it for every worker"
    return f"{base}/{lowered}"


# The test Redis database: 15, or one per pytest-xdist worker (gw0: 15, gw1: 14, ...), because
# the `redis_url` fixture empties it for each test.
REDIS_URL = redis_database_below(
    FIRST_REDIS_URL, int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
)

# For the tests that count upstream calls while Redis is healthy: on a loaded machine (four
# test workers on two cores) a command may take longer than the 0.5 s default, and the gateway
# would rightly fall back to its own cache and fetch once more than the test expects.
SLOW_MACHINE_REDIS_TIMEOUT = 5.0


class Upstream:
    """A running reference upstream: its URL and what it received."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app

    @property
    def requests(self) -> list[Any]:
        return [r for r in self.app.state.requests if r.path == "/v1/snapshots"]


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture
def start_upstream(servers: ExitStack) -> Callable[..., Upstream]:
    def start(dataset: Dataset | None = None, latency: float = 0.0) -> Upstream:
        app = create_reference_app(dataset, latency=latency)
        return Upstream(servers.enter_context(serve_in_thread(app)), app)

    return start


@pytest.fixture
def upstream(start_upstream: Callable[..., Upstream]) -> Upstream:
    return start_upstream()


class Gateway:
    """A running gateway and a client for it."""

    def __init__(self, url: str, app: Any) -> None:
        self.url = url
        self.app = app
        self.http = httpx.Client(base_url=url, timeout=30)

    def post(
        self, query: str, headers: dict[str, str] | None = None, **body: Any
    ) -> httpx.Response:
        return self.http.post("/graphql", json={"query": query, **body}, headers=headers or {})

    def query(
        self, query: str, headers: dict[str, str] | None = None, **body: Any
    ) -> dict[str, Any]:
        response = self.post(query, headers, **body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
def start_served_gateway(servers: ExitStack) -> Callable[..., Gateway]:
    """Start a gateway served by uvicorn on a port of its own."""

    def start(upstream_url: str, transport: Any = None, **settings: Any) -> Gateway:
        app = create_app(
            Settings.from_environ({}, upstream_url=upstream_url, **settings), transport=transport
        )
        gateway = Gateway(
            servers.enter_context(
                serve_in_thread(
                    app, settings=Settings.from_environ({}, upstream_url=upstream_url, **settings)
                )
            ),
            app,
        )
        servers.callback(gateway.http.close)
        return gateway

    return start


@pytest.fixture
def start_gateway(start_served_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """A module whose tests need no socket overrides this with `start_in_process_gateway`."""
    return start_served_gateway


class InProcessGateway(Gateway):
    """A gateway reached without a socket: httpx's ASGITransport hands it each request on an
    event loop of its own thread (as uvicorn would run it), its lifespan run through
    asgi-lifespan; its upstream is still a real HTTP server. For tests of what the gateway
    answers, where the socket is not the point: uvicorn costs about 0.2 s a gateway."""

    def __init__(self, app: Any, stack: ExitStack) -> None:
        from anyio.from_thread import start_blocking_portal

        self.app = app
        portal = stack.enter_context(start_blocking_portal())
        running = stack.enter_context(portal.wrap_async_context_manager(_lifespan(app)))
        transport = httpx.ASGITransport(app=running, raise_app_exceptions=False)
        self.http = stack.enter_context(
            httpx.Client(transport=_FromThread(transport, portal), base_url="http://gateway.test")
        )

    @property
    def url(self) -> str:
        raise AssertionError("an in-process gateway has no URL: use start_served_gateway")


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[Any]:
    """The app between its lifespan's startup and shutdown."""
    from asgi_lifespan import LifespanManager

    async with LifespanManager(app) as manager:
        yield manager.app


class _FromThread(httpx.BaseTransport):
    """An async transport, called from synchronous code through an anyio portal."""

    def __init__(self, transport: httpx.AsyncBaseTransport, portal: Any) -> None:
        self._transport = transport
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._send, request)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        sent = httpx.Request(
            request.method, request.url, headers=request.headers, content=request.read()
        )
        response = await self._transport.handle_async_request(sent)
        raw = b"".join([part async for part in response.stream])
        return httpx.Response(
            response.status_code, headers=response.headers, stream=httpx.ByteStream(raw)
        )


@pytest.fixture
def start_in_process_gateway(servers: ExitStack) -> Callable[..., Gateway]:
    def start(upstream_url: str, transport: Any = None, **settings: Any) -> Gateway:
        app = create_app(
            Settings.from_environ({}, upstream_url=upstream_url, **settings), transport=transport
        )
        return InProcessGateway(app, servers)  # its lifespan runs until the test ends

    return start


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(upstream.url)


class Clock:
    """The clocks that snapgraph's cache, upstream client and breaker read, stopped: they move
    only when the test calls `advance`. An entry's age, a TTL or a breaker's reset is then the
    value the test chose, however loaded the machine: no test sleeps through a window that a
    slow step could miss. For gateways on the memory cache (Redis expires keys by its own
    clock). Under it a fetch's deadline restarts with each retry: the deadline tests don't use it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import snapgraph.cache
        import snapgraph.upstream.client
        import snapgraph.upstream.resilience

        self.wall = time.time()
        self.monotonic = time.monotonic()
        # The cache ages entries by wall time (its lease polling keeps the real monotonic
        # clock); the client's health and the breaker read the monotonic clock.
        monkeypatch.setattr(snapgraph.cache, "time", _Time(time=lambda: self.wall))
        for module in (snapgraph.upstream.client, snapgraph.upstream.resilience):
            monkeypatch.setattr(module, "time", _Time(monotonic=lambda: self.monotonic))

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.monotonic += seconds


class _Time:
    """The `time` module, except for the functions given."""

    def __init__(self, **functions: Callable[[], float]) -> None:
        self.__dict__.update(functions)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def one_heavy_test_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For a test that loads both cores for a minute (the fleet, the lowest-versions run):
    it waits until no other such test runs, in any pytest-xdist worker (a lock on a file in
    the directory their temporary directories share), so their time windows are not squeezed
    by each other. (xdist's own grouping, --dist loadgroup, groups nothing on pytest 9.2.)"""
    import fcntl

    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: nothing runs beside it
        yield
        return
    with open(tmp_path_factory.getbasetemp().parent / "heavy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Poll until `condition()` is true; fail saying `what` did not happen after `timeout`
    seconds. The timeout only bounds a broken run: it is no window a correct one must hit."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)


async def wait_for_async(condition: Callable[[], Awaitable[object]], what: str) -> None:
    """`wait_for` inside an event loop, for an asynchronous condition (30 s at most)."""
    deadline = time.monotonic() + 30
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not within 30 s"
        await asyncio.sleep(0.01)


class Lines:
    """What a child process writes to a pipe, read line by line on a thread of its own: a test
    waits for the lines it needs with a deadline (a bare `readline()` blocks forever on a
    process that stays silent), and the pipe never fills up and stalls the process."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):  # closed under us: the test is over
            pass
        finally:
            self._lines.put(None)

    def until(self, condition: Callable[[str], bool], timeout: float = 30) -> str:
        """Read until `condition` holds for all the text read so far, and return that text."""
        deadline = time.monotonic() + timeout
        while not condition(text := "".join(self.seen)):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not within {timeout} s; the process wrote {text!r}"
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"the process closed its output after {text!r}"
            self.seen.append(line)
        return text

    def first(self, timeout: float = 30) -> str:
        """The first line."""
        return self.until(lambda text: "\n" in text, timeout).partition("\n")[0]

    def join(self) -> None:
        """Wait for the reader to see the end (call it once the process has exited)."""
        self._thread.join(timeout=10)


def data_of(result: dict[str, Any]) -> Any:
    assert "errors" not in result, result
    return result["data"]


class FaultyUpstream:
    """A real HTTP server whose /v1/snapshots answers whatever a test tells it to.

    `hold()` makes it keep every request unanswered until `release()` (the fixture releases
    at teardown): a test decides when an answer comes, instead of betting on a delay.
    """

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"[]"
        self.headers: dict[str, str] = {"content-type": "application/json"}
        self.delay = 0.0
        self.received: list[dict[str, str]] = []
        # Answers for particular callers (by X-API-Key): status and body.
        self.by_key: dict[str, tuple[int, bytes]] = {}
        self.url = ""
        self._answering = threading.Event()
        self._answering.set()

    def hold(self) -> None:
        self._answering.clear()

    def release(self) -> None:
        self._answering.set()

    def respond(self, status: int, body: bytes | str, delay: float = 0.0, **headers: str) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.delay = delay
        self.headers = {"content-type": "application/json", **headers}

    def respond_by_credential(
        self, answers: dict[str, tuple[int, str]], default: tuple[int, str]
    ) -> None:
        """Answer each key in `answers` (as X-API-Key or bearer token) its own way, every
        other caller `default`."""
        self.by_key = {key: (status, body.encode()) for key, (status, body) in answers.items()}
        self.respond(*default)

    def calls_by_credential(self, api_key: str) -> int:
        return sum(1 for headers in self.received if _caller_key(headers) == api_key)

    def app(self) -> Any:
        import asyncio

        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def snapshots(request: Request) -> Response:
            self.received.append(dict(request.headers))
            if self.delay:
                await asyncio.sleep(self.delay)
            if not self._answering.is_set():
                await asyncio.to_thread(self._answering.wait)
            status, body = self.by_key.get(_caller_key(request.headers), (self.status, self.body))
            return Response(body, status_code=status, headers=self.headers)

        return Starlette(routes=[Route("/v1/snapshots", snapshots)])


def _caller_key(headers: Any) -> str:
    """The key a request carries, as X-API-Key or as a bearer token (any scheme casing)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return str(headers.get("x-api-key") or (token if scheme.lower() == "bearer" else ""))


@pytest.fixture
def faulty(servers: ExitStack) -> FaultyUpstream:
    upstream = FaultyUpstream()
    upstream.url = servers.enter_context(serve_in_thread(upstream.app()))
    servers.callback(upstream.release)  # before the server stops: nothing left held
    return upstream


def redis_or_skip() -> str:
    """The test Redis URL; a clear skip (a failure under CI) when no Redis answers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        message = f"Redis is not reachable at {REDIS_URL}: start redis-server (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url() -> str:
    """A clean test database on the test Redis."""
    import redis

    url = redis_or_skip()
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="module")
def generated_gateway() -> Iterator[Gateway]:
    """A gateway over 50 generated users, shared by a module's examples (hypothesis)."""
    with ExitStack() as stack:
        upstream = create_reference_app(Dataset.generated(users=50))
        upstream_url = stack.enter_context(serve_in_thread(upstream))
        app = create_app(Settings.from_environ({}, upstream_url=upstream_url, cache_ttl=0.5))
        gateway = Gateway(stack.enter_context(serve_in_thread(app)), app)
        stack.callback(gateway.http.close)
        yield gateway


def ids(result: dict[str, Any]) -> set[str]:
    return {item["id"] for item in data_of(result)["snapshots"]}


async def run_concurrently(
    url: str, requests: list[dict[str, str]], query: str = QUERY
) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(
        base_url=url, timeout=30, limits=httpx.Limits(max_connections=200)
    ) as http:
        responses = await asyncio.gather(
            *(http.post("/graphql", json={"query": query}, headers=headers) for headers in requests)
        )
    return [response.json() for response in responses]


ROOT = Path(__file__).parent.parent
JS = ROOT / "js"


def node_or_skip() -> str:
    """The node binary, with js/ installed; a clear skip (a failure under CI) otherwise."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / ".installed").exists():
        message = "Node.js and js/node_modules are needed: run `make js` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


def chromium_or_skip() -> str:
    """Debian's Chromium; a clear skip (a failure under CI) when it is not installed."""
    chromium = shutil.which("chromium")
    if chromium is None:
        message = "Chromium is needed for browser tests: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium


def run_node(script: str, *args: str) -> list[dict[str, Any]]:
    """Run one of js/'s scripts; each line it prints is a JSON object."""
    import json
    import subprocess

    completed = subprocess.run(
        [node_or_skip(), str(JS / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


def sample(metrics: str, name: str) -> float:
    """One sample's value from a Prometheus text exposition (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def clean_environ(**settings: str) -> dict[str, str]:
    """This process's environment without its SNAPGRAPH_* variables, plus `settings`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SNAPGRAPH_")}
    return {**inherited, **settings}


def run_snapgraph(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python -m snapgraph ARGS` run to its end (60 s at most), its output captured, with no
    SNAPGRAPH_* variable but `settings` (a developer's own must not change what a test sees)."""
    return subprocess.run(
        [sys.executable, "-m", "snapgraph", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_environ(**settings),
    )


def first_answer(send: Callable[[], httpx.Response], process: Any = None) -> httpx.Response:
    """Call `send` until the server behind it, started a moment ago, answers."""
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            return send()
        except httpx.TransportError:
            assert process is None or process.poll() is None, "the server process exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
