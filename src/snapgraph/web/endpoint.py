"""The `/graphql` endpoint: one HTTP request in, one GraphQL response out."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.graphql import OperationType

from snapgraph.errors import BadRequest, NotAcceptable, RequestError
from snapgraph.graph.context import Context, SnapshotSource
from snapgraph.upstream.models import Credentials
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

# A GraphQL document for this schema is a few hundred bytes; 1 MiB leaves room for variables.
MAX_BODY_BYTES = 1 << 20
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Per-user data: no shared cache (CDN, proxy) may store one caller's answer for another.
PRIVATE_HEADERS = {
    "Cache-Control": "private, no-store",
    "Vary": "Accept, Authorization, X-API-Key",
}


def request_id_for(request: Request) -> str:
    """The caller's `X-Request-ID` when it is a sane token, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def credentials_of(request: Request) -> Credentials:
    return Credentials(
        authorization=request.headers.get("authorization"),
        api_key=request.headers.get("x-api-key"),
    )


def wants_refresh(request: Request) -> bool:
    cache_control = request.headers.get("cache-control", "").lower()
    return "no-cache" in cache_control or request.headers.get("pragma", "").lower() == "no-cache"


class GraphQLEndpoint:
    """Executes GraphQL-over-HTTP requests against the gateway's schema."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, request: Request) -> Response:
        response = await self._respond(request)
        self.gateway.metrics.graphql_requests.labels(status=str(response.status_code)).inc()
        return response

    async def _respond(self, request: Request) -> Response:
        request_id = request_id_for(request)
        try:
            media_type = choose_media_type(request.headers.get("accept"))
        except NotAcceptable as exc:
            return _request_error_response(exc, JSON, request_id)
        try:
            graphql_request = await self._read(request)
            graphql_request = await self.gateway.persisted_queries.resolve(graphql_request)
            result = await self._execute(request, graphql_request, request_id)
        except _REQUEST_ERRORS as exc:
            return _request_error_response(exc, media_type, request_id)
        return _result_response(result, media_type, request_id)

    async def _read(self, request: Request) -> GraphQLRequest:
        if request.method == "GET":
            return parse_query_params(request.query_params)
        check_json_content_type(request.headers.get("content-type"))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise BadRequest(f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        return parse_post_body(body)

    async def _execute(
        self, request: Request, graphql_request: GraphQLRequest, request_id: str
    ) -> ExecutionResult:
        gateway = self.gateway
        source = SnapshotSource(
            client=gateway.client,
            cache=gateway.cache,
            credentials=credentials_of(request),
            request_id=request_id,
            refresh=wants_refresh(request),
        )
        allowed = {OperationType.QUERY} if request.method == "GET" else None
        return await gateway.schema.execute(
            graphql_request.query,
            variable_values=graphql_request.variables,
            context_value=Context(request_id=request_id, snapshots=source),
            operation_name=graphql_request.operation_name,
            allowed_operation_types=allowed,
        )


_REQUEST_ERRORS = (
    RequestError,
    InvalidOperationTypeError,
    MissingQueryError,
    CannotGetOperationTypeError,
)


def _request_error_response(exc: Exception, media_type: str, request_id: str) -> Response:
    """A request that never reached execution: its HTTP status says why."""
    if isinstance(exc, InvalidOperationTypeError):
        message = "Only queries can be sent with GET; use POST."
        response = _error_response(405, message, media_type, request_id)
        response.headers["Allow"] = "GET, POST"
        return response
    if isinstance(exc, CannotGetOperationTypeError):
        # A document problem (e.g. an unknown operationName): legacy JSON clients get 200.
        status = 200 if media_type == JSON else 400
        return _error_response(status, str(exc), media_type, request_id)
    if isinstance(exc, MissingQueryError):
        exc = BadRequest("The request has no GraphQL document ('query').")
    assert isinstance(exc, RequestError)
    return _error_response(exc.http_status, str(exc), media_type, request_id, exc.extensions)


def _result_response(result: ExecutionResult, media_type: str, request_id: str) -> Response:
    body: dict[str, Any] = {}
    if isinstance(result, PreExecutionError):
        # A request error: the document was never executed, so there is no `data` entry.
        status = 200 if media_type == JSON else 400
    else:
        status = 200
        body["data"] = result.data
    if result.errors:
        body["errors"] = [_formatted(error) for error in result.errors]
    if result.extensions:
        body["extensions"] = result.extensions
    return _json_response(status, body, media_type, request_id)


def _formatted(error: GraphQLError) -> dict[str, Any]:
    formatted: dict[str, Any] = dict(error.formatted)
    return formatted


def _error_response(
    status: int,
    message: str,
    media_type: str,
    request_id: str,
    extensions: dict[str, Any] | None = None,
) -> Response:
    error = {"message": message, "extensions": extensions or {"code": "BAD_REQUEST"}}
    return _json_response(status, {"errors": [error]}, media_type, request_id)


def _json_response(status: int, body: dict[str, Any], media_type: str, request_id: str) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=f"{media_type}; charset=utf-8",
        headers={**PRIVATE_HEADERS, "X-Request-ID": request_id},
    )
