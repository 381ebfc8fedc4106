"""Prometheus metrics at /metrics: what happened, never who asked."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_workers import serve_workers, wait_for_workers, worker_counts

from conftest import (
    ALICE_BEARER,
    ALICE_KEY,
    QUERY,
    ROOT,
    FaultyUpstream,
    Gateway,
    Upstream,
    free_port,
    run_concurrently,
    run_snapgraph,
    sample,
)
from snapgraph._version import __version__
from snapgraph.metrics import ERROR_CODES, MAX_OPERATION_LABELS
from snapgraph.metrics_exposition import multiprocess_registry


def test_metrics_count_upstream_calls_and_cache_results(gateway: Gateway) -> None:
    for _ in range(3):
        gateway.query(QUERY, ALICE_KEY)
    gateway.query(QUERY, {"Authorization": "Bearer wrong-token"})
    metrics = gateway.http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert sample(text, 'snapgraph_upstream_requests_total{outcome="200"}') == 1
    assert sample(text, 'snapgraph_upstream_requests_total{outcome="401"}') == 1
    assert sample(text, 'snapgraph_cache_lookups_total{result="hit"}') == 2
    assert sample(text, 'snapgraph_cache_lookups_total{result="miss"}') == 2
    assert sample(text, 'snapgraph_graphql_requests_total{status="200"}') == 4
    assert sample(text, 'snapgraph_graphql_answers_total{path="compiled"}') == 1
    assert sample(text, 'snapgraph_graphql_answers_total{path="cached"}') == 2
    assert sample(text, 'snapgraph_graphql_answers_total{path="graphql-core"}') == 1
    assert sample(text, "snapgraph_upstream_request_seconds_count") == 2
    assert "demo-alice-key" not in text and "wrong-token" not in text


def test_concurrent_identical_queries_show_as_coalesced(start_upstream, start_gateway) -> None:
    upstream = start_upstream(latency=0.3)
    gateway = start_gateway(upstream.url)
    asyncio.run(run_concurrently(gateway.url, [ALICE_KEY] * 20))
    text = gateway.http.get("/metrics").text
    looked_up = sum(
        sample(text, f'snapgraph_cache_lookups_total{{result="{result}"}}')
        for result in ("hit", "miss", "coalesced")
    )
    assert looked_up == 20
    assert sample(text, 'snapgraph_cache_lookups_total{result="miss"}') == 1
    assert sample(text, 'snapgraph_cache_lookups_total{result="coalesced"}') >= 1


def test_metrics_can_be_turned_off(upstream: Upstream, start_gateway) -> None:
    gateway = start_gateway(upstream.url, metrics=False)
    assert gateway.http.get("/metrics").status_code == 404


# --- What an SRE alerts on: every counter moves exactly as the requests say -------------------

Key = tuple[str, frozenset[tuple[str, str]]]


def scrape(text: str) -> dict[Key, float]:
    """Every counter and histogram count of an exposition, by name and labels."""
    samples: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram"):
            continue
        for name, labels, value, *_ in family.samples:
            if name.endswith(("_total", "_count")):
                samples[(name, frozenset(labels.items()))] = value
    return samples


def show(key: Key) -> str:
    name, labels = key
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels)) + "}"


class MetricsDelta:
    """What moved on a gateway's /metrics since the last `moved()`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.before = scrape(gateway.http.get("/metrics").text)

    def moved(self) -> dict[str, float]:
        after = scrape(self.gateway.http.get("/metrics").text)
        delta = {
            show(key): value - self.before.get(key, 0.0)
            for key, value in after.items()
            if value != self.before.get(key, 0.0)
        }
        self.before = after
        return delta


MINE = "query Mine { snapshots { id } }"


def request_counts(operation: str, kind: str, status: int, n: int = 1) -> dict[str, float]:
    return {
        f'snapgraph_graphql_requests_total{{status="{status}"}}': n,
        "snapgraph_request_duration_seconds_count"
        f'{{operation="{operation}",status="{status}",type="{kind}"}}': n,
    }


def test_a_scripted_run_moves_every_counter_exactly(faulty: FaultyUpstream, start_gateway) -> None:
    gateway = start_gateway(faulty.url, upstream_retries=0)
    metrics = MetricsDelta(gateway)
    upstream_200 = {
        'snapgraph_upstream_requests_total{outcome="200"}': 1,
        "snapgraph_upstream_request_seconds_count{}": 1,
    }
    upstream_503 = {
        'snapgraph_upstream_requests_total{outcome="503"}': 1,
        "snapgraph_upstream_request_seconds_count{}": 1,
    }

    gateway.query(MINE, {"X-API-Key": "k1"})
    assert metrics.moved() == {
        'snapgraph_cache_lookups_total{result="miss"}': 1,
        'snapgraph_graphql_answers_total{path="compiled"}': 1,
        **upstream_200,
        **request_counts("Mine", "query", 200),
    }

    gateway.query(MINE, {"X-API-Key": "k1"})
    assert metrics.moved() == {
        'snapgraph_cache_lookups_total{result="hit"}': 1,
        'snapgraph_graphql_answers_total{path="cached"}': 1,
        **request_counts("Mine", "query", 200),
    }

    faulty.respond(200, "[]", delay=1.0)
    answers = asyncio.run(run_concurrently(gateway.url, [{"X-API-Key": "k2"}] * 5, MINE))
    assert all("errors" not in answer for answer in answers)
    assert metrics.moved() == {
        'snapgraph_cache_lookups_total{result="miss"}': 1,
        'snapgraph_cache_lookups_total{result="coalesced"}': 4,
        # The first to resume builds the answer; the others find it in the response cache.
        'snapgraph_graphql_answers_total{path="compiled"}': 1,
        'snapgraph_graphql_answers_total{path="cached"}': 4,
        **upstream_200,
        **request_counts("Mine", "query", 200, 5),
    }

    faulty.respond(503, "{}")
    stale = gateway.query(MINE, {"X-API-Key": "k1", "Cache-Control": "no-cache"})
    assert stale["extensions"]["stale"] is True
    assert metrics.moved() == {
        'snapgraph_cache_lookups_total{result="miss"}': 1,
        'snapgraph_cache_lookups_total{result="stale"}': 1,
        'snapgraph_graphql_answers_total{path="compiled"}': 1,
        **upstream_503,
        **request_counts("Mine", "query", 200),
    }

    unavailable = gateway.query(MINE, {"X-API-Key": "k3"})
    assert unavailable["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert metrics.moved() == {
        'snapgraph_cache_lookups_total{result="miss"}': 1,
        'snapgraph_graphql_answers_total{path="graphql-core"}': 1,
        'snapgraph_graphql_errors_total{code="UPSTREAM_UNAVAILABLE"}': 1,
        **upstream_503,
        **request_counts("Mine", "query", 200),
    }

    anonymous = gateway.query("{ snapshots { id } }")
    assert anonymous["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert metrics.moved() == {  # refused before execution: no path answered it
        'snapgraph_graphql_errors_total{code="UNAUTHENTICATED"}': 1,
        **request_counts("anonymous", "query", 200),
    }

    refusals = [
        ("{ snapshots {", {}, "GRAPHQL_PARSE_FAILED", "unknown", "unknown"),
        # A refused operation's name gets no label of its own: names are admitted only
        # from answers that succeeded.
        ("query Bad { nope }", {}, "GRAPHQL_VALIDATION_FAILED", "other", "query"),
        (
            "query Typed($t: SnapshotType) { snapshots(type: $t) { id } }",
            {"t": "VARVALUE-123"},
            "BAD_USER_INPUT",
            "other",
            "query",
        ),
    ]
    for query, variables, code, operation, kind in refusals:
        refused = gateway.post(query, {"X-API-Key": "k1"}, variables=variables)
        assert refused.json()["errors"][0]["extensions"]["code"] == code
        moved = metrics.moved()
        moved.pop('snapgraph_graphql_answers_total{path="graphql-core"}', None)  # variables
        assert moved == {
            f'snapgraph_graphql_errors_total{{code="{code}"}}': 1,
            **request_counts(operation, kind, refused.status_code),
        }

    not_allowed = gateway.http.put("/graphql", json={"query": MINE})
    assert not_allowed.status_code == 405
    assert metrics.moved() == {
        'snapgraph_graphql_errors_total{code="METHOD_NOT_ALLOWED"}': 1,
        **request_counts("unknown", "unknown", 405),
    }


def test_state_gauges_show_the_breaker_and_the_cache(faulty: FaultyUpstream, start_gateway) -> None:
    gateway = start_gateway(faulty.url, upstream_retries=0, upstream_breaker_failures=1)
    text = gateway.http.get("/metrics").text
    assert sample(text, 'snapgraph_upstream_circuit_state{state="closed"}') == 1
    assert sample(text, 'snapgraph_cache_state{state="memory"}') == 1
    assert sample(text, 'snapgraph_cache_entries{cache="store"}') == 0
    faulty.respond(200, '[{"id": "s1"}]')
    gateway.query(MINE, {"X-API-Key": "k1"})
    text = gateway.http.get("/metrics").text
    assert sample(text, 'snapgraph_cache_entries{cache="store"}') == 1
    assert sample(text, 'snapgraph_cache_bytes{cache="store"}') > 0
    assert sample(text, 'snapgraph_cache_bytes{cache="responses"}') > 0
    faulty.respond(503, "{}")
    for caller in ("k2", "k3", "k4"):  # several callers: the upstream is failing
        gateway.query(MINE, {"X-API-Key": caller})
    text = gateway.http.get("/metrics").text
    assert sample(text, 'snapgraph_upstream_circuit_state{state="open"}') == 1
    assert sample(text, 'snapgraph_upstream_circuit_state{state="closed"}') == 0


def test_no_label_carries_a_credential_a_variable_or_an_unbounded_name(gateway: Gateway) -> None:
    for n in range(200):
        gateway.post(f"query Op{n} {{ snapshots {{ id }} }}", {"X-API-Key": "demo-alice-key"})
    long_name = "L" * 65
    gateway.post(f"query {long_name} {{ snapshots {{ id }} }}", ALICE_BEARER)
    gateway.post(
        "query Typed($t: SnapshotType) { snapshots(type: $t) { id } }",
        {"X-API-Key": "secret-key-XYZ"},
        variables={"t": "VARVALUE-123"},
    )
    text = gateway.http.get("/metrics").text
    for secret in ("demo-alice-key", "demo-alice-token", "secret-key-XYZ", "VARVALUE-123"):
        assert secret not in text
    operations = {
        dict(labels)["operation"]
        for name, labels in scrape(text)
        if name == "snapgraph_request_duration_seconds_count"
    }
    assert len(operations) == MAX_OPERATION_LABELS + 1, operations  # the first 50, and other
    assert "other" in operations and long_name not in operations
    assert {f"Op{n}" for n in range(MAX_OPERATION_LABELS)} <= operations
    codes = {
        line.split('"')[1]
        for line in text.splitlines()
        if line.startswith("snapgraph_graphql_errors_total{")
    }
    assert codes == ERROR_CODES | {"OTHER"}


def test_no_created_series_and_build_info(gateway: Gateway) -> None:
    gateway.query(QUERY, ALICE_KEY)
    text = gateway.http.get("/metrics").text
    assert "_created" not in text
    python = platform.python_version()
    assert sample(text, f'snapgraph_build_info{{python="{python}",version="{__version__}"}}') == 1


def test_buckets_span_a_millisecond_to_ten_seconds(gateway: Gateway) -> None:
    gateway.query(QUERY, ALICE_KEY)
    text = gateway.http.get("/metrics").text
    for histogram in ("snapgraph_request_duration_seconds", "snapgraph_upstream_request_seconds"):
        bounds = [
            labels["le"]
            for family in text_string_to_metric_families(text)
            if family.name == histogram
            for name, labels, *_ in family.samples
            if name.endswith("_bucket")
        ]
        assert bounds[:1] == ["0.001"] and "10.0" in bounds and bounds[-1] == "+Inf"


def test_every_error_code_in_the_source_is_known() -> None:
    """A code added anywhere in src must be added to ERROR_CODES (else it counts as OTHER)."""
    source = "\n".join(path.read_text() for path in (ROOT / "src").rglob("*.py"))
    used = set(re.findall(r'"code": "([A-Z_]+)"', source))
    used |= set(re.findall(r'\bcode = "([A-Z_]+)"', source))
    used |= set(re.findall(r'\n\s+"(MAX_[A-Z_]+_LIMIT)",', source))
    assert used and used <= ERROR_CODES, used - ERROR_CODES


def test_metrics_on_their_own_port(upstream: Upstream, start_gateway) -> None:
    port = free_port()
    gateway = start_gateway(upstream.url, metrics_port=port)
    gateway.query(QUERY, ALICE_KEY)
    assert gateway.http.get("/metrics").status_code == 404
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert sample(text, 'snapgraph_graphql_requests_total{status="200"}') == 1
    assert sample(text, 'snapgraph_upstream_circuit_state{state="closed"}') == 1


def test_the_metrics_port_must_differ_from_the_main_port() -> None:
    completed = run_snapgraph("serve", "--port=18000", "--metrics-port=18000")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "snapgraph: --metrics-port (SNAPGRAPH_METRICS_PORT) must differ from SNAPGRAPH_PORT"
    ]


# --- Several workers: each scrape shows the sum over all of them -------------------------------


def test_a_dead_workers_gauges_go_and_its_counts_stay(tmp_path: Path) -> None:
    worker = (
        "from snapgraph.metrics import Metrics\n"
        "Metrics().observe_graphql({'operation_name': 'Mine', 'operation_type': 'query'}, 200, 0.1)"
    )
    environ = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", worker], env=environ, check=True, timeout=60)
    assert any(path.name.startswith("gauge_live") for path in tmp_path.iterdir())
    text = generate_latest(multiprocess_registry(str(tmp_path))).decode()
    assert sample(text, 'snapgraph_graphql_requests_total{status="200"}') == 1
    assert "snapgraph_worker_graphql_requests" not in text
    assert "snapgraph_build_info" not in text
    assert not any(path.name.startswith("gauge_live") for path in tmp_path.iterdir())


@pytest.mark.timeout(120)  # each wait has its deadline; this is the backstop
@pytest.mark.parametrize("own_port", [False, True], ids=["main-port", "metrics-port"])
def test_every_scrape_counts_the_requests_of_every_worker(tmp_path: Path, own_port: bool) -> None:
    port, metrics_port = free_port(), free_port()
    flags = [f"--port={port}", *([f"--metrics-port={metrics_port}"] if own_port else [])]
    url = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port if own_port else port}/metrics"
    with serve_workers(tmp_path, *flags) as process:
        wait_for_workers(metrics_url, process, 2)

        def send(_: int) -> httpx.Response:  # a fresh connection each: workers take turns
            return httpx.post(url + "/graphql", json={"query": MINE}, headers=ALICE_KEY, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(send, range(40)))
        assert [answer.status_code for answer in answers] == [200] * 40

        for _ in range(10):  # whichever worker answers the scrape
            text = httpx.get(metrics_url, timeout=10).text
            assert sample(text, 'snapgraph_graphql_requests_total{status="200"}') == 40
            labels = 'operation="Mine",status="200",type="query"'
            assert sample(text, f"snapgraph_request_duration_seconds_count{{{labels}}}") == 40
            per_worker = worker_counts(text)
            assert len(per_worker) == 2 and all(per_worker.values()), per_worker
            assert sum(per_worker.values()) == 40
            assert "_created" not in text
        if own_port:
            assert httpx.get(url + "/metrics", timeout=10).status_code == 404

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert list((tmp_path / "tmp").iterdir()) == [], "the metrics directory was left behind"


def test_refused_requests_cannot_take_the_operation_labels(
    upstream: Upstream, start_gateway
) -> None:
    gateway = start_gateway(upstream.url)
    for n in range(MAX_OPERATION_LABELS + 10):  # no credentials, an invalid document
        gateway.post(f"query Junk{n} {{ noSuchField }}")
        gateway.post(f"query Anon{n} {{ snapshots {{ id }} }}")  # UNAUTHENTICATED
    gateway.query("query Dashboard { snapshots { id } }", ALICE_KEY)
    text = gateway.http.get("/metrics").text
    operations = {
        labels["operation"]
        for family in text_string_to_metric_families(text)
        for name, labels, *_ in family.samples
        if name == "snapgraph_request_duration_seconds_count"
    }
    assert operations == {"other", "Dashboard"}


def test_idle_connections_to_the_metrics_port_are_bounded_and_scrapes_go_on() -> None:
    """prometheus_client's server gives each connection a thread that never times out: 400
    idle connections were 400 threads. Ours holds a few, closes the rest at once, and drops
    idle ones after METRICS_IDLE_SECONDS."""
    import socket
    import threading

    from prometheus_client import CollectorRegistry, Counter

    from snapgraph.metrics_exposition import METRICS_MAX_CONNECTIONS, listening

    registry = CollectorRegistry()
    Counter("probe", "a counter", registry=registry).inc()
    port = free_port()
    before = threading.active_count()
    idle: list[socket.socket] = []
    with listening("127.0.0.1", port, registry):
        try:
            for _ in range(100):  # half a request each, then silence
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                connection.sendall(b"GET /metrics HTTP/1.1\r\n")
                idle.append(connection)
            # Each accepted connection has its thread; the rest are closed unanswered. Watch
            # for a second (an unbounded server reaches 100 threads well within it).
            most = 0
            watch_until = time.monotonic() + 1.0
            while time.monotonic() < watch_until:
                most = max(most, threading.active_count() - before - 1)  # less its own
                time.sleep(0.01)
            assert most <= METRICS_MAX_CONNECTIONS <= 10
        finally:
            for connection in idle:
                connection.close()

        def scraped() -> bool:
            try:
                return "probe_total 1.0" in httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text
            except httpx.TransportError:
                return False

        deadline = time.monotonic() + 15
        while not scraped():
            assert time.monotonic() < deadline, "the metrics port never answered again"
            time.sleep(0.1)
