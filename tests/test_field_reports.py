"""Each root field and alias reports exactly the broken items of its own answer, at its own
path, once: the data source answers with a value, nothing is read back from shared state."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from conftest import ALICE_KEY, FaultyUpstream, Gateway


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


def _item(snapshot_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": snapshot_id,
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        **fields,
    }


LIST = [
    _item("ok-1"),
    _item("bad-1", status=None),
    {"name": "no id at all", "status": "ready"},
    _item("ok-2"),
]


def _errors_by_path(result: dict[str, Any]) -> Counter[tuple[tuple[Any, ...], Any]]:
    """Each error by its path and the snapshot it is about (or the field it repeats)."""
    return Counter(
        (tuple(error["path"]), _about(error["extensions"])) for error in result["errors"]
    )


def _about(extensions: dict[str, Any]) -> Any:
    if "sameAs" in extensions:
        return f"same as {extensions['sameAs']} ({extensions['count']})"
    return extensions["snapshotId"]


def test_each_alias_reports_the_broken_items_of_its_own_answer_once(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    faulty.respond(200, json.dumps(LIST))
    query = """{
      all: snapshots { id }
      again: snapshots { id }
      found: snapshot(id: "ok-1") { id }
      broken: snapshot(id: "bad-1") { id }
      missing: snapshot(id: "nope") { id }
    }"""
    result = start_gateway(faulty.url).query(query, ALICE_KEY)
    assert result["data"] == {
        "all": [{"id": "ok-1"}, {"id": "ok-2"}],
        "again": [{"id": "ok-1"}, {"id": "ok-2"}],
        "found": {"id": "ok-1"},
        "broken": None,
        "missing": None,
    }
    assert _errors_by_path(result) == Counter(
        {
            (("all",), "bad-1"): 1,
            (("all",), None): 1,
            # The same two items, left out of the same list: said once, pointing at `all`.
            (("again",), "same as all (2)"): 1,
            (("broken",), "bad-1"): 1,
            (("broken",), None): 1,
            (("missing",), None): 1,
        }
    )
    assert {error["extensions"]["code"] for error in result["errors"]} == {"UPSTREAM_BAD_RESPONSE"}
    assert len(faulty.received) == 1  # every alias answered from one upstream call


def test_a_found_snapshot_reports_nothing_about_other_items(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    faulty.respond(200, json.dumps(LIST))
    result = start_gateway(faulty.url).query('{ snapshot(id: "ok-1") { id } }', ALICE_KEY)
    assert result == {"data": {"snapshot": {"id": "ok-1"}}}


def test_an_entity_that_is_broken_upstream_gets_its_own_error(
    faulty: FaultyUpstream, start_gateway: Any
) -> None:
    faulty.respond(200, json.dumps(LIST))
    query = "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Snapshot { id } } }"
    representations = [
        {"__typename": "Snapshot", "id": "ok-2"},
        {"__typename": "Snapshot", "id": "bad-1"},
        {"__typename": "Snapshot", "id": "unknown"},
    ]
    result = start_gateway(faulty.url).query(query, ALICE_KEY, variables={"r": representations})
    assert result["data"] == {"_entities": [{"id": "ok-2"}, None, None]}
    (error,) = result["errors"]
    assert error["path"] == ["_entities", 1]
    assert error["extensions"]["snapshotId"] == "bad-1"
