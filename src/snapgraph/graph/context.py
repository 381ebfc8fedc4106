"""Per-request state handed to every resolver: who is asking, and what they may still cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

import strawberry

from snapgraph.errors import ResultTooLarge
from snapgraph.graph.pages import PROCESS_CURSOR_SECRET
from snapgraph.upstream.source import SnapshotSource


class ResultBudget:
    """How many leaf values one response may still hold.

    A root field charges `items x selected leaf fields` before it builds anything, so forty
    aliases of a 10,000-item list cost one refusal, not forty full executions.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def charge(self, values: int) -> None:
        self.spent += values
        if self.spent > self.limit:
            raise ResultTooLarge(
                f"The answer would hold more than {self.limit} values; "
                "select fewer fields or aliases, or narrow the list with `type`.",
                limit=self.limit,
            )


@dataclass
class Context:
    request_id: str
    snapshots: SnapshotSource
    budget: ResultBudget = field(default_factory=lambda: ResultBudget(300_000))
    max_representations: int = 5_000
    representations_seen: int = 0  # over every `_entities` field of the request
    views: set[Any] = field(default_factory=set)  # pages' views read (graph/connection.py)
    # Pages (`snapshotsConnection`): the largest `first`/`last`, and the key cursors are
    # signed with (graph/pages.py: `cursor_secret`).
    max_page_size: int = 100
    cursor_secret: bytes = PROCESS_CURSOR_SECRET
    # For the access line: which path answered ("cached", "compiled", "graphql-core") and
    # the codes of the errors in the answer.
    answered_by: str = ""
    error_codes: tuple[str, ...] = ()


Info: TypeAlias = strawberry.Info[Context, None]
