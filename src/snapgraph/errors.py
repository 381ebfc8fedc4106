"""Every error snapgraph raises, in one tree.

    SnapgraphError
    ├── ConfigError                  a setting cannot work (CLI: one line, exit 2)
    └── GatewayError                 reaches the GraphQL caller with `extensions.code`
        ├── NotAuthenticated         UNAUTHENTICATED: no credentials sent to the gateway
        ├── RequestError             the HTTP request cannot run; `http_status` says why
        │   ├── BadRequest                400 BAD_REQUEST: malformed GraphQL-over-HTTP request
        │   ├── NotAcceptable             406: `Accept` allows nothing we can answer with
        │   ├── UnsupportedMediaType      415: a POST body that is not application/json (UTF-8)
        │   ├── PersistedQueryNotFound    200 PERSISTED_QUERY_NOT_FOUND (APQ: send the document)
        │   ├── PersistedQueryNotSupported 200 PERSISTED_QUERY_NOT_SUPPORTED
        │   ├── PersistedQueryHashMismatch 400 BAD_REQUEST: the hash is not the document's
        │   ├── DocumentNotAllowed        400 PERSISTED_QUERY_NOT_ALLOWED (safelist mode)
        │   ├── OperationNotAllowed       405 METHOD_NOT_ALLOWED: a mutation sent with GET,
        │   │                             or a method other than GET and POST
        │   └── GraphQLRequestInvalid     the GraphQL request itself is wrong: 400 under
        │       │                         application/graphql-response+json, 200 under
        │       │                         application/json (GraphQL-over-HTTP); `errors` lists
        │       │                         every problem, each with its own code
        │       ├── DocumentParseFailed        GRAPHQL_PARSE_FAILED, MAX_TOKENS_LIMIT
        │       ├── DocumentInvalid            GRAPHQL_VALIDATION_FAILED, MAX_*_LIMIT,
        │       │                              INTROSPECTION_DISABLED
        │       ├── OperationResolutionFailure OPERATION_RESOLUTION_FAILURE
        │       ├── VariablesInvalid           BAD_USER_INPUT: a variable is missing, wrong
        │       │                              or over an input limit
        │       ├── CredentialsRequired        UNAUTHENTICATED: no usable credential for an
        │       │                              operation that reads snapshots (401 / 200)
        │       ├── ResponseTooLarge           MAX_RESPONSE_BYTES_LIMIT: built, over the byte
        │       │                              limit, dropped
        │       └── AnswerTooLarge             MAX_RESULT_VALUES_LIMIT: refused before building
        ├── BadUserInput             BAD_USER_INPUT: a field's input is wrong (a representation)
        ├── ResultTooLarge           MAX_RESULT_VALUES_LIMIT: the answer would be too large
        └── UpstreamError            the REST upstream failed us
            ├── UpstreamUnauthenticated   401 → UNAUTHENTICATED
            ├── UpstreamForbidden         403 → FORBIDDEN
            ├── UpstreamNotFound          404 → NOT_FOUND
            ├── UpstreamRejectedInput     422 → BAD_USER_INPUT (+ `detail`)
            ├── UpstreamRateLimited       429 → RATE_LIMITED (+ `retryAfter`)
            ├── UpstreamUnavailable       5xx, timeout, connection error, pool exhausted
            └── UpstreamBadResponse       non-JSON, unexpected status, contract breach

Field-level errors (`NotAuthenticated`, `BadUserInput`, `UpstreamError`) land at the field's
path beside the data that could be served; `ResultTooLarge`, raised by a resolver, becomes the
request error `AnswerTooLarge`.

Messages are written for the API's users: they never carry a credential, an upstream URL,
an upstream body or a stack trace. Anything that is not a `GatewayError` (or graphql-core's
own error about a caller's value) is masked as INTERNAL_SERVER_ERROR by the executor
(`execution/executor.py`), and logged once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from graphql import GraphQLError

_UNPRINTED_SETTINGS = frozenset({"SNAPGRAPH_CACHE_SECRET", "SNAPGRAPH_CACHE_URL"})


class SnapgraphError(Exception):
    """Base of every error snapgraph raises on purpose."""


class ConfigError(SnapgraphError):
    """A setting's value cannot work; `setting` is its environment variable name."""

    def __init__(self, setting: str, problem: str, value: object) -> None:
        self.setting = setting
        shown = "" if value is None or setting in _UNPRINTED_SETTINGS else f" (got {value!r})"
        super().__init__(f"{setting} {problem}{shown}")


class GatewayError(SnapgraphError):
    """An error the GraphQL caller sees, with its `extensions.code`."""

    code = "INTERNAL_SERVER_ERROR"
    message = "Unexpected error."

    def __init__(self, message: str | None = None, **extensions: Any) -> None:
        self.extensions: dict[str, Any] = {"code": self.code, **extensions}
        # graphql-core's located_error reads `.message` when there is one, not str(error).
        self.message = message or type(self).message
        super().__init__(self.message)


class NotAuthenticated(GatewayError):
    code = "UNAUTHENTICATED"
    message = "Send 'Authorization: Bearer <token>' or 'X-API-Key: <key>' to see snapshots."


class RequestError(GatewayError):
    """A request refused before execution; the HTTP answer's status is `http_status`."""

    http_status = 400


class BadRequest(RequestError):
    code = "BAD_REQUEST"
    message = "The request is not a valid GraphQL-over-HTTP request."


class NotAcceptable(RequestError):
    code = "NOT_ACCEPTABLE"
    message = "Accept application/graphql-response+json or application/json."
    http_status = 406


class UnsupportedMediaType(RequestError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    message = "Send the request body as application/json (UTF-8)."
    http_status = 415


class PersistedQueryNotFound(RequestError):
    # APQ clients treat this as "send the full document", whatever the status; 200 is what
    # Apollo's clients and servers use.
    code = "PERSISTED_QUERY_NOT_FOUND"
    message = "PersistedQueryNotFound"
    http_status = 200


class PersistedQueryNotSupported(RequestError):
    code = "PERSISTED_QUERY_NOT_SUPPORTED"
    message = "PersistedQueryNotSupported"
    http_status = 200


class PersistedQueryHashMismatch(RequestError):
    code = "BAD_REQUEST"
    message = "provided sha does not match query"


class DocumentNotAllowed(RequestError):
    code = "PERSISTED_QUERY_NOT_ALLOWED"
    message = "Only registered documents may run on this gateway."


class OperationNotAllowed(RequestError):
    code = "METHOD_NOT_ALLOWED"
    message = "Send GraphQL requests with POST (or queries with GET)."
    http_status = 405


class GraphQLRequestInvalid(RequestError):
    """The GraphQL request cannot run; `errors` says every reason, each with its own code.

    GraphQL-over-HTTP: a JSON client (`application/json`) gets these with HTTP 200, a
    `application/graphql-response+json` client with 400.
    """

    legacy_http_status = 200

    def __init__(self, errors: list[GraphQLError]) -> None:
        self.errors = [_with_code(error, self.code) for error in errors]
        super().__init__(self.errors[0].message if self.errors else None)

    @classmethod
    def of(cls, message: str, **extensions: Any) -> Self:
        """The error with one reason, under this class's code (and `extensions`)."""
        from graphql import GraphQLError

        return cls([GraphQLError(message, extensions={"code": cls.code, **extensions})])


def _with_code(error: GraphQLError, default_code: str) -> GraphQLError:
    """Give a graphql-core error an `extensions.code` unless a rule already chose one."""
    if not (error.extensions or {}).get("code"):
        error.extensions = {**(error.extensions or {}), "code": default_code}
    return error


class DocumentParseFailed(GraphQLRequestInvalid):
    code = "GRAPHQL_PARSE_FAILED"


class DocumentInvalid(GraphQLRequestInvalid):
    code = "GRAPHQL_VALIDATION_FAILED"


class OperationResolutionFailure(GraphQLRequestInvalid):
    code = "OPERATION_RESOLUTION_FAILURE"


class VariablesInvalid(GraphQLRequestInvalid):
    code = "BAD_USER_INPUT"


class CredentialsRequired(GraphQLRequestInvalid):
    """The operation reads the caller's snapshots and the caller sent no credential (or one
    that no HTTP request could carry): refused before its variables are even looked at."""

    code = "UNAUTHENTICATED"
    http_status = 401

    @classmethod
    def missing(cls) -> CredentialsRequired:
        return cls.of(NotAuthenticated.message)

    @classmethod
    def unsendable(cls) -> CredentialsRequired:
        return cls.of(
            "The credential holds characters no HTTP header may carry, or is over 8 KiB; send "
            "the token or key exactly as issued."
        )

    @classmethod
    def body_too_large(cls, max_bytes: int) -> CredentialsRequired:
        return cls.of(
            f"A request without a credential may carry at most {max_bytes} bytes; send "
            "'Authorization: Bearer <token>' or 'X-API-Key: <key>'."
        )


class ResponseTooLarge(GraphQLRequestInvalid):
    """The serialized answer is over the byte limit: dropped, not sent nor held."""

    code = "MAX_RESPONSE_BYTES_LIMIT"

    @classmethod
    def over(cls, limit: int) -> ResponseTooLarge:
        message = (
            f"The answer would be larger than {limit} bytes; select fewer fields or aliases, "
            "or read the list a page at a time (snapshotsConnection)."
        )
        return cls.of(message, limit=limit)


class AnswerTooLarge(GraphQLRequestInvalid):
    """The answer would hold more values than the limit: refused as a whole, before any of it
    is built (a field error would still have built the fields before it)."""

    code = "MAX_RESULT_VALUES_LIMIT"

    @classmethod
    def over(cls, limit: int) -> AnswerTooLarge:
        message = (
            f"The answer would hold more than {limit} values; select fewer fields or aliases, "
            "or narrow the list with `type`."
        )
        return cls.of(message, limit=limit)


class BadUserInput(GatewayError):
    code = "BAD_USER_INPUT"
    message = "The request's input is not valid."


class ResultTooLarge(GatewayError):
    """Raised by a resolver over the result budget; the executor turns it into the request
    error `AnswerTooLarge`, so the answer is the same whichever path noticed."""

    code = "MAX_RESULT_VALUES_LIMIT"
    message = "The answer would hold too many values; select fewer fields or aliases."


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
    # Whether the same GET may be tried again at once (the connection was never made).
    retryable = False
    # Whether the upstream itself is out (no connection, or no answer in time), rather than
    # failing one caller's request: what the circuit breaker opens on at once.
    outage = False


class UpstreamBadResponse(UpstreamError):
    code = "UPSTREAM_BAD_RESPONSE"
    message = "The snapshots service sent an answer that breaks its contract."
