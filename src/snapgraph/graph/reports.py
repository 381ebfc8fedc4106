"""What a root field answers: its value together with what it must report about it.

A resolver returns `Reported(value, broken, stale_age, source)`; the executor places the
broken-item errors at that field's own path and flags the response stale. Nothing is read back
from shared request state, so each field and alias reports exactly what it used, once.

Reports are bounded like the data (`field_reports`): a field reports at most
`REPORTS_PER_FIELD` items one by one, then one error with the count of the rest; a field that
left out the very same items as an earlier root field of the response (another alias over the
same list) says so in one error that points there. Each report is charged to the result
budget (`report_cost`), so 10,000 broken items under 50 aliases are 50 x 21 errors at most,
not 500,000. Both execution paths call these same functions in the same document order.
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
    # Which report this is: the list's version and which of its broken items (all of them,
    # or those about one id); equal sources within a response report the same items.
    source: str = ""


def broken_item_error(item: BrokenItem) -> UpstreamBadResponse:
    """The error a caller sees about one item the upstream sent broken (it was left out)."""
    named = f"Snapshot {item.id!r}" if item.id is not None else f"Snapshot at position {item.index}"
    return UpstreamBadResponse(
        f"{named} breaks the upstream contract ({', '.join(item.fields)}) and was left out.",
        snapshotId=item.id,
        fields=list(item.fields),
    )


# Items reported one by one per field; the rest are counted in one more error.
REPORTS_PER_FIELD = 20
# A report's charge on the result budget: about the leaf values one error holds (message,
# path, locations, code, snapshotId, fields).
REPORT_VALUES = 8


def report_cost(broken: tuple[BrokenItem, ...]) -> int:
    """The budget charge of a field's reports: an upper bound (a repeat is one error)."""
    reports = min(len(broken), REPORTS_PER_FIELD) + (len(broken) > REPORTS_PER_FIELD)
    return reports * REPORT_VALUES


def field_reports(
    broken: tuple[BrokenItem, ...], reported_at: str | None
) -> list[UpstreamBadResponse]:
    """The errors of one root field that left `broken` out; `reported_at` is the response key
    of an earlier root field that already reported the same items, if any."""
    if not broken:
        return []
    if reported_at is not None:
        return [
            UpstreamBadResponse(
                f"The same {len(broken)} broken snapshot(s) as at `{reported_at}` were left out.",
                count=len(broken),
                sameAs=reported_at,
            )
        ]
    errors = [broken_item_error(item) for item in broken[:REPORTS_PER_FIELD]]
    rest = len(broken) - REPORTS_PER_FIELD
    if rest > 0:
        errors.append(
            UpstreamBadResponse(
                f"{rest} more snapshot(s) break the upstream contract and were left out.",
                count=rest,
            )
        )
    return errors


def whole_list(version: str) -> str:
    """The source of a field that left out every broken item of the list `version`."""
    return f"{version}|all"


def about_id(version: str, snapshot_id: str) -> str:
    """The source of `snapshot(id:)`'s report: the broken items that may be that id."""
    return f"{version}|id|{snapshot_id}"


class FirstReports:
    """Which root field of a response first reported each source, in document order."""

    def __init__(self) -> None:
        self._first: dict[str, str] = {}

    def reported_at(self, source: str, key: str) -> str | None:
        """The key that reported `source` before `key`; None when `key` is the first."""
        if not source:
            return None
        first = self._first.setdefault(source, key)
        return None if first == key else first
