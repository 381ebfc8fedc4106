"""OpenTelemetry traces, optional: `pip install 'snapgraph[otel]'` and the standard `OTEL_*`
environment variables.

    tracing = tracing_from_environ(os.environ)       # off unless OTEL_* asks for traces
    with tracing.request(request.headers) as span:       # SERVER span, the caller's trace
        span.named("Dashboard", "query", document)
        with tracing.upstream_fetch(url, headers) as fetch:   # CLIENT span, traceparent sent
            fetch.answered(200, resends=1)
        tracing.cache_event("hit")                   # an event on the current span
        span.finished(200, error_codes=[])

A caller's W3C `traceparent`/`tracestate` is continued, and the upstream request carries the
fetch span's own. A tracestate beyond what Trace Context asks a vendor to propagate (32 list
members, 512 characters), or a malformed one, is dropped: neither forwarded nor recorded.
Spans hold the operation's name and type and the document's SHA-256, the upstream URL (path
and `type` only: the only query the contract has) and status, never a variable, a header
value or a credential.

Off (the default), `Tracing` is a null object: each hook is one attribute test, and
OpenTelemetry is not even imported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from snapgraph._version import __version__
from snapgraph.metrics import is_sane_operation_name

logger = logging.getLogger("snapgraph.tracing")

_EXPORTERS = ("otlp", "console")

# W3C Trace Context, tracestate: `key=value` list members, a simple key or `tenant@system`.
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][a-z0-9_*/-]{0,255}|[a-z0-9][a-z0-9_*/-]{0,240}@[a-z][a-z0-9_*/-]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
_TRACESTATE_MAX_MEMBERS = 32
# What a vendor must propagate; a caller's 8 KB (OpenTelemetry keeps up to 8,192 characters)
# would otherwise ride on every upstream request of the trace.
_TRACESTATE_MAX_CHARS = 512


class FetchSpan:
    """What an upstream fetch tells its span once it is over."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def answered(self, status: int, *, resends: int) -> None:
        if self._span is None:
            return
        self._span.set_attribute("http.response.status_code", status)
        if resends:
            self._span.set_attribute("http.request.resend_count", resends)
        if status >= 500:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR))


_NO_FETCH_SPAN = FetchSpan()


class OperationSpan:
    """The span of one GraphQL request, or nothing (tracing off)."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    @property
    def trace_id(self) -> str | None:
        """32 hex digits, for the access line; None when tracing is off."""
        if self._span is None:
            return None
        return format(self._span.get_span_context().trace_id, "032x")

    def named(self, name: str | None, operation_type: str, document: str) -> None:
        if self._span is None:
            return
        # A client chooses the name: one that is not a short GraphQL name (a 100,000-character
        # one would do) names no span; the document hash still tells operations apart.
        shown = name if is_sane_operation_name(name) else None
        self._span.update_name(f"{operation_type} {shown}" if shown else operation_type)
        self._span.set_attribute("graphql.operation.type", operation_type)
        if shown:
            self._span.set_attribute("graphql.operation.name", shown)
        digest = hashlib.sha256(document.encode()).hexdigest()
        self._span.set_attribute("graphql.document.hash", digest)

    def finished(self, status: int, error_codes: list[str]) -> None:
        if self._span is None:
            return
        self._span.set_attribute("http.response.status_code", status)
        if error_codes:
            self._span.set_attribute("graphql.error.codes", error_codes)
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, ",".join(error_codes)))


_NO_OPERATION_SPAN = OperationSpan()


class Tracing:
    """Spans for operations and upstream fetches, or nothing at all (`provider` None)."""

    def __init__(self, provider: Any = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("snapgraph", __version__) if provider else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    @contextmanager
    def request(self, headers: Mapping[str, str]) -> Iterator[OperationSpan]:
        """A SERVER span for one GraphQL request, continuing the caller's trace; named for
        its operation once the document is parsed (`OperationSpan.named`)."""
        if self._tracer is None:
            yield _NO_OPERATION_SPAN
            return
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind

        with self._tracer.start_as_current_span(
            "graphql", context=extract(_trace_headers(headers)), kind=SpanKind.SERVER
        ) as span:
            yield OperationSpan(span)

    @contextmanager
    def upstream_fetch(self, url: str, headers: dict[bytes, bytes]) -> Iterator[FetchSpan]:
        """A CLIENT span around one upstream fetch (its retries included); adds the span's
        `traceparent` (and `tracestate`) to `headers`."""
        if self._tracer is None:
            yield _NO_FETCH_SPAN
            return
        from opentelemetry.propagate import inject
        from opentelemetry.trace import SpanKind

        attributes = {"http.request.method": "GET", "url.full": url}
        with self._tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            inject(carrier)
            headers.update({key.encode(): value.encode() for key, value in carrier.items()})
            yield FetchSpan(span)

    def cache_event(self, result: str) -> None:
        """Mark a cache lookup (hit, miss, coalesced, shared, stale) on the current span."""
        if self._tracer is None:
            return
        from opentelemetry import trace

        trace.get_current_span().add_event("cache.lookup", {"snapgraph.cache.result": result})

    def shutdown(self) -> None:
        """Send what is buffered, then stop (at the end of the app's lifespan)."""
        if self.provider is not None:
            self.provider.shutdown()


def _trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers, without a tracestate that no vendor need propagate."""
    carrier = dict(headers)
    state = carrier.get("tracestate")
    if state is not None and not _propagable(state):
        del carrier["tracestate"]
    return carrier


def _propagable(tracestate: str) -> bool:
    """At most 32 well-formed list members with distinct keys, in at most 512 characters
    (empty members, and whitespace around them, are allowed)."""
    if len(tracestate) > _TRACESTATE_MAX_CHARS:
        return False
    members = [member.strip(" \t") for member in tracestate.split(",")]
    keys = [member.partition("=")[0] for member in members if member]
    return (
        len(keys) <= _TRACESTATE_MAX_MEMBERS
        and len(set(keys)) == len(keys)
        and all(_TRACESTATE_MEMBER.fullmatch(member) for member in members if member)
    )


def tracing_from_environ(environ: Mapping[str, str]) -> Tracing:
    """On when `OTEL_TRACES_EXPORTER` names otlp or console (a comma-separated list, as the
    specification allows), or an OTLP endpoint is set; off with `OTEL_SDK_DISABLED=true`, or
    `none`. The SDK reads the rest of `OTEL_*` itself (endpoint, headers, sampler, resource
    attributes, batch sizes)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing()
    named = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    named.discard("")
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if "none" in named or not (named or endpoint):
        return Tracing()
    exporters = (named or {"otlp"}) & set(_EXPORTERS)
    if named - set(_EXPORTERS):
        logger.warning("OTEL_TRACES_EXPORTER: only otlp and console are supported")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if "otlp" in exporters and protocol.strip() != "http/protobuf":
        # Spans sent as HTTP to a gRPC port would be lost without a word: say so, send none.
        logger.warning("OTLP over %s is not supported (http/protobuf is): tracing off", protocol)
        return Tracing()
    if not exporters:
        return Tracing()
    try:
        return Tracing(_provider(exporters, environ))
    except ImportError:
        logger.warning(
            "OTEL_* asks for traces, but the otel extra is not installed: "
            "pip install 'snapgraph[otel]'; tracing off"
        )
        return Tracing()


def _provider(exporters: set[str], environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create(_resource_defaults(environ)))
    if "console" in exporters:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _resource_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """service.name and service.version, unless OTEL_SERVICE_NAME or
    OTEL_RESOURCE_ATTRIBUTES set them (what is passed here would win over them)."""
    given = {
        pair.partition("=")[0].strip()
        for pair in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    }
    if environ.get("OTEL_SERVICE_NAME"):
        given.add("service.name")
    defaults = {"service.name": "snapgraph", "service.version": __version__}
    return {key: value for key, value in defaults.items() if key not in given}
