"""Graceful shutdown for `snapgraph serve`: drain first, then stop.

On the first SIGTERM (or SIGINT) `/readyz` answers 503 at once, and the server keeps serving
for `shutdown_delay` seconds, so that load balancers and Kubernetes take the replica out
before it stops taking connections. Then uvicorn stops accepting, gives in-flight requests
up to `drain_timeout` seconds, and the lifespan closes the upstream client and the cache.
A second signal skips the delay.

    server = DrainingServer(uvicorn.Config(app, timeout_graceful_shutdown=20), app, delay=5)
    server.run()

With several workers (`snapgraph serve --workers N`) the supervisor, `DrainingSupervisor`,
gets the SIGTERM: it tells every worker to drain (`DRAIN_SIGNAL`, which each worker's app
handles with `drain_on_signal`), waits the delay, then stops the workers as uvicorn does
(SIGTERM: each stops accepting and gives its in-flight requests the drain timeout). SIGINT
(Ctrl-C, which reaches every worker of the terminal at once anyway) stops them without a delay.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from socket import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from snapgraph.app import start_draining

logger = logging.getLogger("snapgraph")

# Supervisor to workers: "/readyz answers 503 from now on". SIGUSR1, ignored by a worker
# until its app handles it (see DrainingSupervisor), so none dies of it while it starts.
DRAIN_SIGNAL = signal.SIGUSR1


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


class DrainingSupervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, whose exit on SIGTERM waits for the drain.
    `handle_term` is the method uvicorn's supervisor calls for a SIGTERM (undocumented, as
    `handle_exit` above; tests/test_workers.py fails if it stops being called)."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket], *, delay: float) -> None:
        super().__init__(config, sockets)
        self._delay = delay
        self._draining = False
        # An ignored signal stays ignored across exec (a handler does not): workers start
        # with DRAIN_SIGNAL ignored, which uvicorn's supervisor would otherwise have handled.
        signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)

    def handle_term(self) -> None:
        if self._draining:
            super().handle_term()  # a second signal skips the delay
            return
        self._draining = True
        for process in self.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # one that just died
                    os.kill(process.pid, DRAIN_SIGNAL)
        logger.info(
            "draining %d workers; stopping them in %.1f s", len(self.processes), self._delay
        )
        timer = threading.Timer(self._delay, self.should_exit.set)
        timer.daemon = True
        timer.start()


def drain_on_signal(app: FastAPI) -> None:
    """In a worker: the supervisor's DRAIN_SIGNAL makes /readyz answer 503 from then on."""
    signal.signal(DRAIN_SIGNAL, lambda signum, frame: start_draining(app))
