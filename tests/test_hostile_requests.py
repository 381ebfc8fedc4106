"""Hostile requests are answered fast with a clear error, credentials or not, while another
client's `{ __typename }` keeps being served. Its latency is printed (`pytest -s`), never
asserted: a timing window passes by luck under load."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from conftest import ALICE_KEY, FaultyUpstream, Gateway, Upstream, wait_for

NO_CREDENTIALS: dict[str, str] = {}


@contextmanager
def bystander(url: str) -> Iterator[list[float]]:
    """Another client sending `{ __typename }` in a loop; yields its latencies (ms)."""
    latencies: list[float] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.post("/graphql", json={"query": "{ __typename }"})
                latencies.append((time.perf_counter() - started) * 1000)
                time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        thread.join(timeout=60)
        if latencies:
            print(
                f"bystander: n={len(latencies)} p50={statistics.median(latencies):.1f} ms "
                f"max={max(latencies):.1f} ms"
            )


def hostile(gateway: Gateway, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    with bystander(gateway.url) as latencies:
        wait_for(lambda: latencies, "the bystander's first answer")  # it runs from here on
        started = time.perf_counter()
        response = gateway.http.post("/graphql", json=body, headers=headers)
        print(f"hostile request answered in {(time.perf_counter() - started) * 1000:.1f} ms")
    result: dict[str, Any] = response.json()
    return result


def fragment_bomb(levels: int) -> str:
    fragments = [f"fragment F{n} on Snapshot {{ ...F{n + 1} ...F{n + 1} }}" for n in range(levels)]
    fragments.append(f"fragment F{levels} on Snapshot {{ id }}")
    return "{ snapshots { ...F0 } } " + " ".join(fragments)


def codes(result: dict[str, Any]) -> set[str]:
    return {error["extensions"]["code"] for error in result["errors"]}


@pytest.mark.parametrize("headers", [NO_CREDENTIALS, ALICE_KEY], ids=["anonymous", "alice"])
@pytest.mark.parametrize("levels", [22, 40])
def test_a_fragment_bomb_is_refused_before_any_work(
    gateway: Gateway, upstream: Upstream, levels: int, headers: dict[str, str]
) -> None:
    result = hostile(gateway, {"query": fragment_bomb(levels)}, headers)
    assert codes(result) == {"MAX_SELECTIONS_LIMIT"}
    assert upstream.requests == []


def test_a_deep_introspection_chain_is_refused(gateway: Gateway) -> None:
    chain = "{ __schema { types { " + "ofType { " * 63 + "name" + " }" * 63 + " } } }"
    result = hostile(gateway, {"query": chain}, NO_CREDENTIALS)
    assert codes(result) == {"MAX_DEPTH_LIMIT"}


ENTITIES = "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Snapshot { id } } }"


@pytest.mark.parametrize("headers", [NO_CREDENTIALS, ALICE_KEY], ids=["anonymous", "alice"])
def test_a_flood_of_representations_is_refused(
    gateway: Gateway, upstream: Upstream, headers: dict[str, str]
) -> None:
    flood = [{"__typename": "Snapshot", "id": f"s{n}"} for n in range(20_000)]
    result = hostile(gateway, {"query": ENTITIES, "variables": {"r": flood}}, headers)
    if headers:
        assert codes(result) == {"BAD_USER_INPUT"}
        assert "5000" in result["errors"][0]["message"]
    else:  # refused for its missing credential before its variables are read
        assert codes(result) == {"UNAUTHENTICATED"}
    assert upstream.requests == []


def test_the_most_representations_allowed_cost_one_upstream_call(
    gateway: Gateway, upstream: Upstream
) -> None:
    batch = [{"__typename": "Snapshot", "id": "snap-alice-dev"}] * 5_000
    result = hostile(gateway, {"query": ENTITIES, "variables": {"r": batch}}, ALICE_KEY)
    assert "errors" not in result
    assert result["data"]["_entities"] == [{"id": "snap-alice-dev"}] * 5_000
    assert len(upstream.requests) == 1


def big_list(size: int) -> bytes:
    return json.dumps(
        [
            {
                "id": f"s{n}",
                "status": "ready",
                "snapshot_type": "full",
                "created_at": "2026-01-01T00:00:00Z",
                "updated_at": "2026-01-01T00:00:00Z",
            }
            for n in range(size)
        ]
    ).encode()


def test_aliases_over_a_huge_list_are_refused_by_the_result_budget(
    faulty: FaultyUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    faulty.respond(200, big_list(10_000))
    gateway = start_gateway(faulty.url)
    wide = "{ " + " ".join(f"a{n}: snapshots {{ id name status }}" for n in range(40)) + " }"
    result = hostile(gateway, {"query": wide}, ALICE_KEY)
    (error,) = result["errors"]
    # The limit is told (the README's +`limit`), and what to do about it.
    assert error["extensions"] == {"code": "MAX_RESULT_VALUES_LIMIT", "limit": 300_000}
    assert error["message"].startswith("The answer would hold more than 300000 values")
    assert "data" not in result  # refused before any of it was built
    assert len(faulty.received) == 1


def test_a_list_within_the_budget_is_served_whole(
    faulty: FaultyUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    faulty.respond(200, big_list(10_000))
    gateway = start_gateway(faulty.url)
    result = gateway.query("{ snapshots { id status } }", ALICE_KEY)
    assert len(result["data"]["snapshots"]) == 10_000


def test_unique_documents_do_not_grow_the_document_cache(gateway: Gateway) -> None:
    documents = gateway.app.state.gateway.documents
    for n in range(100):
        invalid = f"#{n}\n{{ " + " ".join(f"f{k}" for k in range(1000)) + " }"
        assert gateway.post(invalid).json()["errors"]
    assert documents.cached_bytes == 0  # what fails validation is never kept
    for n in range(600):
        valid = f"#{n}" + "x" * 4000 + "\n{ __typename }"
        assert gateway.post(valid).json() == {"data": {"__typename": "Query"}}
    assert 0 < documents.cached_bytes <= 1 << 20
