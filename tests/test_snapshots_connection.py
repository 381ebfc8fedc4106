"""`snapshotsConnection` through the gateway over real HTTP: walks forward and backward, one
upstream call per walk, cursors that are refused when they are not the caller's own for the
same order and filter, the page size limit, and a walk that crosses a refresh of the list."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ALICE_KEY, BOB_KEY, FaultyUpstream, Gateway, Upstream, data_of
from snapgraph import Settings, create_app
from snapgraph.reference.app import create_reference_app
from snapgraph.reference.data import DEMO_USERS, SYSTEM_SNAPSHOTS, Dataset, Snapshot
from snapgraph.serving import serve_in_thread
from snapgraph.web import graphiql

PAGE = """query Page($first: Int, $after: String, $last: Int, $before: String,
                  $filter: SnapshotFilter, $orderBy: [SnapshotOrder!], $type: SnapshotType) {
  snapshotsConnection(first: $first, after: $after, last: $last, before: $before,
                      filter: $filter, orderBy: $orderBy, type: $type) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { id name status sizeBytes createdAt } }
  }
}"""
BY_SIZE = [{"field": "SIZE_BYTES", "direction": "DESC"}]


def _snapshot(owner: str, n: int, **fields: Any) -> Snapshot:
    return Snapshot(
        owner,
        {
            "id": f"snap-{owner}-{n:02d}",
            "name": None if n % 5 == 0 else f"{owner} box {n}",
            "status": "failed" if n % 4 == 0 else "ready",
            "snapshot_type": "full",
            "type": "user",
            "size_bytes": (n * 7919) % 23 * 2**30,  # repeats: ties broken by id
            "is_public": False,
            "created_at": f"2026-11-{n % 28 + 1:02d}T10:00:00+0{n % 3}:00",
            "updated_at": "2026-11-30T10:00:00Z",
            **fields,
        },
    )


DATASET = Dataset(
    users=list(DEMO_USERS),
    snapshots=[_snapshot("alice", n) for n in range(23)]
    + [_snapshot("bob", n) for n in range(4)]
    + list(SYSTEM_SNAPSHOTS),
)


def page(gateway: Gateway, headers: dict[str, str] | None = None, **variables: Any) -> Any:
    return data_of(gateway.query(PAGE, headers or ALICE_KEY, variables=variables))[
        "snapshotsConnection"
    ]


def refused(gateway: Gateway, headers: dict[str, str] | None = None, **variables: Any) -> Any:
    result = gateway.query(PAGE, headers or ALICE_KEY, variables=variables)
    assert result.get("data") is None, result
    return result["errors"]


def node_ids(connection: Any) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


def walk_forward(gateway: Gateway, size: int, **variables: Any) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        connection = page(gateway, first=size, after=after, **variables)
        assert connection["pageInfo"]["hasPreviousPage"] == bool(seen)
        seen += node_ids(connection)
        if not connection["pageInfo"]["hasNextPage"]:
            return seen
        after = connection["pageInfo"]["endCursor"]


def walk_backward(gateway: Gateway, size: int, **variables: Any) -> list[str]:
    seen: list[str] = []
    before = None
    while True:
        connection = page(gateway, last=size, before=before, **variables)
        assert connection["pageInfo"]["hasNextPage"] == bool(seen)
        seen = node_ids(connection) + seen
        if not connection["pageInfo"]["hasPreviousPage"]:
            return seen
        before = connection["pageInfo"]["startCursor"]


def biggest_first(gateway: Gateway) -> list[str]:
    """What `snapshots` lists, ordered as BY_SIZE says: size descending, then id."""
    items = data_of(gateway.query("{ snapshots { id sizeBytes } }", ALICE_KEY))["snapshots"]
    return [item["id"] for item in sorted(items, key=lambda i: (-i["sizeBytes"], i["id"]))]


def test_a_walk_either_way_yields_the_whole_list_in_order_from_one_upstream_call(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    upstream = start_upstream(DATASET)
    gateway = start_gateway(upstream.url)
    expected = biggest_first(gateway)
    assert len(expected) == 25  # alice's 23 and the 2 public system snapshots
    assert walk_forward(gateway, 4, orderBy=BY_SIZE) == expected
    assert walk_backward(gateway, 4, orderBy=BY_SIZE) == expected
    assert walk_forward(gateway, 25, orderBy=BY_SIZE) == expected  # one page, exactly full
    assert len(upstream.requests) == 1  # every page came from the one cached answer
    answered = gateway.app.state.gateway.executor.paths
    assert answered["graphql-core"] == 0  # the compiled path served every page


def test_the_default_order_is_newest_first_and_counts_every_match(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    items = data_of(gateway.query("{ snapshots { id createdAt } }", ALICE_KEY))["snapshots"]

    def instant(item: dict[str, str]) -> float:
        return datetime.fromisoformat(item["createdAt"]).timestamp()

    newest_first = sorted(items, key=lambda item: (-instant(item), item["id"]))
    connection = page(gateway, first=5)
    assert node_ids(connection) == [item["id"] for item in newest_first[:5]]
    assert connection["totalCount"] == 25
    assert connection["edges"][0]["cursor"] == connection["pageInfo"]["startCursor"]
    assert connection["edges"][-1]["cursor"] == connection["pageInfo"]["endCursor"]


def test_filters_combine_and_an_order_of_several_keys_is_total(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    connection = page(
        gateway,
        first=50,
        filter={
            "status": ["ready"],
            "nameContains": "ALICE BOX 1",
            "sizeBytes": {"min": 2**30},
            "type": "user",
            "isPublic": False,
        },
        orderBy=[{"field": "NAME", "direction": "DESC"}, {"field": "CREATED_AT"}],
    )
    names = [edge["node"]["name"] for edge in connection["edges"]]
    assert names == sorted(names, reverse=True)
    # "alice box 1" and "alice box 10" to "19": named (n % 5), ready (n % 4), not 0 bytes.
    assert set(names) == {
        f"alice box {n}" for n in (1, *range(10, 20)) if n % 5 and n % 4 and (n * 7919) % 23
    }
    assert connection["totalCount"] == len(names)
    nothing = page(gateway, filter={"status": []})
    assert nothing == {
        "totalCount": 0,
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
        "edges": [],
    }


def test_each_filter_and_order_gets_its_own_view_of_the_one_cached_list(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    upstream = start_upstream(DATASET)
    gateway = start_gateway(upstream.url)
    items = data_of(gateway.query("{ snapshots { id status sizeBytes } }", ALICE_KEY))
    for status in ("failed", "ready", "failed"):
        for order in (BY_SIZE, [{"field": "SIZE_BYTES"}]):
            connection = page(gateway, first=50, filter={"status": [status]}, orderBy=order)
            matching = [item for item in items["snapshots"] if item["status"] == status]
            by_size = sorted(matching, key=lambda i: (i["sizeBytes"], i["id"]))
            if order == BY_SIZE:
                by_size = sorted(matching, key=lambda i: (-i["sizeBytes"], i["id"]))
            assert node_ids(connection) == [item["id"] for item in by_size]
    assert len(upstream.requests) == 1


def test_a_cursor_of_another_user_is_refused_and_shows_nothing_of_theirs(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    bobs = page(gateway, BOB_KEY, first=2)
    cursor = bobs["pageInfo"]["endCursor"]
    errors = refused(gateway, ALICE_KEY, first=2, after=cursor)
    assert [error["extensions"]["code"] for error in errors] == ["BAD_USER_INPUT"]
    assert errors[0]["path"] == ["snapshotsConnection"]
    assert "bob" not in json.dumps(errors)
    # The same user with another credential is another cache key, so another caller.
    alice_with_token = {"Authorization": "Bearer demo-alice-token"}
    alices = page(gateway, alice_with_token, first=2)
    assert refused(gateway, ALICE_KEY, after=alices["pageInfo"]["endCursor"])


def test_a_cursor_of_another_order_filter_or_type_is_refused(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    cursor = page(gateway, first=3, orderBy=BY_SIZE)["pageInfo"]["endCursor"]
    assert node_ids(page(gateway, first=3, after=cursor, orderBy=BY_SIZE))  # its own: fine
    for elsewhere in (
        {},
        {"orderBy": [{"field": "SIZE_BYTES", "direction": "ASC"}]},
        {"orderBy": BY_SIZE, "filter": {"status": ["ready"]}},
        {"orderBy": BY_SIZE, "type": "USER"},
    ):
        errors = refused(gateway, first=3, after=cursor, **elsewhere)
        assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT"}
        assert "not a cursor of this list" in errors[0]["message"]


def test_a_tampered_cursor_is_refused_never_a_crash(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    cursor = page(gateway, first=3)["pageInfo"]["endCursor"]
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    for bad in (flipped, cursor + "A", cursor[:-1], "", "💥", "a" * 5000, cursor.upper()):
        if bad == cursor:
            continue
        errors = refused(gateway, first=3, before=bad)
        assert [error["extensions"]["code"] for error in errors] == ["BAD_USER_INPUT"], bad


def test_the_page_size_is_bounded_by_a_setting(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    upstream = start_upstream(DATASET)
    gateway = start_gateway(upstream.url, max_page_size=5)
    errors = refused(gateway, first=6)
    assert errors[0]["extensions"] == {"code": "BAD_USER_INPUT", "limit": 5}
    assert refused(gateway, last=-1)[0]["message"] == "`last` must be 0 or more."
    assert upstream.requests == []  # refused before anything was fetched
    connection = page(gateway)  # neither first nor last: the limit
    assert len(connection["edges"]) == 5 and connection["pageInfo"]["hasNextPage"]
    assert page(gateway, first=0)["totalCount"] == 25


def test_a_date_without_an_offset_is_refused(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    errors = refused(gateway, filter={"createdAt": {"min": "2026-11-01T00:00:00"}})
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "createdAt.min" in errors[0]["message"]
    with_offset = page(gateway, first=50, filter={"createdAt": {"min": "2026-11-20T00:00:00Z"}})
    assert with_offset["totalCount"] > 0


def test_a_size_given_as_a_string_is_ascii_digits_and_a_minus_sign_only(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_gateway(start_upstream(DATASET).url)
    as_number = page(gateway, first=50, filter={"sizeBytes": {"min": 2**30}})["totalCount"]
    for text in (str(2**30), f"0{2**30}"):
        assert page(gateway, first=50, filter={"sizeBytes": {"min": text}})["totalCount"] == (
            as_number
        )
    assert page(gateway, first=50, filter={"sizeBytes": {"max": "-1"}})["totalCount"] == 0
    # Digits of other scripts, a superscript, fullwidth digits: int() reads each as a number.
    other_digits = ["١٢٣", "²", "\uff11\uff12\uff13"]
    for bad in [*other_digits, "1_000", " 123", "123 ", "123\n", "+123", "--1", "1" * 30]:
        errors = refused(gateway, filter={"sizeBytes": {"min": bad}})
        assert [error["extensions"]["code"] for error in errors] == ["BAD_USER_INPUT"], bad
        assert "ASCII digits" in errors[0]["message"], bad
    literal = '{ snapshotsConnection(filter: {sizeBytes: {max: "١٢٣"}}) { totalCount } }'
    errors = gateway.query(literal, ALICE_KEY)["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["GRAPHQL_VALIDATION_FAILED"]
    assert "ASCII digits" in errors[0]["message"]


def _item(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"s{n:03d}",
        "name": f"snapshot {n}",
        "status": "ready",
        "snapshot_type": "full",
        "size_bytes": n,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        **fields,
    }


def test_a_walk_across_a_refresh_keeps_its_place_without_repeats(
    faulty: FaultyUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    faulty.respond(200, json.dumps([_item(n) for n in range(10, 20)]))
    gateway = start_gateway(faulty.url, cache_ttl=0.5)
    order = [{"field": "SIZE_BYTES"}]
    first = page(gateway, first=4, orderBy=order)
    assert node_ids(first) == ["s010", "s011", "s012", "s013"]
    # The list changes: s013 (where the walk stands) and s016 are deleted; s005 (before the
    # walk's place) and s014.5-sized s099 and s025 (after it) are new.
    changed = [_item(n) for n in range(10, 20) if n not in (13, 16)]
    changed += [_item(5), _item(99, size_bytes=14), _item(25)]
    faulty.respond(200, json.dumps(changed))
    time.sleep(0.6)
    rest = walk_forward_from(gateway, first["pageInfo"]["endCursor"], 4, orderBy=order)
    assert rest == ["s014", "s099", "s015", "s017", "s018", "s019", "s025"]
    assert len(faulty.received) == 2  # one answer per cache TTL, not one per page


def walk_forward_from(gateway: Gateway, after: str, size: int, **variables: Any) -> list[str]:
    seen: list[str] = []
    while True:
        connection = page(gateway, first=size, after=after, **variables)
        seen += node_ids(connection)
        if not connection["pageInfo"]["hasNextPage"]:
            return seen
        after = connection["pageInfo"]["endCursor"]


def test_broken_items_are_reported_at_the_connection_like_snapshots_does(
    faulty: FaultyUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    faulty.respond(200, json.dumps([_item(1), _item(2, status=None), _item(3)]))
    gateway = start_gateway(faulty.url)
    result = gateway.query(
        "{ snapshotsConnection(first: 1) { totalCount edges { node { id } } } }", ALICE_KEY
    )
    assert result["data"] == {
        "snapshotsConnection": {"totalCount": 2, "edges": [{"node": {"id": "s001"}}]}
    }
    assert [(e["path"], e["extensions"]["snapshotId"]) for e in result["errors"]] == [
        (["snapshotsConnection"], "s002")
    ]


def test_a_page_costs_its_own_items_in_the_result_budget(
    faulty: FaultyUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    faulty.respond(200, json.dumps([_item(n) for n in range(200)]))
    gateway = start_gateway(faulty.url, max_result_values=100)

    def code(query: str) -> str | None:
        result = gateway.query(query, ALICE_KEY)
        return result["errors"][0]["extensions"]["code"] if "errors" in result else None

    assert code("{ snapshots { id } }") == "MAX_RESULT_VALUES_LIMIT"  # 200 values
    assert code("{ snapshotsConnection(first: 50) { edges { node { id } } } }") is None
    too_many = "{ snapshotsConnection(first: 50) { edges { cursor node { id name } } } }"
    assert code(too_many) == "MAX_RESULT_VALUES_LIMIT"  # 50 x 3


def test_cursors_hold_across_replicas_that_share_the_cache_secret(
    start_upstream: Callable[..., Upstream], start_gateway: Callable[..., Gateway]
) -> None:
    upstream = start_upstream(DATASET)
    one, two = (start_gateway(upstream.url, cache_secret="shared " * 6) for _ in range(2))
    cursor = page(one, first=3)["pageInfo"]["endCursor"]
    assert page(two, first=3, after=cursor) == page(one, first=3, after=cursor)
    alone = start_gateway(upstream.url, cache_secret="another " * 6)
    assert refused(alone, first=3, after=cursor)[0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_the_explorers_examples_run_and_show_pages(gateway: Gateway) -> None:
    page_html = gateway.http.get("/graphql", headers={"Accept": "text/html"}).text
    assert "snapshotsConnection" in page_html and "defaultTabs" in page_html
    for tab in graphiql.EXAMPLE_TABS:
        variables = json.loads(tab.get("variables", "{}"))
        result = gateway.query(tab["query"], ALICE_KEY, variables=variables)
        assert "errors" not in result, result
    pages = gateway.query(graphiql.PAGES_QUERY, ALICE_KEY)["data"]["snapshotsConnection"]
    assert pages["totalCount"] == 4  # alice's ready ones and the 2 public system snapshots


@pytest.fixture(scope="module")
def varied_gateway() -> Iterator[Gateway]:
    """One gateway over DATASET, shared by the examples of a property (cache TTL long)."""
    with ExitStack() as stack:
        upstream_url = stack.enter_context(serve_in_thread(create_reference_app(DATASET)))
        settings = Settings.from_environ({}, upstream_url=upstream_url, cache_ttl=600)
        app = create_app(settings)
        gateway = Gateway(stack.enter_context(serve_in_thread(app)), app)
        stack.callback(gateway.http.close)
        yield gateway


FIELDS = {"CREATED_AT": "createdAt", "UPDATED_AT": "updatedAt", "NAME": "name"}
FIELDS |= {"SIZE_BYTES": "sizeBytes", "STATUS": "status"}


def documented_order(items: list[dict[str, Any]], order_by: list[dict[str, str]]) -> list[str]:
    """The README's rules: each key in turn (dates by instant, nulls after every value,
    DESC reversing both), then id ascending."""

    def compare(a: dict[str, Any], b: dict[str, Any]) -> int:
        for key in order_by:
            name = FIELDS[key["field"]]
            x, y = a[name], b[name]
            if name in ("createdAt", "updatedAt"):
                x, y = datetime.fromisoformat(x), datetime.fromisoformat(y)
            if x != y:
                later = x is None if x is None or y is None else x > y
                return (-1 if later else 1) if key["direction"] == "DESC" else (1 if later else -1)
        return -1 if a["id"] < b["id"] else 1

    return [item["id"] for item in sorted(items, key=functools.cmp_to_key(compare))]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    order_by=st.lists(
        st.fixed_dictionaries(
            {
                "field": st.sampled_from(sorted(FIELDS)),
                "direction": st.sampled_from(["ASC", "DESC"]),
            }
        ),
        min_size=1,
        max_size=2,
        unique_by=lambda key: key["field"],  # a field twice is refused (its own test)
    ),
    statuses=st.none() | st.lists(st.sampled_from(["ready", "failed"]), max_size=2),
    name_contains=st.none() | st.sampled_from(["BOX 1", "a", "python"]),
    size=st.integers(3, 9),
)
def test_any_walk_through_the_gateway_yields_the_documented_order(
    varied_gateway: Gateway,
    order_by: list[dict[str, str]],
    statuses: list[str] | None,
    name_contains: str | None,
    size: int,
) -> None:
    everything = "{ snapshots { id name status sizeBytes createdAt updatedAt } }"
    items = data_of(varied_gateway.query(everything, ALICE_KEY))["snapshots"]
    matching = [
        item
        for item in items
        if (statuses is None or item["status"] in statuses)
        and (
            name_contains is None
            or (item["name"] is not None and name_contains.lower() in item["name"].lower())
        )
    ]
    expected = documented_order(matching, order_by)
    conditions = {"status": statuses, "nameContains": name_contains}
    walked = walk_forward(varied_gateway, size, orderBy=order_by, filter=conditions)
    assert walked == expected
    assert walk_backward(varied_gateway, size, orderBy=order_by, filter=conditions) == expected
