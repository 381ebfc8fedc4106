"""Root fields: thin; they ask the request's data source and answer with a `Reported` value."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.types.nodes import Selection  # the type of `info.selected_fields` items

from snapgraph.graph.context import Info
from snapgraph.graph.reports import Reported
from snapgraph.graph.types import Snapshot, SnapshotType

UPSTREAM_TYPE = {SnapshotType.USER: "user", SnapshotType.SYSTEM: "system"}


def upstream_type(value: SnapshotType | None) -> str | None:
    """The upstream's `?type=` for a `type` argument (None: no filter)."""
    return UPSTREAM_TYPE[value] if value is not None else None


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
        type: Annotated[
            SnapshotType | None,
            strawberry.argument(
                description="USER: only the caller's own; SYSTEM: only public ones."
            ),
        ] = None,
    ) -> Reported[list[Snapshot]]:
        answer = await info.context.snapshots.snapshots(upstream_type(type))
        info.context.budget.charge(len(answer.rows) * selected_leaves(info))
        snapshots = [Snapshot.from_row(row) for row in answer.rows]
        return Reported(snapshots, answer.broken, answer.stale_age)

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
        return Reported(None, answer.broken_about(id), answer.stale_age)


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
