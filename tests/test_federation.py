"""snapgraph as a Federation 2 subgraph, composed with another subgraph and queried through a
real federation gateway (@apollo/composition + @apollo/gateway on @apollo/server, in Node)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from conftest import ALICE_BEARER, ALICE_KEY, BOB_KEY, JS, Gateway, Upstream, data_of, node_or_skip
from snapgraph.reference.data import Dataset

VMS_QUERY = "{ virtualMachines { id name snapshots { id name sizeBytes status } } }"


@pytest.fixture
def federation(gateway: Gateway) -> Iterator[str]:
    from conftest import Lines

    node = node_or_skip()
    process = subprocess.Popen(
        [node, str(JS / "federation" / "gateway.mjs")],
        env={**os.environ, "SNAPGRAPH_URL": gateway.url + "/graphql"},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    stdout = Lines(process.stdout)  # read with a deadline: a silent gateway fails, never hangs
    try:
        line = stdout.first(timeout=60)
        assert line.startswith("READY "), f"federation gateway did not start: {line!r}"
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=10)
        stdout.join()
        process.stdout.close()


def through_router(url: str, headers: dict[str, str]) -> dict:
    response = httpx.post(url, json={"query": VMS_QUERY}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def snapshot_ids(result: dict) -> list[list[str | None]]:
    return [[s and s["id"] for s in vm["snapshots"]] for vm in result["data"]["virtualMachines"]]


@pytest.mark.parametrize(
    ("headers", "forwarded"),
    [
        (ALICE_BEARER, ("authorization", "Bearer demo-alice-token")),
        (ALICE_KEY, ("x-api-key", "demo-alice-key")),
    ],
)
def test_a_query_across_both_subgraphs_carries_the_callers_credential(
    federation: str, upstream: Upstream, headers: dict[str, str], forwarded: tuple[str, str]
) -> None:
    result = through_router(federation, headers)
    assert snapshot_ids(result) == [
        ["snap-alice-dev", "sys-ubuntu-24.04"],
        ["snap-alice-failed", None],
    ]
    dev = result["data"]["virtualMachines"][0]["snapshots"][0]
    assert dev == {
        "id": "snap-alice-dev",
        "name": "dev box before upgrade",
        "sizeBytes": 5_368_709_123,
        "status": "ready",
    }
    name, value = forwarded
    assert [r.headers.get(name) for r in upstream.requests] == [value]


def test_another_users_snapshot_resolves_to_null_through_the_router(federation: str) -> None:
    result = through_router(federation, BOB_KEY)
    assert snapshot_ids(result) == [[None, "sys-ubuntu-24.04"], [None, "snap-bob-db"]]


def test_service_sdl_answers_without_credentials(gateway: Gateway, upstream: Upstream) -> None:
    sdl = data_of(gateway.query("{ _service { sdl } }"))["_service"]["sdl"]
    assert 'type Snapshot @key(fields: "id")' in sdl
    assert upstream.requests == []


def test_federation_version_is_a_setting(start_gateway, upstream: Upstream) -> None:
    gateway = start_gateway(upstream.url, federation_version="2.3")
    sdl = data_of(gateway.query("{ _service { sdl } }"))["_service"]["sdl"]
    assert "https://specs.apollo.dev/federation/v2.3" in sdl


ENTITIES = """query ($representations: [_Any!]!) {
  _entities(representations: $representations) { ... on Snapshot { id sizeBytes } }
}"""


def test_50_entities_cost_one_upstream_call(start_upstream, start_gateway) -> None:
    upstream = start_upstream(Dataset.generated(users=20, per_user=40))
    gateway = start_gateway(upstream.url)
    wanted = [f"snap-user-003-{i}" for i in range(40)] + [f"snap-user-004-{i}" for i in range(10)]
    representations = [{"__typename": "Snapshot", "id": snapshot_id} for snapshot_id in wanted]
    result = gateway.query(
        ENTITIES, {"X-API-Key": "key-003"}, variables={"representations": representations}
    )
    entities = data_of(result)["_entities"]
    assert [e and e["id"] for e in entities] == wanted[:40] + [None] * 10
    assert len(upstream.requests) == 1


def test_a_page_of_snapshots_through_the_router(federation: str) -> None:
    query = (
        "{ snapshotsConnection(first: 2) "
        "{ totalCount pageInfo { hasNextPage } edges { node { id } } } }"
    )
    response = httpx.post(federation, json={"query": query}, headers=ALICE_KEY, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["snapshotsConnection"] == {
        "totalCount": 5,  # alice's 3 and the 2 public system snapshots
        "pageInfo": {"hasNextPage": True},
        "edges": [{"node": {"id": "snap-alice-failed"}}, {"node": {"id": "snap-alice-dev"}}],
    }
