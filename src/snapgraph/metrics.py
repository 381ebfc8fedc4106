"""Prometheus metrics: what a platform team watches, and alerts on, to know the gateway works.

One `Metrics` per app, on its own registry (no process-global state: two apps in one process,
as in the tests, count separately). Labels are fixed, small sets; none carries user data:
an operation's name is a label only if it is one of the first `MAX_OPERATION_LABELS` valid
names of a credentialed caller's successful answer this process saw (or a safelist's
operation), an error code only if errors.py (or a limit of ours) defines it.

    metrics = Metrics()
    metrics.cache_lookups.labels(result="hit").inc()
    metrics.observe_graphql({"operation_name": "Mine", "operation_type": "query"}, 200, 0.004)
    body = metrics.render()      # the text exposition format, served at GET /metrics

Several worker processes (`snapgraph serve --workers N`) share their numbers through
prometheus_client's multiprocess mode (metrics_exposition.py): state that lives in each
worker (the breaker, the cache) is then copied into the shared gauges every
`exposition.SAMPLE_SECONDS`, instead of being read at scrape time.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeGuard

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from snapgraph import metrics_exposition as exposition
from snapgraph._version import __version__
from snapgraph.cache_backends import MemoryStore, Store
from snapgraph.errors import GatewayError

CONTENT_TYPE = CONTENT_TYPE_LATEST
# A gateway's answers take from a millisecond (the response cache) to its upstream deadline.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Names beyond these share "other": a client minting names cannot grow the series without end.
MAX_OPERATION_LABELS = 50
_OPERATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def is_sane_operation_name(name: object) -> TypeGuard[str]:
    """A GraphQL name of at most 64 characters: fit for a label or a span name."""
    return isinstance(name, str) and _OPERATION_NAME.fullmatch(name) is not None


OPERATION_TYPES = ("query", "mutation", "subscription")
CIRCUIT_STATES = ("closed", "open", "half-open")
CACHE_STATES = ("memory", "redis", "degraded")
# Codes our answers carry that are not an error class's `code` (limits.py, document.py,
# endpoint.py).
_LIMIT_CODES = {
    "INTROSPECTION_DISABLED",
    "MAX_DEPTH_LIMIT",
    "MAX_ALIASES_LIMIT",
    "MAX_SELECTIONS_LIMIT",
    "MAX_TOKENS_LIMIT",
    "MAX_VALIDATION_WORK_LIMIT",
    "MAX_INTROSPECTION_LIMIT",
    "MAX_DOCUMENT_SIZE_LIMIT",
    "CLIENT_CLOSED_REQUEST",  # web/endpoint.py: the caller hung up mid-request
}


def _error_classes(base: type[GatewayError]) -> Iterator[type[GatewayError]]:
    yield base
    for subclass in base.__subclasses__():
        yield from _error_classes(subclass)


# Every code an answer of ours can carry; anything else is counted as "OTHER".
ERROR_CODES = frozenset({error.code for error in _error_classes(GatewayError)} | _LIMIT_CODES)


class Breaker(Protocol):
    @property
    def state(self) -> str: ...


class SizedByBytes(Protocol):
    @property
    def stored_bytes(self) -> int: ...


class Metrics:
    """The gateway's counters, histograms and gauges."""

    def __init__(self) -> None:
        # prometheus_client has no per-registry switch (0.26: a module flag read at collection
        # time): `_created` series double the exposition and no dashboard of ours reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess_dir = exposition.multiprocess_dir()
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
            buckets=BUCKETS,
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
        self.request_seconds = Histogram(
            "snapgraph_request_duration_seconds",
            "Time to answer a GraphQL-over-HTTP request, by operation name (the first "
            f"{MAX_OPERATION_LABELS} seen; then other; anonymous; unknown when refused before "
            "an operation was picked), operation type and HTTP status.",
            ["operation", "type", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        graphql_errors = Counter(
            "snapgraph_graphql_errors",
            "GraphQL answers that carry errors, once per answer and extensions.code (OTHER: "
            "a code the gateway does not define).",
            ["code"],
            registry=self.registry,
        )
        # Bound once, so every code shows (as 0) before its first error: rates need a series.
        self._errors = {code: graphql_errors.labels(code=code) for code in ERROR_CODES | {"OTHER"}}
        self.worker_requests = Gauge(
            "snapgraph_worker_graphql_requests",
            "GraphQL requests this process answered since it started; with several workers one "
            "series per live worker (label pid), to see how connections spread over them.",
            registry=self.registry,
            multiprocess_mode="liveall",
        )
        self._operations = OperationLabels(MAX_OPERATION_LABELS)
        self._by_request: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}
        self.state = GatewayState(self.registry, sampled=self.multiprocess_dir is not None)

    def observe_graphql(self, access: Mapping[str, Any], status: int, seconds: float) -> None:
        """Count one answered GraphQL request from what its access line says of it."""
        kind = access.get("operation_type")
        kind = kind if kind in OPERATION_TYPES else "unknown"
        # Only a credentialed caller's success may take a label: an anonymous
        # `query X { __typename }` succeeds too, and anyone can send fifty of them.
        succeeded = status == 200 and not access.get("error_codes")
        succeeded = succeeded and access.get("credentialed") is True
        operation = self._operations.label(
            access.get("operation_name"), resolved=kind != "unknown", succeeded=succeeded
        )
        key = (operation, kind, status)
        children = self._by_request.get(key)
        if children is None:
            # Bound once per label set (a bounded number): labels() costs more than observe().
            children = (
                self.request_seconds.labels(operation, kind, str(status)),
                self.graphql_requests.labels(str(status)),
            )
            self._by_request[key] = children
        children[0].observe(seconds)
        children[1].inc()
        self.worker_requests.inc()
        for code in access.get("error_codes") or ():
            self._errors.get(code, self._errors["OTHER"]).inc()

    def admit_operations(self, names: Iterable[str]) -> None:
        """Give these operation names labels of their own from the start (a safelist's)."""
        self._operations.admit(names)

    def watch(self, *, breaker: Breaker, store: Store, responses: SizedByBytes) -> None:
        """Read the gateway's state (breaker, cache) into the gauges from now on."""
        self.state.watch(breaker=breaker, store=store, responses=responses)

    def watch_view_bytes(self, read: Callable[[], int]) -> None:
        """Read the bytes of the views kept beside decoded cache entries (the cache's own
        count, see cache.py `Views`) into `snapgraph_cache_bytes{cache="views"}`."""
        self.state.watch_view_bytes(read)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        self.state.sample()  # this worker's state as of now; the others' as of their last sample
        return generate_latest(exposition.multiprocess_registry(self.multiprocess_dir))


class OperationLabels:
    """An operation's label: its name while names stay few and sane, else a shared one."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._admitted: set[str] = set()

    def admit(self, names: Iterable[str]) -> None:
        """Names an operator configured (the safelist's operations): labels from the start,
        beyond the limit, as the operator chose them."""
        self._admitted.update(name for name in names if is_sane_operation_name(name))

    def label(self, name: object, *, resolved: bool, succeeded: bool) -> str:
        """A name gets a label of its own only from an answer that succeeded (200, no
        error): a client without credentials, or with an invalid document, cannot take the
        few labels there are."""
        if not resolved:
            return "unknown"  # refused before an operation was picked (parse error, ...)
        if name is None:
            return "anonymous"
        if name in self._admitted:
            assert isinstance(name, str)
            return name
        if not is_sane_operation_name(name):
            return "other"
        if not succeeded or len(self._admitted) >= self._limit:
            return "other"
        self._admitted.add(name)
        return name


class GatewayState:
    """Gauges of what the gateway's parts are in: read when scraped in one process; with
    several workers, `sample`d into the shared files by each worker (a scrape answered by one
    worker cannot read another's breaker)."""

    def __init__(self, registry: CollectorRegistry, *, sampled: bool) -> None:
        self._sampled = sampled
        self._readings: list[tuple[Gauge, Callable[[], float]]] = []
        # livemax: 1 when any live worker is in that state; livesum: the workers' total.
        self.circuit = Gauge(
            "snapgraph_upstream_circuit_state",
            "1 for the upstream circuit breaker's state (closed, open, half-open).",
            ["state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.cache = Gauge(
            "snapgraph_cache_state",
            "1 for the cache's state: memory (in-process), redis, or degraded (Redis failed: "
            "serving from the in-process fallback).",
            ["state"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.bytes = Gauge(
            "snapgraph_cache_bytes",
            "Bytes held in process: store (upstream answers' JSON text in the in-process "
            "store; with Redis, its fallback), responses (serialized answers) and views (the "
            "sorted views of cached lists that pages are cut from: their references to rows, "
            "estimated).",
            ["cache"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.entries = Gauge(
            "snapgraph_cache_entries",
            "Entries held in the in-process store.",
            ["cache"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        build = Gauge(
            "snapgraph_build_info",
            "1, labelled with the gateway's version and Python's.",
            ["version", "python"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        build.labels(__version__, platform.python_version()).set(1)

    def watch(self, *, breaker: Breaker, store: Store, responses: SizedByBytes) -> None:
        readings: list[tuple[Gauge, Callable[[], float]]] = [
            *((self.circuit.labels(s), _is(lambda: breaker.state, s)) for s in CIRCUIT_STATES),
            *((self.cache.labels(s), _is(store.state, s)) for s in CACHE_STATES),
            (self.bytes.labels("responses"), lambda: float(responses.stored_bytes)),
        ]
        memory = _in_process_store(store)
        if memory is not None:
            readings.append((self.bytes.labels("store"), lambda: float(memory.stored_bytes)))
            readings.append((self.entries.labels("store"), lambda: float(len(memory))))
        self._add_readings(readings)

    def watch_view_bytes(self, read: Callable[[], int]) -> None:
        self._add_readings([(self.bytes.labels("views"), lambda: float(read()))])

    def _add_readings(self, readings: list[tuple[Gauge, Callable[[], float]]]) -> None:
        # Added to, not replaced: the cache, built before the rest is watched, adds its own.
        self._readings += readings
        if not self._sampled:
            for gauge, read in readings:
                gauge.set_function(read)  # read by the scrape itself: never out of date

    def sample(self) -> None:
        """Copy the state into the gauges (multiprocess mode: the files other workers read)."""
        if self._sampled:
            for gauge, read in self._readings:
                gauge.set(read())


def _is(current: Callable[[], str], state: str) -> Callable[[], float]:
    return lambda: 1.0 if current() == state else 0.0


def _in_process_store(store: Store) -> MemoryStore | None:
    if isinstance(store, MemoryStore):
        return store
    fallback = getattr(store, "fallback", None)  # FailoverStore: Redis's in-process stand-in
    return fallback if isinstance(fallback, MemoryStore) else None
