"""GraphQL over HTTP: parsing a request and choosing the response's media type.

Follows the GraphQL-over-HTTP specification: POST with `application/json`, GET for queries,
`Accept` negotiation between `application/graphql-response+json` (status codes say what went
wrong) and `application/json` (legacy: 200 for every well-formed request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import QueryParams

from snapgraph.errors import BadRequest, NotAcceptable, UnsupportedMediaType

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"


@dataclass(frozen=True)
class GraphQLRequest:
    """One GraphQL-over-HTTP request's parameters, already type-checked."""

    query: str | None
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


def choose_media_type(accept: str | None) -> str:
    """The response media type for an `Accept` header; no header means legacy JSON."""
    if not accept:
        return JSON
    ranked = sorted(_accepted(accept), key=lambda pair: -pair[1])
    for media_type, _quality in ranked:
        if media_type == GRAPHQL_RESPONSE:
            return GRAPHQL_RESPONSE
        if media_type in (JSON, "application/*", "*/*"):
            return JSON
    raise NotAcceptable()


def _accepted(accept: str) -> list[tuple[str, float]]:
    accepted = []
    for part in accept.split(","):
        media_type, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            accepted.append((media_type.lower(), quality))
    return accepted


def check_json_content_type(content_type: str | None) -> None:
    """Only `application/json` (UTF-8) bodies are GraphQL requests here."""
    if not content_type:
        raise UnsupportedMediaType()
    media_type, *params = (piece.strip().lower() for piece in content_type.split(";"))
    if media_type != JSON:
        raise UnsupportedMediaType()
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise UnsupportedMediaType()


def parse_post_body(body: bytes) -> GraphQLRequest:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise BadRequest("The request body must be a JSON object.")
    return _request_from(payload)


def parse_query_params(params: QueryParams) -> GraphQLRequest:
    payload: dict[str, Any] = {
        "query": params.get("query"),
        "operationName": params.get("operationName"),
    }
    for name in ("variables", "extensions"):
        raw = params.get(name)
        if raw:
            try:
                payload[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BadRequest(f"The '{name}' parameter is not valid JSON.") from None
    return _request_from(payload)


def _request_from(payload: dict[str, Any]) -> GraphQLRequest:
    query = payload.get("query")
    variables = payload.get("variables")
    operation_name = payload.get("operationName")
    extensions = payload.get("extensions")
    if query is not None and not isinstance(query, str):
        raise BadRequest("'query' must be a string.")
    if variables is not None and not isinstance(variables, dict):
        raise BadRequest("'variables' must be an object.")
    if operation_name is not None and not isinstance(operation_name, str):
        raise BadRequest("'operationName' must be a string.")
    if extensions is not None and not isinstance(extensions, dict):
        raise BadRequest("'extensions' must be an object.")
    return GraphQLRequest(query, variables, operation_name, extensions)
