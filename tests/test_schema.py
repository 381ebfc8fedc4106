from __future__ import annotations

from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import _get_validate_cache

from snapgraph.graph.schema import build_schema


def test_a_repeated_document_is_parsed_and_validated_once() -> None:
    schema = build_schema()
    document = "{ __typename repeatedDocumentProbe: __typename }"
    schema.execute_sync(document)
    validated, parsed = _get_validate_cache(256).cache_info(), _get_parse_cache(256).cache_info()
    schema.execute_sync(document)
    assert _get_validate_cache(256).cache_info().hits == validated.hits + 1
    assert _get_parse_cache(256).cache_info().hits == parsed.hits + 1
