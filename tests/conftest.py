"""Shared fixtures: every server is reached over real HTTP (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from snapgraph import Settings, create_app
from snapgraph.reference.app import create_reference_app
from snapgraph.reference.data import Dataset
from snapgraph.serving import serve_in_thread

ALICE_KEY = {"X-API-Key": "demo-alice-key"}
ALICE_BEARER = {"Authorization": "Bearer demo-alice-token"}
BOB_KEY = {"X-API-Key": "demo-bob-key"}
QUERY = "{ snapshots { id } }"
REDIS_URL = os.environ.get("SNAPGRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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
def start_gateway(servers: ExitStack) -> Callable[..., Gateway]:
    def start(upstream_url: str, transport: Any = None, **settings: Any) -> Gateway:
        app = create_app(
            Settings.from_environ({}, upstream_url=upstream_url, **settings), transport=transport
        )
        gateway = Gateway(servers.enter_context(serve_in_thread(app)), app)
        servers.callback(gateway.http.close)
        return gateway

    return start


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], upstream: Upstream) -> Gateway:
    return start_gateway(upstream.url)


def data_of(result: dict[str, Any]) -> Any:
    assert "errors" not in result, result
    return result["data"]


class FaultyUpstream:
    """A real HTTP server whose /v1/snapshots answers whatever a test tells it to."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"[]"
        self.headers: dict[str, str] = {"content-type": "application/json"}
        self.delay = 0.0
        self.received: list[dict[str, str]] = []
        self.url = ""

    def respond(self, status: int, body: bytes | str, delay: float = 0.0, **headers: str) -> None:
        self.status = status
        self.body = body.encode() if isinstance(body, str) else body
        self.delay = delay
        self.headers = {"content-type": "application/json", **headers}

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
            return Response(self.body, status_code=self.status, headers=self.headers)

        return Starlette(routes=[Route("/v1/snapshots", snapshots)])


@pytest.fixture
def faulty(servers: ExitStack) -> FaultyUpstream:
    upstream = FaultyUpstream()
    upstream.url = servers.enter_context(serve_in_thread(upstream.app()))
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


def free_port() -> int:
    """A loopback port nothing listens on (for a server about to start, or a dead upstream)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
