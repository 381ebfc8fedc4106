"""APQ and safelist at the edge, over HTTP: only checked documents are registered, the store
stays within its byte bound, safelisted documents match after normalization, and a safelisted
subgraph can still be composed and queried by a federation router when allowed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import ALICE_KEY, QUERY, Gateway, Upstream, data_of
from snapgraph.cli import main


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


def persisted(document: str) -> dict[str, Any]:
    sha = hashlib.sha256(document.encode()).hexdigest()
    return {"persistedQuery": {"version": 1, "sha256Hash": sha}}


def by_hash(gateway: Gateway, document: str) -> dict[str, Any]:
    params = {"extensions": json.dumps(persisted(document))}
    result: dict[str, Any] = gateway.http.get("/graphql", params=params, headers=ALICE_KEY).json()
    return result


def code_of(result: dict[str, Any]) -> str:
    return str(result["errors"][0]["extensions"]["code"])


def test_apq_registers_only_documents_that_pass_every_check(gateway: Gateway) -> None:
    invalid = "{ snapshots { nope } }"
    too_deep = "{ __schema { types { " + "ofType { " * 30 + "name" + " }" * 30 + " } } }"
    broken = "{ snapshots { id }"
    for document in (invalid, too_deep, broken):
        refused = gateway.post(document, ALICE_KEY, extensions=persisted(document)).json()
        assert code_of(refused) != "PERSISTED_QUERY_NOT_FOUND"
        assert code_of(by_hash(gateway, document)) == "PERSISTED_QUERY_NOT_FOUND"
    gateway.post(QUERY, ALICE_KEY, extensions=persisted(QUERY))
    assert data_of(by_hash(gateway, QUERY))["snapshots"]


def test_apq_store_stays_within_its_byte_bound(upstream: Upstream, start_gateway: Any) -> None:
    gateway = start_gateway(upstream.url, apq_max_bytes=256 << 10)
    store = gateway.app.state.gateway.persisted_queries
    for n in range(60):
        # Registered only for a caller whose credential the upstream took.
        document = f"# {n} " + "x" * (20 << 10) + f"\nquery Q{n} {{ snapshots {{ id }} }}"
        result = gateway.post(document, ALICE_KEY, extensions=persisted(document)).json()
        assert data_of(result)["snapshots"]
    assert 0 < store.stored_bytes <= 256 << 10
    oversized = "# " + "x" * (40 << 10) + "\n{ __typename }"
    gateway.post(oversized, extensions=persisted(oversized))
    assert code_of(by_hash(gateway, oversized)) == "PERSISTED_QUERY_NOT_FOUND"


def _safelisted_gateway(
    tmp_path: Path, upstream: Upstream, start_gateway: Any, **settings: Any
) -> Gateway:
    document = tmp_path / "mine.graphql"
    document.write_text("query Mine {\n  snapshots {\n    id\n  }\n}\n")
    safelist = tmp_path / "safelist.json"
    assert main(["register", str(document), "--output", str(safelist)]) == 0
    gateway: Gateway = start_gateway(upstream.url, safelist_file=str(safelist), **settings)
    return gateway


def test_a_safelisted_document_matches_whatever_its_formatting(
    tmp_path: Path, upstream: Upstream, start_gateway: Any
) -> None:
    gateway = _safelisted_gateway(tmp_path, upstream, start_gateway)
    reformatted = "# my query\nquery Mine { snapshots { id, } }"
    assert data_of(gateway.query(reformatted, ALICE_KEY))["snapshots"]
    other = gateway.post("query Mine { snapshots { id name } }", ALICE_KEY).json()
    assert code_of(other) == "PERSISTED_QUERY_NOT_ALLOWED"


ROUTER_QUERIES = [
    "query SubgraphIntrospectQuery { _service { sdl } }",
    "query ($representations: [_Any!]!) { _entities(representations: $representations) "
    "{ ... on Snapshot { id name } } }",
]


def test_a_safelist_refuses_router_queries_unless_federation_is_allowed(
    tmp_path: Path, upstream: Upstream, start_gateway: Any
) -> None:
    strict = _safelisted_gateway(tmp_path, upstream, start_gateway)
    for query in ROUTER_QUERIES:
        assert code_of(strict.post(query, ALICE_KEY).json()) == "PERSISTED_QUERY_NOT_ALLOWED"

    federated = _safelisted_gateway(
        tmp_path, upstream, start_gateway, safelist_allow_federation=True
    )
    sdl = data_of(federated.query(ROUTER_QUERIES[0]))["_service"]["sdl"]
    assert "type Snapshot @key" in sdl
    variables = {"representations": [{"__typename": "Snapshot", "id": "snap-alice-dev"}]}
    entities = federated.query(ROUTER_QUERIES[1], ALICE_KEY, variables=variables)
    assert data_of(entities)["_entities"][0]["id"] == "snap-alice-dev"
    other = federated.post("{ snapshots { id name } }", ALICE_KEY).json()
    assert code_of(other) == "PERSISTED_QUERY_NOT_ALLOWED"
