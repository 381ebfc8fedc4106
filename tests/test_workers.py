"""`snapgraph serve --workers N`: several processes on one port, drained together on SIGTERM;
and the ASGI factory that process managers use."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ALICE_KEY, FaultyUpstream, Upstream, clean_environ, first_answer, free_port


@contextlib.contextmanager
def serve_workers(tmp_path: Path, *flags: str, **environ: str) -> Iterator[subprocess.Popen[bytes]]:
    """`snapgraph serve --workers 2 FLAGS` with `SNAPGRAPH_*` from `environ` only (no upstream:
    the reference one it starts itself); its temp files (the metrics directory) go to
    tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SNAPGRAPH_", "PROMETHEUS_"))
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "snapgraph", "serve", "--workers=2", "--log-level=warning", *flags],
        env={**inherited, "TMPDIR": str(tmp_path / "tmp"), **environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the workers go with it in cleanup
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)  # the demo hint and any error, drained and closed


def worker_counts(text: str) -> dict[str, float]:
    """GraphQL requests answered per live worker (by pid), from one scrape."""
    return {
        labels["pid"]: value
        for family in text_string_to_metric_families(text)
        if family.name == "snapgraph_worker_graphql_requests"
        for _, labels, value, *_ in family.samples
    }


def wait_for_workers(metrics_url: str, process: subprocess.Popen[bytes], workers: int) -> None:
    """Until every worker has started (each shows in the metrics as soon as it has)."""
    deadline = time.monotonic() + 60
    while True:
        text = first_answer(lambda: httpx.get(metrics_url, timeout=5), process).text
        if len(worker_counts(text)) == workers:
            return
        assert process.poll() is None, "snapgraph serve exited"
        assert time.monotonic() < deadline, f"{workers} workers did not start"
        time.sleep(0.1)


@pytest.mark.timeout(120)  # each wait has its deadline; this is the backstop
def test_sigterm_drains_every_worker_and_in_flight_requests_finish(
    faulty: FaultyUpstream, tmp_path: Path
) -> None:
    # Answered 9 s after it arrives: after the 6 s delay, once the workers stopped accepting
    # and drain (within their 10 s drain timeout).
    faulty.respond(200, "[]", delay=9.0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {
        "SNAPGRAPH_UPSTREAM_URL": faulty.url,
        # Time enough for a 503 and nine probes after the SIGTERM on a loaded machine.
        "SNAPGRAPH_SHUTDOWN_DELAY": "6",
        "SNAPGRAPH_DRAIN_TIMEOUT": "10",
        "SNAPGRAPH_UPSTREAM_TIMEOUT": "20",  # the slow answer is no timeout
        "SNAPGRAPH_UPSTREAM_DEADLINE": "20",
    }
    with serve_workers(tmp_path, f"--port={port}", **settings) as process:
        wait_for_workers(url + "/metrics", process, 2)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow = pool.submit(
                httpx.post,
                url + "/graphql",
                json={"query": "{ snapshots { id } }"},
                headers=ALICE_KEY,
                timeout=30,
            )
            deadline = time.monotonic() + 10
            while not faulty.received:  # until the slow request is in flight
                assert time.monotonic() < deadline, "the request never reached the upstream"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while httpx.get(url + "/readyz", timeout=2).status_code != 503:
                assert time.monotonic() < deadline, "/readyz never answered 503"
                time.sleep(0.02)
            # Fresh connections reach either worker: both drain, and both still serve.
            probes = [httpx.get(url + "/readyz", timeout=2) for _ in range(8)]
            assert [probe.json()["status"] for probe in probes] == ["draining"] * 8
            assert httpx.get(url + "/livez", timeout=2).status_code == 200
            assert not slow.done(), "the slow request must still be in flight as the drain begins"
            answer = slow.result(timeout=30)
        assert answer.status_code == 200 and answer.json() == {"data": {"snapshots": []}}
        assert process.wait(timeout=30) == 0


def test_the_factory_serves_under_uvicorn(upstream: Upstream) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "snapgraph.app:app_from_environ"]
    process = subprocess.Popen(
        [*command, f"--port={port}", "--log-level=warning"],
        env=clean_environ(SNAPGRAPH_UPSTREAM_URL=upstream.url),
    )
    try:
        url = f"http://127.0.0.1:{port}/graphql"
        response = first_answer(
            lambda: httpx.post(url, json={"query": "{ snapshots { id } }"}, headers=ALICE_KEY),
            process,
        )
        assert response.status_code == 200 and response.json()["data"]["snapshots"]
    finally:
        process.terminate()
        process.wait(timeout=20)
