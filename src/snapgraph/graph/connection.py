"""`snapshotsConnection`: the GraphQL side of pages (the paging itself is `graph/pages.py`).

Its types follow the Relay Cursor Connections specification (`SnapshotConnection`,
`SnapshotEdge`, `PageInfo`), with the inputs a frontend filters and orders by. Both execution
paths read a page the same way: `page_query` turns the field's arguments, as graphql-core
coerces them, into a `PageQuery` (refusing bad input before anything is fetched), and
`load_page` answers it from the caller's list, as cached.

    query = page_query(arguments, max_size=100)
    answer = await source.snapshots(upstream_type(query.snapshot_type))
    page = await load_page(answer, query, secret, max_size=100)

A sorted view of a list is kept beside the list (`SnapshotList.views`) for each order and
filter recently asked, so the pages of one walk sort nothing: a page costs a binary search
for its cursor, a slice, and its items.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import orjson
import strawberry

from snapgraph.errors import BadUserInput
from snapgraph.graph.pages import (
    DEFAULT_ORDER,
    Bounds,
    Cursors,
    Order,
    OrderKey,
    Page,
    PageRequest,
    RowFilter,
    View,
    check_sizes,
    page_of,
    view_of,
)
from snapgraph.graph.types import Long, Snapshot, SnapshotType
from snapgraph.lanes import SLICE, heavy_lane
from snapgraph.upstream.source import SnapshotList

# Views kept per list: a frontend's few orders and filters; each costs a tuple of the list's
# rows (80 kB at 10,000 items), counted in the cache's bound on decoded entries and dropped
# with the list.
VIEWS_PER_LIST = 8
# What a kept view costs beyond its tuple, rounded up: the View (48 bytes), its name (113),
# its slot in the list's views (about 150) and the order it carries (at most five keys,
# about 350). The rows it refers to are the list's, counted with the list.
_VIEW_OVERHEAD = 1024


@strawberry.enum(description="Fields a page of snapshots can be ordered by.")
class SnapshotOrderField(Enum):
    CREATED_AT = strawberry.enum_value("created_at", description="When it was created.")
    UPDATED_AT = strawberry.enum_value("updated_at", description="When it last changed.")
    NAME = strawberry.enum_value(
        "name",
        description="Its name, by code point (case-sensitive). Snapshots without a name "
        "sort after every name: last ascending, first descending.",
    )
    SIZE_BYTES = strawberry.enum_value("size_bytes", description="Its size on disk.")
    STATUS = strawberry.enum_value("status", description="Its status, by code point.")


@strawberry.enum(description="Sort direction.")
class OrderDirection(Enum):
    ASC = strawberry.enum_value("asc", description="Smallest first; nulls last.")
    DESC = strawberry.enum_value("desc", description="Largest first; nulls first.")


@strawberry.input(description="One sort key of a page; several keys sort by the first first.")
class SnapshotOrder:
    field: SnapshotOrderField = strawberry.field(description="What to sort by.")
    direction: OrderDirection | None = strawberry.field(
        default=OrderDirection.ASC, description="ASC (the default; also when null) or DESC."
    )


@strawberry.input(description="Moments from `min` to `max`, both included; either may be left out.")
class DateTimeRange:
    min: datetime | None = strawberry.field(
        default=None, description="The earliest, with a UTC offset."
    )
    max: datetime | None = strawberry.field(
        default=None, description="The latest, with a UTC offset."
    )


@strawberry.input(
    description="Sizes from `min` to `max` bytes, both included; either may be left out."
)
class SizeRange:
    min: Long | None = strawberry.field(default=None, description="The smallest, in bytes.")
    max: Long | None = strawberry.field(default=None, description="The largest, in bytes.")


@strawberry.input(
    description="Conditions a snapshot must all meet (AND). A condition left out or null "
    "allows every value; an empty list allows none."
)
class SnapshotFilter:
    status: list[str] | None = strawberry.field(
        default=None, description="Any of these statuses (exact)."
    )
    snapshot_type: list[str] | None = strawberry.field(
        default=None, description="Any of these snapshot types (exact)."
    )
    type: str | None = strawberry.field(
        default=None, description='This owner class (exact): "user" or "system".'
    )
    is_public: bool | None = strawberry.field(default=None, description="Public or not.")
    name_contains: str | None = strawberry.field(
        default=None,
        description="Names that contain this text, ignoring case; a snapshot without a name "
        "never matches.",
    )
    source_vm_id: str | None = strawberry.field(
        default=None, description="Taken from this VM (exact)."
    )
    created_at: DateTimeRange | None = strawberry.field(
        default=None, description="Created within this range."
    )
    updated_at: DateTimeRange | None = strawberry.field(
        default=None, description="Last changed within this range."
    )
    size_bytes: SizeRange | None = strawberry.field(
        default=None, description="Sized within this range."
    )


@strawberry.federation.type(
    shareable=True,
    description="Where a page stands in the whole (filtered, ordered) list, as Relay defines it.",
)
class PageInfo:
    page: strawberry.Private[Page]

    @strawberry.field(description="Whether items follow this page.")
    def has_next_page(self) -> bool:
        return self.page.has_next_page

    @strawberry.field(description="Whether items precede this page.")
    def has_previous_page(self) -> bool:
        return self.page.has_previous_page

    @strawberry.field(description="The first edge's cursor; null for an empty page.")
    def start_cursor(self) -> str | None:
        return self.page.start_cursor

    @strawberry.field(description="The last edge's cursor; null for an empty page.")
    def end_cursor(self) -> str | None:
        return self.page.end_cursor


@strawberry.type(description="One snapshot of a page, and the cursor of its position.")
class SnapshotEdge:
    page: strawberry.Private[Page]
    index: strawberry.Private[int]

    @strawberry.field(
        description="Opaque; pass it as `after` or `before` with the same `type`, `filter` "
        "and `orderBy` to page from here."
    )
    def cursor(self) -> str:
        return self.page.cursor(self.index)

    @strawberry.field(description="The snapshot.")
    def node(self) -> Snapshot:
        return Snapshot.from_row(self.page.rows[self.index])


@strawberry.type(description="A page of the caller's snapshots (Relay Cursor Connections).")
class SnapshotConnection:
    page: strawberry.Private[Page]

    @strawberry.field(description="The page's snapshots, in order.")
    def edges(self) -> list[SnapshotEdge]:
        return [SnapshotEdge(page=self.page, index=index) for index in range(len(self.page.rows))]

    @strawberry.field(description="Whether there is more before and after, and the end cursors.")
    def page_info(self) -> PageInfo:
        return PageInfo(page=self.page)

    @strawberry.field(description="How many snapshots match the filter, on every page.")
    def total_count(self) -> int:
        return self.page.total_count


@dataclass(frozen=True)
class PageQuery:
    """What one `snapshotsConnection` field asks for, checked."""

    snapshot_type: SnapshotType | None  # the `type` argument: which list to fetch
    request: PageRequest
    order: Order
    row_filter: RowFilter


def page_query(arguments: Mapping[str, Any], max_size: int) -> PageQuery:
    """The field's arguments as graphql-core coerces them (GraphQL names, enum members,
    datetimes), checked: BadUserInput for a page size out of bounds or a date without an
    offset. Cursors are checked against the list, by `load_page`."""
    request = PageRequest(
        arguments.get("first"),
        arguments.get("after"),
        arguments.get("last"),
        arguments.get("before"),
    )
    check_sizes(request, max_size)
    return PageQuery(
        arguments.get("type"),
        request,
        _order(arguments.get("orderBy")),
        _row_filter(arguments.get("filter")),
    )


def coerced_form(value: Any) -> Any:
    """Strawberry's arguments (input objects, Python names) in the form graphql-core coerces
    them to (dicts under GraphQL names), so the resolver and the compiled path read the same."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = strawberry.asdict(value)
    if isinstance(value, dict):
        return {_camel(name): coerced_form(item) for name, item in value.items()}
    if isinstance(value, list):
        return [coerced_form(item) for item in value]
    return value


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda match: match.group(1).upper(), name)


def _order(order_by: list[Mapping[str, Any]] | None) -> Order:
    """The sort keys; BadUserInput for a field given twice (a second key on the same field
    could never break a tie), so an order has at most one key per orderable field, and a
    cursor at most that many values."""
    if not order_by:
        return DEFAULT_ORDER
    order = tuple(
        OrderKey(key["field"].value, key.get("direction") is OrderDirection.DESC)
        for key in order_by
    )
    if len({key.field for key in order}) < len(order):
        raise BadUserInput("`orderBy` names a field more than once; give each field once.")
    return order


def _row_filter(conditions: Mapping[str, Any] | None) -> RowFilter:
    if conditions is None:
        return RowFilter()
    get = conditions.get
    name_contains = get("nameContains")
    return RowFilter(
        status=_set(get("status")),
        snapshot_type=_set(get("snapshotType")),
        type=get("type"),
        is_public=get("isPublic"),
        name_contains=None if name_contains is None else name_contains.casefold(),
        source_vm_id=get("sourceVmId"),
        created_at=_bounds(get("createdAt"), "createdAt"),
        updated_at=_bounds(get("updatedAt"), "updatedAt"),
        size_bytes=_bounds(get("sizeBytes"), "sizeBytes"),
    )


def _set(values: list[str] | None) -> frozenset[str] | None:
    return None if values is None else frozenset(values)


def _bounds(range_: Mapping[str, Any] | None, name: str) -> Bounds:
    if range_ is None:
        return Bounds()
    for end in ("min", "max"):
        value = range_.get(end)
        if isinstance(value, datetime) and value.utcoffset() is None:
            # Which instant a naive time means is a guess; the upstream's dates all have one.
            raise BadUserInput(f"`filter.{name}.{end}` must carry a UTC offset (Z or +HH:MM).")
    return Bounds(range_.get("min"), range_.get("max"))


# Different views (list type, order, filter) one request may read pages of. A page UI shows
# one or two; each new view of a 10,000-item list costs some 10-40 ms to sort, so fifty
# aliases each with its own order must not make one request sort fifty times.
VIEWS_PER_REQUEST = 4


def count_view(seen: set[Any], query: PageQuery) -> None:
    """Note the view `query` reads among those of its request; BadUserInput past
    `VIEWS_PER_REQUEST`. Called in document order on both paths, before anything is fetched,
    whether or not the view is already kept."""
    view = (query.snapshot_type, query.order, query.row_filter)
    if view in seen:
        return
    if len(seen) >= VIEWS_PER_REQUEST:  # not added: a second pass counts the same
        raise BadUserInput(
            f"A request may read pages of at most {VIEWS_PER_REQUEST} different `type`, "
            "`filter` and `orderBy` combinations; send the others in another request.",
            limit=VIEWS_PER_REQUEST,
        )
    seen.add(view)


async def load_page(answer: SnapshotList, query: PageQuery, secret: bytes, max_size: int) -> Page:
    """The page `query` asks for, out of `answer`; BadUserInput for a cursor that is not
    this caller's for this list type, order and filter."""
    view = await _view(answer, query.order, query.row_filter)
    cursors = Cursors(secret, answer.owner, query.order, query.row_filter)
    return page_of(view, query.request, cursors, max_size)


async def _view(answer: SnapshotList, order: Order, row_filter: RowFilter) -> View:
    """The list sorted and filtered, kept beside it (the most recently used few)."""
    name = _view_name(order, row_filter)
    view: View | None = answer.views.get(name)
    if view is None:
        view = await _sorted(answer, order, row_filter)
        nbytes = sys.getsizeof(view.rows) + _VIEW_OVERHEAD
        answer.views.put(name, view, nbytes=nbytes, keep=VIEWS_PER_LIST)
    return view


def _view_name(order: Order, row_filter: RowFilter) -> str:
    """A digest of the normalised order and filter (as a cursor signs them): equal inputs
    share a view, and however large a client's filter, the list keeps 64 characters of it."""
    keys = [[key.field, key.descending] for key in order]
    return hashlib.sha256(orjson.dumps([keys, row_filter.canonical()])).hexdigest()


async def _sorted(answer: SnapshotList, order: Order, row_filter: RowFilter) -> View:
    if len(answer.rows) <= SLICE:
        return view_of(answer.rows, order, row_filter)
    # 10,000 rows take a few milliseconds: one long list at a time, like the other work on
    # long lists, so small requests get their turns between them.
    async with heavy_lane():
        await asyncio.sleep(0)
        return view_of(answer.rows, order, row_filter)
