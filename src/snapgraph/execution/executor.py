"""Runs a validated operation with graphql-core and turns the outcome into a response.

- Each root field answers with a `Reported` value; `_FieldReports` (a graphql-core
  middleware, created per execution) unwraps it, puts that field's broken-item errors at the
  field's own path and notes its staleness.
- Variables that cannot be coerced are the caller's mistake: `VariablesInvalid`
  (BAD_USER_INPUT), raised like any other request error.
- A `GatewayError` keeps its message and code. Anything else is a bug of ours: the caller
  sees "Unexpected error." (INTERNAL_SERVER_ERROR) and it is logged once, with the request id.

    executor = Executor(schema)
    response = await executor.execute(document, context, variables={}, operation_name=None)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    execute,
)

from snapgraph.errors import GatewayError, VariablesInvalid
from snapgraph.graph.context import Context
from snapgraph.graph.reports import Reported, broken_item_error

logger = logging.getLogger("snapgraph.graphql")

MASKED_MESSAGE = "Unexpected error."


@dataclass
class GraphQLResponse:
    """What the caller gets back from an executed operation."""

    data: dict[str, Any] | None
    errors: list[GraphQLError] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"data": self.data}
        if self.errors:
            body["errors"] = [error.formatted for error in self.errors]
        if self.extensions:
            body["extensions"] = self.extensions
        return body


class _FieldReports:
    """graphql-core middleware: unwraps root fields' `Reported` values into errors at the
    field's path and the response's staleness."""

    def __init__(self, query_type: object) -> None:
        self._query_type = query_type
        self.errors: list[GraphQLError] = []
        self.stale_age: float | None = None

    def resolve(
        self, next_: Callable[..., Any], root: Any, info: GraphQLResolveInfo[Any], **args: Any
    ) -> Any:
        result = next_(root, info, **args)
        if info.parent_type is not self._query_type:
            return result  # only root fields report; every other field passes straight on
        return self._unwrap(result, info)

    async def _unwrap(self, result: Any, info: GraphQLResolveInfo[Any]) -> Any:
        value = await result if inspect.isawaitable(result) else result
        if not isinstance(value, Reported):
            return value
        path = info.path.as_list()
        for item in value.broken:
            error = broken_item_error(item)
            self.errors.append(
                GraphQLError(
                    str(error),
                    nodes=info.field_nodes,
                    path=path,
                    original_error=error,
                    extensions=error.extensions,
                )
            )
        if value.stale_age is not None:
            self.stale_age = max(self.stale_age or 0.0, value.stale_age)
        return value.value


class Executor:
    """Executes operations of one schema; stateless between requests."""

    def __init__(self, schema: GraphQLSchema) -> None:
        self._schema = schema

    async def execute(
        self,
        document: DocumentNode,
        context: Context,
        *,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> GraphQLResponse:
        """Run the (validated) operation; raises `VariablesInvalid` for bad variables."""
        reports = _FieldReports(self._schema.query_type)
        outcome = execute(
            self._schema,
            document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            middleware=[reports],
        )
        result = await outcome if isinstance(outcome, Awaitable) else outcome
        return self._response(result, reports, context.request_id)

    def _response(
        self, result: ExecutionResult, reports: _FieldReports, request_id: str
    ) -> GraphQLResponse:
        errors = result.errors or []
        if result.data is None and errors and all(error.path is None for error in errors):
            # Nothing ran: graphql-core refused the variables before execution.
            raise VariablesInvalid(list(errors))
        visible = [_visible(error, request_id) for error in errors]
        extensions: dict[str, Any] = {}
        if reports.stale_age is not None:
            extensions = {"stale": True, "staleAgeSeconds": round(reports.stale_age)}
        return GraphQLResponse(result.data, [*visible, *reports.errors], extensions)


def _visible(error: GraphQLError, request_id: str) -> GraphQLError:
    """The error as the caller may see it: ours as they are, anything else masked and logged."""
    original = error.original_error
    if isinstance(original, GatewayError):
        error.extensions = original.extensions
        return error
    logger.error(
        "unexpected error at %s [request %s]",
        error.path,
        request_id,
        exc_info=(type(original), original, original.__traceback__) if original else None,
    )
    return GraphQLError(
        MASKED_MESSAGE,
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL_SERVER_ERROR"},
    )
