"""Root fields: thin, they only ask the request's data source."""

from __future__ import annotations

from typing import Annotated

import strawberry

from snapgraph.graph.context import Info
from snapgraph.graph.types import Snapshot, SnapshotType

UPSTREAM_TYPE = {SnapshotType.USER: "user", SnapshotType.SYSTEM: "system"}


@strawberry.type(description="Read access to the caller's VM snapshots.")
class Query:
    @strawberry.field(
        description="The caller's own snapshots plus public system snapshots; "
        "`type` narrows the list to one kind."
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
    ) -> list[Snapshot]:
        return await info.context.snapshots.visible(info, UPSTREAM_TYPE[type] if type else None)

    @strawberry.field(description="One snapshot the caller can see, or null when there is none.")
    async def snapshot(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The snapshot's id.")],
    ) -> Snapshot | None:
        snapshots = await info.context.snapshots.visible(info, None)
        return next((snapshot for snapshot in snapshots if snapshot.id == id), None)
