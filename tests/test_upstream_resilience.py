"""Retries with backoff within the fetch deadline, Retry-After honoured, and a circuit breaker
that fails fast while the upstream is down and lets one probe through to recover."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import ALICE_KEY, Clock, FaultyUpstream, Gateway
from snapgraph.serving import serve_in_thread


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


QUERY = "{ snapshots { id } }"
ITEM = (
    b'[{"id": "s1", "status": "ready", "snapshot_type": "full",'
    b' "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}]'
)


class ScriptedUpstream:
    """A real HTTP upstream that answers from a script: one (status, headers) per call, the
    last one repeated."""

    def __init__(self, servers: ExitStack) -> None:
        self.script: list[tuple[int, dict[str, str]]] = [(200, {})]
        self.calls = 0

        async def snapshots(request: Request) -> Response:
            status, headers = self.script[min(self.calls, len(self.script) - 1)]
            self.calls += 1
            body = ITEM if status == 200 else b'{"detail": "down"}'
            return Response(body, status_code=status, headers=headers)

        app = Starlette(routes=[Route("/v1/snapshots", snapshots)])
        self.url = servers.enter_context(serve_in_thread(app))


@pytest.fixture
def scripted(servers: ExitStack) -> ScriptedUpstream:
    return ScriptedUpstream(servers)


def code_of(gateway: Gateway, headers: dict[str, str] = ALICE_KEY) -> str:
    result = gateway.post(QUERY, headers).json()
    return "ok" if "errors" not in result else str(result["errors"][0]["extensions"]["code"])


def test_a_503_is_retried_and_the_answer_served(
    scripted: ScriptedUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    scripted.script = [(503, {}), (502, {}), (200, {})]
    gateway = start_gateway(scripted.url, upstream_retry_backoff=0.01)
    assert code_of(gateway) == "ok"
    assert scripted.calls == 3


def test_retry_after_is_honoured_but_never_past_the_deadline(
    scripted: ScriptedUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    scripted.script = [(503, {"Retry-After": "30"}), (200, {})]
    gateway = start_gateway(scripted.url, upstream_deadline=1)
    started = time.monotonic()
    assert code_of(gateway) == "UPSTREAM_UNAVAILABLE"
    assert scripted.calls == 1  # a 30 s wait does not fit in a 1 s deadline
    assert time.monotonic() - started < 5
    scripted.calls = 0
    scripted.script = [(503, {"Retry-After": "0"}), (200, {})]
    assert code_of(start_gateway(scripted.url)) == "ok"
    assert scripted.calls == 2


def test_the_breaker_fails_fast_while_down_then_lets_a_probe_through(
    scripted: ScriptedUpstream, start_gateway: Callable[..., Gateway], clock: Clock
) -> None:
    scripted.script = [(503, {})]
    gateway = start_gateway(
        scripted.url,
        cache_ttl=0,
        upstream_retries=0,
        upstream_breaker_failures=3,
        upstream_breaker_reset=30,
    )
    # Three callers fail: the upstream, not one caller's data, is to blame.
    callers = [{"X-API-Key": f"caller-{n}"} for n in range(3)]
    assert [code_of(gateway, caller) for caller in callers] == ["UPSTREAM_UNAVAILABLE"] * 3
    assert scripted.calls == 3
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "open"
    assert [code_of(gateway) for _ in range(5)] == ["UPSTREAM_UNAVAILABLE"] * 5
    assert scripted.calls == 3  # open: nobody waited on the upstream
    ready: dict[str, Any] = gateway.http.get("/readyz").json()
    assert ready["status"] == "ready"  # the replica still serves (stale answers, errors)
    clock.advance(29)
    assert code_of(gateway) == "UPSTREAM_UNAVAILABLE" and scripted.calls == 3  # still open
    clock.advance(1)
    scripted.script = [(200, {})]
    assert code_of(gateway) == "ok"  # the probe
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"
    assert [code_of(gateway) for _ in range(3)] == ["ok"] * 3


def test_the_breaker_counts_fetches_not_attempts(
    scripted: ScriptedUpstream, start_gateway: Callable[..., Gateway]
) -> None:
    scripted.script = [(503, {})]
    gateway = start_gateway(
        scripted.url,
        cache_ttl=0,
        upstream_retries=2,
        upstream_retry_backoff=0.01,
        upstream_breaker_failures=2,
    )
    assert code_of(gateway) == "UPSTREAM_UNAVAILABLE"
    assert scripted.calls == 3  # one fetch, two retries
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"
    assert code_of(gateway, {"X-API-Key": "bob"}) == "UPSTREAM_UNAVAILABLE"
    assert code_of(gateway, {"X-API-Key": "carol"}) == "UPSTREAM_UNAVAILABLE"
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "open"


def test_one_callers_failures_back_off_that_caller_alone(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream
) -> None:
    """An upstream that answers 500 to one caller (say, a list it cannot serialize) must
    not open the breaker for everyone: that caller alone waits, the others are served."""
    faulty.respond_by_credential({"demo-alice-key": (500, "{}")}, default=(200, "[]"))
    gateway = start_gateway(
        faulty.url, cache_ttl=0, upstream_retries=0, upstream_breaker_failures=3
    )
    assert [code_of(gateway) for _ in range(6)] == ["UPSTREAM_UNAVAILABLE"] * 6
    assert faulty.calls_by_credential("demo-alice-key") == 3  # then backed off, alone
    assert gateway.http.get("/readyz").json()["upstreamCircuit"] == "closed"
    assert code_of(gateway, {"X-API-Key": "demo-bob-key"}) == "ok"


def test_a_probe_without_a_verdict_lets_the_next_one_through(clock: Clock) -> None:
    from snapgraph.upstream.resilience import CircuitBreaker

    breaker = CircuitBreaker(failures=1, reset_seconds=5)
    breaker.record(ok=False)
    assert not breaker.allow()
    clock.advance(5)
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.release()  # e.g. the probe was cancelled
    assert breaker.allow()
    breaker.record(ok=True)
    assert breaker.state == "closed"


def test_the_breaker_blames_the_upstream_only_for_outages_or_several_callers(
    clock: Clock,
) -> None:
    from snapgraph.upstream.resilience import CircuitBreaker

    breaker = CircuitBreaker(failures=2, reset_seconds=5, callers=3)
    for _ in range(10):  # one caller's own failures, however many
        breaker.record(ok=False, caller="mallory")
    assert breaker.state == "closed" and breaker.allow("alice")
    assert not breaker.allow("mallory") and breaker.backing_off("mallory")
    clock.advance(5)
    assert breaker.allow("mallory")  # held back for reset_seconds after the last failure
    breaker.record(ok=False, caller="alice")
    breaker.record(ok=False, caller="bob")
    assert breaker.state == "open"  # three callers in one run: the upstream is failing
    breaker.record(ok=True)
    breaker.record(ok=False, caller="alice", outage=True)
    breaker.record(ok=False, caller="alice")
    assert breaker.state == "open"  # no connection at all: nobody's data is to blame


def test_the_caller_backoff_forgets_the_oldest_beyond_its_bound() -> None:
    from snapgraph.upstream.resilience import CircuitBreaker

    breaker = CircuitBreaker(failures=1, reset_seconds=60, tracked_callers=100)
    for n in range(10_000):
        breaker.record(ok=False, caller=f"caller-{n}")
    assert breaker.backing_off("caller-9999") and not breaker.backing_off("caller-0")
