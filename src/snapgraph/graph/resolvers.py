"""Root fields: thin; they ask the request's data source and answer with a `Reported` value."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types.nodes import Selection  # the type of `info.selected_fields` items

from snapgraph.graph.connection import (
    SnapshotConnection,
    SnapshotFilter,
    SnapshotOrder,
    coerced_form,
    count_view,
    load_page,
    page_query,
)
from snapgraph.graph.context import Info
from snapgraph.graph.reports import Reported, about_id, report_cost, whole_list
from snapgraph.graph.types import Snapshot, SnapshotType

UPSTREAM_TYPE = {SnapshotType.USER: "user", SnapshotType.SYSTEM: "system"}


def upstream_type(value: SnapshotType | None) -> str | None:
    """The upstream's `?type=` for a `type` argument (None: no filter)."""
    return UPSTREAM_TYPE[value] if value is not None else None


# The `type` argument of `snapshots` and `snapshotsConnection`: one definition, one meaning.
TypeArgument = Annotated[
    SnapshotType | None,
    strawberry.argument(description="USER: only the caller's own; SYSTEM: only public ones."),
]


@strawberry.type(description="Read access to the caller's VM snapshots.")
class Query:
    @strawberry.field(
        description="The caller's own snapshots plus public system snapshots; "
        "`type` narrows the list to one kind.",
        graphql_type=list[Snapshot],
    )
    async def snapshots(
        self,
        info: Info,
        type: TypeArgument = None,
    ) -> Reported[list[Snapshot]]:
        answer = await info.context.snapshots.snapshots(upstream_type(type))
        info.context.budget.charge(
            len(answer.rows) * selected_leaves(info) + report_cost(answer.broken)
        )
        snapshots = [Snapshot.from_row(row) for row in answer.rows]
        return Reported(snapshots, answer.broken, answer.stale_age, whole_list(answer.version))

    @strawberry.field(
        description="One snapshot the caller can see, or null when there is none.",
        graphql_type=Snapshot | None,
    )
    async def snapshot(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The snapshot's id.")],
    ) -> Reported[Snapshot | None]:
        answer = await info.context.snapshots.snapshots(None)
        found = answer.find(id)
        if found is not None:
            return Reported(Snapshot.from_row(found), (), answer.stale_age)
        # Not found: a broken item with this id, or with none, may be the one asked for.
        broken = answer.broken_about(id)
        info.context.budget.charge(report_cost(broken))
        return Reported(None, broken, answer.stale_age, about_id(answer.version, id))

    @strawberry.field(
        description="A page of the same snapshots as `snapshots`, filtered and ordered, "
        "following the Relay Cursor Connections specification. Served from the caller's "
        "cached list: the pages of a walk within the cache TTL cost no upstream call.",
        graphql_type=SnapshotConnection,
    )
    async def snapshots_connection(
        self,
        info: Info,
        type: TypeArgument = None,
        first: Annotated[
            int | None,
            strawberry.argument(
                description="The first this many after `after` (0 to the page size limit, "
                "100 by default). Neither `first` nor `last`: the limit."
            ),
        ] = None,
        after: Annotated[
            str | None,
            strawberry.argument(description="Start after this cursor's position."),
        ] = None,
        last: Annotated[
            int | None,
            strawberry.argument(
                description="The last this many before `before` (applied after `first`)."
            ),
        ] = None,
        before: Annotated[
            str | None,
            strawberry.argument(description="End before this cursor's position."),
        ] = None,
        filter: Annotated[
            SnapshotFilter | None,
            strawberry.argument(description="Only snapshots meeting every condition."),
        ] = None,
        order_by: Annotated[
            list[SnapshotOrder] | None,
            strawberry.argument(
                description="Sort keys, the first first; ties are broken by `id` ascending. "
                "Default: newest first (createdAt DESC)."
            ),
        ] = None,
    ) -> Reported[SnapshotConnection]:
        arguments = coerced_form(
            {"type": type, "first": first, "after": after, "last": last, "before": before}
            | {"filter": filter, "order_by": order_by}
        )
        context = info.context
        query = page_query(arguments, context.max_page_size)  # refused before any fetch
        count_view(context.views, query)
        answer = await context.snapshots.snapshots(upstream_type(query.snapshot_type))
        page = await load_page(answer, query, context.cursor_secret, context.max_page_size)
        context.budget.charge(
            page_cost(len(page.rows), selected_leaves(info)) + report_cost(answer.broken)
        )
        return Reported(
            SnapshotConnection(page=page),
            answer.broken,
            answer.stale_age,
            whole_list(answer.version),
        )


def page_cost(items: int, leaves: int) -> int:
    """A page's charge on the result budget: every leaf selected under the connection, once
    per item on the page (at least once): an upper bound, whatever the list's length."""
    return max(1, items) * leaves


def selected_leaves(info: Info) -> int:
    """The leaf selections one item of this field's answer costs: over every node of the field
    (`a: snapshots { id } a: snapshots { name }` is one field), fragments expanded, each
    selection counted as written (no merging, `@skip`/`@include` not evaluated): an upper bound
    the compiled path computes the same way."""
    leaves = sum(
        _leaves(selection) for node in info.selected_fields for selection in node.selections
    )
    return max(1, leaves)


def _leaves(selection: Selection) -> int:
    if not selection.selections:
        return 1
    return sum(_leaves(child) for child in selection.selections)
