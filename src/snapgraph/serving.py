"""Run an ASGI app with uvicorn on a background thread, on a port the OS picks.

The CLI uses it to start the reference upstream beside the gateway; the tests use it to reach
every server over real HTTP. Given the gateway's `Settings`, it serves with the same limits as
`snapgraph serve` (web/http_limits.py).

    with serve_in_thread(create_reference_app()) as url:
        httpx.get(url + "/v1/snapshots", headers={"X-API-Key": "demo-alice-key"})
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from snapgraph.settings import Settings
from snapgraph.web.http_limits import server_config


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, settings: Settings | None = None
) -> Iterator[str]:
    """Serve `app` until the block ends; yields its base URL (`http://host:port`). With
    `settings`, under their HTTP limits (header and keep-alive timeouts, header size,
    connections); without, uvicorn's defaults."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(_config(app, settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_started(server, thread)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _config(app: Any, settings: Settings | None) -> uvicorn.Config:
    options: dict[str, Any] = dict(log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    if settings is None:
        return uvicorn.Config(app, **options)
    return server_config(app, settings, **options)


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.005)
