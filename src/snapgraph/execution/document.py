"""From a document's text to an operation that may run: parse, pick the operation, validate.

Each step raises the request error a client can act on (GRAPHQL_PARSE_FAILED,
OPERATION_RESOLUTION_FAILURE, GRAPHQL_VALIDATION_FAILED or the code of the limit it broke).
Frontends send the same few documents again and again, so documents that passed validation
are kept parsed (LRU, bounded by their total source size: an AST is some 50 times larger
than its text). Documents that fail are not kept: anyone can send unique garbage.

Validation is bounded too: graphql-core's OverlappingFieldsCanBeMerged compares fields that
share a response name pairwise, so 400 `snapshots { id }` siblings cost 0.8 s at its default
budget. Ours stops it after 10,000 units (about 25 ms) with MAX_VALIDATION_WORK_LIMIT;
GraphiQL's introspection query and every document a frontend writes stay far below.

    documents = Documents(schema, DocumentLimits(), max_tokens=5000)
    prepared = documents.prepare("query Mine { snapshots { id } }")
    operation = prepared.operation("Mine")
    documents.validate(prepared)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import graphql.validation.rules.overlapping_fields_can_be_merged as overlapping_fields
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    specified_rules,
    validate,
)

from snapgraph.errors import DocumentInvalid, DocumentParseFailed, OperationResolutionFailure
from snapgraph.execution.inputs import InputLimits, input_literal_rule
from snapgraph.execution.limits import DocumentLimits, limit_rules
from snapgraph.execution.plan import Plan

CACHED_DOCUMENTS = 256
CACHED_SOURCE_BYTES = 1 << 20
CACHEABLE_BYTES = 16 << 10
# Tokens a caller without a credential may send: only schema fields answer them, and
# GraphiQL's introspection query, the largest such document a tool sends, has about 200.
ANONYMOUS_MAX_TOKENS = 1_000
VALIDATION_WORK = 10_000
# graphql-core documents this module attribute as the knob for its comparison budget; it is
# read each time validation starts. tests/test_client_mistakes.py pins the behaviour.
overlapping_fields.MAX_COMPLEXITY_BUDGET = VALIDATION_WORK
# What graphql-core says when a validation budget runs out (tests pin it).
_VALIDATION_ABORTED = "Validation aborted."
# What graphql-core says when `max_tokens` stops the parser (test_client_mistakes.py pins it).
_TOO_MANY_TOKENS = "Syntax Error: Document contains more than"


@dataclass
class PreparedDocument:
    """A parsed document; its validation errors once `Documents.validate` has run on it."""

    document: DocumentNode
    validation_errors: list[GraphQLError] | None = field(default=None)
    source: str = ""
    # Compiled plans by operation name (None: graphql-core runs it); filled by the executor.
    plans: dict[str | None, Plan | None] = field(default_factory=dict)

    def operation(self, name: str | None) -> OperationDefinitionNode:
        """The operation to run: the one named `name`, or the only one."""
        operations = [
            definition
            for definition in self.document.definitions
            if isinstance(definition, OperationDefinitionNode)
        ]
        if name is not None:
            for operation in operations:
                if operation.name is not None and operation.name.value == name:
                    return operation
            shown = name if len(name) <= 100 else name[:100] + "..."
            raise _resolution_failure(f"The document has no operation named {shown!r}.")
        if len(operations) == 1:
            return operations[0]
        if not operations:
            raise _resolution_failure("The document has no operation to run.")
        raise _resolution_failure(
            "The document has several operations: send 'operationName' to choose one."
        )


def _with_limit_code(error: GraphQLError) -> GraphQLError:
    if error.message != _VALIDATION_ABORTED:
        return error
    return GraphQLError(
        "The document is too costly to validate: too many fields share a response name. "
        "Select each field once.",
        extensions={"code": "MAX_VALIDATION_WORK_LIMIT", "limit": VALIDATION_WORK},
    )


def _resolution_failure(message: str) -> OperationResolutionFailure:
    return OperationResolutionFailure([GraphQLError(message)])


class Documents:
    """Parses and validates documents against one schema and one set of limits."""

    def __init__(
        self,
        schema: GraphQLSchema,
        limits: DocumentLimits,
        *,
        max_tokens: int,
        inputs: InputLimits | None = None,
        max_chars: int = 32_768,
    ) -> None:
        self._max_chars = max_chars
        self._schema = schema
        self.input_limits = inputs or InputLimits()
        # Two passes: the limits first, each linear in the document's size, and only a
        # document within them meets graphql-core's own rules, some of which cost far more
        # on a large document (1,200 aliases: 8 ms to refuse, 55 ms to validate in full).
        self._limit_rules = (*limit_rules(limits), input_literal_rule(self.input_limits))
        self._max_tokens = max_tokens
        # With introspection off, "Did you mean ...?" must not describe the schema either.
        self._hide_suggestions = not limits.introspection
        self._cache: OrderedDict[str, PreparedDocument] = OrderedDict()
        self._cached_bytes = 0

    @property
    def cached_bytes(self) -> int:
        """Total source length of the documents kept parsed (at most `CACHED_SOURCE_BYTES`)."""
        return self._cached_bytes

    def prepare(self, query: str, *, anonymous: bool = False) -> PreparedDocument:
        """The parsed document; raises `DocumentParseFailed`. A document longer than
        `max_chars` is refused before it is lexed (a 1 MB comment costs 200 ms to skip); an
        `anonymous` caller's may hold `ANONYMOUS_MAX_TOKENS` tokens at most."""
        prepared = self._cache.get(query)
        if prepared is not None:
            self._cache.move_to_end(query)
            return prepared
        if len(query) > self._max_chars:
            raise DocumentParseFailed(
                [
                    GraphQLError(
                        f"The document is longer than {self._max_chars} characters.",
                        extensions={"code": "MAX_DOCUMENT_SIZE_LIMIT", "limit": self._max_chars},
                    )
                ]
            )
        max_tokens = min(self._max_tokens, ANONYMOUS_MAX_TOKENS) if anonymous else None
        return PreparedDocument(self._parse(query, max_tokens), source=query)

    def validate(self, prepared: PreparedDocument) -> None:
        """Raise `DocumentInvalid` with every rule the document breaks (limits included)."""
        if prepared.validation_errors is None:
            prepared.validation_errors = self._validate(prepared.document, self._limit_rules)
            if not prepared.validation_errors:
                prepared.validation_errors = self._validate(prepared.document, specified_rules)
            if not prepared.validation_errors:
                self._keep(prepared)
        if prepared.validation_errors:
            raise DocumentInvalid(list(prepared.validation_errors))

    def _validate(self, document: DocumentNode, rules: Any) -> list[GraphQLError]:
        return [
            _with_limit_code(error)
            for error in validate(
                self._schema, document, rules, hide_suggestions=self._hide_suggestions
            )
        ]

    def _keep(self, prepared: PreparedDocument) -> None:
        size = len(prepared.source)
        if size > CACHEABLE_BYTES or prepared.source in self._cache:
            return
        self._cache[prepared.source] = prepared
        self._cached_bytes += size
        while len(self._cache) > CACHED_DOCUMENTS or self._cached_bytes > CACHED_SOURCE_BYTES:
            source, _ = self._cache.popitem(last=False)
            self._cached_bytes -= len(source)

    def _parse(self, query: str, max_tokens: int | None) -> DocumentNode:
        limit = max_tokens or self._max_tokens
        try:
            return parse(query, max_tokens=limit)
        except GraphQLError as error:
            if error.message.startswith(_TOO_MANY_TOKENS):
                error = GraphQLError(
                    f"The document has more than {limit} tokens.",
                    extensions={"code": "MAX_TOKENS_LIMIT", "limit": limit},
                )
            raise DocumentParseFailed([error]) from None
