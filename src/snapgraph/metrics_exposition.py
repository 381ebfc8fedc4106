"""How the metrics leave the process: from one registry or summed over several workers, on the
main port or on a port of their own (`SNAPGRAPH_METRICS_PORT`).

- One process (the default): GET /metrics renders the app's registry; the gauges of the
  gateway's state are read by the scrape itself.
- Several workers (`snapgraph serve --workers N`, or any process manager that sets
  `PROMETHEUS_MULTIPROC_DIR`): prometheus_client's multiprocess mode. Each worker writes its
  numbers to files in that directory, copies its state into them every `SAMPLE_SECONDS`, and
  removes its live gauges when it stops; whoever is scraped sums every worker's files, so each
  scrape shows the whole, whichever worker answers. A worker that died without stopping (a
  crash, a kill) has its live gauges forgotten at the next scrape; its counts stay counted.
- The metrics port is prometheus_client's own small HTTP server on a thread (`listening`), not
  a second uvicorn server: it answers while the event loop is busy (when metrics matter most),
  it leaves the signals to the one uvicorn server that drains (a second one would install its
  own SIGTERM handler), and with several workers the supervisor, which exists once and serves
  no requests, can hold the port that the workers could not all bind.

    async with exposed(metrics, host="127.0.0.1", port=9100):   # in the app's lifespan
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from snapgraph.errors import ConfigError

if TYPE_CHECKING:
    from snapgraph.metrics import GatewayState, Metrics

# prometheus_client's own variable: it picks file-backed values at import when it is set.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How old another worker's state (breaker, cache) may be in a scrape; a sample costs a few µs.
SAMPLE_SECONDS = 1.0
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, read where prometheus_client reads it."""
    return os.environ.get(MULTIPROC_ENV) or None


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry that sums every worker's files (built per scrape: it holds no state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LiveWorkersCollector(directory))
    return registry


class _LiveWorkersCollector(Collector):
    """MultiProcessCollector, after forgetting the live gauges of workers that are gone."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        # prometheus_client's multiprocess module is not annotated (0.26): hence the ignores.
        self._files = MultiProcessCollector(None, directory)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead_workers(self._directory)
        metrics: Iterable[Metric] = self._files.collect()  # type: ignore[no-untyped-call]
        return metrics


def forget_dead_workers(directory: str) -> None:
    pids = {
        int(match.group(1))
        for path in Path(directory).glob("gauge_live*.db")
        if (match := _LIVE_GAUGE_FILE.fullmatch(path.name))
    }
    for pid in pids:
        if not _alive(pid):
            # Two scrapes at once may both remove a dead worker's files: the second finds
            # them gone, which must not fail its scrape.
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now holds the pid: not ours, but not dead either
    return True


# The metrics port's limits: a connection idle this long is dropped, and past this many at
# once a new one is closed unanswered (prometheus_client's own server starts a thread per
# connection and never times one out: 400 idle connections were 400 threads).
METRICS_IDLE_SECONDS = 5.0
METRICS_MAX_CONNECTIONS = 8


class _QuietHandler(WSGIRequestHandler):
    timeout = METRICS_IDLE_SECONDS  # socketserver applies it to the connection

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler]) -> None:
        self._slots = threading.BoundedSemaphore(METRICS_MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse rather than start another thread
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


@contextlib.contextmanager
def listening(host: str, port: int, registry: CollectorRegistry) -> Iterator[None]:
    """Serve `registry` alone on `host:port` (any path) until the block ends, on a thread
    of its own (it answers while the event loop is busy), bounded in connections."""
    try:
        server = make_server(
            host, port, make_wsgi_app(registry), _BoundedServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        problem = f"cannot be listened on at {host}: {exc.strerror}"
        raise ConfigError("SNAPGRAPH_METRICS_PORT", problem, port) from None
    thread = threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.asynccontextmanager
async def exposed(metrics: Metrics, *, host: str, port: int) -> AsyncIterator[None]:
    """What an app's lifespan runs for its metrics: sampling with several workers (the
    supervisor then serves the metrics port), else the metrics port when `port` is set."""
    directory = metrics.multiprocess_dir
    if directory is not None:
        task = asyncio.create_task(_sample_forever(metrics.state), name="snapgraph-metrics")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # This worker's state is no more (its counts stay in the sums).
            mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
        return
    with listening(host, port, metrics.registry) if port else contextlib.nullcontext():
        yield


async def _sample_forever(state: GatewayState) -> None:
    while True:
        state.sample()
        await asyncio.sleep(SAMPLE_SECONDS)
