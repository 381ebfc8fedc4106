"""Runs a validated operation and serializes its response.

- A plan (`plan.py`), when the operation has one, answers the common case from cached rows,
  and a repeated operation of the same caller over the same upstream answer comes from the
  response cache. Everything else, and every case the plan declines, runs on graphql-core.
- Each root field answers with a `Reported` value; `_FieldReports` (a graphql-core
  middleware, created per execution) unwraps it, puts that field's broken-item errors at the
  field's own path and notes its staleness.
- Variables that cannot be coerced are the caller's mistake: `VariablesInvalid`
  (BAD_USER_INPUT), raised like any other request error.
- A `GatewayError` keeps its message and code. Anything else is a bug of ours: the caller
  sees "Unexpected error." (INTERNAL_SERVER_ERROR) and it is logged once, with the request id.

    executor = Executor(schema, response_cache=ResponseCache(64 << 20))
    body = await executor.execute(prepared, context, variables={}, operation_name=None)
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import (
    ExecutionResult,
    GraphQLError,
    GraphQLResolveInfo,
    GraphQLSchema,
    execute,
)

from snapgraph.errors import AnswerTooLarge, GatewayError, ResultTooLarge, VariablesInvalid
from snapgraph.execution.compiled import start_plan
from snapgraph.execution.document import CACHEABLE_BYTES, PreparedDocument
from snapgraph.execution.plan import Plan, Planner
from snapgraph.execution.response_cache import CachedResponse, ResponseCache, response_key
from snapgraph.graph.context import Context
from snapgraph.graph.reports import FirstReports, Reported, field_reports
from snapgraph.metrics import Metrics

logger = logging.getLogger("snapgraph.graphql")

MASKED_MESSAGE = "Unexpected error."
PATHS = ("cached", "compiled", "graphql-core")
# How graphql-core words the errors it raises while coercing an argument or a directive's
# value during execution: the caller's values, not our bug (tests/test_client_mistakes.py).
_VALUE_ERRORS = ("Argument '", 'Argument "')


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
        self._reports: dict[str, tuple[GraphQLResolveInfo[Any], Reported[Any]]] = {}
        self._order: dict[str, int] = {}  # root fields as graphql-core starts them: in order
        self.stale_age: float | None = None

    def errors(self) -> list[GraphQLError]:
        """The reports in document order of their fields, whichever field finished first:
        fetches of different lists complete in any order. A field that left out the same
        items as an earlier one says so once (`field_reports`)."""
        keys = sorted(self._reports, key=lambda key: self._order.get(key, len(self._order)))
        first = FirstReports()
        errors: list[GraphQLError] = []
        for key in keys:
            info, value = self._reports[key]
            for error in field_reports(value.broken, first.reported_at(value.source, key)):
                errors.append(
                    GraphQLError(
                        str(error),
                        nodes=info.field_nodes,
                        path=info.path.as_list(),
                        original_error=error,
                        extensions=error.extensions,
                    )
                )
        return errors

    def resolve(
        self, next_: Callable[..., Any], root: Any, info: GraphQLResolveInfo[Any], **args: Any
    ) -> Any:
        if info.parent_type is not self._query_type:
            return next_(root, info, **args)  # only root fields report; the rest pass on
        self._order.setdefault(str(info.path.key), len(self._order))
        return self._unwrap(next_(root, info, **args), info)

    async def _unwrap(self, result: Any, info: GraphQLResolveInfo[Any]) -> Any:
        value = await result if inspect.isawaitable(result) else result
        if not isinstance(value, Reported):
            return value
        if value.broken:
            self._reports[str(info.path.key)] = (info, value)
        if value.stale_age is not None:
            self.stale_age = max(self.stale_age or 0.0, value.stale_age)
        return value.value


class Executor:
    """Executes operations of one schema; shares only the response cache between requests."""

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        response_cache: ResponseCache,
        metrics: Metrics | None = None,
    ) -> None:
        self._schema = schema
        self._planner = Planner(schema)
        self.response_cache = response_cache
        # How operations were answered: "cached", "compiled" or "graphql-core".
        self.paths: Counter[str] = Counter()
        answers = (metrics or Metrics()).graphql_answers
        self._answers = {path: answers.labels(path=path) for path in PATHS}

    async def execute(
        self,
        prepared: PreparedDocument,
        context: Context,
        *,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> bytes:
        """Run the (validated) operation; its serialized response. Raises `VariablesInvalid`."""
        plan = self._plan(prepared, operation_name)
        if plan is not None:
            planned = await self._planned(prepared, plan, context, variables, operation_name)
            if planned is not None:
                return planned
        self._answered_by("graphql-core", context)
        response = await self.execute_general(
            prepared, context, variables=variables, operation_name=operation_name
        )
        body = response.to_dict()
        context.error_codes = _codes(body)
        return orjson.dumps(body)

    async def execute_general(
        self,
        prepared: PreparedDocument,
        context: Context,
        *,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> GraphQLResponse:
        """The operation run by graphql-core: the reference every fast path is tested against."""
        reports = _FieldReports(self._schema.query_type)
        outcome = execute(
            self._schema,
            prepared.document,
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            middleware=[reports],
        )
        result = await outcome if isinstance(outcome, Awaitable) else outcome
        return self._response(result, reports, context.request_id)

    def _plan(self, prepared: PreparedDocument, operation_name: str | None) -> Plan | None:
        if operation_name not in prepared.plans:
            operation = prepared.operation(operation_name)
            prepared.plans[operation_name] = self._planner.compile(prepared.document, operation)
        return prepared.plans[operation_name]

    async def _planned(
        self,
        prepared: PreparedDocument,
        plan: Plan,
        context: Context,
        variables: dict[str, Any] | None,
        operation_name: str | None,
    ) -> bytes | None:
        run = await start_plan(self._schema, plan, context, variables)
        if run is None:
            return None
        if run.stale or len(prepared.source) > CACHEABLE_BYTES:
            self._answered_by("compiled", context)
            body = await run.body()
            context.error_codes = _codes(body)
            return orjson.dumps(body)
        key = response_key(run.versions, prepared.source, operation_name, run.variables.coerced)
        cached = self.response_cache.get(key)
        if cached is not None:
            self._answered_by("cached", context)
            context.error_codes = cached.error_codes
            return cached.body
        self._answered_by("compiled", context)
        body = await run.body()
        context.error_codes = _codes(body)
        return self.response_cache.put(
            key, CachedResponse(orjson.dumps(body), context.error_codes)
        ).body

    def _answered_by(self, path: str, context: Context) -> None:
        self.paths[path] += 1
        self._answers[path].inc()
        context.answered_by = path
        logger.debug("answered by the %s path [request %s]", path, context.request_id)

    def _response(
        self, result: ExecutionResult, reports: _FieldReports, request_id: str
    ) -> GraphQLResponse:
        errors = result.errors or []
        if result.data is None and errors and all(error.path is None for error in errors):
            # Nothing ran: graphql-core refused the variables before execution.
            raise VariablesInvalid(list(errors))
        for error in errors:
            if isinstance(error.original_error, ResultTooLarge):
                # Refused as a whole, as the compiled path refuses it before building.
                raise AnswerTooLarge.over(error.original_error.extensions["limit"])
        visible = [_visible(error, request_id) for error in errors]
        if result.data is None:
            # A root field's error nulled the whole answer, and graphql-core cancelled the
            # root fields still running: which of them had reported would depend on timing
            # (a cold cache or a warm one). Nothing is served, so nothing left out is told.
            return GraphQLResponse(None, visible)
        extensions: dict[str, Any] = {}
        if reports.stale_age is not None:
            extensions = {"stale": True, "staleAgeSeconds": round(reports.stale_age)}
        return GraphQLResponse(result.data, [*visible, *reports.errors()], extensions)


def _codes(body: dict[str, Any]) -> tuple[str, ...]:
    return tuple(sorted({str(e["extensions"]["code"]) for e in body.get("errors", ())}))


def _visible(error: GraphQLError, request_id: str) -> GraphQLError:
    """The error as the caller may see it: ours as they are, anything else masked and logged."""
    original = error.original_error
    if isinstance(original, GatewayError):
        error.extensions = original.extensions
        return error
    from_graphql_core = original is None or isinstance(original, GraphQLError)
    if from_graphql_core and error.message.startswith(_VALUE_ERRORS):
        error.extensions = {"code": "BAD_USER_INPUT"}  # e.g. a null for a defaulted variable
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
