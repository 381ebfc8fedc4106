"""What a caller sees of their snapshots, against the reference upstream over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import ALICE_BEARER, ALICE_KEY, BOB_KEY, Gateway, Upstream, data_of


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


ALL_FIELDS = """
  id name status sourceVmId snapshotType type ociImage vcpuCount memoryMb
  sizeBytes isPublic lastError createdAt updatedAt
"""


def snapshots_by_id(gateway: Gateway, headers: dict[str, str], args: str = "") -> dict:
    data = data_of(gateway.query(f"{{ snapshots{args} {{ {ALL_FIELDS} }} }}", headers))
    return {item["id"]: item for item in data["snapshots"]}


def test_every_field_is_mapped_in_camel_case(gateway: Gateway) -> None:
    dev = snapshots_by_id(gateway, ALICE_KEY)["snap-alice-dev"]
    assert dev == {
        "id": "snap-alice-dev",
        "name": "dev box before upgrade",
        "status": "ready",
        "sourceVmId": "vm-alice-1",
        "snapshotType": "full",
        "type": "user",
        "ociImage": None,
        "vcpuCount": 4,
        "memoryMb": 8192,
        "sizeBytes": 5_368_709_123,
        "isPublic": False,
        "lastError": None,
        "createdAt": "2026-11-20T08:30:00+00:00",
        "updatedAt": "2026-11-20T08:31:12.250000+00:00",
    }


def test_sizes_above_32_bits_are_exact_in_the_json(gateway: Gateway) -> None:
    response = gateway.post("{ snapshots { id sizeBytes } }", ALICE_KEY)
    assert b'"sizeBytes":5368709123' in response.content
    assert b'"sizeBytes":12884902233' in response.content


def test_omitted_fields_take_the_contract_defaults(gateway: Gateway) -> None:
    legacy = snapshots_by_id(gateway, ALICE_KEY)["snap-alice-legacy"]
    assert legacy["type"] == "user"
    assert legacy["sizeBytes"] == 0
    assert legacy["isPublic"] is False
    assert legacy["name"] is None and legacy["vcpuCount"] is None


def test_a_failed_snapshot_carries_its_last_error(gateway: Gateway) -> None:
    failed = snapshots_by_id(gateway, ALICE_KEY)["snap-alice-failed"]
    assert failed["status"] == "failed"
    assert failed["lastError"] == "disk quota exceeded while writing memory image"
    assert failed["createdAt"] == "2026-11-21T10:00:00+01:00"


def test_no_type_lists_own_and_public_system_snapshots(
    gateway: Gateway, upstream: Upstream
) -> None:
    ids = set(snapshots_by_id(gateway, ALICE_KEY))
    assert ids == {
        "snap-alice-dev",
        "snap-alice-failed",
        "snap-alice-legacy",
        "sys-ubuntu-24.04",
        "sys-python-3.12",
    }
    assert upstream.requests[-1].query == {}


@pytest.mark.parametrize(
    ("argument", "sent", "expected"),
    [
        ("USER", "user", {"snap-alice-dev", "snap-alice-failed", "snap-alice-legacy"}),
        ("SYSTEM", "system", {"sys-ubuntu-24.04", "sys-python-3.12"}),
    ],
)
def test_type_argument_is_sent_upstream(
    gateway: Gateway, upstream: Upstream, argument: str, sent: str, expected: set[str]
) -> None:
    assert set(snapshots_by_id(gateway, ALICE_KEY, f"(type: {argument})")) == expected
    assert upstream.requests[-1].query == {"type": sent}


def test_type_argument_rejects_unknown_values(gateway: Gateway, upstream: Upstream) -> None:
    result = gateway.post("{ snapshots(type: BOGUS) { id } }", ALICE_KEY).json()
    assert "BOGUS" in result["errors"][0]["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("headers", [ALICE_KEY, ALICE_BEARER, {**ALICE_KEY, **ALICE_BEARER}])
def test_each_credential_kind_is_forwarded_as_sent(
    gateway: Gateway, upstream: Upstream, headers: dict[str, str]
) -> None:
    assert "snap-alice-dev" in snapshots_by_id(gateway, headers)
    received = upstream.requests[-1].headers
    assert received.get("x-api-key") == headers.get("X-API-Key")
    assert received.get("authorization") == headers.get("Authorization")


def test_only_credentials_reach_the_upstream(gateway: Gateway, upstream: Upstream) -> None:
    headers = {
        **ALICE_KEY,
        "Cookie": "session=secret",
        "X-Forwarded-For": "10.0.0.1",
        "X-Request-ID": "trace-123",
    }
    gateway.query("{ snapshots { id } }", headers)
    received = upstream.requests[-1].headers
    assert "cookie" not in received and "x-forwarded-for" not in received
    assert received["user-agent"].startswith("snapgraph/")
    assert received["x-request-id"] == "trace-123"


def test_users_see_only_their_own_snapshots(gateway: Gateway) -> None:
    bob = set(snapshots_by_id(gateway, BOB_KEY))
    assert bob == {"snap-bob-db", "sys-ubuntu-24.04", "sys-python-3.12"}


def test_snapshot_by_id_returns_one_the_caller_can_see(gateway: Gateway) -> None:
    data = data_of(gateway.query('{ snapshot(id: "snap-alice-dev") { id sizeBytes } }', ALICE_KEY))
    assert data["snapshot"] == {"id": "snap-alice-dev", "sizeBytes": 5_368_709_123}


@pytest.mark.parametrize("snapshot_id", ["snap-bob-db", "sys-internal-builder", "nope"])
def test_snapshot_by_id_is_null_when_the_caller_cannot_see_it(
    gateway: Gateway, snapshot_id: str
) -> None:
    data = data_of(gateway.query(f'{{ snapshot(id: "{snapshot_id}") {{ id }} }}', ALICE_KEY))
    assert data["snapshot"] is None


def test_one_request_asks_upstream_once_per_type(gateway: Gateway, upstream: Upstream) -> None:
    gateway.query(
        '{ a: snapshots { id } b: snapshots { name } snapshot(id: "snap-alice-dev") { id } '
        "u: snapshots(type: USER) { id } }",
        ALICE_KEY,
    )
    assert sorted(str(r.query) for r in upstream.requests) == ["{'type': 'user'}", "{}"]


def test_missing_credentials_are_refused_without_asking_upstream(
    gateway: Gateway, upstream: Upstream
) -> None:
    result = gateway.query("{ snapshots { id } }")
    # Refused as a request, before execution: no data at all (GraphQL-over-HTTP).
    assert "data" not in result
    assert result["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert upstream.requests == []


def test_missing_credentials_are_401_for_graphql_response_clients(gateway: Gateway) -> None:
    response = gateway.http.post(
        "/graphql",
        json={"query": "{ snapshots { id } }"},
        headers={"Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


@pytest.mark.parametrize(
    "query",
    [
        "{ __typename }",
        "{ _service { sdl } }",
        "query ($in: Boolean!) { __typename snapshots @include(if: $in) { id } }",
        "{ __typename ... @skip(if: true) { snapshots { id } } }",
    ],
)
def test_fields_that_need_no_credential_still_answer_without_one(
    gateway: Gateway, upstream: Upstream, query: str
) -> None:
    result = gateway.query(query, variables={"in": False})
    assert "errors" not in result and result["data"]
    assert upstream.requests == []


@pytest.mark.parametrize(
    "query",
    [
        '{ snapshot(id: "x") { id } }',
        "{ __typename ... on Query { snapshotsConnection { totalCount } } }",
        "query { ...F } fragment F on Query { snapshots { id } }",
        "query ($in: Boolean!) { snapshots @include(if: $in) { id } }",  # "yes": asks
    ],
)
def test_any_field_that_reads_snapshots_needs_a_credential(
    gateway: Gateway, upstream: Upstream, query: str
) -> None:
    result = gateway.query(query, variables={"in": "yes"})
    assert [error["extensions"]["code"] for error in result["errors"]] == ["UNAUTHENTICATED"]
    assert upstream.requests == []


def test_wrong_credentials_are_unauthenticated_by_the_upstream(
    gateway: Gateway, upstream: Upstream
) -> None:
    result = gateway.query("{ snapshots { id } }", {"Authorization": "Bearer stolen-or-typo"})
    assert result["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "stolen-or-typo" not in str(result)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("header", "value"), [("X-API-Key", b"cl\xe9"), ("Authorization", b"Bearer cl\xe9")]
)
def test_a_non_ascii_credential_is_forwarded_and_refused_by_the_upstream(
    gateway: Gateway, upstream: Upstream, header: str, value: bytes
) -> None:
    response = gateway.http.post(
        "/graphql", json={"query": "{ snapshots { id } }"}, headers={header: value}
    )
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    # The very bytes the caller sent (the upstream's server reads them as latin-1).
    assert upstream.requests[-1].headers[header.lower()] == value.decode("latin-1")
