"""What a root field answers: its value together with what it must report about it.

A resolver returns `Reported(value, broken, stale_age)`; the executor places the broken-item
errors at that field's own path and flags the response stale. Nothing is read back from
shared request state, so each field and alias reports exactly what it used, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from snapgraph.errors import UpstreamBadResponse
from snapgraph.upstream.models import BrokenItem

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reported(Generic[T]):
    """A field's value, the broken upstream items it left out, and its staleness."""

    value: T
    broken: tuple[BrokenItem, ...] = ()
    stale_age: float | None = None


def broken_item_error(item: BrokenItem) -> UpstreamBadResponse:
    """The error a caller sees about one item the upstream sent broken (it was left out)."""
    named = f"Snapshot {item.id!r}" if item.id is not None else f"Snapshot at position {item.index}"
    return UpstreamBadResponse(
        f"{named} breaks the upstream contract ({', '.join(item.fields)}) and was left out.",
        snapshotId=item.id,
        fields=list(item.fields),
    )
