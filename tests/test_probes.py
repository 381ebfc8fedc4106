"""Probes that keep a fleet up: /readyz stays 200 while the upstream is down (its state is in
the body), and goes 503 on SIGTERM at once, while in-flight requests still finish."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from conftest import ALICE_KEY, FaultyUpstream, Upstream, first_answer, free_port


def test_readyz_stays_200_while_the_upstream_is_down(start_gateway: Any) -> None:
    gateway = start_gateway(f"http://127.0.0.1:{free_port()}")
    assert gateway.http.get("/readyz").json()["upstream"] == "unknown"
    result = gateway.post("{ snapshots { id } }", ALICE_KEY).json()
    assert result["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    ready = gateway.http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["upstream"] == "down"
    assert body["cache"] == "memory" and body["upstreamSeenSecondsAgo"] >= 0


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
    faulty.respond(200, "[]", delay=2.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SNAPGRAPH_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "serve", f"--port={port}", "--log-level=warning"],
        env={
            **environ,
            "SNAPGRAPH_UPSTREAM_URL": faulty.url,
            "SNAPGRAPH_SHUTDOWN_DELAY": "1",
            "SNAPGRAPH_DRAIN_TIMEOUT": "10",
        },
    )
    try:
        first_answer(lambda: httpx.get(url + "/livez", timeout=2), process)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                httpx.post,
                url + "/graphql",
                json={"query": "{ snapshots { id } }"},
                headers=ALICE_KEY,
                timeout=30,
            )
            deadline = time.monotonic() + 10
            while not faulty.received and time.monotonic() < deadline:
                time.sleep(0.02)  # until the slow request is in flight
            process.send_signal(signal.SIGTERM)
            ready = httpx.get(url + "/readyz", timeout=2)
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            answer = slow.result(timeout=30)
        assert answer.status_code == 200 and answer.json() == {"data": {"snapshots": []}}
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
