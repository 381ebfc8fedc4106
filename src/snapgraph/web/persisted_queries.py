"""Automatic persisted queries (Apollo's APQ protocol) and the optional safelist.

APQ: a client sends `extensions.persistedQuery.sha256Hash` without the document; on a miss
it gets PERSISTED_QUERY_NOT_FOUND and resends hash and document, which we verify. The store
keeps the document only once the caller has parsed it and checked its limits (`remember`),
so a document that cannot run never takes space; it is bounded by entries and by bytes
(LRU). After that the short hash-only form works, also as a GET.

Safelist: with a file of registered documents (`snapgraph register`), only those run, sent
either by hash or in full; a full document matches a registered one when both print the
same once parsed (whitespace, commas and comments do not count). Nothing new can be
registered at run time. Optionally a federation router's own queries (`_service`,
`_entities`) are admitted too.

    >>> store = PersistedQueries(max_entries=100)
    >>> apq = {"persistedQuery": {"version": 1, "sha256Hash": document_hash("{ a }")}}
    >>> resolved = store.resolve(GraphQLRequest("{ a }", None, None, apq))
    >>> resolved.pending_registration == (document_hash("{ a }"), "{ a }")
    True
    >>> store.remember(*resolved.pending_registration)  # once "{ a }" parsed and validated
    True
    >>> store.resolve(GraphQLRequest(None, None, None, apq)).request.query
    '{ a }'
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
    print_ast,
)

from snapgraph.errors import (
    DocumentNotAllowed,
    PersistedQueryHashMismatch,
    PersistedQueryNotFound,
    PersistedQueryNotSupported,
)
from snapgraph.web.protocol import GraphQLRequest

# Accounted per stored document on top of its UTF-8 bytes: the hash key (a 64-character
# str), the bytes object's header and the ordered dict's entry.
ENTRY_OVERHEAD_BYTES = 256
FEDERATION_ROOT_FIELDS = frozenset({"_service", "_entities", "__typename"})


def document_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def normalize(document: str, max_tokens: int | None = None) -> str:
    """The document as graphql-core prints it: comments, commas and layout do not count.

    Raises `GraphQLError` when it does not parse (or has more than `max_tokens` tokens).

        >>> normalize("query   { a, b } # why")
        '{\\n  a\\n  b\\n}'
    """
    return print_ast(parse(document, no_location=True, max_tokens=max_tokens))


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


class Registration(NamedTuple):
    """A document to keep under its hash once the caller has prepared it successfully."""

    sha256: str
    document: str


@dataclass(frozen=True)
class ResolvedRequest:
    """The request with its document; `pending_registration` is for `remember`."""

    request: GraphQLRequest
    pending_registration: Registration | None = None


class PersistedQueries:
    """Turns hash-only requests into full ones; enforces the safelist when there is one.

    The endpoint resolves first and registers later, so only documents that parsed and
    passed the limits are ever stored:

        resolved = persisted_queries.resolve(request)
        ...  # parse, validate, check limits of resolved.request.query
        if resolved.pending_registration is not None:
            persisted_queries.remember(*resolved.pending_registration)
    """

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int = 16 << 20,
        max_document_bytes: int = 32 << 10,
        safelist: dict[str, str] | None = None,
        allow_federation: bool = False,
        max_tokens: int = 5_000,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_document_bytes = max_document_bytes
        self.safelist = safelist
        self.allow_federation = allow_federation
        self.max_tokens = max_tokens
        self._normalized = _normalized_index(safelist or {})
        # Documents are kept as UTF-8 bytes so that memory is what the byte bound counts:
        # a str with one emoji in it takes 4 bytes per character.
        self._documents: OrderedDict[str, bytes] = OrderedDict()
        self._stored_bytes = 0

    @property
    def stored_bytes(self) -> int:
        """Bytes accounted to the stored documents (never more than `max_bytes`)."""
        return self._stored_bytes

    @property
    def stored_entries(self) -> int:
        """Documents held (never more than `max_entries`)."""
        return len(self._documents)

    def resolve(self, request: GraphQLRequest) -> ResolvedRequest:
        """The request with its document, or raise the APQ or safelist error that applies."""
        sha = _requested_hash(request.extensions)
        if self.safelist is not None:
            return ResolvedRequest(self._from_safelist(request, sha))
        if sha is None:
            return ResolvedRequest(request)
        if self.max_entries == 0:
            raise PersistedQueryNotSupported()
        if request.query is None:
            return ResolvedRequest(replace(request, query=self._lookup(sha)))
        if document_hash(request.query) != sha:
            raise PersistedQueryHashMismatch()
        if not self._fits(len(request.query.encode())):
            return ResolvedRequest(request)  # runs, but is never stored
        return ResolvedRequest(request, Registration(sha, request.query))

    def remember(self, sha256: str, document: str) -> bool:
        """Keep `document` under `sha256` (least recently used go first); False if too big.

        Raises `ValueError` when `sha256` is not the document's: the store never maps a
        hash to another document, whatever its caller does.
        """
        if document_hash(document) != sha256:
            raise ValueError("sha256 is not the document's hash")
        encoded = document.encode()
        if self.safelist is not None or not self._fits(len(encoded)):
            return False
        self._forget(sha256)
        self._documents[sha256] = encoded
        self._stored_bytes += _accounted(encoded)
        while len(self._documents) > self.max_entries or self._stored_bytes > self.max_bytes:
            self._forget(next(iter(self._documents)))
        return True

    def _fits(self, size: int) -> bool:
        return size <= self.max_document_bytes and size + ENTRY_OVERHEAD_BYTES <= self.max_bytes

    def _forget(self, sha256: str) -> None:
        encoded = self._documents.pop(sha256, None)
        if encoded is not None:
            self._stored_bytes -= _accounted(encoded)

    def _lookup(self, sha256: str) -> str:
        encoded = self._documents.get(sha256)
        if encoded is None:
            raise PersistedQueryNotFound()
        self._documents.move_to_end(sha256)
        return encoded.decode()

    def operation_names(self) -> list[str]:
        """The names of the safelist's operations (none without a safelist): an operator's
        own choice, so each may have a metrics label of its own."""
        names: list[str] = []
        for document in (self.safelist or {}).values():
            try:
                parsed = parse(document, no_location=True)
            except GraphQLError:
                continue  # the safelist's own check refuses it when it is sent
            names += [
                definition.name.value
                for definition in parsed.definitions
                if isinstance(definition, OperationDefinitionNode) and definition.name
            ]
        return names

    def _from_safelist(self, request: GraphQLRequest, sha: str | None) -> GraphQLRequest:
        assert self.safelist is not None
        if request.query is None:
            if sha is None or sha not in self.safelist:
                raise DocumentNotAllowed()
            return replace(request, query=self.safelist[sha])
        if document_hash(request.query) in self.safelist:
            return request
        return replace(request, query=self._admitted(request.query))

    def _admitted(self, document: str) -> str:
        """The document to run for a full document not registered byte for byte."""
        try:
            parsed = parse(document, no_location=True, max_tokens=self.max_tokens)
        except GraphQLError:
            raise DocumentNotAllowed() from None
        registered = self._normalized.get(print_ast(parsed))
        if registered is not None:
            # Run the registered text: the same operation, and every client that formats
            # it differently shares one entry in the parser and validation caches.
            return registered
        if self.allow_federation and is_federation_document(parsed):
            return document
        raise DocumentNotAllowed()


def is_federation_document(document: DocumentNode) -> bool:
    """Whether every operation is a query selecting only `_service` and `_entities` at its
    root (and `__typename`): what a federation router sends to compose and query a subgraph.

        >>> is_federation_document(parse("{ _service { sdl } }"))
        True
        >>> is_federation_document(parse("{ _service { sdl } snapshots { id } }"))
        False
    """
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return bool(operations) and all(
        operation.operation is OperationType.QUERY
        and _root_fields(operation.selection_set, fragments) <= FEDERATION_ROOT_FIELDS
        for operation in operations
    )


def _root_fields(
    selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode]
) -> set[str]:
    """The names of the fields selected at this level, through (inline) fragments."""
    names: set[str] = set()
    pending = [selection_set]
    spread: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                # Each fragment once: cycles end here; unknown fragments fail validation.
                if name in fragments and name not in spread:
                    spread.add(name)
                    pending.append(fragments[name].selection_set)
    return names


def _normalized_index(safelist: dict[str, str]) -> dict[str, str]:
    """Normalized text -> registered document, built once when the safelist is loaded."""
    index: dict[str, str] = {}
    for document in safelist.values():
        try:
            index.setdefault(normalize(document), document)
        except GraphQLError:
            continue  # still allowed by hash; it fails as a syntax error when run
    return index


def _accounted(encoded: bytes) -> int:
    return len(encoded) + ENTRY_OVERHEAD_BYTES


def _requested_hash(extensions: dict[str, Any] | None) -> str | None:
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    version = persisted.get("version") if isinstance(persisted, dict) else None
    if not isinstance(persisted, dict) or type(version) is not int or version != 1:
        raise PersistedQueryNotSupported()
    sha = persisted.get("sha256Hash")
    if not isinstance(sha, str) or len(sha) != 64:
        raise PersistedQueryHashMismatch()
    return sha.lower()
