"""The compiled path is proven equal to graphql-core, not assumed: generated documents run
through both, over the same cached data, and must give the same JSON bytes (data, errors,
paths, locations, extensions). graphql-core is the reference (`execute_general`)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries as schema_queries

from snapgraph.cache import SnapshotCache
from snapgraph.cache_backends import MemoryStore
from snapgraph.errors import GraphQLRequestInvalid
from snapgraph.execution.document import Documents
from snapgraph.execution.executor import Executor
from snapgraph.execution.limits import DocumentLimits
from snapgraph.execution.response_cache import ResponseCache
from snapgraph.graph.context import Context, ResultBudget
from snapgraph.graph.schema import build_schema, graphql_schema
from snapgraph.upstream.models import Credentials
from snapgraph.upstream.source import SnapshotSource

ALICE = Credentials(api_key="alice")
SCHEMA = build_schema()
GRAPHQL_SCHEMA = graphql_schema(SCHEMA)
LEAVES = [
    "id", "name", "status", "sourceVmId", "snapshotType", "type", "ociImage", "vcpuCount",
    "memoryMb", "sizeBytes", "isPublic", "lastError", "createdAt", "updatedAt", "__typename",
]  # fmt: skip


def item(n: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"s{n}",
        "name": None if n % 3 == 0 else f"snapshot {n}",
        "status": "ready",
        "source_vm_id": f"vm-{n}" if n % 2 else None,
        "snapshot_type": "full",
        "type": "system" if n % 4 == 0 else "user",
        "vcpu_count": n % 8 or None,
        "memory_mb": 512 * n,
        "size_bytes": 2**40 + n,
        "is_public": n % 4 == 0,
        "created_at": f"2026-01-{n % 28 + 1:02d}T10:00:00Z",
        "updated_at": f"2026-02-{n % 28 + 1:02d}T10:00:00+02:00",
        **fields,
    }


BROKEN = [
    item(90, status=None),
    {"name": "no id"},
    item(91, created_at="2026-01-01"),
    item(92, vcpu_count=2**40),
]

# More than a field reports one by one: the rest are counted (graph/reports.py).
MANY_BROKEN = BROKEN + [item(100 + n, status=None) for n in range(25)] + [{"name": "anon"}]


class ListClient:
    """Stands in for the upstream client: the differential test is about execution, over data
    the cache already holds; HTTP is covered everywhere else."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    async def list_snapshots(
        self, credentials: Any, list_type: Any, *, request_id: str, caller: Any = None
    ) -> Any:
        if list_type is None:
            return self.items
        return [i for i in self.items if i.get("type", "user") == list_type]


class Harness:
    def __init__(self, items: list[dict[str, Any]], budget: int = 300_000) -> None:
        self.cache = SnapshotCache(
            MemoryStore(100), secret=b"k" * 32, ttl=60, stale_window=60, lease_seconds=1
        )
        self.client = ListClient(items)
        self.documents = Documents(GRAPHQL_SCHEMA, DocumentLimits(), max_tokens=5000)
        self.executor = Executor(GRAPHQL_SCHEMA, response_cache=ResponseCache(1 << 20))
        self.budget = budget

    def context(self, credentials: Credentials) -> Context:
        source = SnapshotSource(
            client=self.client,  # type: ignore[arg-type]
            cache=self.cache,
            credentials=credentials,
            request_id="r",
        )
        return Context("r", source, ResultBudget(self.budget), 5000)

    async def both(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        credentials: Credentials = ALICE,
    ) -> tuple[bytes, bytes]:
        prepared = self.documents.prepare(query)
        self.documents.validate(prepared)
        context = self.context
        general = _serialized(
            self.executor.execute_general(
                prepared, context(credentials), variables=variables, operation_name=operation_name
            )
        )
        fast = _serialized(
            self.executor.execute(
                prepared, context(credentials), variables=variables, operation_name=operation_name
            )
        )
        general_bytes = await general  # graphql-core first, as a caller's first request
        return await fast, general_bytes


async def _serialized(answer: Awaitable[Any]) -> bytes:
    """The bytes a caller gets, or the errors of a refused request (both paths raise alike)."""
    try:
        result = await answer
    except GraphQLRequestInvalid as refused:
        return orjson.dumps([error.formatted for error in refused.errors])
    return result if isinstance(result, bytes) else orjson.dumps(result.to_dict())


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


EDGE_CASES = [
    ("{ snapshots { id } }", None),
    ("{ a: snapshots { id name } a: snapshots { name sizeBytes } }", None),
    (
        "{ a: snapshots(type: USER) { id } b: snapshots(type: SYSTEM) { id } c: snapshots { id } }",
        None,
    ),
    ('{ one: snapshot(id: "s1") { id createdAt } two: snapshot(id: "nope") { id } }', None),
    ('{ broken: snapshot(id: "s90") { id } }', None),
    ("{ __typename snapshots { __typename t: __typename id } }", None),
    (
        "{ snapshots { ...F ...F ...G } } "
        "fragment F on Snapshot { id name } fragment G on Snapshot { name id }",
        None,
    ),
    ("{ snapshots { ... on Snapshot { id } ... { name } } }", None),
    ("query ($s: Boolean!) { snapshots { id name @skip(if: $s) } }", {"s": True}),
    ("query ($s: Boolean!) { snapshots { id name @skip(if: $s) } }", {"s": False}),
    (
        "query ($i: Boolean!) { snapshots { ...F @include(if: $i) id } } "
        "fragment F on Snapshot { name id }",
        {"i": False},
    ),
    (
        "query ($i: Boolean!) { a: snapshots @include(if: $i) { id } b: snapshots { name } }",
        {"i": False},
    ),
    ("query ($s: Boolean!) { snapshots { name @skip(if: $s) id name } }", {"s": True}),
    ("query ($t: SnapshotType) { snapshots(type: $t) { id } }", {"t": "SYSTEM"}),
    ("query ($t: SnapshotType) { snapshots(type: $t) { id } }", {}),
    ("query ($t: SnapshotType = USER) { snapshots(type: $t) { id } }", {}),
    ("query ($id: ID!) { snapshot(id: $id) { id sizeBytes } }", {"id": "s2"}),
    ("query ($id: ID!) { snapshot(id: $id) { id } }", {"id": 2}),
    ("query ($id: ID!) { snapshot(id: $id) { id } }", {"id": None}),
    ("query ($t: SnapshotType) { snapshots(type: $t) { id } }", {"t": "BOGUS"}),
    ("query A { __typename } query B { snapshots { id } }", None),
    ("query ($i: Boolean = true) { snapshots { id @include(if: $i) } }", {"i": None}),
    ("query ($i: Boolean = true) { snapshots @include(if: $i) { id } }", {"i": None}),
    ('query ($id: ID = "s1") { snapshot(id: $id) { id } }', {"id": None}),
    ("{ ...Q ...Q } fragment Q on Query { snapshots { id } }", None),
    (
        '{ ...Q ... { ...Q } } fragment Q on Query { snapshots { id } snapshot(id: "s90") { id } }',
        None,
    ),
    ("query ($d: SnapshotType = USER) { snapshots(type: $d) { id } }", {"d": None}),
]


@pytest.mark.parametrize(("query", "variables"), EDGE_CASES)
def test_hand_written_edge_cases_match_graphql_core(query: str, variables: Any) -> None:
    harness = Harness([item(n) for n in range(1, 12)] + BROKEN)
    operation = "B" if "query A" in query else None
    fast, general = run(harness.both(query, variables, operation))
    assert fast == general
    refused = b"BAD_USER_INPUT" in fast
    assert harness.executor.paths == ({"graphql-core": 1} if refused else {"compiled": 1})
    assert b"INTERNAL_SERVER_ERROR" not in fast


def test_without_credentials_both_paths_say_unauthenticated() -> None:
    harness = Harness([item(1)])
    fast, general = run(
        harness.both(
            '{ a: snapshots { id } b: snapshot(id: "s1") { id } }', credentials=Credentials()
        )
    )
    assert fast == general and b"UNAUTHENTICATED" in fast


def test_over_the_result_budget_both_paths_refuse_alike() -> None:
    harness = Harness([item(n) for n in range(1, 50)], budget=100)
    fast, general = run(harness.both("{ a: snapshots { id name } b: snapshots { id } }"))
    assert fast == general and b"MAX_RESULT_VALUES_LIMIT" in fast


def test_a_stale_answer_is_flagged_alike_on_both_paths() -> None:
    harness = Harness([item(n) for n in range(1, 5)] + BROKEN)

    async def scenario() -> tuple[bytes, bytes, bytes]:
        harness.cache.ttl = 0.01
        first = await harness.both("{ snapshots { id } }")
        await asyncio.sleep(0.02)
        from snapgraph.errors import UpstreamUnavailable

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise UpstreamUnavailable()

        harness.client.list_snapshots = down  # type: ignore[method-assign]
        fast, general = await harness.both('{ snapshots { id } one: snapshot(id: "s1") { id } }')
        return first[0], fast, general

    _, fast, general = run(scenario())
    assert fast == general
    assert json.loads(fast)["extensions"]["stale"] is True


# Generated documents: aliases from small pools (so fields merge), fragments, conditions.
CONDITION = st.sampled_from(
    [
        "",
        " @skip(if: $s)",
        " @include(if: $i)",
        " @skip(if: false)",
        " @include(if: true)",
        " @include(if: false)",
    ]
)


@st.composite
def leaf_selection(draw: st.DrawFn) -> str:
    field = draw(st.sampled_from(LEAVES))
    alias = draw(st.sampled_from(["", "", "x: ", "y: "]))
    if alias and draw(st.booleans()):
        alias = ""
    text = f"{alias}{field}{draw(CONDITION)}"
    return text if alias == "" else f"{alias}{field}"  # an alias reused must name one field


@st.composite
def item_selection(draw: st.DrawFn) -> str:
    parts = draw(st.lists(leaf_selection(), min_size=1, max_size=6))
    wrap = draw(st.sampled_from(["plain", "inline", "spread"]))
    if wrap == "inline":
        return "{ ... on Snapshot" + draw(CONDITION) + " { " + " ".join(parts) + " } id }"
    if wrap == "spread":
        return "{ ...Item" + draw(CONDITION) + " " + parts[0] + " }"
    return "{ " + " ".join(parts) + " }"


@st.composite
def document(draw: st.DrawFn) -> str:
    roots = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["list", "typed", "one", "typename"]))
        condition = draw(CONDITION)
        if kind == "typename":
            roots.append(f"{draw(st.sampled_from(['', 't: ']))}__typename{condition}")
        elif kind == "one":
            snapshot_id = draw(st.sampled_from(["s1", "s2", "s90", "nope", "$id"]))
            argument = snapshot_id if snapshot_id == "$id" else f'"{snapshot_id}"'
            alias = draw(st.sampled_from(["", "o1: ", "o2: "]))
            roots.append(f"{alias}snapshot(id: {argument}){condition} {draw(item_selection())}")
        else:
            argument = (
                ""
                if kind == "list"
                else f"(type: {draw(st.sampled_from(['USER', 'SYSTEM', '$t']))})"
            )
            alias = draw(st.sampled_from(["", "l1: ", "l2: "]))
            roots.append(f"{alias}snapshots{argument}{condition} {draw(item_selection())}")
    body = " ".join(roots)
    declared = {
        "s": "$s: Boolean = false",
        "i": "$i: Boolean = true",
        "id": '$id: ID = "s3"',
        "t": "$t: SnapshotType = SYSTEM",
    }
    used = [text for name, text in declared.items() if re.search(rf"\${name}\b", body)]
    variables = f"({', '.join(used)})" if used else ""
    fragment = "fragment Item on Snapshot { id name sizeBytes createdAt __typename }"
    return f"query Q{variables} {{ {body} }} " + (fragment if "...Item" in body else "")


VARIABLES = st.fixed_dictionaries(
    {},
    optional={
        "s": st.booleans(),
        "i": st.booleans(),
        "id": st.sampled_from(["s1", "s5", "s90", "x"]),
        "t": st.sampled_from(["USER", "SYSTEM"]),
    },
)
ITEMS = (
    st.lists(st.integers(1, 40), max_size=25, unique=True)
    .map(lambda numbers: [item(n) for n in numbers])
    .flatmap(lambda items: st.sampled_from([items, items + BROKEN, items + MANY_BROKEN]))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=document(), variables=VARIABLES, items=ITEMS)
def test_generated_documents_match_graphql_core(
    query: str, variables: dict[str, Any], items: list[dict[str, Any]]
) -> None:
    harness = Harness(items)
    try:
        harness.documents.validate(harness.documents.prepare(query))
    except GraphQLRequestInvalid:
        assume(False)  # e.g. one response key for two different fields
    fast, general = run(harness.both(query, variables))
    assert fast == general
    assert harness.executor.paths == {"compiled": 1}  # the fast path ran, not a fallback
    again, _ = run(harness.both(query, variables))  # now from the response cache
    assert again == general
    assert harness.executor.paths == {"compiled": 1, "cached": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=schema_queries(GRAPHQL_SCHEMA, fields=["snapshots", "snapshot"]), items=ITEMS)
def test_documents_generated_from_the_sdl_match_graphql_core(
    query: str, items: list[dict[str, Any]]
) -> None:
    harness = Harness(items)
    try:
        harness.documents.validate(harness.documents.prepare(query))
    except GraphQLRequestInvalid:
        assume(False)
    fast, general = run(harness.both(query))
    assert fast == general
    assert harness.executor.paths == {"compiled": 1}


# Connections (`snapshotsConnection`): the same proof, over pages. Cursors are deterministic
# for one caller and position, so a document can name one computed beforehand.

PAGE_ALL = "{ snapshotsConnection(first: 100) { edges { cursor } } }"
FULL_PAGE = (
    "totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
    "edges { cursor node { id name sizeBytes createdAt } }"
)
CONNECTION_CASES = [
    ("{ snapshotsConnection { totalCount } }", None),
    (f"{{ snapshotsConnection(first: 3) {{ {FULL_PAGE} }} }}", None),
    (f"{{ snapshotsConnection(last: 2, type: USER) {{ {FULL_PAGE} }} }}", None),
    (f"{{ snapshotsConnection(first: 4, last: 2) {{ {FULL_PAGE} }} }}", None),
    (f"{{ snapshotsConnection(first: 0) {{ {FULL_PAGE} }} }}", None),
    (
        "{ a: snapshotsConnection(first: 2) { edges { cursor } } "
        "a: snapshotsConnection(first: 2) { edges { node { id } } pageInfo { endCursor } } }",
        None,
    ),
    (
        "{ snapshotsConnection(first: 2) { edges { node { id } } edges { node { name } cursor } "
        "pageInfo { hasNextPage } pageInfo { hasNextPage startCursor } } }",
        None,
    ),
    (
        "{ __typename snapshotsConnection(first: 2) { __typename t: totalCount "
        "pageInfo { __typename } edges { __typename node { __typename id } } } }",
        None,
    ),
    (
        "{ snapshotsConnection(first: 2) { ...C ...C } } "
        "fragment C on SnapshotConnection { totalCount edges { ...E } pageInfo { ...P } } "
        "fragment E on SnapshotEdge { cursor node { ...Item } } "
        "fragment P on PageInfo { endCursor hasNextPage } "
        "fragment Item on Snapshot { id sizeBytes }",
        None,
    ),
    (
        "{ snapshotsConnection(first: 2) { ... on SnapshotConnection { totalCount } "
        "edges { ... on SnapshotEdge { node { id } } } pageInfo { ... { hasPreviousPage } } } }",
        None,
    ),
    (
        "query ($s: Boolean!, $i: Boolean!) { snapshotsConnection(first: 3) { "
        "totalCount @skip(if: $s) pageInfo @include(if: $i) { endCursor } "
        "edges { cursor @skip(if: $s) node @include(if: $i) { id name @skip(if: $s) } } } }",
        {"s": True, "i": False},
    ),
    (
        "query ($s: Boolean!) { c: snapshotsConnection(first: 1) @skip(if: $s) { totalCount } "
        "d: snapshotsConnection(first: 1) { edges { node { id } } } }",
        {"s": True},
    ),
    (
        "{ snapshotsConnection(first: 4, orderBy: [{field: NAME, direction: DESC}, "
        '{field: CREATED_AT}], filter: {isPublic: false, nameContains: "SNAP"}) '
        f"{{ {FULL_PAGE} }} }}",
        None,
    ),
    (
        "query ($f: SnapshotFilter, $o: [SnapshotOrder!]) { "
        f"snapshotsConnection(first: 5, filter: $f, orderBy: $o) {{ {FULL_PAGE} }} }}",
        {
            "f": {
                "status": ["ready"],
                "sizeBytes": {"min": 2**40 + 3, "max": "1099511627790"},
                "createdAt": {"max": "2026-01-20T00:00:00+01:00"},
            },
            "o": [{"field": "SIZE_BYTES", "direction": "DESC"}, {"field": "STATUS"}],
        },
    ),
    ("{ snapshotsConnection(first: 1, filter: {snapshotType: []}) { totalCount } }", None),
    (f"{{ l: snapshots {{ id }} c: snapshotsConnection(first: 2) {{ {FULL_PAGE} }} }}", None),
    # Refused: graphql-core answers, and both paths say the same.
    ("{ snapshotsConnection(first: 101) { totalCount } }", None),
    ("{ snapshotsConnection(last: -1) { totalCount } }", None),
    ('{ snapshotsConnection(after: "not a cursor") { totalCount } }', None),
    (
        '{ snapshotsConnection(filter: {createdAt: {min: "2026-01-01T00:00:00"}}) { totalCount } }',
        None,
    ),
    ("query ($n: Int) { snapshotsConnection(first: $n) { totalCount } }", {"n": "two"}),
]


@pytest.mark.parametrize(("query", "variables"), CONNECTION_CASES)
def test_connection_edge_cases_match_graphql_core(query: str, variables: Any) -> None:
    harness = Harness([item(n) for n in range(1, 12)] + BROKEN)
    fast, general = run(harness.both(query, variables))
    assert fast == general
    refused = b"BAD_USER_INPUT" in fast
    assert harness.executor.paths == ({"graphql-core": 1} if refused else {"compiled": 1})
    assert b"INTERNAL_SERVER_ERROR" not in fast


def cursors_of(harness: Harness) -> list[str]:
    """Every cursor of the default order without a filter, as the caller would get them."""
    fast, _ = run(harness.both(PAGE_ALL))
    edges = json.loads(fast)["data"]["snapshotsConnection"]["edges"]
    return [edge["cursor"] for edge in edges]


def test_connection_pages_from_a_cursor_match_graphql_core() -> None:
    harness = Harness([item(n) for n in range(1, 12)])
    cursors = cursors_of(harness)
    query = (
        "query ($first: Int, $after: String, $last: Int, $before: String) { "
        "snapshotsConnection(first: $first, after: $after, last: $last, before: $before) "
        f"{{ {FULL_PAGE} }} }}"
    )
    for variables in (
        {"first": 3, "after": cursors[2]},
        {"last": 3, "before": cursors[5]},
        {"first": 2, "after": cursors[1], "before": cursors[6]},
        {"last": 2, "after": cursors[1], "before": cursors[6]},
        {"after": cursors[6], "before": cursors[1]},
        {"first": 1, "after": cursors[-1]},
    ):
        harness.executor.paths.clear()
        fast, general = run(harness.both(query, variables))
        assert fast == general
        assert harness.executor.paths == {"compiled": 1}
    other = Harness([item(n) for n in range(1, 12)])
    fast, general = run(
        other.both(query, {"first": 1, "after": cursors[0]}, credentials=Credentials(api_key="bob"))
    )
    assert fast == general and b"BAD_USER_INPUT" in fast


def test_a_connection_page_is_charged_alike_on_the_result_budget() -> None:
    # 60 items, a page of 20: the page's 20 x 3 leaves are over 50, its 20 x 1 are not (and
    # the whole list's 60 would be).
    harness = Harness([item(n) for n in range(1, 61)], budget=50)
    fast, general = run(
        harness.both("{ snapshotsConnection(first: 20) { edges { cursor node { id name } } } }")
    )
    assert fast == general and b"MAX_RESULT_VALUES_LIMIT" in fast
    harness = Harness([item(n) for n in range(1, 61)], budget=50)
    fast, general = run(harness.both("{ snapshotsConnection(first: 20) { edges { cursor } } }"))
    assert fast == general and b"MAX_RESULT_VALUES_LIMIT" not in fast


def test_a_stale_connection_page_is_flagged_alike_on_both_paths() -> None:
    harness = Harness([item(n) for n in range(1, 5)] + BROKEN)

    async def scenario() -> tuple[bytes, bytes]:
        harness.cache.ttl = 0.01
        await harness.both("{ snapshotsConnection { totalCount } }")
        await asyncio.sleep(0.02)
        from snapgraph.errors import UpstreamUnavailable

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise UpstreamUnavailable()

        harness.client.list_snapshots = down  # type: ignore[method-assign]
        return await harness.both(f"{{ snapshotsConnection(first: 2) {{ {FULL_PAGE} }} }}")

    fast, general = run(scenario())
    assert fast == general
    assert json.loads(fast)["extensions"]["stale"] is True


ALIAS = st.sampled_from(["", "", "x: ", "y: "])
CONNECTION_ARGUMENTS = st.sampled_from(
    [
        "",
        "(first: 3)",
        "(first: 2, orderBy: [{field: NAME, direction: DESC}])",
        "(last: 2, orderBy: [{field: SIZE_BYTES}, {field: CREATED_AT, direction: DESC}])",
        '(first: 4, filter: {nameContains: "1", isPublic: false})',
        "(type: SYSTEM, first: 1)",
        "(first: $first, after: $after)",
        "(last: 2, before: $before)",
        "(first: 0)",
        "(first: 2, last: 1, after: $after)",
    ]
)


@st.composite
def leaf(draw: st.DrawFn, names: list[str]) -> str:
    alias = draw(ALIAS)
    return f"{alias}{draw(st.sampled_from(names))}" + ("" if alias else draw(CONDITION))


@st.composite
def wrapped(draw: st.DrawFn, parts: list[str], type_name: str, spread: str) -> str:
    """A selection set as written, or in an inline fragment, or with a named fragment."""
    wrap = draw(st.sampled_from(["plain", "plain", "inline", "spread"]))
    if wrap == "inline":
        return f"{{ ... on {type_name}{draw(CONDITION)} {{ {' '.join(parts)} }} __typename }}"
    if wrap == "spread":
        return f"{{ ...{spread}{draw(CONDITION)} {' '.join(parts)} }}"
    return "{ " + " ".join(parts) + " }"


@st.composite
def edge_selection(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            alias = draw(st.sampled_from(["", "n: "]))
            parts.append(f"{alias}node{draw(CONDITION)} {draw(item_selection())}")
        else:
            parts.append(draw(leaf(["cursor", "__typename"])))
    return draw(wrapped(parts, "SnapshotEdge", "Edge"))


@st.composite
def connection_selection(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["leaf", "pageInfo", "edges"]))
        if kind == "leaf":
            parts.append(draw(leaf(["totalCount", "__typename"])))
        elif kind == "pageInfo":
            info = [
                draw(leaf(["hasNextPage", "hasPreviousPage", "startCursor", "endCursor"]))
                for _ in range(draw(st.integers(1, 3)))
            ]
            alias = draw(st.sampled_from(["", "info: "]))
            selection = draw(wrapped(info, "PageInfo", "Info"))
            parts.append(f"{alias}pageInfo{draw(CONDITION)} {selection}")
        else:
            alias = draw(st.sampled_from(["", "e: "]))
            parts.append(f"{alias}edges{draw(CONDITION)} {draw(edge_selection())}")
    return draw(wrapped(parts, "SnapshotConnection", "Connection"))


CONNECTION_FRAGMENTS = {
    "...Item": "fragment Item on Snapshot { id name sizeBytes createdAt __typename }",
    "...Edge": "fragment Edge on SnapshotEdge { cursor node { id status } }",
    "...Info": "fragment Info on PageInfo { endCursor hasNextPage }",
    "...Connection": "fragment Connection on SnapshotConnection { totalCount edges { cursor } }",
}


@st.composite
def connection_document(draw: st.DrawFn) -> str:
    roots = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["connection", "connection", "list", "typename"]))
        condition = draw(CONDITION)
        if kind == "typename":
            roots.append(f"__typename{condition}")
        elif kind == "list":
            roots.append(f"l: snapshots{condition} {draw(item_selection())}")
        else:
            alias = draw(st.sampled_from(["", "c1: ", "c2: "]))
            arguments = draw(CONNECTION_ARGUMENTS)
            roots.append(
                f"{alias}snapshotsConnection{arguments}{condition} {draw(connection_selection())}"
            )
    body = " ".join(roots)
    declared = {
        "s": "$s: Boolean = false",
        "i": "$i: Boolean = true",
        "first": "$first: Int = 2",
        "after": "$after: String",
        "before": "$before: String",
    }
    used = [text for name, text in declared.items() if re.search(rf"\${name}\b", body)]
    variables = f"({', '.join(used)})" if used else ""
    fragments = " ".join(text for spread, text in CONNECTION_FRAGMENTS.items() if spread in body)
    # A fragment's own spreads count too (Edge selects a node, not Item: no chain needed).
    return f"query Q{variables} {{ {body} }} {fragments}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    query=connection_document(),
    variables=st.fixed_dictionaries(
        {},
        optional={"s": st.booleans(), "i": st.booleans(), "first": st.integers(0, 4)},
    ),
    after=st.none() | st.integers(0, 40) | st.just("junk"),
    before=st.none() | st.integers(0, 40),
    items=ITEMS,
)
def test_generated_connection_documents_match_graphql_core(
    query: str,
    variables: dict[str, Any],
    after: int | str | None,
    before: int | None,
    items: list[dict[str, Any]],
) -> None:
    harness = Harness(items)
    try:
        harness.documents.validate(harness.documents.prepare(query))
    except GraphQLRequestInvalid:
        assume(False)  # e.g. one response key for two different fields
    cursors = cursors_of(harness)
    harness.executor.paths.clear()
    if isinstance(after, int) and cursors:
        variables["after"] = cursors[after % len(cursors)]
    elif after == "junk":
        variables["after"] = "junk"
    if before is not None and cursors:
        variables["before"] = cursors[before % len(cursors)]
    fast, general = run(harness.both(query, variables))
    assert fast == general
    if b"BAD_USER_INPUT" in fast:  # a cursor for another order, filter or type
        assert harness.executor.paths == {"graphql-core": 1}
        return
    assert harness.executor.paths == {"compiled": 1}  # the fast path ran, not a fallback
    again, _ = run(harness.both(query, variables))  # now from the response cache
    assert again == general
    assert harness.executor.paths == {"compiled": 1, "cached": 1}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=schema_queries(GRAPHQL_SCHEMA, fields=["snapshotsConnection"]), items=ITEMS)
def test_connection_documents_generated_from_the_sdl_match_graphql_core(
    query: str, items: list[dict[str, Any]]
) -> None:
    harness = Harness(items)
    try:
        harness.documents.validate(harness.documents.prepare(query))
    except GraphQLRequestInvalid:
        assume(False)
    fast, general = run(harness.both(query))
    assert fast == general
    assert b"INTERNAL_SERVER_ERROR" not in fast
    refused = b"BAD_USER_INPUT" in fast
    assert harness.executor.paths == ({"graphql-core": 1} if refused else {"compiled": 1})


def test_an_answer_nulled_by_a_refused_page_reports_alike_cold_or_warm() -> None:
    # The SYSTEM list is fetched cold by graphql-core's run and warm by the compiled path's
    # (which then declines): the reports must not depend on which fetch was still running.
    harness = Harness([item(n) for n in range(1, 12)] + BROKEN)
    cursors_of(harness)  # the whole list is warm, the SYSTEM one cold
    query = (
        "{ s: snapshotsConnection(type: SYSTEM, first: 1) { totalCount } "
        'c: snapshotsConnection(first: 2, after: "junk") { totalCount } }'
    )
    fast, general = run(harness.both(query))
    assert fast == general
    assert json.loads(fast)["data"] is None
    assert [error["path"] for error in json.loads(fast)["errors"]] == [["c"]]


def test_past_four_views_in_one_request_both_paths_refuse_the_fifth_alike() -> None:
    orders = ["NAME", "STATUS", "SIZE_BYTES", "CREATED_AT", "UPDATED_AT"]
    aliases = " ".join(
        f"v{n}: snapshotsConnection(orderBy: [{{field: {field}}}], first: 2) {{ totalCount }}"
        for n, field in enumerate(orders)
    )
    harness = Harness([item(n) for n in range(1, 30)])
    fast, general = run(harness.both(f"{{ {aliases} }}"))
    assert fast == general
    body = json.loads(fast)
    assert [error["path"] for error in body["errors"]] == [["v4"]]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    harness = Harness([item(n) for n in range(1, 30)])
    same_view_twice = aliases.replace("UPDATED_AT", "NAME")  # v4 reads v0's view again
    fast, general = run(harness.both(f"{{ {same_view_twice} }}"))
    assert fast == general and b"errors" not in fast
