"""Graceful shutdown for `snapgraph serve`: drain first, then stop.

On the first SIGTERM (or SIGINT) `/readyz` answers 503 at once, and the server keeps serving
for `shutdown_delay` seconds, so that load balancers and Kubernetes take the replica out
before it stops taking connections. Then uvicorn stops accepting, gives in-flight requests
up to `drain_timeout` seconds, and the lifespan closes the upstream client and the cache.
A second signal skips the delay.

    server = DrainingServer(uvicorn.Config(app, timeout_graceful_shutdown=20), app, delay=5)
    server.run()
"""

from __future__ import annotations

import logging
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from snapgraph.app import start_draining

logger = logging.getLogger("snapgraph")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose exit on a signal waits for the drain. `handle_exit` is the
    method uvicorn installs as its signal handler (undocumented; tests/test_probes.py sends
    SIGTERM to a real `snapgraph serve` and fails if it stops being called)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, *, delay: float) -> None:
        super().__init__(config)
        self._app = app
        self._delay = delay
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining:
            super().handle_exit(sig, frame)  # a second signal skips the delay
            return
        self._draining = True
        start_draining(self._app)
        logger.info("draining: /readyz answers 503; stopping in %.1f s", self._delay)
        # A timer thread, not the event loop: this runs inside a signal handler.
        timer = threading.Timer(self._delay, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()
