"""The response cache: a repeated operation is served as bytes, never to another caller, never
past the upstream entry it was built from."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import ALICE_KEY, BOB_KEY, Clock, FaultyUpstream, Gateway, Upstream, data_of


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


QUERY = "{ snapshots { id name } }"


def paths(gateway: Gateway) -> dict[str, int]:
    return dict(gateway.app.state.gateway.executor.paths)


def test_a_repeated_operation_is_served_from_the_response_cache(gateway: Gateway) -> None:
    first = gateway.post(QUERY, ALICE_KEY).content
    assert gateway.post(QUERY, ALICE_KEY).content == first
    assert paths(gateway) == {"compiled": 1, "cached": 1}


def test_callers_never_share_a_cached_response(gateway: Gateway, upstream: Upstream) -> None:
    alice = data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"]
    bob = data_of(gateway.query(QUERY, BOB_KEY))["snapshots"]
    alice_ids, bob_ids = {s["id"] for s in alice}, {s["id"] for s in bob}
    assert {"snap-alice-dev"} <= alice_ids and "snap-alice-dev" not in bob_ids
    for _ in range(3):  # now from the response cache, each to its own caller
        assert data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"] == alice
        assert data_of(gateway.query(QUERY, BOB_KEY))["snapshots"] == bob
    assert paths(gateway) == {"compiled": 2, "cached": 6}
    # The same user with another credential is another cache key, hence another answer.
    bearer = {"Authorization": "Bearer demo-alice-token"}
    assert data_of(gateway.query(QUERY, bearer))["snapshots"] == alice
    assert paths(gateway)["compiled"] == 3


def _item(name: str) -> dict[str, Any]:
    return {
        "id": "s1",
        "name": name,
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    }


def test_a_cached_response_expires_with_its_upstream_entry(
    faulty: FaultyUpstream, start_gateway: Any, clock: Clock
) -> None:
    gateway = start_gateway(faulty.url, cache_ttl=30, cache_stale_window=0)
    faulty.respond(200, json.dumps([_item("before")]))
    assert data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"][0]["name"] == "before"
    faulty.respond(200, json.dumps([_item("after")]))
    clock.advance(29)
    assert data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"][0]["name"] == "before"
    assert paths(gateway) == {"compiled": 1, "cached": 1}
    clock.advance(1)  # the upstream entry's TTL is over: so is the response built from it
    assert data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"][0]["name"] == "after"
    assert len(faulty.received) == 2


def test_no_cache_bypasses_the_cached_response(faulty: FaultyUpstream, start_gateway: Any) -> None:
    gateway = start_gateway(faulty.url)
    faulty.respond(200, json.dumps([_item("before")]))
    gateway.query(QUERY, ALICE_KEY)
    gateway.query(QUERY, ALICE_KEY)
    faulty.respond(200, json.dumps([_item("after")]))
    refreshed = gateway.query(QUERY, {**ALICE_KEY, "Cache-Control": "no-cache"})
    assert data_of(refreshed)["snapshots"][0]["name"] == "after"
    assert data_of(gateway.query(QUERY, ALICE_KEY))["snapshots"][0]["name"] == "after"


def test_a_stale_answer_is_never_kept(
    faulty: FaultyUpstream, start_gateway: Any, clock: Clock
) -> None:
    gateway = start_gateway(faulty.url, cache_ttl=10, cache_stale_window=60)
    faulty.respond(200, json.dumps([_item("kept")]))
    gateway.query(QUERY, ALICE_KEY)
    clock.advance(11)
    faulty.respond(503, "down")
    for _ in range(2):
        result = gateway.query(QUERY, ALICE_KEY)
        assert result["extensions"]["stale"] is True
    assert paths(gateway).get("cached", 0) == 0


def test_undeclared_variables_do_not_mint_new_entries(gateway: Gateway) -> None:
    cache = gateway.app.state.gateway.executor.response_cache
    gateway.post(QUERY, ALICE_KEY)
    stored = cache.stored_bytes
    for n in range(5):
        gateway.post(QUERY, ALICE_KEY, variables={"pad": "x" * 10_000 + str(n)})
    assert paths(gateway) == {"compiled": 1, "cached": 5}
    assert cache.stored_bytes == stored


def test_a_refetched_list_drops_the_answers_built_from_its_older_version() -> None:
    """A caller's thousand distinct requests hold memory only until their list is fetched
    again; another caller's answers stay."""
    from snapgraph.execution.response_cache import CachedResponse, ResponseCache, response_key

    cache = ResponseCache(1 << 20)
    for n in range(1_000):
        cache.put(response_key(("alice:f1",), "q", None, {"n": n}), CachedResponse(b"{}"))
    bob = response_key(("bob:f1",), "q", None, {})
    cache.put(bob, CachedResponse(b"{}"))
    held = cache.stored_bytes
    fresh = response_key(("alice:f2",), "q", None, {})
    cache.put(fresh, CachedResponse(b"{}"))
    assert cache.stored_bytes < held / 100
    assert cache.get(bob) is not None and cache.get(fresh) is not None
    assert cache.get(response_key(("alice:f1",), "q", None, {"n": 1})) is None
