"""The `/graphql` endpoint: one HTTP request in, one GraphQL response out.

    read the HTTP request (64 KiB without a credential) -> resolve APQ / safelist -> parse
    -> pick the operation -> check the method -> validate (limits first)
    -> refuse a credential-less caller (before variables are read) -> bound the raw
       variables (before they are coerced) -> execute -> bound the answer's bytes
    -> register APQ (only once the upstream took the caller's credential)

Every refusal on the way is a `RequestError` whose HTTP status and code the client can act
on; it is logged as one line, never with a traceback.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from graphql import OperationType
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from snapgraph.errors import (
    BadRequest,
    CredentialsRequired,
    GraphQLRequestInvalid,
    NotAcceptable,
    OperationNotAllowed,
    RequestError,
    ResponseTooLarge,
)
from snapgraph.execution.inputs import bounded_variables, needs_credentials
from snapgraph.graph.context import Context, ResultBudget
from snapgraph.graph.pages import cursor_secret
from snapgraph.upstream.models import Credentials
from snapgraph.upstream.source import SnapshotSource
from snapgraph.web.credentials import edge_credentials
from snapgraph.web.protocol import (
    JSON,
    GraphQLRequest,
    check_json_content_type,
    choose_media_type,
    parse_post_body,
    parse_query_params,
)

if TYPE_CHECKING:
    from snapgraph.app import Gateway

logger = logging.getLogger("snapgraph.graphql")

# A GraphQL document for this schema is a few hundred bytes; 1 MiB leaves room for variables.
MAX_BODY_BYTES = 1 << 20
# Without a credential only schema fields can run (__typename, introspection, _service), and
# no document for them needs more; a larger body is refused before it is read or parsed
# (parsing a 0.94 MB list of variables alone costs some 20 ms of CPU).
ANONYMOUS_MAX_BODY_BYTES = 64 << 10
# Per-user data: no shared cache (CDN, proxy) may store one caller's answer for another.
PRIVATE_HEADERS = {
    "Cache-Control": "private, no-store",
    "Vary": "Accept, Authorization, X-API-Key",
}


# Codes that say the upstream did not take the caller's credential.
_REFUSED_CREDENTIAL = frozenset({"UNAUTHENTICATED", "FORBIDDEN"})
# What nginx calls a request whose client closed the connection before the answer.
CLIENT_CLOSED_REQUEST = 499
_UNEXPECTED = {"message": "Unexpected error.", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}


def wants_refresh(request: Request) -> bool:
    cache_control = request.headers.get("cache-control", "").lower()
    return "no-cache" in cache_control or request.headers.get("pragma", "").lower() == "no-cache"


class GraphQLEndpoint:
    """Executes GraphQL-over-HTTP requests against the gateway's schema."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._cursor_secret = cursor_secret(gateway.settings.cache_secret)
        self._input_limits = gateway.documents.input_limits

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        with self.gateway.tracing.request(request.headers) as span:
            request.state.span = span
            response = await self._respond(request)
            access = _access(request)
            codes = access.get("error_codes")
            span.finished(
                response.status_code, list(codes) if isinstance(codes, list | tuple) else []
            )
            if span.trace_id is not None:
                request.state.access = {**access, "trace_id": span.trace_id}
        # What the access line will say of the operation (request.state.access) labels it.
        self.gateway.metrics.observe_graphql(
            _access(request), response.status_code, time.perf_counter() - started
        )
        return response

    async def _respond(self, request: Request) -> Response:
        request_id: str = request.state.request_id
        if request.method not in ("GET", "POST"):
            return _refused(request, OperationNotAllowed(), JSON, request_id)
        try:
            media_type = choose_media_type(request.headers.get("accept"))
        except NotAcceptable as exc:
            return _refused(request, exc, JSON, request_id)
        try:
            body = await self._run(request, request_id)
        except RequestError as exc:
            return _refused(request, exc, media_type, request_id)
        except ClientDisconnect:
            # The caller hung up before its request was read: nothing of ours failed, and
            # nobody is left to answer. Counted under its own status (nginx's 499).
            logger.info("client closed the connection mid-request [request %s]", request_id)
            request.state.access = {**_access(request), "error_codes": ["CLIENT_CLOSED_REQUEST"]}
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception:
            # A bug outside any field (field errors are masked by the executor): still an
            # answer in GraphQL's shape, with nothing of the bug in it, logged once.
            logger.exception("unexpected error [request %s]", request_id)
            request.state.access = {**_access(request), "error_codes": ["INTERNAL_SERVER_ERROR"]}
            return _json_response(500, {"errors": [_UNEXPECTED]}, media_type)
        return _body_response(200, body, media_type)

    async def _run(self, request: Request, request_id: str) -> bytes:
        gateway = self.gateway
        credentials, sendable = edge_credentials(request.headers)
        usable = sendable and bool(credentials)
        max_bytes = MAX_BODY_BYTES if usable else ANONYMOUS_MAX_BODY_BYTES
        resolved = gateway.persisted_queries.resolve(await self._read(request, max_bytes))
        graphql_request = resolved.request
        if graphql_request.query is None:
            raise BadRequest("The request has no GraphQL document ('query').")
        prepared = gateway.documents.prepare(graphql_request.query, anonymous=not usable)
        operation = prepared.operation(graphql_request.operation_name)
        if request.method == "GET" and operation.operation != OperationType.QUERY:
            raise OperationNotAllowed()
        request.state.access = {
            "operation_name": operation.name.value if operation.name else None,
            "operation_type": operation.operation.value,
        }
        request.state.span.named(
            request.state.access["operation_name"],
            operation.operation.value,
            graphql_request.query,
        )
        gateway.documents.validate(prepared)
        if needs_credentials(prepared.document, operation, graphql_request.variables):
            if not sendable:
                raise CredentialsRequired.unsendable()
            if not credentials:
                raise CredentialsRequired.missing()
        variables = bounded_variables(graphql_request.variables, operation, self._input_limits)
        context = self._context(request, request_id, credentials)
        body = await gateway.executor.execute(
            prepared,
            context,
            variables=variables,
            operation_name=graphql_request.operation_name,
        )
        if len(body) > gateway.settings.max_response_bytes:
            # The result budget counts values, not their length; dropped here rather than
            # held for a client that may read it slowly, or never.
            raise ResponseTooLarge.over(gateway.settings.max_response_bytes)
        outcome = context.snapshots.outcome()
        # The upstream took the credential (a list was served): only then may the caller
        # register an APQ document or give an operation a metrics label. A made-up key, or
        # none, must not fill the APQ store or take the labels.
        verified = bool(outcome) and not _REFUSED_CREDENTIAL.intersection(context.error_codes)
        if verified and resolved.pending_registration is not None:
            gateway.persisted_queries.remember(*resolved.pending_registration)
        request.state.access.update(
            answered_by=context.answered_by,
            error_codes=list(context.error_codes),
            credentialed=verified,
            **outcome,
        )
        return body

    async def _read(self, request: Request, max_bytes: int) -> GraphQLRequest:
        """The request, its body read up to `max_bytes` (a declared length over it is
        refused before a byte of the body is read)."""
        if request.method == "GET":
            return parse_query_params(request.query_params)
        check_json_content_type(request.headers.get("content-type"))
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared[:12]) > max_bytes:
            if int(declared[:12]) <= MAX_BODY_BYTES:
                # Read and dropped, never parsed (about a millisecond for 1 MiB): the answer
                # then reaches a client that reads only once its body is sent, and the
                # connection stays open for its next request.
                async for _ in request.stream():
                    pass
            raise _too_large(max_bytes)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
        return parse_post_body(bytes(body))

    def _context(self, request: Request, request_id: str, credentials: Credentials) -> Context:
        gateway = self.gateway
        source = SnapshotSource(
            client=gateway.client,
            cache=gateway.cache,
            credentials=credentials,
            request_id=request_id,
            refresh=wants_refresh(request),
        )
        return Context(
            request_id=request_id,
            snapshots=source,
            budget=ResultBudget(gateway.settings.max_result_values),
            max_representations=gateway.settings.max_representations,
            max_page_size=gateway.settings.max_page_size,
            cursor_secret=self._cursor_secret,
        )


def _too_large(max_bytes: int) -> RequestError:
    if max_bytes < MAX_BODY_BYTES:
        return CredentialsRequired.body_too_large(max_bytes)
    return BadRequest(f"The request body is larger than {max_bytes} bytes.")


def _access(request: Request) -> dict[str, object]:
    return dict(getattr(request.state, "access", {}))


def _refused(request: Request, exc: RequestError, media_type: str, request_id: str) -> Response:
    request.state.access = {**_access(request), "error_codes": _codes_of(exc)}
    return _request_error_response(exc, media_type, request_id)


def _codes_of(exc: RequestError) -> list[str]:
    if isinstance(exc, GraphQLRequestInvalid):
        return sorted({str((error.extensions or {}).get("code")) for error in exc.errors})
    return [exc.code]


def _request_error_response(exc: RequestError, media_type: str, request_id: str) -> Response:
    """A request that never reached execution: its HTTP status says why."""
    if isinstance(exc, GraphQLRequestInvalid):
        errors = [error.formatted for error in exc.errors]
        status = exc.legacy_http_status if media_type == JSON else exc.http_status
    else:
        errors = [{"message": str(exc), "extensions": exc.extensions}]
        status = exc.http_status
    codes = ",".join(sorted({str(error["extensions"]["code"]) for error in errors}))
    logger.info("request refused: %s [request %s]", codes, request_id)
    response = _json_response(status, {"errors": errors}, media_type)
    if exc.http_status == 405:
        response.headers["Allow"] = "GET, POST"
    return response


def _json_response(status: int, body: dict[str, Any], media_type: str) -> Response:
    return _body_response(status, orjson.dumps(body), media_type)


def _body_response(status: int, body: bytes, media_type: str) -> Response:
    return Response(
        body, status_code=status, media_type=f"{media_type}; charset=utf-8", headers=PRIVATE_HEADERS
    )
