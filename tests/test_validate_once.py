"""An upstream answer is checked once, when fetched: cache hits validate nothing and, while
the stored text is the one verified before, do not parse or verify it again either."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import snapgraph.upstream.models as models
import snapgraph.upstream.source as source
from conftest import ALICE_KEY, QUERY, Gateway, Upstream, data_of
from snapgraph.cache import CachedList


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"validate": 0, "decode": 0}
    real_check, real_loads = models.quick_row, CachedList.loads.__func__

    def check(item: Any) -> Any:
        calls["validate"] += 1
        return real_check(item)

    def loads(cls: Any, text: str) -> Any:
        calls["decode"] += 1
        return real_loads(cls, text)

    monkeypatch.setattr(models, "quick_row", check)
    monkeypatch.setattr(CachedList, "loads", classmethod(loads))
    assert source.check_items is models.check_items
    return calls


def test_a_cache_hit_validates_and_decodes_nothing(
    upstream: Upstream, start_gateway: Any, counted: dict[str, int]
) -> None:
    gateway = start_gateway(upstream.url)
    first = data_of(gateway.query(QUERY, ALICE_KEY))
    validated = counted["validate"]
    assert validated == len(first["snapshots"])
    for _ in range(5):
        assert data_of(gateway.query(QUERY, ALICE_KEY)) == first
    assert counted == {"validate": validated, "decode": 0}
    assert len(upstream.requests) == 1


def test_a_second_process_decodes_a_redis_entry_once(
    upstream: Upstream, start_gateway: Any, redis_url: str, counted: dict[str, int]
) -> None:
    settings = {"cache_url": redis_url, "cache_secret": "s" * 32}
    one = start_gateway(upstream.url, **settings)
    two = start_gateway(upstream.url, **settings)
    expected = data_of(one.query(QUERY, ALICE_KEY))
    validated = counted["validate"]
    for _ in range(5):
        assert data_of(two.query(QUERY, ALICE_KEY)) == expected
    assert counted == {"validate": validated, "decode": 1}
    assert len(upstream.requests) == 1
