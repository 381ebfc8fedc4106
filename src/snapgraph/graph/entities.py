"""Federation's `_entities`: a router's batch of `Snapshot` references, answered from one list.

Every representation is checked before anything is fetched (a bad one is BAD_USER_INPUT at its
own position), the batch is capped, and each id is looked up in a dict: 20,000 references cost
one upstream call and 20,000 dict lookups, not 20,000 scans of the list.
"""

from __future__ import annotations

from typing import Any

from snapgraph.errors import BadUserInput, GatewayError
from snapgraph.graph.context import Info
from snapgraph.graph.reports import Reported, broken_item_error
from snapgraph.graph.resolvers import selected_leaves
from snapgraph.graph.types import Snapshot
from snapgraph.upstream.source import SnapshotList

ENTITY_TYPE = "Snapshot"


async def resolve_entities(info: Info, representations: list[Any]) -> Reported[list[Any]]:
    """One result per representation: a Snapshot, None (not visible), or its error."""
    context = info.context
    limit = context.max_representations
    # Counted over every `_entities` field of the request: four aliases of one 5,000-item
    # variable are 20,000 lookups, not 5,000.
    context.representations_seen += len(representations)
    if context.representations_seen > limit:
        raise BadUserInput(
            f"_entities got {context.representations_seen} representations in this request; "
            f"the limit is {limit}.",
            limit=limit,
        )
    keys = [_snapshot_id(index, item) for index, item in enumerate(representations)]
    answer = await info.context.snapshots.snapshots(None)
    info.context.budget.charge(len(representations) * selected_leaves(info))
    return Reported([_entity(key, answer) for key in keys], (), answer.stale_age)


def _snapshot_id(index: int, representation: Any) -> str | GatewayError:
    if not isinstance(representation, dict) or representation.get("__typename") != ENTITY_TYPE:
        return BadUserInput(
            f'Representation {index} must be an object with "__typename": "{ENTITY_TYPE}".'
        )
    snapshot_id = representation.get("id")
    if isinstance(snapshot_id, bool) or not isinstance(snapshot_id, str | int):
        return BadUserInput(f'Representation {index} must have an "id" (a string or integer).')
    return str(snapshot_id)


def _entity(key: str | GatewayError, answer: SnapshotList) -> Snapshot | GatewayError | None:
    if isinstance(key, GatewayError):
        return key
    found = answer.find(key)
    if found is not None:
        return Snapshot.from_row(found)
    broken = next((item for item in answer.broken if item.id == key), None)
    return broken_item_error(broken) if broken is not None else None
