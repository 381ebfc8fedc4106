"""Running a compiled plan: fetch the lists its root fields need, build the answer from rows.

The fast path serves the common case only, and says so by answering None: variables that do
not coerce, a root field that fails (no credentials, upstream errors, a page's bad input such
as a foreign cursor); the executor then runs graphql-core, which reports those exactly as it
always has (the request's data source has already fetched, so nothing is fetched twice). An
answer over the result budget is refused (`AnswerTooLarge`) before any of it is built.

What it does serve must be byte for byte what graphql-core would have served: data in
CollectFields order, broken-item errors at each root field's path (with the locations of
every node merged into it), and the staleness flag (tests/test_compiled_plans.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, GraphQLSchema
from graphql.execution import VariableValues, get_argument_values, get_variable_values

from snapgraph.errors import AnswerTooLarge, BadUserInput, UpstreamBadResponse
from snapgraph.execution.plan import CONNECTION, TYPENAME, PageShape, Plan, RootGroup
from snapgraph.graph.connection import PageQuery, count_view, load_page, page_query
from snapgraph.graph.context import Context
from snapgraph.graph.pages import Page
from snapgraph.graph.reports import (
    FirstReports,
    about_id,
    field_reports,
    report_cost,
    whole_list,
)
from snapgraph.graph.resolvers import page_cost, upstream_type
from snapgraph.lanes import SLICE, heavy_lane
from snapgraph.upstream.models import BrokenItem
from snapgraph.upstream.source import SnapshotList


@dataclass(frozen=True)
class PlannedRun:
    """A plan ready to build: its root groups and the lists they use, all fetched."""

    variables: VariableValues
    groups: list[RootGroup]
    arguments: list[dict[str, Any]]  # each group's coerced arguments
    answers: list[SnapshotList | None]
    pages: list[Page | None]  # each connection's page

    @property
    def versions(self) -> tuple[str, ...]:
        """The upstream answers the response is made of (same versions, same response)."""
        return tuple(answer.version for answer in self.answers if answer is not None)

    @property
    def stale(self) -> bool:
        return any(answer.stale_age is not None for answer in self.answers if answer is not None)

    async def body(self) -> dict[str, Any]:
        """The response, as graphql-core would have answered it."""
        data: dict[str, Any] = {}
        errors: list[dict[str, Any]] = []
        first = FirstReports()
        for group, arguments, answer, page in zip(
            self.groups, self.arguments, self.answers, self.pages, strict=True
        ):
            data[group.key], broken, source = await _value(group, arguments, answer, page)
            reported_at = first.reported_at(source, group.key) if broken else None
            errors += [_report(group, error) for error in field_reports(broken, reported_at)]
        return _body(data, errors, [answer for answer in self.answers if answer is not None])


async def start_plan(
    schema: GraphQLSchema,
    plan: Plan,
    context: Context,
    variables: dict[str, Any] | None,
) -> PlannedRun | None:
    """The planned operation with its lists fetched, or None when graphql-core must answer."""
    coerced = get_variable_values(
        schema, plan.operation.variable_definitions or (), variables or {}
    )
    if not isinstance(coerced, VariableValues):
        return None
    try:
        groups = plan.groups(coerced)
        arguments = _arguments(schema, groups, coerced)
        queries = [
            page_query(group_arguments, context.max_page_size) if group.name == CONNECTION else None
            for group, group_arguments in zip(groups, arguments, strict=True)
        ]
        for query in queries:
            if query is not None:
                count_view(context.views, query)  # as the resolvers do, in the same order
    except (GraphQLError, BadUserInput):
        # A null given for a defaulted variable in a non-null place passes validation, then
        # fails here, as does a page size out of bounds; graphql-core reports both (and the
        # resolver refuses a bad page before it fetches anything).
        return None
    answers = await _answers(groups, arguments, context)
    if answers is None:
        return None
    pages = await _pages(queries, answers, context)
    if pages is None:
        return None
    if _over_budget(groups, arguments, answers, pages, context.budget.limit):
        raise AnswerTooLarge.over(context.budget.limit)  # before building anything
    return PlannedRun(coerced, groups, arguments, answers, pages)


def _arguments(
    schema: GraphQLSchema, groups: list[RootGroup], variables: VariableValues
) -> list[dict[str, Any]]:
    """Every root field's arguments, coerced once, now: building the answer cannot fail on
    one, and fetching and building read the same values."""
    assert schema.query_type is not None
    fields = schema.query_type.fields
    return [
        {}
        if group.name == TYPENAME
        else get_argument_values(fields[group.name], group.nodes[0], variables)
        for group in groups
    ]


async def _answers(
    groups: list[RootGroup], arguments: list[dict[str, Any]], context: Context
) -> list[SnapshotList | None] | None:
    """Each group's list (None for `__typename`), fetched together; None if any fetch fails."""
    list_types = {
        group.key: _list_type(group, group_arguments)
        for group, group_arguments in zip(groups, arguments, strict=True)
        if group.name != TYPENAME
    }
    distinct = list(dict.fromkeys(list_types.values()))
    fetched = await asyncio.gather(
        *(context.snapshots.snapshots(list_type) for list_type in distinct),
        return_exceptions=True,
    )
    lists: dict[str | None, SnapshotList] = {}
    for list_type, result in zip(distinct, fetched, strict=True):
        if isinstance(result, BaseException):
            return None  # graphql-core reports it (the source re-raises the same error)
        lists[list_type] = result
    return [lists[list_types[group.key]] if group.key in list_types else None for group in groups]


def _list_type(group: RootGroup, arguments: dict[str, Any]) -> str | None:
    if group.name == "snapshot":
        return None  # snapshot(id:) looks in the caller's whole list, as its resolver does
    return upstream_type(arguments.get("type"))


async def _pages(
    queries: list[PageQuery | None], answers: list[SnapshotList | None], context: Context
) -> list[Page | None] | None:
    """Each connection's page; None when one is refused (a cursor that is not the caller's
    for that list, order and filter): graphql-core then reports it where it belongs."""
    pages: list[Page | None] = []
    for query, answer in zip(queries, answers, strict=True):
        if query is None or answer is None:
            pages.append(None)
            continue
        try:
            pages.append(
                await load_page(answer, query, context.cursor_secret, context.max_page_size)
            )
        except BadUserInput:
            return None
    return pages


def _over_budget(
    groups: list[RootGroup],
    arguments: list[dict[str, Any]],
    answers: list[SnapshotList | None],
    pages: list[Page | None],
    limit: int,
) -> bool:
    """The same charge as the resolvers make: items times leaf selections, per list field;
    a page's items, not its list's, per connection; and each field's reports."""
    spent = 0
    for group, group_arguments, answer, page in zip(groups, arguments, answers, pages, strict=True):
        if answer is None:
            continue
        if group.name == "snapshots":
            spent += len(answer.rows) * max(1, group.leaf_count) + report_cost(answer.broken)
        elif page is not None:
            spent += page_cost(len(page.rows), max(1, group.leaf_count))
            spent += report_cost(answer.broken)
        elif group.name == "snapshot":
            snapshot_id = str(group_arguments["id"])
            if answer.find(snapshot_id) is None:
                spent += report_cost(answer.broken_about(snapshot_id))
    return spent > limit


async def _value(
    group: RootGroup, arguments: dict[str, Any], answer: SnapshotList | None, page: Page | None
) -> tuple[Any, tuple[BrokenItem, ...], str]:
    """The group's value, the broken items it left out, and their source (`reports.py`)."""
    if group.name == TYPENAME or answer is None:
        return "Query", (), ""
    if group.page is not None and page is not None:
        page_value = await _page_value(group.page, page)
        return page_value, answer.broken, whole_list(answer.version)
    if group.name == "snapshot":
        snapshot_id = str(arguments["id"])
        row = answer.find(snapshot_id)
        if row is not None:
            return group.shape.build(row), (), ""
        return None, answer.broken_about(snapshot_id), about_id(answer.version, snapshot_id)
    return await _items(group, answer), answer.broken, whole_list(answer.version)


async def _items(group: RootGroup, answer: SnapshotList) -> list[dict[str, Any]]:
    """The items, built a slice at a time in the heavy lane when the list is long: a
    10,000-item answer must not hold up another user's small request for its whole duration."""
    build, rows = group.shape.build, answer.rows
    if len(rows) <= SLICE:
        return [build(row) for row in rows]
    items: list[dict[str, Any]] = []
    async with heavy_lane():
        for start in range(0, len(rows), SLICE):
            items += [build(row) for row in rows[start : start + SLICE]]
            await asyncio.sleep(0)
    return items


async def _page_value(shape: PageShape, page: Page) -> dict[str, Any]:
    """A page's answer; a long one (a page size limit raised into the thousands) takes its
    turn in the heavy lane, like a long list."""
    if len(page.rows) <= SLICE:
        return shape.build(page)
    async with heavy_lane():
        await asyncio.sleep(0)
        return shape.build(page)


def _report(group: RootGroup, error: UpstreamBadResponse) -> dict[str, Any]:
    located = GraphQLError(
        str(error), nodes=list(group.nodes), path=[group.key], extensions=error.extensions
    )
    return dict(located.formatted)


def _body(
    data: dict[str, Any], errors: list[dict[str, Any]], answers: list[SnapshotList]
) -> dict[str, Any]:
    body: dict[str, Any] = {"data": data}
    if errors:
        body["errors"] = errors
    stale_ages = [answer.stale_age for answer in answers if answer.stale_age is not None]
    if stale_ages:
        body["extensions"] = {"stale": True, "staleAgeSeconds": round(max(stale_ages))}
    return body
