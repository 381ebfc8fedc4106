"""Serialized answers to repeated operations, so a polling frontend costs a dict lookup.

An answer is keyed by the exact upstream answers it was built from (their `version`: the
caller's HMAC cache key and the fetch id) plus the document, operation name and variables. So
it can only be served to a caller whose own cache entry is the very one it came from, and it
can never outlive that entry: a refetch has a new fetch id, and the first answer kept for the
new version drops every answer of the caller's older one (unreachable from then on), so a
caller's thousand distinct requests hold memory only until their list is fetched again. Stale
answers are never kept (their age changes by the second).

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
        # Per list (a version's part before its fetch id): the fetch id answers were last
        # kept for, and the keys kept under each version.
        self._current: dict[str, str] = {}
        self._keys_of: dict[str, set[ResponseKey]] = {}

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
        for version in key[0]:
            self._supersede(version)
            self._keys_of.setdefault(version, set()).add(key)
        self._bodies[key] = body
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._bodies)))
        return body

    def _supersede(self, version: str) -> None:
        """`version` is its list's newest: drop the answers built from the one before."""
        owner, _, fetch_id = version.rpartition(":")
        previous = self._current.get(owner)
        self._current[owner] = fetch_id
        if previous is not None and previous != fetch_id:
            for key in list(self._keys_of.get(f"{owner}:{previous}", ())):
                self._drop(key)

    def _drop(self, key: ResponseKey) -> None:
        body = self._bodies.pop(key, None)
        if body is None:
            return
        self._bytes -= _size(key, body)
        for version in key[0]:
            keys = self._keys_of.get(version)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._keys_of[version]
                    owner = version.rpartition(":")[0]
                    if self._current.get(owner) == version.rpartition(":")[2]:
                        del self._current[owner]


def _size(key: ResponseKey, response: CachedResponse) -> int:
    return len(response.body) + len(key[1]) + len(key[3]) + ENTRY_OVERHEAD
