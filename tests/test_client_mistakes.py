"""Every client mistake gets a code the client can act on, the right HTTP status under both
media types, and no traceback in the logs; a genuine bug is still masked and logged once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from conftest import ALICE_KEY, Gateway, Upstream

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
MEDIA_TYPES = pytest.mark.parametrize(("accept", "status"), [(JSON, 200), (GRAPHQL_RESPONSE, 400)])


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


BY_TYPE = "query ($t: SnapshotType) { snapshots(type: $t) { id } }"
BY_ID = "query ($id: ID!) { snapshot(id: $id) { id } }"

REQUEST_MISTAKES = [
    ("bad enum variable", BY_TYPE, {"variables": {"t": "BOGUS"}}, "BAD_USER_INPUT", "$t"),
    ("missing variable", BY_ID, {}, "BAD_USER_INPUT", "$id"),
    ("null variable", BY_ID, {"variables": {"id": None}}, "BAD_USER_INPUT", "$id"),
    (
        "null for a defaulted variable in a non-null place, at the root",
        "query ($i: Boolean = true) { snapshots @include(if: $i) { id } }",
        {"variables": {"i": None}},
        "BAD_USER_INPUT",
        "",
    ),
    ("syntax error", "{ snapshots { id }", {}, "GRAPHQL_PARSE_FAILED", "Syntax Error"),
    ("unknown field", "{ snapshots { nope } }", {}, "GRAPHQL_VALIDATION_FAILED", "nope"),
    (
        "unknown operation",
        "query A { snapshots { id } }",
        {"operationName": "B"},
        "OPERATION_RESOLUTION_FAILURE",
        "no operation named 'B'",
    ),
    (
        "ambiguous operation",
        "query A { __typename } query B { __typename }",
        {},
        "OPERATION_RESOLUTION_FAILURE",
        "operationName",
    ),
    (
        "too many aliases",
        "{ " + " ".join(f"a{n}: __typename" for n in range(51)) + " }",
        {},
        "MAX_ALIASES_LIMIT",
        "50",
    ),
    # Short names: 5,001 tokens within the document's 32,768 characters.
    ("too many tokens", "{ " + "a " * 5001 + "}", {}, "MAX_TOKENS_LIMIT", "5000"),
    (
        "too deep",
        "{ __schema { types { " + "ofType { " * 20 + "name" + " }" * 20 + " } } }",
        {},
        "MAX_DEPTH_LIMIT",
        "20",
    ),
]


def _post(gateway: Gateway, query: str, accept: str, **body: Any) -> Any:
    headers = {"Accept": accept, **ALICE_KEY}
    return gateway.http.post("/graphql", json={"query": query, **body}, headers=headers)


@MEDIA_TYPES
@pytest.mark.parametrize(
    ("query", "body", "code", "hint"),
    [case[1:] for case in REQUEST_MISTAKES],
    ids=[case[0] for case in REQUEST_MISTAKES],
)
def test_a_request_mistake_is_named_with_its_code_and_status(
    gateway: Gateway,
    upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
    accept: str,
    status: int,
    query: str,
    body: dict[str, Any],
    code: str,
    hint: str,
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = _post(gateway, query, accept, **body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith(accept)
    result = response.json()
    assert "data" not in result  # nothing ran
    assert result["errors"][0]["extensions"]["code"] == code
    assert hint in result["errors"][0]["message"]
    assert upstream.requests == []
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("query ($i: Boolean = true) { snapshots { id @include(if: $i) } }", {"i": None}),
        ('query ($id: ID = "x") { snapshot(id: $id) { id } }', {"id": None}),
    ],
)
def test_a_null_for_a_defaulted_variable_in_a_field_is_bad_user_input(
    gateway: Gateway,
    caplog: pytest.LogCaptureFixture,
    query: str,
    variables: dict[str, Any],
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = gateway.http.post(
            "/graphql", json={"query": query, "variables": variables}, headers=ALICE_KEY
        )
    assert response.status_code in (200, 400)
    codes = {error["extensions"]["code"] for error in response.json()["errors"]}
    assert codes == {"BAD_USER_INPUT"}
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@MEDIA_TYPES
def test_a_representation_without_typename_is_bad_user_input_at_its_position(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, accept: str, status: int
) -> None:
    query = "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Snapshot { id } } }"
    representations = [{"id": "snap-alice-dev"}, {"__typename": "Snapshot", "id": "snap-alice-dev"}]
    with caplog.at_level(logging.DEBUG):
        response = _post(gateway, query, accept, variables={"r": representations})
    assert response.status_code == 200  # a field error: the rest of the answer is served
    result = response.json()
    assert result["data"] == {"_entities": [None, {"id": "snap-alice-dev"}]}
    (error,) = result["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["path"] == ["_entities", 0]
    assert "__typename" in error["message"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_a_bug_is_masked_and_logged_once_with_the_request_id(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapgraph.graph.types import Snapshot

    def broken(cls: type, row: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(Snapshot, "from_row", classmethod(broken))
    # Introspection beside the list: graphql-core runs it (the path that builds Snapshots).
    query = "{ snapshots { id } __schema { queryType { name } } }"
    with caplog.at_level(logging.DEBUG):
        response = gateway.http.post(
            "/graphql", json={"query": query}, headers={"X-Request-ID": "bug-1", **ALICE_KEY}
        )
    result = response.json()
    assert result["errors"] == [
        {
            "message": "Unexpected error.",
            "locations": [{"line": 1, "column": 3}],
            "path": ["snapshots"],
            "extensions": {"code": "INTERNAL_SERVER_ERROR"},
        }
    ]
    assert "a bug of ours" not in response.text
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "bug-1" in logged[0].getMessage() and logged[0].exc_info


def test_a_bug_outside_any_field_is_a_500_in_graphql_shape_logged_once(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snapgraph.execution.plan import ItemShape

    def broken(self: object, row: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(ItemShape, "build", broken)
    with caplog.at_level(logging.DEBUG):
        response = gateway.http.post(
            "/graphql",
            json={"query": "{ snapshots { id } }"},
            headers={"X-Request-ID": "bug-2", **ALICE_KEY},
        )
    assert response.status_code == 500
    assert response.json() == {
        "errors": [
            {"message": "Unexpected error.", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
        ]
    }
    assert response.headers["x-request-id"] == "bug-2"
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and "bug-2" in logged[0].getMessage() and logged[0].exc_info


def test_introspection_can_be_turned_off(start_gateway: Any, upstream: Upstream) -> None:
    gateway = start_gateway(upstream.url, introspection=False)
    for query in ("{ __schema { queryType { name } } }", '{ __type(name: "Snapshot") { name } }'):
        result = gateway.post(query, ALICE_KEY).json()
        assert result["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
    assert gateway.query("{ __typename }")["data"] == {"__typename": "Query"}
    # Suggestions would describe the schema too.
    result = gateway.post("{ snapshot { idd } }", ALICE_KEY).json()
    assert "Did you mean" not in str(result)


def test_every_response_carries_a_request_id(gateway: Gateway) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/nowhere"):
        assert gateway.http.get(path).headers["x-request-id"], path
    page = gateway.http.get("/graphql", headers={"Accept": "text/html"})
    assert page.headers["x-request-id"]
    echoed = gateway.http.get("/healthz", headers={"X-Request-ID": "abc-1"})
    assert echoed.headers["x-request-id"] == "abc-1"
    for unsafe in ("bad id with spaces", "x" * 65, "<script>"):
        refused = gateway.http.get("/healthz", headers={"X-Request-ID": unsafe})
        assert refused.headers["x-request-id"] not in (unsafe, "")


def test_a_document_too_costly_to_validate_is_refused_with_its_code(
    gateway: Gateway, upstream: Upstream
) -> None:
    # 400 siblings sharing a response name: graphql-core compares them pairwise.
    siblings = "{ " + " ".join("snapshots { id name status }" for _ in range(400)) + " }"
    result = gateway.post(siblings, ALICE_KEY).json()
    assert result["errors"][0]["extensions"]["code"] == "MAX_VALIDATION_WORK_LIMIT"
    assert upstream.requests == []


def test_a_realistic_document_with_repeated_fields_passes_validation(gateway: Gateway) -> None:
    fragments = " ".join(f"fragment F{n} on Snapshot {{ id name status }}" for n in range(12))
    spreads = " ".join(f"...F{n}" for n in range(12))
    result = gateway.query(f"{{ snapshots {{ id {spreads} }} }} {fragments}", ALICE_KEY)
    assert "errors" not in result and result["data"]["snapshots"]


# FOO and TRACE: methods no route lists, which Starlette's router used to refuse itself,
# with an `Allow` naming every method the route was given.
@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "FOO", "TRACE"])
def test_other_methods_get_405_with_a_code(gateway: Gateway, method: str) -> None:
    response = gateway.http.request(method, "/graphql")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    if method != "HEAD":
        assert response.headers["content-type"] == "application/json; charset=utf-8"
        assert response.json() == {
            "errors": [
                {
                    "message": "Send GraphQL requests with POST (or queries with GET).",
                    "extensions": {"code": "METHOD_NOT_ALLOWED"},
                }
            ]
        }


def test_unknown_paths_get_404_with_a_code(gateway: Gateway) -> None:
    for path in ("/nowhere", "/graphql/"):
        response = gateway.http.post(path, json={"query": "{ __typename }"})
        assert response.status_code == 404
        assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_a_huge_operation_name_is_not_echoed_whole(gateway: Gateway) -> None:
    name = "B" * 100_000  # with a credential: an anonymous body may not be this large
    result = gateway.post("query A { __typename }", ALICE_KEY, operationName=name).json()
    assert result["errors"][0]["extensions"]["code"] == "OPERATION_RESOLUTION_FAILURE"
    assert len(result["errors"][0]["message"]) < 200
