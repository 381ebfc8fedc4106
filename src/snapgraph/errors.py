"""Every error snapgraph raises, in one tree.

    SnapgraphError
    ├── ConfigError                  a setting cannot work (CLI: one line, exit 2)
    └── GatewayError                 reaches the GraphQL caller with `extensions.code`
        ├── NotAuthenticated         UNAUTHENTICATED: no credentials sent to the gateway
        ├── BadRequest               BAD_REQUEST: an unusable GraphQL-over-HTTP request
        └── UpstreamError            the REST upstream failed us
            ├── UpstreamUnauthenticated   401 → UNAUTHENTICATED
            ├── UpstreamForbidden         403 → FORBIDDEN
            ├── UpstreamNotFound          404 → NOT_FOUND
            ├── UpstreamRejectedInput     422 → BAD_USER_INPUT (+ `detail`)
            ├── UpstreamRateLimited       429 → RATE_LIMITED (+ `retryAfter`)
            ├── UpstreamUnavailable       5xx, timeout, connection error, pool exhausted
            └── UpstreamBadResponse       non-JSON, unexpected status, contract breach

Messages are written for the API's users: they never carry a credential, an upstream URL,
an upstream body or a stack trace. Anything that is not a `GatewayError` is masked as
INTERNAL_SERVER_ERROR by the schema (see `graph/schema.py`).
"""

from __future__ import annotations

from typing import Any

_UNPRINTED_SETTINGS = frozenset({"SNAPGRAPH_CACHE_SECRET", "SNAPGRAPH_CACHE_URL"})


class SnapgraphError(Exception):
    """Base of every error snapgraph raises on purpose."""


class ConfigError(SnapgraphError):
    """A setting's value cannot work; `setting` is its environment variable name."""

    def __init__(self, setting: str, problem: str, value: object) -> None:
        self.setting = setting
        self.problem = problem
        shown = "" if value is None or setting in _UNPRINTED_SETTINGS else f" (got {value!r})"
        super().__init__(f"{setting} {problem}{shown}")


class GatewayError(SnapgraphError):
    """An error the GraphQL caller sees, with its `extensions.code`."""

    code = "INTERNAL_SERVER_ERROR"
    message = "Unexpected error."

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        self.extensions: dict[str, Any] = {"code": self.code, **extensions}
        super().__init__(message or self.message)


class NotAuthenticated(GatewayError):
    code = "UNAUTHENTICATED"
    message = "Send 'Authorization: Bearer <token>' or 'X-API-Key: <key>' to see snapshots."


class BadRequest(GatewayError):
    code = "BAD_REQUEST"
    message = "The request is not a valid GraphQL-over-HTTP request."


class UpstreamError(GatewayError):
    """The snapshots service did not give us a usable answer."""


class UpstreamUnauthenticated(UpstreamError):
    code = "UNAUTHENTICATED"
    message = "The snapshots service did not accept your credentials."


class UpstreamForbidden(UpstreamError):
    code = "FORBIDDEN"
    message = "Your credentials are not allowed to list snapshots."


class UpstreamNotFound(UpstreamError):
    code = "NOT_FOUND"
    message = "The snapshots service has no such resource."


class UpstreamRejectedInput(UpstreamError):
    code = "BAD_USER_INPUT"
    message = "The snapshots service rejected the request's arguments."


class UpstreamRateLimited(UpstreamError):
    code = "RATE_LIMITED"
    message = "The snapshots service is rate limiting you; retry later."


class UpstreamUnavailable(UpstreamError):
    code = "UPSTREAM_UNAVAILABLE"
    message = "The snapshots service is unavailable; retry later."


class UpstreamBadResponse(UpstreamError):
    code = "UPSTREAM_BAD_RESPONSE"
    message = "The snapshots service sent an answer that breaks its contract."
