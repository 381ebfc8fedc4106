"""How `snapgraph serve` runs the gateway: in its own process (the default), or as N worker
processes on one port (`--workers N`, `SNAPGRAPH_WORKERS`).

Workers: uvicorn's supervisor (it restarts a worker that dies) with the drain of shutdown.py.
Each worker builds its app with the documented factory, `snapgraph.app:app_from_environ`, from
the `SNAPGRAPH_*` environment this process hands down: command-line flags included, and the
reference upstream's URL when it runs here. Their metrics are summed by prometheus_client's
multiprocess mode, in a directory made fresh before the workers start and removed once they
stopped (metrics_exposition.py); this process serves `SNAPGRAPH_METRICS_PORT` when it is set.

Each worker has its own in-process cache, response cache, circuit breaker and APQ store (share
the cache with Redis); a worker the supervisor restarts during a drain does not drain.

    serve(settings, environ)     # environ: the SNAPGRAPH_* values the settings came from
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import os
import tempfile
from collections.abc import Iterator, Mapping

import uvicorn
from fastapi import FastAPI

from snapgraph import metrics_exposition as exposition
from snapgraph.app import app_from_environ, create_app
from snapgraph.cache_backends import REDIS_MISSING
from snapgraph.errors import ConfigError
from snapgraph.settings import Settings, env_name
from snapgraph.shutdown import DrainingServer, DrainingSupervisor, drain_on_signal
from snapgraph.tracing import tracing_from_environ
from snapgraph.web.http_limits import server_config

WORKER_APP = "snapgraph.workers:worker_app"


def serve(settings: Settings, environ: Mapping[str, str]) -> None:
    """Serve until SIGTERM (drained) or SIGINT."""
    if settings.workers > 1:
        _serve_workers(settings, environ)
        return
    app = create_app(settings, tracing=tracing_from_environ(environ))
    tune_garbage_collector()
    DrainingServer(_config(app, settings), app, delay=settings.shutdown_delay).run()


def check(settings: Settings) -> None:
    """Refuse settings that only fail once serving starts (before anything has started)."""
    if settings.metrics and settings.metrics_port and settings.metrics_port == settings.port:
        raise ConfigError(env_name("metrics_port"), "must differ from SNAPGRAPH_PORT", None)
    if settings.uses_redis and not _importable("redis"):
        raise ConfigError(env_name("cache_url"), REDIS_MISSING, None)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: blocked
        return False


def worker_app() -> FastAPI:
    """The factory `serve --workers` hands uvicorn: the documented one, plus what a process
    that `serve` owns does (the drain signal, the garbage collector's tuning)."""
    app = app_from_environ()
    drain_on_signal(app)
    tune_garbage_collector()
    return app


def tune_garbage_collector() -> None:
    """A request over a 10,000-item list allocates some 200,000 objects, which at CPython's
    default thresholds sets off several collections that each walk every cached row. Fewer,
    larger young collections (and the startup objects frozen out of them) cut 20% of the CPU
    of such a request (make bench). Only `serve` does this: it owns the process."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _serve_workers(settings: Settings, environ: Mapping[str, str]) -> None:
    assert settings.upstream_url is not None
    with tempfile.TemporaryDirectory(prefix="snapgraph-metrics-") as directory:
        # Workers are spawned (a fresh interpreter each): the environment is what they inherit.
        os.environ.update(environ)
        os.environ[env_name("upstream_url")] = settings.upstream_url
        os.environ[exposition.MULTIPROC_ENV] = directory
        config = _config(WORKER_APP, settings, factory=True, workers=settings.workers)
        with _metrics_port(settings, directory):
            sock = config.bind_socket()
            try:
                DrainingSupervisor(config, [sock], delay=settings.shutdown_delay).run()
            finally:
                sock.close()


@contextlib.contextmanager
def _metrics_port(settings: Settings, directory: str) -> Iterator[None]:
    if not (settings.metrics and settings.metrics_port):
        yield
        return
    registry = exposition.multiprocess_registry(directory)
    with exposition.listening(settings.host, settings.metrics_port, registry):
        yield


def _config(
    app: FastAPI | str, settings: Settings, *, factory: bool = False, workers: int | None = None
) -> uvicorn.Config:
    return server_config(  # with the HTTP server's limits from settings
        app,
        settings,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # logs.configure has routed uvicorn's loggers already
        access_log=False,  # ours (snapgraph.access) names the request id and operation
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout)),
        factory=factory,
        workers=workers,
    )
