"""`snapgraph serve --log-format json`: every line is a JSON object, and each request gets one
access line naming its request id and operation, without any credential."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import Upstream, clean_environ, first_answer, free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_json_logs_carry_one_access_line_per_request_and_no_credential(
    upstream: Upstream, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "snapgraph", "serve", f"--port={port}", "--log-format=json"],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            # Tracing on (spans to stdout), so that access lines carry the trace id.
            env=clean_environ(SNAPGRAPH_UPSTREAM_URL=upstream.url, OTEL_TRACES_EXPORTER="console"),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            first_answer(lambda: httpx.get(url + "/livez"), process)
            for request_id in ("req-1", "req-2"):
                answer = httpx.post(
                    url + "/graphql",
                    json={"query": "query Mine { snapshots { id } }"},
                    headers={
                        "X-API-Key": "demo-alice-key",
                        "X-Request-ID": request_id,
                        "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                    },
                )
                assert answer.status_code == 200
            httpx.post(
                url + "/graphql", json={"query": "{ nope }"}, headers={"X-Request-ID": "bad"}
            )
        finally:
            process.terminate()
            process.wait(timeout=20)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = {line["request_id"]: line for line in lines if line["logger"] == "snapgraph.access"}
    first, second = access["req-1"], access["req-2"]
    assert (first["status"], first["operation_name"], first["operation_type"]) == (
        200,
        "Mine",
        "query",
    )
    assert (first["answered_by"], second["answered_by"]) == ("compiled", "cached")
    assert access["bad"]["error_codes"] == ["GRAPHQL_VALIDATION_FAILED"]
    # The first request fetched (and says what the upstream answered, and how fast); the
    # second was a cache hit with no upstream call.
    assert (first["cache"], first["upstream_status"]) == ("miss", 200)
    assert first["upstream_ms"] > 0
    assert (second["cache"], second["upstream_status"], second["upstream_ms"]) == (
        "hit",
        None,
        None,
    )
    assert first["trace_id"] == second["trace_id"] == TRACE_ID  # the caller's trace, continued
    assert "demo-alice-key" not in text
