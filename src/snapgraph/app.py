"""`create_app`: the gateway as an ASGI app; its lifespan owns the HTTP client and the cache.

app = create_app(Settings.from_environ(upstream_url="http://127.0.0.1:9000"))
uvicorn.run(app)

`app_from_environ` is the same gateway as an ASGI factory, for process managers:
`uvicorn --factory snapgraph.app:app_from_environ` (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import strawberry
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from snapgraph import logs, probes
from snapgraph import metrics_exposition as exposition
from snapgraph._version import __version__
from snapgraph.cache import SnapshotCache
from snapgraph.cache_backends import Store, build_store
from snapgraph.errors import ConfigError
from snapgraph.execution.document import Documents
from snapgraph.execution.executor import Executor
from snapgraph.execution.inputs import InputLimits
from snapgraph.execution.limits import DocumentLimits
from snapgraph.execution.response_cache import ResponseCache
from snapgraph.graph.schema import build_schema, graphql_schema
from snapgraph.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from snapgraph.metrics import Metrics
from snapgraph.settings import Settings
from snapgraph.tracing import Tracing, tracing_from_environ
from snapgraph.upstream.client import UpstreamClient
from snapgraph.upstream.resilience import CircuitBreaker, RetryPolicy
from snapgraph.web import graphiql
from snapgraph.web.endpoint import GraphQLEndpoint
from snapgraph.web.http_limits import BodyTimeoutMiddleware
from snapgraph.web.persisted_queries import PersistedQueries, load_safelist
from snapgraph.web.request_id import RequestIdMiddleware

logger = logging.getLogger("snapgraph")


@dataclass
class Gateway:
    """Everything one running gateway shares between requests."""

    settings: Settings
    schema: strawberry.federation.Schema
    client: UpstreamClient
    store: Store
    cache: SnapshotCache
    persisted_queries: PersistedQueries
    metrics: Metrics
    documents: Documents
    executor: Executor
    tracing: Tracing


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the gateway. `transport` replaces the upstream network (tests of faults only);
    `tracing` (off by default) is usually `tracing_from_environ(os.environ)`."""
    tracing = tracing or Tracing()
    if settings.upstream_url is None:
        raise ConfigError(
            "SNAPGRAPH_UPSTREAM_URL", "must be set (the snapshots service's URL)", None
        )
    schema = build_schema(settings.federation_version)
    persisted_queries = _persisted_queries(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = _start_gateway(settings, schema, persisted_queries, transport, tracing)
        app.state.gateway = gateway
        app.state.endpoint = GraphQLEndpoint(gateway)
        metrics_port = settings.metrics_port if settings.metrics else 0
        try:
            async with (
                probes.background_check(gateway.client, gateway.store),
                exposition.exposed(gateway.metrics, host=settings.host, port=metrics_port),
            ):
                yield
        finally:
            # In-flight requests have ended (the server drains before the lifespan ends).
            await gateway.client.aclose()
            await gateway.store.close()
            # Sends the spans still buffered: up to the exporter's timeout, off the loop.
            await asyncio.to_thread(tracing.shutdown)

    app = FastAPI(
        title="snapgraph",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        exception_handlers={StarletteHTTPException: _http_error},
    )
    # Every method reaches the endpoint, which answers 405 in GraphQL's error shape itself.
    app.add_route("/graphql", _EveryMethod(_graphql))  # type: ignore[arg-type]  # see the class
    app.state.readiness = probes.Readiness()
    app.add_route("/livez", probes.livez, methods=["GET"])
    app.add_route("/healthz", probes.livez, methods=["GET"])
    app.add_route("/readyz", probes.readyz, methods=["GET"])
    if settings.metrics and not settings.metrics_port:  # else on their own port (lifespan)
        app.add_route("/metrics", _metrics, methods=["GET"])
    graphiql.mount(app, enabled=settings.graphiql)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            allow_credentials=True,
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(BodyTimeoutMiddleware, seconds=settings.http_body_timeout)
    # Outermost, so every answer (404s, probes, the explorer, CORS preflights) carries it.
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_environ() -> FastAPI:
    """The gateway configured by `SNAPGRAPH_*` alone, with logging set up as `snapgraph serve`
    does: an ASGI factory for a process manager that runs the workers itself.

        SNAPGRAPH_UPSTREAM_URL=http://snapshots:9000 \\
            uvicorn --factory snapgraph.app:app_from_environ --workers 4

    With several workers, set `PROMETHEUS_MULTIPROC_DIR` to an empty directory (made fresh on
    each start) so that /metrics sums them all; `snapgraph serve --workers N` does all this.
    """
    settings = Settings.from_environ()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings, tracing=tracing_from_environ(os.environ))


def document_limits(settings: Settings) -> DocumentLimits:
    return DocumentLimits(
        max_depth=settings.max_depth,
        max_aliases=settings.max_aliases,
        max_selections=settings.max_selections,
        introspection=settings.introspection,
    )


def input_limits(settings: Settings) -> InputLimits:
    return InputLimits(
        max_list_items=settings.max_list_items,
        max_string_length=settings.max_string_length,
        max_representations=settings.max_representations,
    )


def _persisted_queries(settings: Settings) -> PersistedQueries:
    safelist = None
    if settings.safelist_file is not None:
        try:
            safelist = load_safelist(settings.safelist_file)
        except (OSError, ValueError) as exc:
            raise ConfigError("SNAPGRAPH_SAFELIST_FILE", f"cannot be read: {exc}", None) from exc
    return PersistedQueries(
        settings.apq_max_entries,
        max_bytes=settings.apq_max_bytes,
        max_document_bytes=settings.apq_max_document_bytes,
        safelist=safelist,
        allow_federation=settings.safelist_allow_federation,
        max_tokens=settings.max_tokens,
    )


def _start_gateway(
    settings: Settings,
    schema: strawberry.federation.Schema,
    persisted_queries: PersistedQueries,
    transport: httpx.AsyncBaseTransport | None,
    tracing: Tracing,
) -> Gateway:
    assert settings.upstream_url is not None
    metrics = Metrics()
    client = UpstreamClient(
        settings.upstream_url,
        timeout=httpx.Timeout(
            settings.upstream_timeout,
            connect=settings.upstream_connect_timeout,
            pool=settings.upstream_pool_timeout,
        ),
        max_connections=settings.upstream_max_connections,
        max_body_bytes=settings.upstream_max_body_bytes,
        trust_env=settings.upstream_trust_env,
        transport=transport,
        metrics=metrics,
        deadline=settings.upstream_deadline,
        retry=RetryPolicy(settings.upstream_retries, settings.upstream_retry_backoff),
        breaker=CircuitBreaker(settings.upstream_breaker_failures, settings.upstream_breaker_reset),
        tracing=tracing,
    )
    store = build_store(
        settings.cache_url,
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
        timeout=settings.cache_timeout,
    )
    # Without Redis the secret need not survive a restart: the memory cache does not either.
    secret = (settings.cache_secret or secrets.token_hex(32)).encode()
    cache = SnapshotCache(
        store,
        secret=secret,
        ttl=settings.cache_ttl,
        stale_window=settings.cache_stale_window,
        # A lease outlives the slowest upstream call it guards, so waiters rarely fetch twice.
        lease_seconds=settings.upstream_deadline + 1,
        metrics=metrics,
        # Decoded rows take some three times their JSON text: an eighth of the text bound.
        decoded_max_bytes=settings.cache_max_bytes // 8,
        tracing=tracing,
    )
    documents = Documents(
        graphql_schema(schema),
        document_limits(settings),
        max_tokens=settings.max_tokens,
        inputs=input_limits(settings),
        max_chars=settings.max_document_chars,
    )
    # With caching off every fetch is new, so no stored answer could ever be served again.
    response_bytes = settings.response_cache_max_bytes if settings.cache_ttl > 0 else 0
    executor = Executor(
        graphql_schema(schema), response_cache=ResponseCache(response_bytes), metrics=metrics
    )
    metrics.watch(breaker=client.breaker, store=store, responses=executor.response_cache)
    metrics.admit_operations(persisted_queries.operation_names())
    return Gateway(
        settings,
        schema,
        client,
        store,
        cache,
        persisted_queries,
        metrics,
        documents,
        executor,
        tracing,
    )


class _EveryMethod:
    """`endpoint` as an ASGI app, which a Starlette route hands every method to. A function
    endpoint gets only the methods its route lists; the router answers any other (FOO, TRACE)
    with its own 405, whose `Allow` names the whole list. (FastAPI's `add_route` is typed for
    functions only, hence the `type: ignore` where it is added.)"""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """404s and the like in the same shape as every other error, with a code."""
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "BAD_REQUEST")
    body = {"errors": [{"message": exc.detail, "extensions": {"code": code}}]}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _graphql(request: Request) -> Response:
    if graphiql.wants_page(request):
        return graphiql.page(request)
    endpoint: GraphQLEndpoint = request.app.state.endpoint
    return await endpoint(request)


async def _metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(gateway.metrics.render(), media_type=METRICS_CONTENT_TYPE)


def start_draining(app: FastAPI) -> None:
    """From now on `/readyz` answers 503: the balancer stops sending new requests."""
    readiness: probes.Readiness = app.state.readiness
    readiness.draining = True
