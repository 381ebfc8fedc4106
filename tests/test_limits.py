"""Document limits as validation rules: what they reject, and that they stay linear."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
from graphql import GraphQLSchema, get_introspection_query, parse, specified_rules, validate

from snapgraph.execution.limits import DocumentLimits, limit_rules
from snapgraph.graph.schema import build_schema

SCHEMA: GraphQLSchema = build_schema()._schema


def errors_of(document: str, limits: DocumentLimits | None = None) -> list[Any]:
    rules = [*specified_rules, *limit_rules(limits or DocumentLimits())]
    return validate(SCHEMA, parse(document), rules)


def codes_of(document: str, limits: DocumentLimits | None = None) -> list[str]:
    return [error.extensions.get("code") for error in errors_of(document, limits)]


def fragment_bomb(levels: int) -> str:
    """Each fragment spreads the next twice: 2**levels selections from a few hundred bytes."""
    lines = ["query Bomb { ...F0 }"]
    lines += [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    lines.append(f"fragment F{levels} on Query {{ __typename }}")
    return "\n".join(lines)


def python_calls(work: Callable[[], object]) -> int:
    """How many Python functions `work` calls: a deterministic measure of its cost."""
    calls = 0

    def count(_frame: Any, event: str, _arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


@pytest.mark.parametrize("levels", [22, 40])
def test_a_fragment_bomb_is_rejected_for_its_selections(levels: int) -> None:
    errors = errors_of(fragment_bomb(levels))
    assert [e.extensions["code"] for e in errors] == ["MAX_SELECTIONS_LIMIT"]
    assert errors[0].message == (
        "The operation 'Bomb' selects more than 2000 fields once its fragments are expanded; "
        "the limit is 2000."
    )


def test_a_fragment_bomb_costs_as_little_work_as_a_plain_document() -> None:
    # Counting calls instead of timing: the same every run, on any machine. A walk that
    # expands fragments makes millions of calls for 22 levels (2**22 selections) and
    # 2**18 times more for 40; a linear one grows with the bytes (the 40-level bomb is
    # about 3.5 times the 30-field document's work).
    plain = "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }"
    rules = [*specified_rules, *limit_rules(DocumentLimits())]

    def work(document: str) -> int:
        ast = parse(document)
        return python_calls(lambda: validate(SCHEMA, ast, rules))

    plain_work, bomb_22 = work(plain), work(fragment_bomb(22))
    assert bomb_22 < 10 * plain_work  # checked first: an exponential walk never ends on 40
    bomb_40 = work(fragment_bomb(40))
    assert bomb_40 < 10 * plain_work
    assert bomb_40 < 3 * bomb_22


def test_a_63_level_introspection_chain_is_rejected_for_its_depth() -> None:
    levels = ["__schema", "types", "fields", "type", *["ofType"] * 58, "kind"]
    document = "query Deep { " + " { ".join(levels) + " }" * (len(levels) - 1) + " }"
    errors = errors_of(document)
    assert [e.extensions["code"] for e in errors] == ["MAX_DEPTH_LIMIT"]
    assert errors[0].message == "The operation 'Deep' is nested 63 levels deep; the limit is 20."


def test_graphiqls_full_introspection_query_passes_the_default_limits() -> None:
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
    )
    assert errors_of(query) == []


def test_depth_counts_every_field_level_through_fragments_typename_included() -> None:
    document = "{ snapshots { ...S } } fragment S on Snapshot { __typename }"
    assert codes_of(document, DocumentLimits(max_depth=2)) == []
    assert codes_of(document, DocumentLimits(max_depth=1)) == ["MAX_DEPTH_LIMIT"]


def test_aliases_in_a_fragment_spread_twice_count_twice() -> None:
    document = "query Q { ...F ...F } fragment F on Query { a: __typename b: __typename }"
    assert codes_of(document, DocumentLimits(max_aliases=4)) == []
    errors = errors_of(document, DocumentLimits(max_aliases=3))
    assert [e.extensions["code"] for e in errors] == ["MAX_ALIASES_LIMIT"]
    assert "The operation 'Q' uses more than 3 aliases" in errors[0].message


def test_skipped_selections_still_count() -> None:
    document = "{ a: __typename @skip(if: true) b: __typename @include(if: false) }"
    assert codes_of(document, DocumentLimits(max_aliases=1)) == ["MAX_ALIASES_LIMIT"]


def test_selections_count_every_field_once_fragments_are_expanded() -> None:
    # 2 spreads x (snapshots + id + name) = 6 selections.
    document = "{ ...F ...F } fragment F on Query { snapshots { id name } }"
    assert codes_of(document, DocumentLimits(max_selections=6)) == []
    assert codes_of(document, DocumentLimits(max_selections=5)) == ["MAX_SELECTIONS_LIMIT"]


def test_each_exceeded_limit_is_one_error() -> None:
    document = "{ x: snapshots { y: id } z: snapshots { id } }"
    limits = DocumentLimits(max_depth=1, max_aliases=2, max_selections=3)
    assert codes_of(document, limits) == [
        "MAX_DEPTH_LIMIT",
        "MAX_ALIASES_LIMIT",
        "MAX_SELECTIONS_LIMIT",
    ]


def test_each_operation_is_measured_on_its_own() -> None:
    document = "query Small { __typename } query Big { snapshots { id } }"
    errors = errors_of(document, DocumentLimits(max_depth=1))
    assert [e.message for e in errors] == [
        "The operation 'Big' is nested 2 levels deep; the limit is 1."
    ]


@pytest.mark.parametrize(
    "document",
    [
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Snapshot") { name } }',
        "{ ...Hidden } fragment Hidden on Query { __schema { types { name } } }",
        '{ ... on Query { t: __type(name: "Query") { name } } }',
    ],
)
def test_disabled_introspection_rejects_schema_and_type_anywhere(document: str) -> None:
    assert codes_of(document, DocumentLimits(introspection=False)) == ["INTROSPECTION_DISABLED"]
    assert codes_of(document) == []


def test_disabled_introspection_still_allows_typename() -> None:
    document = "{ __typename snapshots { __typename id } }"
    assert codes_of(document, DocumentLimits(introspection=False)) == []


def test_fragment_cycles_and_unknown_fragments_neither_hang_nor_crash() -> None:
    cycle = "{ ...A } fragment A on Query { __typename ...B } fragment B on Query { ...A }"
    assert codes_of(cycle, DocumentLimits(introspection=False)) == [None]  # NoFragmentCycles
    unknown = "{ ...A } fragment A on Query { __typename ...Missing }"
    assert [e.message for e in errors_of(unknown)] == ["Unknown fragment 'Missing'."]


def test_a_long_chain_of_fragments_is_measured_without_recursing_through_it() -> None:
    # Thousands of fragments in a row: a rule recursing per spread would overflow the stack
    # and never report the selections (graphql-core would only say "Validation aborted.",
    # which it also adds here, before its own rules recurse through the chain).
    chain = [f"fragment F{i} on Query {{ __typename ...F{i + 1} }}" for i in range(3000)]
    document = "\n".join(["{ ...F0 }", *chain, "fragment F3000 on Query { __typename }"])
    errors = validate(SCHEMA, parse(document), limit_rules(DocumentLimits()))
    assert [e.message for e in errors] == [
        "The operation selects more than 2000 fields once its fragments are expanded; "
        "the limit is 2000.",
        "Validation aborted.",
    ]


def test_equal_limits_get_the_same_rule_classes() -> None:
    # Validation caches key on the rule classes: new classes per request would never hit.
    assert limit_rules(DocumentLimits(max_depth=7)) is limit_rules(DocumentLimits(max_depth=7))
    assert limit_rules(DocumentLimits(max_depth=7)) != limit_rules(DocumentLimits(max_depth=8))
