"""OpenTelemetry traces: the operation span continues the caller's trace, the upstream fetch is
its child and carries the trace to the upstream, cache lookups are events; off, nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from conftest import ALICE_KEY, Upstream, data_of
from snapgraph.app import create_app
from snapgraph.serving import serve_in_thread
from snapgraph.settings import Settings
from snapgraph.tracing import Tracing, tracing_from_environ

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
NAMED = "query Mine($type: SnapshotType) { snapshots(type: $type) { id } }"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(upstream: Upstream, exporter: InMemorySpanExporter) -> Iterator[httpx.Client]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        Settings.from_environ({}, upstream_url=upstream.url), tracing=Tracing(provider)
    )
    with ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(app))
        yield stack.enter_context(httpx.Client(base_url=url, timeout=30))


def _post(http: httpx.Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = http.post("/graphql", json=body, headers=headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return [span for span in spans if span.kind == kind]


def test_the_operation_span_continues_the_callers_trace_and_the_upstream_receives_it(
    traced: httpx.Client, exporter: InMemorySpanExporter, upstream: Upstream
) -> None:
    headers = {**ALICE_KEY, "traceparent": TRACEPARENT}
    data_of(_post(traced, headers, query=NAMED, variables={"type": "USER"}))

    spans = exporter.get_finished_spans()
    (operation,) = _by_kind(spans, SpanKind.SERVER)
    (fetch,) = _by_kind(spans, SpanKind.CLIENT)
    assert operation.name == "query Mine"
    assert format(operation.context.trace_id, "032x") == CALLER_TRACE
    assert operation.parent is not None and format(operation.parent.span_id, "016x") == CALLER_SPAN
    assert operation.attributes is not None
    assert operation.attributes["graphql.operation.name"] == "Mine"
    assert operation.attributes["graphql.operation.type"] == "query"
    assert len(str(operation.attributes["graphql.document.hash"])) == 64
    assert [event.attributes["snapgraph.cache.result"] for event in operation.events] == ["miss"]

    assert fetch.parent is not None and fetch.parent.span_id == operation.context.span_id
    assert fetch.context.trace_id == operation.context.trace_id
    assert fetch.attributes is not None
    assert fetch.attributes["http.request.method"] == "GET"
    assert fetch.attributes["http.response.status_code"] == 200
    assert str(fetch.attributes["url.full"]).endswith("/v1/snapshots?type=user")

    # The upstream got the fetch span's own traceparent: same trace, the fetch as parent.
    sent = upstream.requests[-1].headers["traceparent"]
    assert sent == f"00-{CALLER_TRACE}-{format(fetch.context.span_id, '016x')}-01"


# W3C Trace Context: a vendor must propagate 32 list members and 512 characters of tracestate;
# more, or a malformed one, is dropped whole (a valid traceparent is still continued).
NORMAL_STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
AT_THE_LIMIT = "a=" + "v" * 254 + ",b=" + "v" * 253  # 512 characters
HUGE_STATE = ",".join(f"k{n}=" + "v" * 250 for n in range(31))  # 7.9 KB, 31 valid members


@pytest.mark.parametrize(
    ("tracestate", "forwarded"),
    [
        pytest.param(NORMAL_STATE, NORMAL_STATE, id="normal"),
        pytest.param(AT_THE_LIMIT, AT_THE_LIMIT, id="512-characters"),
        pytest.param(AT_THE_LIMIT + "v", None, id="513-characters"),
        pytest.param(HUGE_STATE, None, id="8-KB"),
        pytest.param(",".join(f"k{n}=v" for n in range(33)), None, id="33-members"),
        pytest.param("Congo=t61rcWkgMzE", None, id="upper-case-key"),
        pytest.param("congo=a,congo=b", None, id="repeated-key"),
        pytest.param("congo=a b=c", None, id="no-comma"),
    ],
)
def test_only_a_tracestate_within_the_w3c_limits_is_forwarded_and_recorded(
    traced: httpx.Client,
    exporter: InMemorySpanExporter,
    upstream: Upstream,
    tracestate: str,
    forwarded: str | None,
) -> None:
    headers = {**ALICE_KEY, "traceparent": TRACEPARENT, "tracestate": tracestate}
    data_of(_post(traced, headers, query="{ snapshots { id } }"))
    received = upstream.requests[-1].headers
    assert received.get("tracestate") == forwarded
    assert received["traceparent"].startswith(f"00-{CALLER_TRACE}-")  # the trace, continued
    (operation,) = _by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert operation.context.trace_state.to_header() == (forwarded or "")


def test_a_cached_answer_is_a_hit_event_and_no_upstream_span(
    traced: httpx.Client, exporter: InMemorySpanExporter
) -> None:
    _post(traced, ALICE_KEY, query="{ snapshots { id } }")
    exporter.clear()
    _post(traced, ALICE_KEY, query="{ snapshots { id name } }")
    (operation,) = exporter.get_finished_spans()
    assert operation.name == "query"  # anonymous
    assert [event.attributes["snapgraph.cache.result"] for event in operation.events] == ["hit"]


def test_spans_hold_no_credential_and_no_variable_value(
    traced: httpx.Client, exporter: InMemorySpanExporter
) -> None:
    secret_token = "demo-alice-token"
    _post(
        traced,
        {"Authorization": f"Bearer {secret_token}"},
        query="query Find($id: ID!) { snapshot(id: $id) { id } }",
        variables={"id": "snap-alice-secret-id-value"},
    )
    text = json.dumps([json.loads(span.to_json()) for span in exporter.get_finished_spans()])
    assert "Find" in text  # the spans are there
    assert secret_token not in text and "snap-alice-secret-id-value" not in text


def test_an_error_marks_the_operation_span_with_its_code(
    traced: httpx.Client, exporter: InMemorySpanExporter
) -> None:
    _post(traced, {}, query="query Anonymous { snapshots { id } }")  # no credentials
    (operation,) = exporter.get_finished_spans()
    assert operation.status.status_code.name == "ERROR"
    assert operation.attributes is not None
    assert tuple(operation.attributes["graphql.error.codes"]) == ("UNAUTHENTICATED",)


def test_with_tracing_off_no_span_is_made_and_nothing_is_propagated(
    upstream: Upstream, exporter: InMemorySpanExporter, start_gateway
) -> None:
    # Even with a global provider installed (as the application around it might), off
    # means off for snapgraph. (FastAPI itself traces routes through a global provider: the
    # reference upstream's and our /graphql route's spans are FastAPI's, not ours.)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    gateway = start_gateway(upstream.url)
    data_of(gateway.query("{ snapshots { id } }", {**ALICE_KEY, "traceparent": TRACEPARENT}))
    scopes = {span.instrumentation_scope.name for span in exporter.get_finished_spans()}
    assert "snapgraph" not in scopes
    assert "traceparent" not in upstream.requests[-1].headers


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, False),  # not supported: said in a warning
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ],
)
def test_tracing_is_on_only_when_otel_variables_ask_for_traces(
    environ: dict[str, str], enabled: bool
) -> None:
    tracing = tracing_from_environ(environ)
    try:
        assert tracing.enabled is enabled
    finally:
        tracing.shutdown()


def test_the_service_is_named_snapgraph_unless_otel_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    named = tracing_from_environ({"OTEL_TRACES_EXPORTER": "console"})
    # The SDK reads OTEL_SERVICE_NAME from the process's environment itself.
    monkeypatch.setenv("OTEL_SERVICE_NAME", "snapshots-gateway")
    renamed = tracing_from_environ(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "snapshots-gateway"}
    )
    try:
        assert named.provider.resource.attributes["service.name"] == "snapgraph"
        assert renamed.provider.resource.attributes["service.name"] == "snapshots-gateway"
    finally:
        named.shutdown()
        renamed.shutdown()


def test_spans_reach_an_otlp_collector_over_http(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    received: list[bytes] = []

    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    with serve_in_thread(collector) as collector_url:
        # As an operator would configure it: the SDK reads these from the environment.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url)
        import os

        tracing = tracing_from_environ(os.environ)
        app = create_app(Settings.from_environ({}, upstream_url=upstream.url), tracing=tracing)
        with serve_in_thread(app) as url:  # leaving it ends the lifespan: spans are flushed
            response = httpx.post(
                url + "/graphql", json={"query": NAMED}, headers=ALICE_KEY, timeout=30
            )
            assert response.status_code == 200
    export = ExportTraceServiceRequest()
    for body in received:
        export.MergeFromString(body)
    (resource_spans,) = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "snapgraph"
    names = sorted(span.name for scope in resource_spans.scope_spans for span in scope.spans)
    assert names == ["GET", "query Mine"]


def test_the_fetch_span_names_the_url_the_request_went_to_under_a_path_prefix(
    upstream: Upstream, exporter: InMemorySpanExporter
) -> None:
    from snapgraph.upstream.client import UpstreamClient
    from snapgraph.upstream.models import Credentials

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=[])

    client = UpstreamClient(
        "https://api.example/prefix",
        timeout=httpx.Timeout(5.0),
        transport=httpx.MockTransport(record),
        tracing=Tracing(provider),
    )

    async def fetch() -> None:
        await client.list_snapshots(Credentials(api_key="k"), "system", request_id="r")
        await client.aclose()

    import asyncio

    asyncio.run(fetch())
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert (
        span.attributes["url.full"]
        == seen[0]
        == "https://api.example/prefix/v1/snapshots?type=system"
    )


def test_a_client_chosen_operation_name_that_is_not_short_names_no_span(
    traced: httpx.Client, exporter: InMemorySpanExporter
) -> None:
    long_name = "Q" * 5000
    _post(traced, ALICE_KEY, query=f"query {long_name} {{ snapshots {{ id }} }}")
    (operation,) = _by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert operation.name == "query"
    assert operation.attributes is not None
    assert "graphql.operation.name" not in operation.attributes


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),  # a list, as the specification allows
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            False,
        ),
    ],
)
def test_exporter_lists_and_unsupported_protocols(environ: dict[str, str], enabled: bool) -> None:
    tracing = tracing_from_environ(environ)
    try:
        assert tracing.enabled is enabled
    finally:
        tracing.shutdown()


def test_resource_attributes_from_the_environment_win(monkeypatch: pytest.MonkeyPatch) -> None:
    attributes = "service.version=2026.11-prod,k8s.service.name=edge"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", attributes)
    tracing = tracing_from_environ(
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_RESOURCE_ATTRIBUTES": attributes}
    )
    try:
        resource = tracing.provider.resource.attributes
        assert resource["service.version"] == "2026.11-prod"
        assert resource["service.name"] == "snapgraph"  # k8s.service.name is another key
    finally:
        tracing.shutdown()
