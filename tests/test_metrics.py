"""Prometheus metrics at /metrics: what happened, never who asked."""

from __future__ import annotations

import asyncio

from conftest import ALICE_KEY, QUERY, Gateway, Upstream, run_concurrently, sample


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
