"""Schema extensions that shape every GraphQL response."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from snapgraph.errors import GatewayError
from snapgraph.graph.context import Context

logger = logging.getLogger("snapgraph.graphql")

MASKED_MESSAGE = "Unexpected error."


class GatewayResponse(SchemaExtension):
    """Masks unexpected errors, adds the data source's reports, flags stale answers.

    - A `GatewayError` keeps its message and `extensions.code`; anything else becomes
      "Unexpected error." with code INTERNAL_SERVER_ERROR, and is logged with the request id
      (the caller can quote it: it is in the `X-Request-ID` response header).
    - Items the upstream sent broken are reported as UPSTREAM_BAD_RESPONSE errors beside
      the valid data.
    - An answer served from a stale cache entry carries `extensions.stale` and its age.
    """

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        context = self.execution_context.context
        if result is None or not isinstance(context, Context):
            return
        errors = [*(result.errors or []), *context.snapshots.errors]
        if errors:
            result.errors = [self._visible(error, context.request_id) for error in errors]

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context.context
        if not isinstance(context, Context) or context.snapshots.stale_age is None:
            return {}
        return {"stale": True, "staleAgeSeconds": round(context.snapshots.stale_age)}

    @staticmethod
    def _visible(error: GraphQLError, request_id: str) -> GraphQLError:
        original = error.original_error
        if original is None:
            return error  # a syntax or validation error: about the caller's own document
        if isinstance(original, GatewayError):
            error.extensions = original.extensions
            return error
        logger.error(
            "unexpected error at %s [request %s]",
            error.path,
            request_id,
            exc_info=(type(original), original, original.__traceback__),
        )
        return GraphQLError(
            MASKED_MESSAGE,
            nodes=error.nodes,
            path=error.path,
            extensions={"code": "INTERNAL_SERVER_ERROR"},
        )
