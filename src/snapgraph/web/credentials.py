"""The caller's credential as the gateway takes it in: normalised at the edge.

HTTP lets a field value carry optional whitespace around it (RFC 9110, section 5.5), which the
server keeps and which the upstream client would refuse to send: `X-API-Key: key␠` is the same
key as `X-API-Key: key`. What is left must be sendable as a header at all (visible ASCII,
obs-text, and inner spaces or tabs); a control character makes the credential unusable, and
the caller is told so (UNAUTHENTICATED) before anything is sent upstream, so no caller's
typo can ever count as an upstream failure.

    credentials, sendable = edge_credentials(request.headers)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from snapgraph.upstream.models import Credentials

_OPTIONAL_WHITESPACE = " \t"
# A field value as RFC 9110 allows it (ASGI servers hand headers over as latin-1 text).
_SENDABLE = re.compile(r"[\x21-\x7e\x80-\xff]([\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?")


def edge_credentials(headers: Mapping[str, str]) -> tuple[Credentials, bool]:
    """The caller's `Authorization` and `X-API-Key`, optional whitespace stripped (an empty
    value is no value); `sendable` is False when either holds what no header may carry."""
    authorization = _normalised(headers.get("authorization"))
    api_key = _normalised(headers.get("x-api-key"))
    sendable = all(
        value is None or _SENDABLE.fullmatch(value) for value in (authorization, api_key)
    )
    return Credentials(authorization=authorization, api_key=api_key), sendable


def _normalised(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip(_OPTIONAL_WHITESPACE) or None
