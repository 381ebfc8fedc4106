"""Prometheus metrics: what a platform team watches to know the gateway earns its keep.

One `Metrics` per app, on its own registry (no process-global state: two apps in one process,
as in the tests, count separately). Labels are fixed, small sets; none carries user data.

    metrics = Metrics()
    metrics.cache_lookups.labels(result="hit").inc()
    body = metrics.render()      # the text exposition format, served at GET /metrics
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.upstream_requests = Counter(
            "snapgraph_upstream_requests",
            "Requests sent to the snapshots service, by outcome (HTTP status or error kind).",
            ["outcome"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "snapgraph_upstream_request_seconds",
            "Time from sending a request upstream to having its whole body.",
            registry=self.registry,
        )
        self.cache_lookups = Counter(
            "snapgraph_cache_lookups",
            "Cache lookups: hit; miss (this process fetched); coalesced (joined a fetch under "
            "way here); shared (another process's fetch landed in Redis); stale (served past "
            "its TTL because the upstream failed).",
            ["result"],
            registry=self.registry,
        )
        self.graphql_answers = Counter(
            "snapgraph_graphql_answers",
            "Executed operations by the path that answered: cached (the response cache), "
            "compiled (a plan over cached rows) or graphql-core.",
            ["path"],
            registry=self.registry,
        )
        self.graphql_requests = Counter(
            "snapgraph_graphql_requests",
            "GraphQL-over-HTTP requests answered, by HTTP status.",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
