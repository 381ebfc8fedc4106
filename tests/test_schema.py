from __future__ import annotations

import pytest
from graphql import GraphQLSchema

import snapgraph.execution.document as document_module
from snapgraph.errors import DocumentInvalid
from snapgraph.execution.document import Documents
from snapgraph.execution.limits import DocumentLimits
from snapgraph.graph.schema import build_schema, graphql_schema


def test_strawberry_still_holds_the_graphql_core_schema_where_we_read_it() -> None:
    schema = graphql_schema(build_schema())
    assert isinstance(schema, GraphQLSchema)
    assert schema.query_type is not None and "snapshots" in schema.query_type.fields


def test_a_repeated_document_is_parsed_and_validated_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"parse": 0, "validate": 0}
    real_parse, real_validate = document_module.parse, document_module.validate

    def counted(name: str, real):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(document_module, "parse", counted("parse", real_parse))
    monkeypatch.setattr(document_module, "validate", counted("validate", real_validate))
    documents = Documents(graphql_schema(build_schema()), DocumentLimits(), max_tokens=5000)
    for _ in range(3):
        documents.validate(documents.prepare("{ __typename again: __typename }"))
    # One validation, in two passes: the limits first, then graphql-core's own rules.
    assert calls == {"parse": 1, "validate": 2}


def test_a_huge_document_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    documents = Documents(graphql_schema(build_schema()), DocumentLimits(), max_tokens=5000)
    padding = "#" + "x" * document_module.CACHEABLE_BYTES + "\n"
    first = documents.prepare(padding + "{ __typename }")
    assert documents.prepare(padding + "{ __typename }") is not first
    small = documents.prepare("{ __typename }")
    documents.validate(small)
    assert documents.prepare("{ __typename }") is small
    invalid = documents.prepare("{ nope }")
    with pytest.raises(DocumentInvalid):
        documents.validate(invalid)
    assert documents.prepare("{ nope }") is not invalid  # what fails is never kept
