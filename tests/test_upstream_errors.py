"""Upstream failures become clear GraphQL errors that leak nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack

import httpx
import pytest

from conftest import ALICE_KEY, FaultyUpstream, Gateway, Upstream, free_port
from snapgraph.serving import serve_in_thread


@pytest.fixture
def start_gateway(start_in_process_gateway: Callable[..., Gateway]) -> Callable[..., Gateway]:
    """In process: what these tests check is the gateway's answer, not its socket."""
    return start_in_process_gateway


SECRET_TOKEN = "Bearer super-secret-token-value"


@pytest.fixture
def elsewhere(servers: ExitStack) -> FaultyUpstream:
    """Another real server, where the upstream's redirects point: it answers a valid list and
    records every request, so a gateway that followed one (taking the caller's credentials
    along) would be seen."""
    server = FaultyUpstream()
    server.url = servers.enter_context(serve_in_thread(server.app()))
    return server


def error_of(gateway: Gateway, headers: dict[str, str] | None = None) -> dict:
    result = gateway.query("{ snapshots { id } }", headers or {"Authorization": SECRET_TOKEN})
    assert result["data"] is None
    (error,) = result["errors"]
    assert "super-secret-token-value" not in json.dumps(result)
    assert "127.0.0.1" not in json.dumps(result)
    return error


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "UNAUTHENTICATED"),
        (403, "FORBIDDEN"),
        (404, "NOT_FOUND"),
        (500, "UPSTREAM_UNAVAILABLE"),
        (502, "UPSTREAM_UNAVAILABLE"),
        (503, "UPSTREAM_UNAVAILABLE"),
        (400, "UPSTREAM_BAD_RESPONSE"),
        (302, "UPSTREAM_BAD_RESPONSE"),
    ],
)
def test_upstream_status_maps_to_an_error_code(
    faulty: FaultyUpstream, start_gateway, status: int, code: str
) -> None:
    faulty.respond(status, '{"detail": "internal trace at http://10.1.2.3/db"}')
    error = error_of(start_gateway(faulty.url))
    assert error["extensions"]["code"] == code
    assert "10.1.2.3" not in error["message"] and "trace" not in error["message"]
    # A 502/503 is tried twice more (the default retries).
    assert len(faulty.received) == (3 if status in (502, 503, 504) else 1)


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirect_is_never_followed(
    faulty: FaultyUpstream, elsewhere: FaultyUpstream, start_gateway, status: int
) -> None:
    faulty.respond(status, "", location=elsewhere.url + "/v1/snapshots")
    error = error_of(start_gateway(faulty.url))
    assert error["extensions"]["code"] == "UPSTREAM_BAD_RESPONSE"
    assert len(faulty.received) == 1
    # The server it names answers a valid list: a followed redirect would have been served
    # from there, and would have handed it the caller's credential.
    assert elsewhere.received == []


def test_rate_limit_carries_retry_after(faulty: FaultyUpstream, start_gateway) -> None:
    faulty.respond(429, '{"detail": "slow down"}', **{"retry-after": "17"})
    error = error_of(start_gateway(faulty.url))
    assert error["extensions"] == {"code": "RATE_LIMITED", "retryAfter": 17}


def test_rejected_input_carries_the_upstreams_detail(faulty: FaultyUpstream, start_gateway) -> None:
    detail = [
        {
            "loc": ["query", "type"],
            "msg": "String should match pattern",
            "type": "string_pattern_mismatch",
            "input": "bogus",
            "ctx": {"pattern": "^(user|system)$"},
        }
    ]
    faulty.respond(422, json.dumps({"detail": detail}))
    error = error_of(start_gateway(faulty.url))
    assert error["extensions"] == {
        "code": "BAD_USER_INPUT",
        "detail": [
            {
                "loc": ["query", "type"],
                "msg": "String should match pattern",
                "type": "string_pattern_mismatch",
            }
        ],
    }


async def test_real_422_from_the_reference_upstream_maps_to_bad_user_input(
    upstream: Upstream,
) -> None:
    from snapgraph.errors import UpstreamRejectedInput
    from snapgraph.upstream.client import UpstreamClient
    from snapgraph.upstream.models import Credentials

    client = UpstreamClient(upstream.url, timeout=httpx.Timeout(5.0))
    try:
        with pytest.raises(UpstreamRejectedInput) as caught:
            await client.list_snapshots(
                Credentials(api_key="demo-alice-key"), "bogus", request_id="r"
            )
    finally:
        await client.aclose()
    assert caught.value.extensions["detail"][0]["loc"] == ["query", "type"]


def test_real_404_when_the_upstream_url_is_wrong(upstream: Upstream, start_gateway) -> None:
    error = error_of(start_gateway(upstream.url + "/not-the-api"), ALICE_KEY)
    assert error["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("body", ["<html>oops</html>", '{"snapshots": []}', "", "[1, 2"])
def test_non_json_or_non_list_body_is_a_bad_response(
    faulty: FaultyUpstream, start_gateway, body: str
) -> None:
    faulty.respond(200, body)
    assert error_of(start_gateway(faulty.url))["extensions"]["code"] == "UPSTREAM_BAD_RESPONSE"


def test_upstream_down_is_unavailable(start_gateway) -> None:
    error = error_of(start_gateway(f"http://127.0.0.1:{free_port()}"))
    assert error["extensions"] == {"code": "UPSTREAM_UNAVAILABLE"}


def test_slow_upstream_times_out_as_unavailable(faulty: FaultyUpstream, start_gateway) -> None:
    faulty.hold()  # never answers (until teardown): only the read timeout can end the wait
    error = error_of(start_gateway(faulty.url, upstream_timeout=0.2))
    assert error["extensions"] == {"code": "UPSTREAM_UNAVAILABLE"}


def test_exhausted_pool_is_unavailable_not_a_hang(faulty: FaultyUpstream, start_gateway) -> None:
    import concurrent.futures

    faulty.hold()  # the first request keeps the only connection until the others gave up
    gateway = start_gateway(
        faulty.url, upstream_max_connections=1, upstream_pool_timeout=0.1, cache_ttl=0
    )

    def code(n: int) -> str:
        result = gateway.post("{ snapshots { id } }", {"X-API-Key": f"key-{n}"}).json()
        return str(result["errors"][0]["extensions"]["code"]) if "errors" in result else "ok"

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(code, n) for n in range(3)]
        done = concurrent.futures.as_completed(calls, timeout=30)
        early = [next(done).result(), next(done).result()]
        faulty.release()
        assert early == ["UPSTREAM_UNAVAILABLE"] * 2
        assert next(done).result() == "ok"
    assert len(faulty.received) == 1  # the two others never got a connection


def test_set_cookie_from_upstream_is_never_replayed_to_another_caller(
    faulty: FaultyUpstream, start_gateway
) -> None:
    faulty.respond(200, "[]", **{"set-cookie": "session=alice-session; Path=/"})
    gateway = start_gateway(faulty.url)
    gateway.query("{ snapshots { id } }", {"X-API-Key": "alice"})
    gateway.query("{ snapshots { id } }", {"X-API-Key": "bob"})
    assert [h.get("cookie") for h in faulty.received] == [None, None]


BROKEN_LIST = [
    {
        "id": "ok-1",
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "brand_new_field": {"ignored": True},
    },
    {
        "id": "bad-size",
        "status": "ready",
        "snapshot_type": "full",
        "size_bytes": "huge",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    },
    {
        "name": "no id",
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    },
    {
        "id": "bad-date",
        "status": "ready",
        "snapshot_type": "full",
        "created_at": "yesterday",
        "updated_at": "2026-01-01T00:00:00Z",
    },
    "not even an object",
    {
        "id": "ok-2",
        "status": "ready",
        "snapshot_type": "full",
        "size_bytes": 9_000_000_000,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
    },
]


def test_broken_items_are_reported_beside_the_valid_ones(
    faulty: FaultyUpstream, start_gateway
) -> None:
    faulty.respond(200, json.dumps(BROKEN_LIST))
    result = start_gateway(faulty.url).query("{ snapshots { id sizeBytes } }", ALICE_KEY)
    assert result["data"] == {
        "snapshots": [{"id": "ok-1", "sizeBytes": 0}, {"id": "ok-2", "sizeBytes": 9_000_000_000}]
    }
    errors = result["errors"]
    assert {e["extensions"]["code"] for e in errors} == {"UPSTREAM_BAD_RESPONSE"}
    assert [e["extensions"]["snapshotId"] for e in errors] == ["bad-size", None, "bad-date", None]
    assert errors[0]["extensions"]["fields"] == ["size_bytes"]
    assert "'bad-size'" in errors[0]["message"] and errors[0]["path"] == ["snapshots"]
    assert "position 2" in errors[1]["message"]


def test_a_size_beyond_64_bits_is_a_broken_item_not_a_crash(
    faulty: FaultyUpstream, start_gateway
) -> None:
    item = dict(BROKEN_LIST[0], id="too-big", size_bytes=2**70)
    faulty.respond(200, json.dumps([item, BROKEN_LIST[0]]))
    result = start_gateway(faulty.url).query("{ snapshots { id sizeBytes } }", ALICE_KEY)
    assert result["data"] == {"snapshots": [{"id": "ok-1", "sizeBytes": 0}]}
    assert result["errors"][0]["extensions"]["snapshotId"] == "too-big"


def test_an_unexpected_failure_is_masked_and_logged_with_the_request_id(
    upstream: Upstream, start_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError(f"bug while holding {request.headers['authorization']}")

    gateway = start_gateway(upstream.url, transport=httpx.MockTransport(explode))
    response = gateway.post(
        "{ snapshots { id } }", {"Authorization": SECRET_TOKEN, "X-Request-ID": "req-42"}
    )
    error = response.json()["errors"][0]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert "super-secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-request-id"] == "req-42"
    assert any("req-42" in record.getMessage() for record in caplog.records)


def test_credentials_never_reach_the_logs_even_at_debug(
    upstream: Upstream, start_gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = start_gateway(upstream.url)
    with caplog.at_level(logging.DEBUG):
        gateway.query("{ snapshots { id } }", {"Authorization": "Bearer demo-alice-token"})
        gateway.query("{ snapshots { id } }", {"Authorization": SECRET_TOKEN})
        gateway.query("{ snapshots { id } }", {"X-API-Key": "demo-bob-key"})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "upstream GET /v1/snapshots -> 200" in logged
    for secret in ("demo-alice-token", "super-secret-token-value", "demo-bob-key"):
        assert secret not in logged


async def test_a_body_over_the_size_cap_is_refused_before_it_is_held(upstream: Upstream) -> None:
    from snapgraph.errors import UpstreamBadResponse
    from snapgraph.upstream.client import UpstreamClient
    from snapgraph.upstream.models import Credentials

    client = UpstreamClient(upstream.url, timeout=httpx.Timeout(5.0), max_body_bytes=1_000)
    try:
        with pytest.raises(UpstreamBadResponse):
            await client.list_snapshots(Credentials(api_key="demo-alice-key"), None, request_id="r")
        bob = await client.list_snapshots(
            Credentials(api_key="demo-bob-key"), "user", request_id="r"
        )
    finally:
        await client.aclose()
    assert [item["id"] for item in bob] == ["snap-bob-db"]


def test_a_dripping_upstream_is_cut_off_at_the_deadline(start_gateway, servers) -> None:
    import asyncio

    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def drip(request: object) -> StreamingResponse:
        async def body():  # headers at once, then a byte every 0.2 s, never done
            yield b"["
            while True:
                await asyncio.sleep(0.2)
                yield b" "

        return StreamingResponse(body(), media_type="application/json")

    url = servers.enter_context(serve_in_thread(Starlette(routes=[Route("/v1/snapshots", drip)])))
    # Each read comes well within the read timeout; only the deadline can end the fetch.
    gateway = start_gateway(url, upstream_timeout=5, upstream_deadline=1)
    started = time.monotonic()
    error = error_of(gateway)
    assert error["extensions"] == {"code": "UPSTREAM_UNAVAILABLE"}
    assert time.monotonic() - started < 5  # the read timeout alone would never fire
