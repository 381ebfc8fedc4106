"""Caching as callers see it, through the gateway, against upstreams over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import (
    ALICE_KEY,
    BOB_KEY,
    QUERY,
    Clock,
    FaultyUpstream,
    Gateway,
    Upstream,
    ids,
    run_concurrently,
    sample,
    wait_for_async,
)
from snapgraph.reference.data import SYSTEM_SNAPSHOTS, Dataset


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


PUBLIC_SYSTEM = {s.fields["id"] for s in SYSTEM_SNAPSHOTS if s.fields["is_public"]}
COALESCED = 'snapgraph_cache_lookups_total{result="coalesced"}'
ITEM = {
    "id": "s1",
    "status": "ready",
    "snapshot_type": "full",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


def test_a_repeated_query_costs_one_upstream_call(gateway: Gateway, upstream: Upstream) -> None:
    for _ in range(3):
        gateway.query(QUERY, ALICE_KEY)
    assert len(upstream.requests) == 1


def test_users_never_share_an_entry(gateway: Gateway, upstream: Upstream) -> None:
    alice, bob = ids(gateway.query(QUERY, ALICE_KEY)), ids(gateway.query(QUERY, BOB_KEY))
    assert "snap-bob-db" in bob and "snap-bob-db" not in alice
    assert len(upstream.requests) == 2


def test_expired_entry_is_refetched_once(start_gateway, upstream: Upstream, clock: Clock) -> None:
    gateway = start_gateway(upstream.url, cache_ttl=30)
    gateway.query(QUERY, ALICE_KEY)
    clock.advance(29)
    gateway.query(QUERY, ALICE_KEY)
    assert len(upstream.requests) == 1  # still fresh
    clock.advance(1)
    gateway.query(QUERY, ALICE_KEY)
    gateway.query(QUERY, ALICE_KEY)
    assert len(upstream.requests) == 2  # expired at 30 s: refetched once, then fresh again


def test_no_cache_request_refetches_and_refreshes_the_entry(
    faulty: FaultyUpstream, start_gateway
) -> None:
    faulty.respond(200, json.dumps([ITEM]))
    gateway = start_gateway(faulty.url)
    gateway.query(QUERY, ALICE_KEY)
    faulty.respond(200, json.dumps([dict(ITEM, id="s2")]))
    assert ids(gateway.query(QUERY, ALICE_KEY)) == {"s1"}  # still cached
    assert ids(gateway.query(QUERY, {**ALICE_KEY, "Cache-Control": "no-cache"})) == {"s2"}
    assert ids(gateway.query(QUERY, ALICE_KEY)) == {"s2"}  # the refreshed entry
    assert len(faulty.received) == 2


def test_upstream_errors_are_not_cached(faulty: FaultyUpstream, start_gateway) -> None:
    gateway = start_gateway(faulty.url, upstream_retries=0)
    faulty.respond(503, "down")
    assert (
        gateway.query(QUERY, ALICE_KEY)["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"
    )
    faulty.respond(200, json.dumps([ITEM]))
    assert ids(gateway.query(QUERY, ALICE_KEY)) == {"s1"}
    assert len(faulty.received) == 2


def test_stale_entry_is_served_and_flagged_when_upstream_fails(
    faulty: FaultyUpstream, start_gateway, clock: Clock
) -> None:
    gateway = start_gateway(faulty.url, cache_ttl=10, cache_stale_window=60, upstream_timeout=0.3)
    faulty.respond(200, json.dumps([ITEM]))
    fresh = gateway.query(QUERY, ALICE_KEY)
    assert "extensions" not in fresh

    def served_stale(age: int) -> None:
        stale = gateway.query(QUERY, ALICE_KEY)
        assert ids(stale) == {"s1"}
        assert stale["extensions"] == {"stale": True, "staleAgeSeconds": age}

    clock.advance(17)  # past the TTL, within the stale window
    faulty.respond(500, "boom")
    served_stale(17)
    clock.advance(6)
    faulty.hold()  # no answer at all: a timeout, however slow the machine
    served_stale(23)
    assert len(faulty.received) == 3


def test_no_stale_entry_means_the_error_is_reported(
    faulty: FaultyUpstream, start_gateway, clock: Clock
) -> None:
    gateway = start_gateway(faulty.url, cache_ttl=10, cache_stale_window=5)
    faulty.respond(200, json.dumps([ITEM]))
    gateway.query(QUERY, ALICE_KEY)
    clock.advance(15)  # TTL and stale window both over
    faulty.respond(500, "boom")
    result = gateway.query(QUERY, ALICE_KEY)
    assert result["errors"][0]["extensions"]["code"] == "UPSTREAM_UNAVAILABLE"


def test_100_concurrent_identical_queries_make_one_upstream_call(
    faulty: FaultyUpstream, start_served_gateway
) -> None:
    faulty.respond(200, json.dumps([ITEM]))
    faulty.hold()  # until all 100 are waiting: none can come late and find the entry cached
    # Over a hundred connections from one address: the per-client share off.
    gateway = start_served_gateway(faulty.url, http_max_connections_per_client=0)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=gateway.url, timeout=30, limits=httpx.Limits(max_connections=200)
        ) as http:
            body = {"query": QUERY}
            sent = [
                asyncio.ensure_future(http.post("/graphql", json=body, headers=ALICE_KEY))
                for _ in range(100)
            ]

            async def all_waiting() -> bool:
                metrics = (await http.get("/metrics")).text
                return sample(metrics, COALESCED) == 99

            await wait_for_async(all_waiting, "99 queries waiting on the first one's fetch")
            faulty.release()
            return await asyncio.gather(*sent)

    results = [response.json() for response in asyncio.run(run())]
    assert all(ids(result) == {"s1"} for result in results)
    assert len(faulty.received) == 1


def expected_for(user: str, list_type: str | None = None) -> set[str]:
    own = {f"snap-{user}-{i}" for i in range(3)}
    return {None: own | PUBLIC_SYSTEM, "USER": own, "SYSTEM": PUBLIC_SYSTEM}[list_type]


def test_50_users_concurrently_cold_and_warm_see_only_their_own(
    start_upstream, start_served_gateway
) -> None:
    upstream = start_upstream(Dataset.generated(users=50), latency=0.05)
    # 200 connections from one address: the per-client share off.
    gateway = start_served_gateway(upstream.url, http_max_connections_per_client=0)
    users = [n % 50 for n in range(200)]
    requests = [{"X-API-Key": f"key-{n:03d}"} for n in users]
    for _ in ("cold", "warm"):
        results = asyncio.run(run_concurrently(gateway.url, requests))
        for n, result in zip(users, results, strict=True):
            assert ids(result) == expected_for(f"user-{n:03d}")
    assert len(upstream.requests) == 50


CREDENTIALS = {
    "key": lambda n: {"X-API-Key": f"key-{n:03d}"},
    "bearer": lambda n: {"Authorization": f"Bearer token-{n:03d}"},
    "both": lambda n: {"X-API-Key": f"key-{n:03d}", "Authorization": f"Bearer token-{n:03d}"},
}
calls = st.tuples(
    st.integers(0, 49),
    st.sampled_from(sorted(CREDENTIALS)),
    st.sampled_from([None, "USER", "SYSTEM"]),
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(calls, min_size=1, max_size=60))
def test_any_interleaving_of_users_and_credentials_stays_isolated(
    generated_gateway: Gateway, batch
) -> None:
    async def one(http: httpx.AsyncClient, n: int, kind: str, list_type: str | None) -> None:
        args = f"(type: {list_type})" if list_type else ""
        response = await http.post(
            "/graphql",
            json={"query": f"{{ snapshots{args} {{ id }} }}"},
            headers=CREDENTIALS[kind](n),
        )
        assert ids(response.json()) == expected_for(f"user-{n:03d}", list_type)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=generated_gateway.url, timeout=30) as http:
            await asyncio.gather(*(one(http, *call) for call in batch))

    asyncio.run(run())
