"""Probes that keep a fleet up: /readyz stays 200 while the upstream is down (its state is in
the body), and goes 503 on SIGTERM at once, while in-flight requests still finish."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import (
    ALICE_KEY,
    Clock,
    FaultyUpstream,
    Gateway,
    Upstream,
    clean_environ,
    first_answer,
    free_port,
    wait_for,
)


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


def test_readyz_stays_200_while_the_upstream_is_down(start_gateway: Any, clock: Clock) -> None:
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}")
    before = gateway.http.get("/readyz").json()
    assert before["upstream"] == "unknown" and before["upstreamSeenSecondsAgo"] is None
    result = gateway.post("{ snapshots { id } }", ALICE_KEY).json()
    assert result["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    clock.advance(12.3)  # since the failed exchange
    ready = gateway.http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["upstream"] == "down"
    assert body["cache"] == "memory" and body["upstreamSeenSecondsAgo"] == 12.3


def test_readyz_makes_no_upstream_call(start_gateway: Any, upstream: Upstream) -> None:
    gateway = start_gateway(upstream.url)
    for _ in range(5):
        assert gateway.http.get("/readyz").status_code == 200
    assert gateway.http.get("/livez").json() == {"status": "alive"}
    assert upstream.requests == []
    gateway.query("{ snapshots { id } }", ALICE_KEY)
    assert gateway.http.get("/readyz").json()["upstream"] == "up"


def test_sigterm_drains_readyz_503_at_once_and_in_flight_requests_finish(
    faulty: FaultyUpstream,
) -> None:
    faulty.hold()  # the in-flight request is answered only once the server stopped accepting
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "serve", f"--port={port}", "--log-level=warning"],
        env=clean_environ(
            SNAPGRAPH_UPSTREAM_URL=faulty.url,
            # Generous: readyz must say 503 before the listener closes, however slow the
            # machine is to send the probe after the signal.
            SNAPGRAPH_SHUTDOWN_DELAY="2",
            SNAPGRAPH_DRAIN_TIMEOUT="30",
        ),
    )

    def accepting() -> bool:
        try:
            httpx.get(url + "/livez", timeout=2)
        except httpx.TransportError:
            return False
        return True

    def draining() -> bool:
        ready = httpx.get(url + "/readyz", timeout=2)  # refused after the delay: a failure
        return ready.status_code == 503 and ready.json()["status"] == "draining"

    try:
        first_answer(lambda: httpx.get(url + "/livez", timeout=2), process)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                httpx.post,
                url + "/graphql",
                json={"query": "{ snapshots { id } }"},
                headers=ALICE_KEY,
                timeout=60,
            )
            wait_for(lambda: faulty.received, "the slow request reaching the upstream")
            process.send_signal(signal.SIGTERM)
            wait_for(draining, "/readyz answering 503 draining")  # the signal's own latency
            wait_for(lambda: not accepting(), "the server to stop accepting")
            # Held past uvicorn's shortest drain (1 s), far within ours (30 s): a drain cut
            # short would cancel the request. A wait, not a window: load only lengthens it.
            time.sleep(1.5)
            assert not slow.done()
            faulty.release()
            answer = slow.result(timeout=30)
        assert answer.status_code == 200 and answer.json() == {"data": {"snapshots": []}}
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
