"""GraphQL over HTTP as browsers and frontend clients speak it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ALICE_KEY, QUERY, Gateway, Upstream, data_of, run_node
from snapgraph.cli import main


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket (the audit,
    which runs in Node, gets a served one)."""
    return start_in_process_gateway


def test_the_graphql_over_http_audit_passes_every_must_and_should(
    upstream: Upstream, start_served_gateway: Callable[..., Gateway]
) -> None:
    gateway = start_served_gateway(upstream.url)
    results = run_node("http-audit.mjs", gateway.url + "/graphql")
    assert len(results) > 50
    failing = [r for r in results if r["status"] != "ok" and not r["name"].startswith("MAY")]
    assert failing == []


def test_graphql_response_json_uses_status_codes(gateway: Gateway) -> None:
    accept = {"Accept": "application/graphql-response+json", **ALICE_KEY}
    invalid = gateway.http.post("/graphql", json={"query": "{ nope }"}, headers=accept)
    assert invalid.status_code == 400
    assert invalid.headers["content-type"] == "application/graphql-response+json; charset=utf-8"
    assert "data" not in invalid.json()
    ok = gateway.http.post("/graphql", json={"query": QUERY}, headers=accept)
    assert ok.status_code == 200 and "snap-alice-dev" in ok.text


def test_legacy_json_answers_200_for_a_well_formed_request(gateway: Gateway) -> None:
    invalid = gateway.http.post(
        "/graphql", json={"query": "{ nope }"}, headers={"Accept": "application/json"}
    )
    assert invalid.status_code == 200 and invalid.json()["errors"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        ('{"query": "{ __typename }"}', "text/plain", 415),
        ('{"query": "{ __typename }"}', "application/json; charset=latin-1", 415),
        ("{not json", "application/json", 400),
        ('["query"]', "application/json", 400),
        ('{"query": 42}', "application/json", 400),
        ('{"query": "{ __typename }", "variables": "x"}', "application/json", 400),
        ("{}", "application/json", 400),
    ],
)
def test_malformed_requests_get_a_clear_4xx(
    gateway: Gateway, content: str, content_type: str, status: int
) -> None:
    response = gateway.http.post(
        "/graphql", content=content, headers={"Content-Type": content_type}
    )
    assert response.status_code == status
    (error,) = response.json()["errors"]
    assert error["message"] and "Traceback" not in response.text


def test_get_runs_queries_but_never_mutations(gateway: Gateway) -> None:
    ok = gateway.http.get("/graphql", params={"query": QUERY}, headers=ALICE_KEY)
    assert ok.status_code == 200 and "snap-alice-dev" in ok.text
    mutation = gateway.http.get("/graphql", params={"query": "mutation { x }"})
    assert mutation.status_code == 405
    assert "POST" in mutation.headers["allow"]


def test_unacceptable_accept_header_gets_406(gateway: Gateway) -> None:
    response = gateway.http.post("/graphql", json={"query": QUERY}, headers={"Accept": "text/csv"})
    assert response.status_code == 406


def test_answers_are_private_to_the_caller(gateway: Gateway) -> None:
    response = gateway.post(QUERY, ALICE_KEY)
    assert response.headers["cache-control"] == "private, no-store"
    vary = {v.strip().lower() for v in response.headers["vary"].split(",")}
    assert {"authorization", "x-api-key"} <= vary


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def apq_extensions(document: str) -> str:
    return json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}})


def test_automatic_persisted_query_round_trip(gateway: Gateway, upstream: Upstream) -> None:
    short = {"extensions": apq_extensions(QUERY)}
    miss = gateway.http.get("/graphql", params=short, headers=ALICE_KEY)
    assert miss.status_code == 200
    assert miss.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"

    register = gateway.post(QUERY, ALICE_KEY, extensions=json.loads(apq_extensions(QUERY)))
    assert "snap-alice-dev" in register.text

    hit = gateway.http.get("/graphql", params=short, headers=ALICE_KEY)
    assert hit.status_code == 200
    assert {s["id"] for s in data_of(hit.json())["snapshots"]} >= {"snap-alice-dev"}


def test_a_persisted_query_whose_hash_does_not_match_is_refused(gateway: Gateway) -> None:
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": sha256("{ something else }")}}
    response = gateway.post(QUERY, ALICE_KEY, extensions=wrong)
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "provided sha does not match query"
    assert (
        gateway.http.get("/graphql", params={"extensions": json.dumps(wrong)}).json()["errors"][0][
            "extensions"
        ]["code"]
        == "PERSISTED_QUERY_NOT_FOUND"
    )


def test_safelist_mode_runs_only_registered_documents(
    tmp_path: Path, upstream: Upstream, start_gateway
) -> None:
    document = tmp_path / "my-snapshots.graphql"
    document.write_text(QUERY)
    safelist = tmp_path / "safelist.json"
    assert main(["register", str(document), "--output", str(safelist)]) == 0
    gateway = start_gateway(upstream.url, safelist_file=str(safelist))

    by_hash = gateway.http.get(
        "/graphql", params={"extensions": apq_extensions(QUERY)}, headers=ALICE_KEY
    )
    assert "snap-alice-dev" in by_hash.text
    assert "snap-alice-dev" in gateway.post(QUERY, ALICE_KEY).text
    other = gateway.post("{ snapshots { id name } }", ALICE_KEY)
    assert other.status_code == 400
    assert other.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"
    assert len(upstream.requests) == 1


PREFLIGHT = {
    "Origin": "https://app.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, x-api-key, content-type",
}


def test_cors_preflight_allows_a_configured_origin_and_credential_headers(
    upstream: Upstream, start_gateway
) -> None:
    gateway = start_gateway(upstream.url, cors_origins=("https://app.example",))
    response = gateway.http.options("/graphql", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    assert response.headers["access-control-allow-credentials"] == "true"
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "x-api-key", "content-type"} <= allowed

    actual = gateway.http.post(
        "/graphql", json={"query": QUERY}, headers={"Origin": "https://app.example", **ALICE_KEY}
    )
    assert actual.headers["access-control-allow-origin"] == "https://app.example"
    assert "origin" in actual.headers["vary"].lower()


def test_cors_never_reflects_an_unlisted_origin(upstream: Upstream, start_gateway) -> None:
    gateway = start_gateway(upstream.url, cors_origins=("https://app.example",))
    evil = {**PREFLIGHT, "Origin": "https://evil.example"}
    response = gateway.http.options("/graphql", headers=evil)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    actual = gateway.http.post(
        "/graphql", json={"query": QUERY}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in actual.headers


def test_no_cors_origins_by_default(gateway: Gateway) -> None:
    response = gateway.http.options("/graphql", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in response.headers


def test_an_oversized_body_is_refused(gateway: Gateway) -> None:
    padding = "#" + "x" * (1 << 20) + "\n"
    response = gateway.http.post("/graphql", json={"query": padding + QUERY}, headers=ALICE_KEY)
    assert response.status_code == 400
    assert "larger than" in response.json()["errors"][0]["message"]


def test_a_body_without_a_credential_is_refused_past_64_kib(
    gateway: Gateway, upstream: Upstream
) -> None:
    """Without a credential only schema fields can run: no such request needs more."""
    padding = "#" + "x" * (64 << 10) + "\n"
    response = gateway.http.post("/graphql", json={"query": padding + "{ __typename }"})
    assert response.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "65536 bytes" in response.json()["errors"][0]["message"]
    small = gateway.http.post("/graphql", json={"query": "#" + "x" * 30_000 + "\n{ __typename }"})
    assert small.json() == {"data": {"__typename": "Query"}}
    assert upstream.requests == []


def test_a_query_with_too_many_aliases_is_refused(gateway: Gateway, upstream: Upstream) -> None:
    wide = "{ " + " ".join(f"a{n}: snapshots {{ id }}" for n in range(200)) + " }"
    result = gateway.post(wide, ALICE_KEY).json()
    assert "aliases" in result["errors"][0]["message"].lower()
    assert upstream.requests == []


TWO_OPERATIONS = (
    "query Mine { snapshots(type: USER) { id } } query Public { snapshots(type: SYSTEM) { id } }"
)


def test_operation_name_picks_one_of_several_operations(gateway: Gateway) -> None:
    result = gateway.query(TWO_OPERATIONS, ALICE_KEY, operationName="Public")
    assert {s["id"] for s in data_of(result)["snapshots"]} == {
        "sys-ubuntu-24.04",
        "sys-python-3.12",
    }


@pytest.mark.parametrize(
    ("accept", "status"), [("application/json", 200), ("application/graphql-response+json", 400)]
)
def test_an_unknown_operation_name_is_a_request_error(
    gateway: Gateway, accept: str, status: int
) -> None:
    body = {"query": TWO_OPERATIONS, "operationName": "Nope"}
    response = gateway.http.post("/graphql", json=body, headers={"Accept": accept, **ALICE_KEY})
    assert response.status_code == status
    assert "Nope" in response.json()["errors"][0]["message"]


def test_a_safelist_whose_hashes_do_not_match_is_refused_at_start(tmp_path: Path) -> None:
    from snapgraph import Settings, create_app
    from snapgraph.errors import ConfigError

    safelist = tmp_path / "safelist.json"
    safelist.write_text(json.dumps({sha256("{ a }"): "{ b }"}))
    settings = Settings.from_environ(
        {}, upstream_url="http://127.0.0.1:9", safelist_file=str(safelist)
    )
    with pytest.raises(ConfigError) as caught:
        create_app(settings)
    assert caught.value.setting == "SNAPGRAPH_SAFELIST_FILE"
