"""From a document's text to an operation that may run: parse, pick the operation, validate.

Each step raises the request error a client can act on (GRAPHQL_PARSE_FAILED,
OPERATION_RESOLUTION_FAILURE, GRAPHQL_VALIDATION_FAILED or the code of the limit it broke).
Frontends send the same few documents again and again, so parsed documents and their
validation outcome are kept (LRU), small documents only: a cache of 1 MiB hostile documents
would be a memory leak with extra steps.

    documents = Documents(schema, DocumentLimits(), max_tokens=5000)
    prepared = documents.prepare("query Mine { snapshots { id } }")
    operation = prepared.operation("Mine")
    documents.validate(prepared)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

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
from snapgraph.execution.limits import DocumentLimits, limit_rules

CACHED_DOCUMENTS = 256
CACHEABLE_BYTES = 64 << 10
# What graphql-core says when `max_tokens` stops the parser (test_client_mistakes.py pins it).
_TOO_MANY_TOKENS = "Syntax Error: Document contains more than"


@dataclass
class PreparedDocument:
    """A parsed document; its validation errors once `Documents.validate` has run on it."""

    document: DocumentNode
    validation_errors: list[GraphQLError] | None = field(default=None)

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
            raise _resolution_failure(f"The document has no operation named {name!r}.")
        if len(operations) == 1:
            return operations[0]
        if not operations:
            raise _resolution_failure("The document has no operation to run.")
        raise _resolution_failure(
            "The document has several operations: send 'operationName' to choose one."
        )


def _resolution_failure(message: str) -> OperationResolutionFailure:
    return OperationResolutionFailure([GraphQLError(message)])


class Documents:
    """Parses and validates documents against one schema and one set of limits."""

    def __init__(self, schema: GraphQLSchema, limits: DocumentLimits, *, max_tokens: int) -> None:
        self._schema = schema
        self._rules = (*specified_rules, *limit_rules(limits))
        self._max_tokens = max_tokens
        # With introspection off, "Did you mean ...?" must not describe the schema either.
        self._hide_suggestions = not limits.introspection
        self._cache: OrderedDict[str, PreparedDocument] = OrderedDict()

    def prepare(self, query: str) -> PreparedDocument:
        """The parsed document; raises `DocumentParseFailed`."""
        prepared = self._cache.get(query)
        if prepared is not None:
            self._cache.move_to_end(query)
            return prepared
        prepared = PreparedDocument(self._parse(query))
        if len(query) <= CACHEABLE_BYTES:
            self._cache[query] = prepared
            if len(self._cache) > CACHED_DOCUMENTS:
                self._cache.popitem(last=False)
        return prepared

    def validate(self, prepared: PreparedDocument) -> None:
        """Raise `DocumentInvalid` with every rule the document breaks (limits included)."""
        if prepared.validation_errors is None:
            prepared.validation_errors = validate(
                self._schema,
                prepared.document,
                self._rules,
                hide_suggestions=self._hide_suggestions,
            )
        if prepared.validation_errors:
            raise DocumentInvalid(list(prepared.validation_errors))

    def _parse(self, query: str) -> DocumentNode:
        try:
            return parse(query, max_tokens=self._max_tokens)
        except GraphQLError as error:
            if error.message.startswith(_TOO_MANY_TOKENS):
                error = GraphQLError(
                    f"The document has more than {self._max_tokens} tokens.",
                    extensions={"code": "MAX_TOKENS_LIMIT", "limit": self._max_tokens},
                )
            raise DocumentParseFailed([error]) from None
