"""The caller's credential as the gateway takes it in: normalised at the edge.

HTTP lets a field value carry optional whitespace around it (RFC 9110, section 5.5), which the
server keeps and which the upstream client would refuse to send: `X-API-Key: key␠` is the same
key as `X-API-Key: key`. What is left must be sendable as a header at all (visible ASCII,
obs-text, and inner spaces or tabs); a control character makes the credential unusable, and
the caller is told so (UNAUTHENTICATED) before anything is sent upstream, so no caller's
typo can ever count as an upstream failure. So is one over 8 KiB.

    credentials, sendable = edge_credentials(request.headers)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from snapgraph.upstream.models import Credentials

_OPTIONAL_WHITESPACE = " \t"
# Longer than any token or key an issuer hands out (JWTs with many claims stay under 4 KB),
# and within what common HTTP servers accept in one header (8 KiB): a longer one could make
# the upstream's server drop the connection, which must never pass for an upstream failure.
MAX_CREDENTIAL_CHARS = 8 << 10
# A field value as RFC 9110 allows it (ASGI servers hand headers over as latin-1 text).
_SENDABLE = re.compile(r"[\x21-\x7e\x80-\xff]([\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?")


def edge_credentials(headers: Mapping[str, str]) -> tuple[Credentials, bool]:
    """The caller's `Authorization` and `X-API-Key`, optional whitespace stripped (an empty
    value is no value); `sendable` is False when either holds what no header may carry, or
    is longer than `MAX_CREDENTIAL_CHARS`."""
    authorization = _with_canonical_scheme(_normalised(headers.get("authorization")))
    api_key = _normalised(headers.get("x-api-key"))
    sendable = all(_sendable(value) for value in (authorization, api_key))
    return Credentials(authorization=authorization, api_key=api_key), sendable


def _sendable(value: str | None) -> bool:
    return value is None or (
        len(value) <= MAX_CREDENTIAL_CHARS and _SENDABLE.fullmatch(value) is not None
    )


def _with_canonical_scheme(authorization: str | None) -> str | None:
    """`bearer x` and `BEARER   x` as `Bearer x`: an auth scheme is case-insensitive (RFC 9110,
    section 11.1), so the same token is one caller, one cache entry, whatever its spelling."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip(_OPTIONAL_WHITESPACE):
        return authorization
    return "Bearer " + token.lstrip(_OPTIONAL_WHITESPACE)


def _normalised(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip(_OPTIONAL_WHITESPACE) or None
