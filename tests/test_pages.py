"""Pages over one list (`graph/pages.py`), held against references written here from the
documented rules: for any list, filter and order, a walk page by page yields exactly the
filtered, sorted list; pageInfo is what the Relay specification's algorithm says; a cursor
that was altered, or made for another caller, order or filter, is refused."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from snapgraph.errors import BadUserInput
from snapgraph.graph.pages import (
    DEFAULT_ORDER,
    PROCESS_CURSOR_SECRET,
    Bounds,
    Cursors,
    OrderKey,
    Page,
    PageRequest,
    RowFilter,
    cursor_secret,
    page_of,
    view_of,
)
from snapgraph.upstream.models import ROW_FIELDS

SECRET = b"s" * 32
OWNER = "list:{alice}"
AT = {name: index for index, name in enumerate(ROW_FIELDS)}
ORDERABLE = ["created_at", "updated_at", "name", "size_bytes", "status"]

# Few distinct values, so that ties, nulls and duplicates are common. The same instant is
# written with different offsets: dates order by instant, not by text.
INSTANTS = [datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(hours=h) for h in (0, 1, 5)]
OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
DATES = st.builds(
    lambda moment, zone: moment.astimezone(zone),
    st.sampled_from(INSTANTS),
    st.sampled_from(OFFSETS),
)
NAMES = st.sampled_from([None, "alpha", "Alpha", "beta", "ALPHA beta", "", "zeta"])


@st.composite
def row(draw: st.DrawFn) -> tuple[Any, ...]:
    values = {
        "id": draw(st.sampled_from("abcdefghijklmnop")),
        "name": draw(NAMES),
        "status": draw(st.sampled_from(["ready", "failed", "creating"])),
        "source_vm_id": draw(st.sampled_from([None, "vm-1", "vm-2"])),
        "snapshot_type": draw(st.sampled_from(["full", "oci"])),
        "type": draw(st.sampled_from(["user", "system"])),
        "oci_image": None,
        "vcpu_count": 2,
        "memory_mb": None,
        "size_bytes": draw(st.sampled_from([0, 1, -5, 2**40, 2**63 - 1])),
        "is_public": draw(st.booleans()),
        "last_error": None,
        "created_at": draw(DATES).isoformat(),
        "updated_at": draw(DATES).isoformat(),
    }
    return tuple(values[name] for name in ROW_FIELDS)


ROWS = st.lists(row(), max_size=30)
ORDERS = st.lists(st.builds(OrderKey, st.sampled_from(ORDERABLE), st.booleans()), max_size=3).map(
    tuple
)


def bounds(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Bounds]:
    return st.builds(Bounds, st.none() | values, st.none() | values)


FILTERS = st.builds(
    RowFilter,
    status=st.none() | st.frozensets(st.sampled_from(["ready", "failed", "gone"])),
    snapshot_type=st.none() | st.frozensets(st.sampled_from(["full", "oci"])),
    type=st.none() | st.sampled_from(["user", "system"]),
    is_public=st.none() | st.booleans(),
    name_contains=st.none() | st.sampled_from(["alpha", "a", "", "beta", "x"]),
    source_vm_id=st.none() | st.sampled_from(["vm-1", "vm-2"]),
    created_at=bounds(DATES),
    updated_at=bounds(DATES),
    size_bytes=bounds(st.sampled_from([-5, 0, 1, 2**40])),
)


# The references: written from the rules, not from the code.


def reference_matches(item: Sequence[Any], conditions: RowFilter) -> bool:
    def get(name: str) -> Any:
        return item[AT[name]]

    def within(value: Any, allowed: Bounds) -> bool:
        low_ok = allowed.low is None or value >= allowed.low
        return low_ok and (allowed.high is None or value <= allowed.high)

    name = get("name")
    return (
        (conditions.status is None or get("status") in conditions.status)
        and (conditions.snapshot_type is None or get("snapshot_type") in conditions.snapshot_type)
        and (conditions.type is None or get("type") == conditions.type)
        and (conditions.is_public is None or get("is_public") == conditions.is_public)
        and (
            conditions.name_contains is None
            or (name is not None and conditions.name_contains.lower() in name.lower())
        )
        and (conditions.source_vm_id is None or get("source_vm_id") == conditions.source_vm_id)
        and within(datetime.fromisoformat(get("created_at")), conditions.created_at)
        and within(datetime.fromisoformat(get("updated_at")), conditions.updated_at)
        and within(get("size_bytes"), conditions.size_bytes)
    )


def reference_compare(a: Sequence[Any], b: Sequence[Any], order: Sequence[OrderKey]) -> int:
    """Nulls after every value (last ascending, first descending); dates by instant; then id."""
    for key in order:
        x, y = a[AT[key.field]], b[AT[key.field]]
        if key.field in ("created_at", "updated_at"):
            x, y = datetime.fromisoformat(x), datetime.fromisoformat(y)
        if x == y:
            continue
        # A null is after every value.
        later = x is None if x is None or y is None else x > y
        return (-1 if later else 1) if key.descending else (1 if later else -1)
    return (a[0] > b[0]) - (a[0] < b[0])


def reference_list(
    rows: Sequence[Sequence[Any]], conditions: RowFilter, order: Sequence[OrderKey]
) -> list[Sequence[Any]]:
    seen: set[str] = set()
    first_of_each_id = []
    for item in rows:
        if item[0] not in seen:  # the first of duplicate ids wins, matching or not
            seen.add(item[0])
            first_of_each_id.append(item)
    kept = [item for item in first_of_each_id if reference_matches(item, conditions)]
    return sorted(kept, key=functools.cmp_to_key(lambda a, b: reference_compare(a, b, order)))


def relay(
    items: list[Any],
    after: int | None,
    before: int | None,
    first: int | None,
    last: int | None,
    max_size: int,
) -> tuple[list[Any], bool, bool]:
    """The specification's EdgesToReturn, HasPreviousPage and HasNextPage over indexes of
    `items`, with its optional clauses answered "yes, when there are some"."""
    if first is None and last is None:
        first = max_size
    start = 0 if after is None else after + 1
    end = len(items) if before is None else max(start, before)
    edges = items[start:end]
    has_previous = after is not None and start > 0
    if last is not None:
        has_previous = len(edges) > last
    has_next = before is not None and before < len(items)
    if first is not None:
        has_next = len(edges) > first
    if first is not None:
        edges = edges[:first]
    if last is not None:
        edges = edges[len(edges) - last :] if len(edges) > last else edges
    return edges, has_previous, has_next


def ids(items: Sequence[Sequence[Any]]) -> list[str]:
    return [item[0] for item in items]


def cursors_for(order: Sequence[OrderKey], conditions: RowFilter, owner: str = OWNER) -> Cursors:
    return Cursors(SECRET, owner, tuple(order), conditions)


def all_cursors(page: Page) -> list[str]:
    return [page.cursor(index) for index in range(len(page.rows))]


# Properties.


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, conditions=FILTERS, order=ORDERS, size=st.integers(1, 7))
def test_walking_forward_yields_exactly_the_filtered_sorted_list(
    rows: list[tuple[Any, ...]], conditions: RowFilter, order: tuple[OrderKey, ...], size: int
) -> None:
    expected = reference_list(rows, conditions, order)
    view, cursors = view_of(rows, order, conditions), cursors_for(order, conditions)
    walked: list[Sequence[Any]] = []
    after = None
    while True:
        page = page_of(view, PageRequest(first=size, after=after), cursors, max_size=10)
        assert page.total_count == len(expected)
        assert page.has_previous_page == bool(walked)
        walked += page.rows
        assert page.has_next_page == (len(walked) < len(expected))
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert ids(walked) == ids(expected)  # no duplicate, no gap, in order
    assert len(set(ids(walked))) == len(walked)


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, conditions=FILTERS, order=ORDERS, size=st.integers(1, 7))
def test_walking_backward_yields_exactly_the_filtered_sorted_list(
    rows: list[tuple[Any, ...]], conditions: RowFilter, order: tuple[OrderKey, ...], size: int
) -> None:
    expected = reference_list(rows, conditions, order)
    view, cursors = view_of(rows, order, conditions), cursors_for(order, conditions)
    walked: list[Sequence[Any]] = []
    before = None
    while True:
        page = page_of(view, PageRequest(last=size, before=before), cursors, max_size=10)
        assert page.has_next_page == bool(walked)
        walked = [*page.rows, *walked]
        assert page.has_previous_page == (len(walked) < len(expected))
        if not page.has_previous_page:
            break
        before = page.start_cursor
    assert ids(walked) == ids(expected)


SIZES = st.none() | st.integers(0, 12)


@settings(max_examples=500, deadline=None)
@given(
    rows=ROWS,
    conditions=FILTERS,
    order=ORDERS,
    after=st.none() | st.integers(0, 40),
    before=st.none() | st.integers(0, 40),
    first=SIZES,
    last=SIZES,
)
def test_edges_and_page_info_follow_the_relay_algorithm(
    rows: list[tuple[Any, ...]],
    conditions: RowFilter,
    order: tuple[OrderKey, ...],
    after: int | None,
    before: int | None,
    first: int | None,
    last: int | None,
) -> None:
    expected = reference_list(rows, conditions, order)
    assume(after is None or after < len(expected))
    assume(before is None or before < len(expected))
    view, cursors = view_of(rows, order, conditions), cursors_for(order, conditions)
    everything = page_of(view, PageRequest(first=len(expected)), cursors, max_size=100)
    cursor_at = all_cursors(everything)
    request = PageRequest(
        first=first,
        after=None if after is None else cursor_at[after],
        last=last,
        before=None if before is None else cursor_at[before],
    )
    page = page_of(view, request, cursors, max_size=12)
    edges, has_previous, has_next = relay(expected, after, before, first, last, max_size=12)
    assert ids(page.rows) == ids(edges)
    assert (page.has_previous_page, page.has_next_page) == (has_previous, has_next)
    assert page.start_cursor == (cursor_at[expected.index(edges[0])] if edges else None)
    assert page.end_cursor == (cursor_at[expected.index(edges[-1])] if edges else None)


@settings(max_examples=300, deadline=None)
@given(
    rows=ROWS,
    order=ORDERS,
    size=st.integers(1, 5),
    pages_before=st.integers(1, 3),
    deleted=st.sets(st.sampled_from("abcdefghijklmnop")),
    added=st.lists(row(), max_size=10),
)
def test_a_walk_across_a_refresh_continues_from_its_position_without_repeats(
    rows: list[tuple[Any, ...]],
    order: tuple[OrderKey, ...],
    size: int,
    pages_before: int,
    deleted: set[str],
    added: list[tuple[Any, ...]],
) -> None:
    before_refresh = reference_list(rows, RowFilter(), order)
    view, cursors = view_of(rows, order, RowFilter()), cursors_for(order, RowFilter())
    walked: list[Sequence[Any]] = []
    after = None
    for _ in range(pages_before):
        page = page_of(view, PageRequest(first=size, after=after), cursors, max_size=10)
        walked += page.rows
        after = page.end_cursor or after
        if not page.has_next_page:
            break
    assume(after is not None)
    # The refresh: some items gone (maybe the cursor's own), others new (new ids only).
    old_ids = set(ids(rows))
    fresh = [item for item in rows if item[0] not in deleted]
    fresh += [(f"new-{n}-{item[0]}", *item[1:]) for n, item in enumerate(added)]
    position = walked[-1]
    view = view_of(fresh, order, RowFilter())
    while after is not None:
        page = page_of(view, PageRequest(first=size, after=after), cursors, max_size=10)
        walked += page.rows
        after = page.end_cursor if page.has_next_page else None
    after_refresh = [
        item
        for item in reference_list(fresh, RowFilter(), order)
        if reference_compare(item, position, order) > 0
    ]
    assert ids(walked) == ids(before_refresh[: len(walked) - len(after_refresh)]) + ids(
        after_refresh
    )
    still_there = [item for item in walked if item[0] in old_ids]
    assert len(set(ids(still_there))) == len(still_there)  # nothing seen twice


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(row(), min_size=1, max_size=10),
    order=ORDERS,
    position=st.integers(0, 10**6),
    replacement=st.characters() | st.sampled_from(["=", "!", "\n", "A", "-", "_", "+", "/"]),
    inserted=st.booleans(),
)
def test_an_altered_cursor_is_refused(
    rows: list[tuple[Any, ...]],
    order: tuple[OrderKey, ...],
    position: int,
    replacement: str,
    inserted: bool,
) -> None:
    view, cursors = view_of(rows, order, RowFilter()), cursors_for(order, RowFilter())
    cursor = page_of(view, PageRequest(first=1), cursors, max_size=10).end_cursor
    assert cursor is not None
    index = position % len(cursor)
    # Replaced or inserted: base64 decoders skip stray characters, so an inserted one would
    # often decode to the very same bytes; a cursor has one spelling only.
    altered = cursor[:index] + replacement + cursor[index + (0 if inserted else 1) :]
    assume(altered != cursor)
    with pytest.raises(BadUserInput):
        page_of(view, PageRequest(after=altered), cursors, max_size=10)


@settings(max_examples=300, deadline=None)
@given(text=st.text() | st.binary().map(lambda data: data.hex()))
def test_any_string_that_is_not_a_cursor_is_refused_not_a_crash(text: str) -> None:
    view = view_of([], DEFAULT_ORDER, RowFilter())
    for request in (PageRequest(after=text), PageRequest(last=1, before=text)):
        with pytest.raises(BadUserInput):
            page_of(view, request, cursors_for(DEFAULT_ORDER, RowFilter()), max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(row(), min_size=1, max_size=10),
    order=ORDERS,
    other_order=ORDERS,
    other_conditions=FILTERS,
)
def test_a_cursor_of_another_caller_secret_order_or_filter_is_refused(
    rows: list[tuple[Any, ...]],
    order: tuple[OrderKey, ...],
    other_order: tuple[OrderKey, ...],
    other_conditions: RowFilter,
) -> None:
    view = view_of(rows, order, RowFilter())
    page = page_of(view, PageRequest(first=1), cursors_for(order, RowFilter()), max_size=10)
    cursor = page.end_cursor
    assert cursor is not None
    elsewhere = [
        (order, RowFilter(), cursors_for(order, RowFilter(), owner="list:{bob}")),
        (order, RowFilter(), Cursors(b"another secret", OWNER, order, RowFilter())),
    ]
    if other_order != order:
        elsewhere.append((other_order, RowFilter(), cursors_for(other_order, RowFilter())))
    if other_conditions != RowFilter():
        elsewhere.append((order, other_conditions, cursors_for(order, other_conditions)))
    for their_order, their_conditions, their_cursors in elsewhere:
        their_view = view_of(rows, their_order, their_conditions)
        with pytest.raises(BadUserInput):
            page_of(their_view, PageRequest(after=cursor), their_cursors, max_size=10)


# The documented rules, one example each.


def snapshot(snapshot_id: str, **fields: Any) -> tuple[Any, ...]:
    values = {
        "id": snapshot_id,
        "name": None,
        "status": "ready",
        "snapshot_type": "full",
        "type": "user",
        "size_bytes": 0,
        "is_public": False,
        "created_at": "2026-01-01T10:00:00+00:00",
        "updated_at": "2026-01-01T10:00:00+00:00",
        **fields,
    }
    return tuple(values.get(name) for name in ROW_FIELDS)


def ordered_ids(rows: list[tuple[Any, ...]], *order: OrderKey, **conditions: Any) -> list[str]:
    return ids(view_of(rows, tuple(order), RowFilter(**conditions)).rows)


def test_nulls_sort_last_ascending_and_first_descending() -> None:
    rows = [snapshot("a", name="b"), snapshot("b"), snapshot("c", name="a")]
    assert ordered_ids(rows, OrderKey("name")) == ["c", "a", "b"]
    assert ordered_ids(rows, OrderKey("name", descending=True)) == ["b", "a", "c"]


def test_dates_order_by_instant_and_ties_by_id_ascending() -> None:
    rows = [
        snapshot("z", created_at="2026-01-01T10:00:00+02:00"),  # 08:00 UTC
        snapshot("y", created_at="2026-01-01T09:00:00+00:00"),
        snapshot("x", created_at="2026-01-01T03:00:00-05:00"),  # 08:00 UTC too
    ]
    assert ordered_ids(rows, OrderKey("created_at")) == ["x", "z", "y"]
    assert ordered_ids(rows, OrderKey("created_at", descending=True)) == ["y", "x", "z"]


def test_several_keys_sort_by_the_first_first() -> None:
    rows = [
        snapshot("a", status="ready", size_bytes=1),
        snapshot("b", status="failed", size_bytes=2),
        snapshot("c", status="ready", size_bytes=3),
    ]
    order = (OrderKey("status"), OrderKey("size_bytes", descending=True))
    assert ordered_ids(rows, *order) == ["b", "c", "a"]


def test_the_first_of_duplicate_ids_wins_whether_it_matches_or_not() -> None:
    rows = [snapshot("a", status="failed"), snapshot("a", status="ready"), snapshot("b")]
    assert ordered_ids(rows) == ["a", "b"]
    assert ordered_ids(rows, status=frozenset({"ready"})) == ["b"]


def test_filters_combine_with_and() -> None:
    rows = [
        snapshot("a", name="Nightly Build", status="ready", size_bytes=10),
        snapshot("b", name="nightly", status="failed", size_bytes=10),
        snapshot("c", name=None, status="ready", size_bytes=10),
        snapshot("d", name="NIGHTLY", status="ready", size_bytes=99),
    ]
    assert ordered_ids(rows, name_contains="nightly") == ["a", "b", "d"]
    assert ordered_ids(rows, name_contains="") == ["a", "b", "d"]  # a null name never matches
    assert ordered_ids(
        rows,
        name_contains="nightly",
        status=frozenset({"ready"}),
        size_bytes=Bounds(None, 10),
    ) == ["a"]
    assert ordered_ids(rows, status=frozenset()) == []  # any of none: none


def test_date_ranges_include_both_ends_by_instant() -> None:
    rows = [
        snapshot("a", updated_at="2026-01-01T10:00:00+02:00"),
        snapshot("b", updated_at="2026-01-01T09:00:00+00:00"),
        snapshot("c", updated_at="2026-01-01T10:00:00+00:00"),
    ]
    low = datetime(2026, 1, 1, 8, tzinfo=UTC)
    high = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert ordered_ids(rows, updated_at=Bounds(low, high)) == ["a", "b"]
    assert ordered_ids(rows, updated_at=Bounds(high, None)) == ["b", "c"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (PageRequest(first=-1), "`first` must be 0 or more."),
        (PageRequest(last=-1), "`last` must be 0 or more."),
        (PageRequest(first=11), "`first` may be at most 10 (the page size limit)."),
        (PageRequest(last=11), "`last` may be at most 10 (the page size limit)."),
    ],
)
def test_page_sizes_out_of_bounds_are_bad_user_input(request_: PageRequest, message: str) -> None:
    view = view_of([snapshot("a")], DEFAULT_ORDER, RowFilter())
    with pytest.raises(BadUserInput) as refused:
        page_of(view, request_, cursors_for(DEFAULT_ORDER, RowFilter()), max_size=10)
    assert str(refused.value) == message
    assert refused.value.extensions["code"] == "BAD_USER_INPUT"


def test_without_first_or_last_a_page_holds_the_limit() -> None:
    rows = [snapshot(f"s{n:02d}") for n in range(25)]
    view = view_of(rows, DEFAULT_ORDER, RowFilter())
    page = page_of(view, PageRequest(), cursors_for(DEFAULT_ORDER, RowFilter()), max_size=10)
    assert ids(page.rows) == [f"s{n:02d}" for n in range(10)]
    assert page.has_next_page and not page.has_previous_page and page.total_count == 25


def test_first_and_last_together_take_the_last_of_the_first() -> None:
    rows = [snapshot(f"s{n}") for n in range(8)]
    view = view_of(rows, DEFAULT_ORDER, RowFilter())
    cursors = cursors_for(DEFAULT_ORDER, RowFilter())
    page = page_of(view, PageRequest(first=5, last=2), cursors, max_size=10)
    assert ids(page.rows) == ["s3", "s4"]
    assert page.has_next_page and page.has_previous_page


def test_a_cursor_is_the_same_for_the_same_position_in_another_version_of_the_list() -> None:
    cursors = cursors_for(DEFAULT_ORDER, RowFilter())
    old = view_of([snapshot("a"), snapshot("b")], DEFAULT_ORDER, RowFilter())
    new = view_of([snapshot("0"), snapshot("b"), snapshot("c")], DEFAULT_ORDER, RowFilter())
    old_page = page_of(old, PageRequest(first=2), cursors, max_size=10)
    new_page = page_of(new, PageRequest(first=2, after=old_page.start_cursor), cursors, max_size=10)
    assert old_page.end_cursor == new_page.start_cursor  # b's position, either way
    assert ids(new_page.rows) == ["b", "c"]  # after a (gone): from its position on


# Dates at either end of the calendar: the upstream may write any date Python reads, at any
# offset in whole minutes, so an instant may fall up to a day before year 1 or after 9999 in
# UTC, where no UTC datetime can hold it.
EDGE_DATES = [
    "0001-01-01T00:00:00+23:59",  # the earliest instant an upstream date can name
    "0001-01-01T00:30:00+01:00",  # 0000-12-31T23:30Z
    "0001-01-01T00:00:00+00:00",
    "2026-01-01T10:00:00+00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:30:00-01:00",  # 10000-01-01T00:30Z
    "9999-12-31T23:59:59.999999-23:59",  # the latest
]


@pytest.mark.parametrize("descending", [False, True])
def test_cursors_of_dates_at_either_end_of_the_calendar_can_be_passed_back(
    descending: bool,
) -> None:
    rows = [snapshot(f"s{n}", created_at=date) for n, date in enumerate(EDGE_DATES)]
    order = (OrderKey("created_at", descending),)
    view, cursors = view_of(rows, order, RowFilter()), cursors_for(order, RowFilter())
    expected = [f"s{n}" for n in range(len(EDGE_DATES))][:: -1 if descending else 1]
    assert ids(view.rows) == expected  # by instant
    walked: list[Sequence[Any]] = []
    after = None
    for _ in rows:
        page = page_of(view, PageRequest(first=1, after=after), cursors, max_size=10)
        walked += page.rows
        after = page.end_cursor
    assert ids(walked) == expected
    backward = page_of(view, PageRequest(last=10, before=page.start_cursor), cursors, 10)
    assert ids(backward.rows) == expected[:-1]


# Any date an upstream may send (see `_iso_datetime`): a whole-minute offset under a day.
# The calendar's first and last days half the time: there the instant may leave it.
UPSTREAM_DATES = st.builds(
    lambda local, minutes: local.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(max_value=datetime(1, 1, 2))
    | st.datetimes(min_value=datetime(9999, 12, 31))
    | st.datetimes(),
    st.integers(-(24 * 60 - 1), 24 * 60 - 1),
)


@settings(max_examples=500, deadline=None)
@given(moment=UPSTREAM_DATES, descending=st.booleans())
def test_a_date_cursor_reads_back_as_the_instant_it_was_written_for(
    moment: datetime, descending: bool
) -> None:
    cursors = cursors_for((OrderKey("created_at", descending),), RowFilter())
    read, snapshot_id = cursors.read(cursors.write((moment, "a")), "after")
    assert (read, snapshot_id) == (moment, "a")  # the same instant (dates compare by instant)
    assert read - moment == timedelta(0)


def test_the_cursor_secret_comes_from_the_cache_secret_or_is_this_process_own() -> None:
    assert cursor_secret("replica secret") == cursor_secret("replica secret")
    assert cursor_secret("replica secret") not in (cursor_secret("other"), b"replica secret")
    assert cursor_secret(None) == PROCESS_CURSOR_SECRET
