"""What a request carries (variables, literals, credentials, the body) is bounded before it
costs anything, and no caller's fault reaches another caller (issue 18's rows).

Each test asserts what the hostile caller gets (the code, a bounded size) and what the others
keep getting; the hostile request's cost and a bystander's latency are printed (`pytest -s`),
never asserted: a timing passes by luck under load.
"""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from graphql import get_introspection_query
from test_hostile_requests import NO_CREDENTIALS, bystander, codes, hostile

from conftest import ALICE_KEY, BOB_KEY, FaultyUpstream, Gateway, Upstream

PAGE = """query ($order: [SnapshotOrder!], $filter: SnapshotFilter) {
  snapshotsConnection(orderBy: $order, filter: $filter, first: 5) {
    edges { cursor node { id } }
  }
}"""


def measured(gateway: Gateway, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """`hostile`, with the process's CPU over the request printed (an upper bound: the
    bystander's client and the gateway share this process)."""
    cpu = time.process_time()
    result = hostile(gateway, body, headers)
    print(f"process CPU during the hostile request: {(time.process_time() - cpu) * 1000:.1f} ms")
    return result


@pytest.mark.parametrize("headers", [NO_CREDENTIALS, ALICE_KEY], ids=["anonymous", "alice"])
def test_a_55000_key_order_is_refused_before_it_is_converted(
    gateway: Gateway, upstream: Upstream, headers: dict[str, str]
) -> None:
    order = [{"field": "NAME"}] * 55_000  # 0.94 MB of JSON
    result = measured(gateway, {"query": PAGE, "variables": {"order": order}}, headers)
    assert codes(result) == ({"BAD_USER_INPUT"} if headers else {"UNAUTHENTICATED"})
    if headers:
        assert "$order" in result["errors"][0]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "variables",
    [
        {"filter": {"status": ["ready"] * 85_000}},
        {"filter": {"nameContains": "x" * 100_000}},
        {"filter": {"status": [["nested"] * 90] * 90}},  # many small lists: the total counts
        {"unused": ["x"] * 100_000},  # not declared: dropped unread
    ],
    ids=["long-list", "long-string", "many-lists", "undeclared"],
)
def test_over_long_variables_are_refused_for_a_credentialed_caller(
    gateway: Gateway, upstream: Upstream, variables: dict[str, Any]
) -> None:
    result = measured(gateway, {"query": PAGE, "variables": variables}, ALICE_KEY)
    if "unused" in variables:
        assert "errors" not in result  # it never reached anything
    else:
        assert codes(result) == {"BAD_USER_INPUT"}
        assert "data" not in result  # refused as a request: nothing ran
        assert upstream.requests == []


def test_a_repeated_order_field_is_refused_and_cursors_stay_small(
    gateway: Gateway, upstream: Upstream
) -> None:
    twice = [{"field": "NAME"}, {"field": "NAME", "direction": "DESC"}]
    result = gateway.query(PAGE, ALICE_KEY, variables={"order": twice})
    assert codes(result) == {"BAD_USER_INPUT"}
    every_field = [
        {"field": name} for name in ("NAME", "STATUS", "SIZE_BYTES", "CREATED_AT", "UPDATED_AT")
    ]
    result = gateway.query(PAGE, ALICE_KEY, variables={"order": every_field})
    cursors = [edge["cursor"] for edge in result["data"]["snapshotsConnection"]["edges"]]
    assert cursors and max(map(len, cursors)) < 400, max(map(len, cursors))


def test_literals_in_the_document_are_bounded_too(gateway: Gateway, upstream: Upstream) -> None:
    long_id = "x" * 5_000
    result = gateway.query(f'{{ snapshot(id: "{long_id}") {{ id }} }}', ALICE_KEY)
    assert codes(result) == {"BAD_USER_INPUT"}
    statuses = ", ".join(['"ready"'] * 101)
    result = gateway.query(
        f"{{ snapshotsConnection(filter: {{status: [{statuses}]}}) {{ totalCount }} }}", ALICE_KEY
    )
    assert codes(result) == {"BAD_USER_INPUT"}
    assert upstream.requests == []


def raw_request(url: str, head: bytes, body: bytes = b"", *, close_early: bool = False) -> bytes:
    """Send bytes no well-behaved client library would (whitespace-padded or control-laden
    headers, a body cut short), and read the answer (b"" when we hung up first)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        if close_early:
            return b""
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def post_head(length: int, *headers: bytes) -> bytes:
    lines = [
        b"POST /graphql HTTP/1.1",
        b"Host: gateway",
        b"Content-Type: application/json",
        b"Connection: close",
        b"Content-Length: " + str(length).encode(),
        *headers,
    ]
    return b"\r\n".join(lines) + b"\r\n"


def body_of(answer: bytes) -> dict[str, Any]:
    _, _, body = answer.partition(b"\r\n\r\n")
    result: dict[str, Any] = json.loads(body)
    return result


QUERY = json.dumps({"query": "{ snapshots { id } }"}).encode()


def test_whitespace_around_a_credential_is_stripped_at_the_edge(
    gateway: Gateway, upstream: Upstream
) -> None:
    answer = raw_request(gateway.url, post_head(len(QUERY), b"X-API-Key: demo-alice-key "), QUERY)
    assert "errors" not in body_of(answer)  # the same key as without the space
    assert upstream.requests[-1].headers["x-api-key"] == "demo-alice-key"


@pytest.mark.parametrize("value", ["any\x01thing", "key\x7f", "a\x1b[2Kb", "\x00", "k" * 9000])
def test_a_credential_no_header_may_carry_never_reaches_the_breaker(
    start_in_process_gateway: Any, upstream: Upstream, value: str
) -> None:
    """Through ASGI directly: uvicorn's parser refuses these bytes itself (400), but the
    gateway must not depend on the server in front of it to do so."""
    gateway = start_in_process_gateway(upstream.url, upstream_breaker_failures=1, cache_ttl=0)
    for _ in range(5):
        result = gateway.query("{ snapshots { id } }", {"X-API-Key": value})
        assert codes(result) == {"UNAUTHENTICATED"}
    assert upstream.requests == []  # refused before any upstream call
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"
    assert gateway.query("{ snapshots { id } }", BOB_KEY)["data"]["snapshots"]


def test_the_http_server_refuses_control_characters_in_a_credential(
    gateway: Gateway, upstream: Upstream
) -> None:
    for _ in range(5):
        answer = raw_request(gateway.url, post_head(len(QUERY), b"X-API-Key: a\x01b"), QUERY)
        assert answer.startswith(b"HTTP/1.1 400 ")
    assert upstream.requests == []
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"


def test_one_users_broken_list_under_many_aliases_is_reported_once_and_bounded(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    faulty.respond(200, json.dumps([{"id": f"b{n}", "status": None} for n in range(10_000)]))
    gateway = start_gateway(faulty.url)
    aliases = " ".join(f"a{n}: snapshots {{ id }}" for n in range(20))
    with bystander(gateway.url):
        started = time.perf_counter()
        response = gateway.post(f"{{ {aliases} }}", ALICE_KEY)
        print(
            f"20 aliases over 10,000 broken items: {(time.perf_counter() - started) * 1000:.0f} ms"
        )
    result = response.json()
    print(f"answer: {len(response.content)} bytes, {len(result['errors'])} errors")
    # The first alias: 20 items one by one and a count of the rest; every other: one line.
    assert len(result["errors"]) == 21 + 19
    assert result["errors"][20]["extensions"]["count"] == 9_980
    assert {error["extensions"].get("sameAs") for error in result["errors"][21:]} == {"a0"}
    assert len(response.content) < 64 << 10


def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    gateway: Gateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    raw_request(gateway.url, post_head(10_000), b'{"query": "{ snap', close_early=True)

    def counted() -> str:
        metrics = gateway.http.get("/metrics").text
        return "\n".join(re.findall(r"snapgraph_graphql_requests_total\{.*", metrics))

    deadline = time.monotonic() + 30
    while 'status="499"' not in counted():
        assert time.monotonic() < deadline, counted()
        time.sleep(0.05)
    assert 'status="500"' not in counted()
    assert not [record for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")]


def test_anonymous_callers_cannot_take_the_operation_labels(
    gateway: Gateway, upstream: Upstream
) -> None:
    for n in range(60):
        assert gateway.query(f"query Anon{n} {{ __typename }}")["data"]
    gateway.query("query Mine { snapshots { id } }", ALICE_KEY)
    metrics = gateway.http.get("/metrics").text
    assert 'operation="Anon' not in metrics
    assert 'operation="Mine"' in metrics


def test_one_user_spelling_a_credential_many_ways_is_still_one_caller(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    """An upstream that answers 500 to one user's list: however that user spells the key
    (header, bearer token, scheme casing) and whichever list type, the breaker stays closed
    for everyone else."""
    faulty.respond_by_credential({"demo-alice-key": (500, "{}")}, default=(200, "[]"))
    gateway = start_gateway(faulty.url, cache_ttl=0, upstream_retries=0)
    spellings = [
        {"X-API-Key": "demo-alice-key"},
        {"Authorization": "Bearer demo-alice-key"},
        {"Authorization": "bearer demo-alice-key"},
        {"X-API-Key": "demo-alice-key", "Authorization": "BEARER demo-alice-key"},
        # A junk token beside the key, new each time (an upstream that reads the key first).
        *({"X-API-Key": "demo-alice-key", "Authorization": f"Bearer junk-{n}"} for n in range(3)),
    ]
    for headers in spellings:
        for list_type in ("", "(type: USER)", "(type: SYSTEM)"):
            gateway.post(f"{{ snapshots{list_type} {{ id }} }}", headers)
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"
    assert gateway.query("{ snapshots { id } }", BOB_KEY) == {"data": {"snapshots": []}}


def test_one_users_slow_list_does_not_open_the_breaker(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    faulty.respond(200, "[]", delay=1.5)
    gateway = start_gateway(
        faulty.url,
        cache_ttl=0,
        upstream_retries=0,
        upstream_deadline=0.5,
        upstream_breaker_failures=2,
    )
    for _ in range(4):
        result = gateway.query("{ snapshots { id } }", ALICE_KEY)
        assert codes(result) == {"UPSTREAM_UNAVAILABLE"}
    ready = gateway.http.get("/readyz").json()
    assert ready["upstreamCircuit"] == "closed" and ready["upstream"] != "down", ready


def test_a_document_is_bounded_by_its_length_and_an_anonymous_one_by_fewer_tokens(
    gateway: Gateway,
) -> None:
    comment = "#" + "x" * 40_000 + "\n{ __typename }"
    assert codes(gateway.query(comment, ALICE_KEY)) == {"MAX_DOCUMENT_SIZE_LIMIT"}
    wide = "{ " + "__typename " * 1_001 + "}"
    (error,) = gateway.query(wide)["errors"]
    assert error["extensions"] == {"code": "MAX_TOKENS_LIMIT", "limit": 1_000}
    assert codes(gateway.query(wide, ALICE_KEY)) != {"MAX_TOKENS_LIMIT"}  # 5,000 with one


@pytest.mark.parametrize(
    "query",
    [
        "{ " + " ".join(f"a{n}: __schema {{ queryType {{ name }} }}" for n in range(4)) + " }",
        "query { ...S ...S ...S ...S } fragment S on Query { __schema { queryType { name } } }",
        "{ __schema { types { "
        + " ".join(f"f{n}: fields {{ name }}" for n in range(49))
        + " } } }",
        "{ __schema { types { ...F } } } fragment F on __Type { a: name b: name }",
        "{ " + " ".join(f"s{n}: _service {{ sdl }}" for n in range(4)) + " }",
    ],
    ids=["aliases", "fragment-spreads", "nested-aliases", "aliases-in-fragment", "service"],
)
def test_introspection_is_asked_a_few_times_per_operation_at_most(
    gateway: Gateway, query: str
) -> None:
    """A tool asks for the schema once, without aliases inside it; fifty aliases of it, or
    of a list below it, multiply a large answer from a small document."""
    assert codes(gateway.query(query)) == {"MAX_INTROSPECTION_LIMIT"}
    once = gateway.query("{ __schema { queryType { name } } }")
    assert once == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
    full = gateway.query(get_introspection_query(descriptions=True, specified_by_url=True))
    assert "errors" not in full and full["data"]["__schema"]["types"]


def test_deeply_nested_literals_are_refused_before_graphql_core_prints_them(
    gateway: Gateway,
) -> None:
    nested = "[" * 60 + '"x"' + "]" * 60
    result = measured(gateway, {"query": f"{{ snapshot(id: {nested}) {{ id }} }}"}, ALICE_KEY)
    assert codes(result) == {"BAD_USER_INPUT"}
    assert len(json.dumps(result)) < 2_000  # not the value printed at every level


def test_a_made_up_key_registers_no_apq_document_and_takes_no_label(
    gateway: Gateway, upstream: Upstream
) -> None:
    fake = {"X-API-Key": "made-up"}
    for n in range(60):
        document = f"query Squat{n} {{ __typename }}"
        extensions = {"persistedQuery": {"version": 1, "sha256Hash": _sha256(document)}}
        assert gateway.query(document, fake, extensions=extensions)["data"]
    store = gateway.app.state.gateway.persisted_queries
    assert store.stored_bytes == 0
    metrics = gateway.http.get("/metrics").text
    assert 'operation="Squat' not in metrics


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_representations_are_counted_over_every_entities_field_of_a_request(
    gateway: Gateway, upstream: Upstream
) -> None:
    batch = [{"__typename": "Snapshot", "id": f"s{n}"} for n in range(2_000)]
    fields = " ".join(
        f"e{n}: _entities(representations: $r) {{ ... on Snapshot {{ id }} }}" for n in range(4)
    )
    result = measured(
        gateway,
        {"query": f"query ($r: [_Any!]!) {{ {fields} }}", "variables": {"r": batch}},
        ALICE_KEY,
    )
    assert codes(result) == {"BAD_USER_INPUT"}
    assert "6000 representations in this request" in result["errors"][0]["message"]


def test_an_answer_over_the_byte_limit_is_dropped_not_sent(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    """The result budget counts values; a user's own long names make long values."""
    moment = "2026-01-01T00:00:00Z"
    item = {"status": "ready", "snapshot_type": "disk", "created_at": moment, "updated_at": moment}
    items = [{**item, "id": f"s{n}", "name": "n" * 4_000} for n in range(1_000)]
    faulty.respond(200, json.dumps(items))
    gateway = start_gateway(faulty.url, max_response_bytes=1 << 20)
    response = gateway.post("{ a: snapshots { name } b: snapshots { name } }", ALICE_KEY)
    assert codes(response.json()) == {"MAX_RESPONSE_BYTES_LIMIT"}
    assert len(response.content) < 1_000
    small = gateway.query(
        "{ snapshotsConnection(first: 10) { edges { node { name } } } }", ALICE_KEY
    )
    assert len(small["data"]["snapshotsConnection"]["edges"]) == 10
