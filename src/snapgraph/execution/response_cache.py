"""Serialized answers to repeated operations, so a polling frontend costs a dict lookup.

An answer is keyed by the exact upstream answers it was built from (their `version`: the
caller's HMAC cache key and the fetch id) plus the document, operation name and variables. So
it can only be served to a caller whose own cache entry is the very one it came from, and it
can never outlive that entry: a refetch has a new fetch id, and the old answer is unreachable
until the LRU drops it. Stale answers are never kept (their age changes by the second).

    cache = ResponseCache(max_bytes=64 << 20)
    cached = cache.get(key) or cache.put(key, CachedResponse(orjson.dumps(answer)))
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

ResponseKey = tuple[tuple[str, ...], str, str | None, bytes]


@dataclass(frozen=True)
class CachedResponse:
    """A serialized answer and the codes of its errors (for the access line)."""

    body: bytes
    error_codes: tuple[str, ...] = ()


# What an entry costs beyond its body: its key's document text, and bookkeeping.
ENTRY_OVERHEAD = 256


def response_key(
    versions: tuple[str, ...], query: str, operation_name: str | None, variables: Any
) -> ResponseKey:
    """`variables` are the operation's coerced ones: values it does not declare are not part
    of the key (they would let anyone mint unique entries at will)."""
    canonical = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    return versions, query, operation_name, canonical


class ResponseCache:
    """LRU of response bodies, bounded by total bytes (0 turns it off)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bodies: OrderedDict[ResponseKey, CachedResponse] = OrderedDict()
        self._bytes = 0

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def get(self, key: ResponseKey) -> CachedResponse | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: ResponseKey, body: CachedResponse) -> CachedResponse:
        size = _size(key, body)
        if size > self.max_bytes // 4:
            return body  # one huge answer must not flush everyone else's
        self._drop(key)
        self._bodies[key] = body
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._bodies)))
        return body

    def _drop(self, key: ResponseKey) -> None:
        body = self._bodies.pop(key, None)
        if body is not None:
            self._bytes -= _size(key, body)


def _size(key: ResponseKey, response: CachedResponse) -> int:
    return len(response.body) + len(key[1]) + len(key[3]) + ENTRY_OVERHEAD
