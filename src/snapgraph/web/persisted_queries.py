"""Automatic persisted queries (Apollo's APQ protocol) and the optional safelist.

APQ: a client sends `extensions.persistedQuery.sha256Hash` without the document; on a miss
it gets PERSISTED_QUERY_NOT_FOUND and resends hash and document, which we verify and keep
(LRU, in-process). After that the short hash-only form works, also as a GET.

Safelist: with a file of registered documents (`snapgraph register`), only those run, sent
either by hash or in full; nothing new can be registered at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

from snapgraph.errors import (
    DocumentNotAllowed,
    PersistedQueryHashMismatch,
    PersistedQueryNotFound,
    PersistedQueryNotSupported,
)
from snapgraph.web.protocol import GraphQLRequest


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def load_safelist(path: str) -> dict[str, str]:
    """Read a safelist written by `snapgraph register`: {sha256: document}."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and document_hash(v) == k for k, v in raw.items()
    ):
        raise ValueError("must map each document's sha256 to the document")
    return raw


def register_documents(paths: list[Path]) -> dict[str, str]:
    """Build a safelist from .graphql files (one document per file)."""
    documents = (path.read_text(encoding="utf-8") for path in paths)
    return {document_hash(document): document for document in documents}


class PersistedQueries:
    """Turns hash-only requests into full ones; enforces the safelist when there is one."""

    def __init__(self, max_entries: int, safelist: dict[str, str] | None = None) -> None:
        self.max_entries = max_entries
        self.safelist = safelist
        self._documents: OrderedDict[str, str] = OrderedDict()

    async def resolve(self, request: GraphQLRequest) -> GraphQLRequest:
        sha = _requested_hash(request.extensions)
        if self.safelist is not None:
            return self._from_safelist(request, sha)
        if sha is None:
            return request
        if self.max_entries == 0:
            raise PersistedQueryNotSupported()
        if request.query is None:
            return replace(request, query=self._lookup(sha))
        if document_hash(request.query) != sha:
            raise PersistedQueryHashMismatch()
        self._remember(sha, request.query)
        return request

    def _from_safelist(self, request: GraphQLRequest, sha: str | None) -> GraphQLRequest:
        assert self.safelist is not None
        if request.query is not None:
            if document_hash(request.query) not in self.safelist:
                raise DocumentNotAllowed()
            return request
        if sha is None or sha not in self.safelist:
            raise DocumentNotAllowed()
        return replace(request, query=self.safelist[sha])

    def _lookup(self, sha: str) -> str:
        document = self._documents.get(sha)
        if document is None:
            raise PersistedQueryNotFound()
        self._documents.move_to_end(sha)
        return document

    def _remember(self, sha: str, document: str) -> None:
        self._documents[sha] = document
        self._documents.move_to_end(sha)
        while len(self._documents) > self.max_entries:
            self._documents.popitem(last=False)


def _requested_hash(extensions: dict[str, Any] | None) -> str | None:
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise PersistedQueryNotSupported()
    sha = persisted.get("sha256Hash")
    if not isinstance(sha, str) or len(sha) != 64:
        raise PersistedQueryHashMismatch()
    return sha.lower()
