"""The only code that speaks HTTP to the snapshots service.

One `UpstreamClient` lives as long as the app: one pooled `httpx.AsyncClient` with explicit
timeouts and a cookie jar that refuses every cookie (a shared jar would replay one caller's
`Set-Cookie` to the next caller). Every httpx error and every unusable status is translated
here, once, into the `UpstreamError` tree; callers never see httpx.

    client = UpstreamClient("https://sandbox.example", timeout=httpx.Timeout(5.0))
    items = await client.list_snapshots(Credentials(api_key="..."), "user", request_id="r1")
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx
import orjson

from snapgraph._version import __version__
from snapgraph.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamForbidden,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejectedInput,
    UpstreamUnauthenticated,
    UpstreamUnavailable,
)
from snapgraph.metrics import Metrics
from snapgraph.tracing import Tracing
from snapgraph.upstream.models import Credentials, ListType
from snapgraph.upstream.resilience import RETRY_STATUSES, CircuitBreaker, RetryPolicy

logger = logging.getLogger("snapgraph.upstream")

SNAPSHOTS_PATH = "/v1/snapshots"
USER_AGENT = f"snapgraph/{__version__}"
# ~100k snapshots; a larger answer is a runaway upstream, not a list to hold in memory.
MAX_BODY_BYTES = 64 << 20
# A day: the longest wait worth telling a caller. A larger Retry-After (a bug, or an upstream
# that wants us gone) would make clients schedule a retry for years, and its value might not
# even fit a JSON number that every client reads exactly.
MAX_RETRY_AFTER = 86_400
# A 422's `detail` is passed to the caller; these caps keep an upstream from pushing
# megabytes through us (the contract's errors have a few entries of a few words).
MAX_DETAIL_ITEMS = 20
MAX_DETAIL_CHARS = 200
# What a number the stdlib parser read but we refuse to hold becomes: a float, like the float
# orjson makes of any integer beyond 64 bits, so it fails every field's strict validation
# (the item is reported broken), and finite, so the cache's JSON round trip keeps it (orjson
# would write an infinity as null, and null is a valid `vcpu_count`).
_OUT_OF_RANGE = sys.float_info.max
_NESTING_HEADROOM = 8

_STATUS_ERRORS: dict[int, type[UpstreamError]] = {
    401: UpstreamUnauthenticated,
    403: UpstreamForbidden,
    404: UpstreamNotFound,
}


@dataclass(frozen=True)
class UpstreamAnswer:
    """What the upstream sent back, its body read in full (and capped)."""

    status: int
    headers: httpx.Headers
    content: bytes
    resends: int = 0  # the retries it took


@dataclass
class UpstreamHealth:
    """What the last exchange with the upstream said: "up" when it answered at all (401 and
    404 included), "down" after a 5xx, a timeout or a refused connection."""

    state: str = "unknown"
    seen_at: float = float("-inf")  # time.monotonic() of the last exchange

    @property
    def seen_seconds_ago(self) -> float | None:
        age = time.monotonic() - self.seen_at
        return round(age, 1) if age != float("inf") else None

    def note(self, up: bool) -> None:
        self.state = "up" if up else "down"
        self.seen_at = time.monotonic()


class _RefuseAllCookies(DefaultCookiePolicy):
    """Never store nor send a cookie: the client is shared by every caller."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


class UpstreamClient:
    """A long-lived client for `GET /v1/snapshots`; close it with `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: httpx.Timeout,
        max_connections: int = 100,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        metrics: Metrics | None = None,
        deadline: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._tracing = tracing or Tracing()
        self.health = UpstreamHealth()
        # httpx's timeouts bound each read; an upstream that drips a byte just inside the
        # read timeout would hold a connection forever. This bounds the whole fetch.
        self._deadline = deadline
        self._retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._metrics = metrics or Metrics()
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            cookies=CookieJar(policy=_RefuseAllCookies()),
            follow_redirects=False,  # a redirect must never carry credentials elsewhere
            trust_env=trust_env,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_snapshots(
        self,
        credentials: Credentials,
        list_type: ListType | str | None,
        *,
        request_id: str,
        caller: str | None = None,
    ) -> list[Any]:
        """Return the upstream's JSON array, unvalidated item by item (see models). `caller`
        names who asks, for the breaker (an opaque key, never a credential)."""
        params = {"type": list_type} if list_type is not None else None
        headers = _forwarded_headers(credentials, request_id)
        started = time.perf_counter()
        url = self._url(params) if self._tracing.enabled else ""
        with self._tracing.upstream_fetch(url, headers) as span:
            answer = await self._send_with_retries(params, headers, request_id, caller)
            span.answered(answer.status, resends=answer.resends)
        self.health.note(up=answer.status not in RETRY_STATUSES)
        elapsed = time.perf_counter() - started
        self._observe(str(answer.status), elapsed)
        logger.info(
            "upstream GET %s -> %d in %.1f ms [request %s]",
            SNAPSHOTS_PATH,
            answer.status,
            elapsed * 1000,
            request_id,
        )
        if answer.status != 200:
            raise error_from_response(answer)
        return _json_array(answer.content)

    async def _send_with_retries(
        self,
        params: dict[str, str] | None,
        headers: dict[bytes, bytes],
        request_id: str,
        caller: str | None,
    ) -> UpstreamAnswer:
        """`_send`, tried again as the retry policy allows, all within one deadline; refused
        at once while the breaker is open (or this caller is backed off). The breaker hears
        one verdict per fetch."""
        if not self.breaker.allow(caller):
            backed_off = self.breaker.backing_off(caller)
            outcome = "caller_backoff" if backed_off else "circuit_open"
            self._metrics.upstream_requests.labels(outcome=outcome).inc()
            raise UpstreamUnavailable()
        deadline_at = time.monotonic() + (self._deadline or float("inf"))
        attempt = 0
        try:
            while True:
                try:
                    answer = await self._send(params, headers, request_id, deadline_at)
                except UpstreamUnavailable as error:
                    if error.retryable and await self._wait_to_retry(attempt, None, deadline_at):
                        attempt += 1
                        continue
                    self.breaker.record(ok=False, caller=caller, outage=error.outage)
                    raise
                if answer.status in RETRY_STATUSES:
                    retry_after = _retry_after_seconds(answer.headers)
                    if await self._wait_to_retry(attempt, retry_after, deadline_at):
                        attempt += 1
                        continue
                # A 401 or 404: the upstream works. A 502, 503 or 504 is its infrastructure
                # saying it is out; a 500 may be about this caller's data alone.
                self.breaker.record(
                    ok=answer.status < 500,
                    caller=caller,
                    outage=answer.status in RETRY_STATUSES,
                )
                return replace(answer, resends=attempt)
        finally:
            self.breaker.release()  # a probe that ended without a verdict (cancelled, too big)

    def _url(self, params: dict[str, str] | None) -> str:
        """The URL a fetch goes to (httpx appends the path to the base URL's own path)."""
        return str(self._http.build_request("GET", SNAPSHOTS_PATH, params=params).url)

    async def _wait_to_retry(
        self, attempt: int, retry_after: float | None, deadline_at: float
    ) -> bool:
        """Sleep before the next attempt, if there is one and it fits in the deadline."""
        if attempt >= self._retry.retries:
            return False
        delay = self._retry.delay(attempt, retry_after)
        if time.monotonic() + delay >= deadline_at:
            return False
        self._metrics.upstream_requests.labels(outcome="retry").inc()
        await asyncio.sleep(delay)
        return True

    async def is_reachable(self) -> bool:
        """True when the upstream answers HTTP at all (401 without credentials counts)."""
        try:
            async with asyncio.timeout(self._deadline):
                response = await self._http.get(SNAPSHOTS_PATH)
        except (httpx.HTTPError, TimeoutError):
            self.health.note(up=False)
            return False
        self.health.note(up=response.status_code < 500)
        return response.status_code < 500

    async def _send(
        self,
        params: dict[str, str] | None,
        headers: dict[bytes, bytes],
        request_id: str,
        deadline_at: float,
    ) -> UpstreamAnswer:
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(_loop_time(deadline_at)):
                request = self._http.build_request(
                    "GET", SNAPSHOTS_PATH, params=params, headers=headers
                )
                response = await self._http.send(request, stream=True)
                try:
                    body = await self._read_capped(response)
                finally:
                    await response.aclose()
            return UpstreamAnswer(response.status_code, response.headers, body)
        except TimeoutError as exc:
            # Not an outage by itself: one caller's list may be the slow one (the breaker
            # blames the upstream when several callers' fetches fail).
            self._observe("timeout", time.perf_counter() - started)
            logger.warning("upstream deadline passed [request %s]", request_id)
            raise UpstreamUnavailable() from exc
        except httpx.LocalProtocolError as exc:
            # httpx refused to send what the caller gave us (a header value no HTTP request
            # may carry): the caller's fault, never the upstream's. The endpoint refuses such
            # credentials first; this keeps any other path from reaching the breaker.
            logger.info("upstream request not sendable [request %s]", request_id)
            raise UpstreamUnauthenticated() from exc
        except httpx.HTTPError as exc:
            outcome = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport_error"
            self._observe(outcome, time.perf_counter() - started)
            logger.warning("upstream %s [request %s]", type(exc).__name__, request_id)
            error = UpstreamUnavailable()
            # Never connected: the GET cannot have reached the upstream, trying again is safe.
            error.retryable = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            # Only a connection never made is the upstream's outage for certain: one that
            # dropped mid-exchange or answered too slowly may be about this caller's request
            # (a header its server refuses by closing, a list slow to build).
            error.outage = error.retryable
            if error.outage:
                self.health.note(up=False)
            raise error from exc
        except UpstreamBadResponse:
            self._observe("too_large", time.perf_counter() - started)
            raise

    def _observe(self, outcome: str, seconds: float) -> None:
        self._metrics.upstream_requests.labels(outcome=outcome).inc()
        self._metrics.upstream_seconds.observe(seconds)

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """The body, refusing one larger than `max_body_bytes` before it fills our memory."""
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_body_bytes:
                raise UpstreamBadResponse()
            chunks.append(chunk)
        return b"".join(chunks)


def _loop_time(monotonic_at: float) -> float | None:
    """`time.monotonic()` moment as the running loop's clock reads it (None: no deadline)."""
    if monotonic_at == float("inf"):
        return None
    return asyncio.get_running_loop().time() + (monotonic_at - time.monotonic())


def _forwarded_headers(credentials: Credentials, request_id: str) -> dict[bytes, bytes]:
    # Forward the caller's bytes exactly (ASGI decodes headers as latin-1): httpx would refuse
    # a non-ASCII str, and the upstream, not the gateway, decides what a valid credential is.
    headers = {b"X-Request-ID": request_id.encode()}
    if credentials.authorization is not None:
        headers[b"Authorization"] = credentials.authorization.encode("latin-1")
    if credentials.api_key is not None:
        headers[b"X-API-Key"] = credentials.api_key.encode("latin-1")
    return headers


def error_from_response(answer: UpstreamAnswer) -> UpstreamError:
    """Map a non-200 answer to the error the GraphQL caller sees (never echoing the body)."""
    status = answer.status
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]()
    if status == 422:
        return UpstreamRejectedInput(detail=_validation_detail(answer.content))
    if status == 429:
        return UpstreamRateLimited(retryAfter=_retry_after_seconds(answer.headers))
    if status >= 500:
        return UpstreamUnavailable()
    return UpstreamBadResponse()


def _json_array(content: bytes) -> list[Any]:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        # orjson refuses a whole body for one number beyond a double's range (a 400-digit
        # integer); the stdlib parser, bounded below, lets us report just that item broken.
        # It also lets through what orjson would refuse to write back (a lone surrogate, or
        # nesting past 254 levels): such items are dropped here, to be reported as broken.
        body = _parse_json_bounded(content)
        if isinstance(body, list):
            body = _storable_items(body)
    if not isinstance(body, list):
        raise UpstreamBadResponse()
    return body


def _parse_json_bounded(content: bytes) -> Any:
    """The body as strict JSON, each number that no field could hold made `_OUT_OF_RANGE`."""
    try:
        return json.loads(
            content.decode("utf-8"),  # as orjson: UTF-8 only, where the stdlib would guess
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting past the stack
        raise UpstreamBadResponse() from exc


def _parse_int(text: str) -> int | float:
    # Never build a huge int: int() takes quadratic time in the digits, and refuses more than
    # 4,300 of them (which would fail the whole body). 20 characters hold every 64-bit
    # integer, signed or not: all that orjson parses as an int.
    if len(text) <= 20 and -(2**63) <= (value := int(text)) <= 2**64 - 1:
        return value
    return _OUT_OF_RANGE


def _parse_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _OUT_OF_RANGE


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON")  # NaN and Infinity: the stdlib's extension


def _storable_items(items: list[Any]) -> list[Any]:
    """The items, each one the cache could not store with orjson replaced by None (reported
    as a broken item): nested deeper than orjson writes, or a lone surrogate in a string (the
    stdlib parser lets one through)."""
    if _storable(items):
        return items
    return [item if _storable([item]) else None for item in items]


def _storable(value: Any) -> bool:
    # orjson writes at most 254 levels; the cache entry adds two around the items, and the
    # spare levels leave room for the entry's format to grow.
    for _ in range(_NESTING_HEADROOM):
        value = [value]
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def _validation_detail(content: bytes) -> list[dict[str, Any]]:
    """The contract's `detail` list, reduced to its documented shape and capped in size: each
    entry exactly `loc` (strings), `msg` and `type`, whatever the upstream sent."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return []
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, list):
        return []
    entries = [item for item in detail if isinstance(item, dict)][:MAX_DETAIL_ITEMS]
    return [_detail_entry(item) for item in entries]


def _detail_entry(item: dict[str, Any]) -> dict[str, Any]:
    loc = item.get("loc")
    parts = loc[:MAX_DETAIL_ITEMS] if isinstance(loc, list) else []
    return {
        "loc": [_capped(str(part)) for part in parts if _is_loc_part(part)],
        "msg": _capped(item.get("msg")),
        "type": _capped(item.get("type")),
    }


def _is_loc_part(part: object) -> bool:
    return isinstance(part, str) or (isinstance(part, int) and not isinstance(part, bool))


def _capped(value: object) -> str:
    return value[:MAX_DETAIL_CHARS] if isinstance(value, str) else ""


def _retry_after_seconds(headers: httpx.Headers) -> int | None:
    """`Retry-After` in seconds, from 0 to `MAX_RETRY_AFTER`; None when it cannot be read."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # isdigit alone admits "²", which int() refuses
        digits = value.lstrip("0") or "0"
        seconds = int(digits) if len(digits) <= 6 else MAX_RETRY_AFTER  # never a huge int
    else:
        try:
            seconds = round(parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError, OverflowError):
            return None
    return min(max(seconds, 0), MAX_RETRY_AFTER)
