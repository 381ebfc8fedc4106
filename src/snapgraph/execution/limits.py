"""Document limits (depth, aliases, selections, introspection) as graphql-core validation rules.

Every rule here costs time linear in the document's size, whatever its fragments expand to:
each fragment definition is summarized once (its own fields, and where it spreads other
fragments), and the summaries are combined in dependency order, so a fragment spread twice
is counted twice without being walked twice. Counts saturate just above their limit, so a
fragment bomb (each of 40 fragments spreading the next twice) costs a few additions, not 2^40.

    >>> from graphql import build_schema, parse, specified_rules, validate
    >>> schema = build_schema("type Query { a: Int }")
    >>> rules = limit_rules(DocumentLimits(max_aliases=1))
    >>> [e.extensions for e in validate(schema, parse("{ x: a y: a }"), [*specified_rules, *rules])]
    [{'code': 'MAX_ALIASES_LIMIT'}]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.language import SKIP, VisitorAction

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})
# Root fields that describe the schema: asked for once by a tool, never aliased inside (one
# `__schema` with 49 aliases of `fields` below it made an 872 KB answer in 2.6 KB).
SCHEMA_FIELDS = INTROSPECTION_FIELDS | {"_service"}


@dataclass(frozen=True)
class DocumentLimits:
    """What one operation may ask for, counted with its fragments expanded."""

    max_depth: int = 20
    max_aliases: int = 50
    max_selections: int = 2000
    introspection: bool = True
    # `__schema` and `__type` root fields per operation, fragments expanded: a tool asks for
    # the schema once (GraphiQL: one `__schema`); fifty aliases of it are a 1.4 MB answer.
    max_introspection: int = 3


@functools.lru_cache(maxsize=64)
def limit_rules(limits: DocumentLimits) -> tuple[type[ASTValidationRule], ...]:
    """The validation rules enforcing `limits`: the same class objects for equal limits, built
    once (a class per call would also defeat any cache keyed on the rules).

        >>> limit_rules(DocumentLimits()) is limit_rules(DocumentLimits())
        True
    """
    size_rule = type("BoundDocumentSizeRule", (DocumentSizeRule,), {"limits": limits})
    if limits.introspection:
        return (size_rule,)
    return (size_rule, NoIntrospectionRule)


class NoIntrospectionRule(ASTValidationRule):
    """Rejects `__schema` and `__type` wherever they appear (`__typename` stays allowed).

    Every field of the document is visited, fragment definitions included, so hiding the
    field in a fragment does not get it through.
    """

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value in INTROSPECTION_FIELDS:
            self.report_error(
                GraphQLError(
                    f"Introspection is disabled on this server; '{node.name.value}' "
                    "cannot be queried.",
                    node,
                    extensions={"code": "INTROSPECTION_DISABLED"},
                )
            )


class DocumentSizeRule(ASTValidationRule):
    """Reports each operation over its depth, alias or selection limit (one error each).

    Use it through `limit_rules`, which binds `limits`.
    """

    limits: ClassVar[DocumentLimits]

    def enter_document(self, node: DocumentNode, *_args: Any) -> VisitorAction:
        fragments = _fragment_costs(node, self.limits)
        for definition in node.definitions:
            if isinstance(definition, OperationDefinitionNode):
                cost = _total(_summarize(definition.selection_set), fragments, self.limits)
                for error in _errors(definition, cost, self.limits):
                    self.report_error(error)
        # Everything was measured from the document node: the rule needs no further visits.
        return SKIP


@dataclass(frozen=True)
class _Cost:
    depth: int
    aliases: int
    selections: int
    introspection: int = 0
    schema_aliases: int = 0


@dataclass
class _Summary:
    """One selection set's own fields, and the fragments it spreads at which field level."""

    depth: int = 0
    aliases: int = 0
    selections: int = 0
    introspection: int = 0  # `__schema`/`__type`/`_service` among its top-level fields
    schema_aliases: int = 0  # aliases inside those fields' selections
    spreads: list[tuple[str, int]] = field(default_factory=list)
    schema_spreads: list[str] = field(default_factory=list)  # fragments spread inside them


def _summarize(selection_set: SelectionSetNode) -> _Summary:
    summary = _Summary()
    _add_selections(selection_set, 0, summary)
    return summary


def _add_selections(
    selection_set: SelectionSetNode, level: int, summary: _Summary, in_schema: bool = False
) -> None:
    # Recursion follows field nesting only, which the parser has already recursed through
    # more deeply than this; fragment chains, which can be much longer, are not followed here.
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            summary.depth = max(summary.depth, level + 1)
            summary.aliases += selection.alias is not None
            summary.selections += 1
            schema_root = level == 0 and selection.name.value in SCHEMA_FIELDS
            summary.introspection += schema_root
            summary.schema_aliases += in_schema and selection.alias is not None
            if selection.selection_set is not None:
                inside = in_schema or schema_root
                _add_selections(selection.selection_set, level + 1, summary, inside)
        elif isinstance(selection, InlineFragmentNode):
            _add_selections(selection.selection_set, level, summary, in_schema)
        elif isinstance(selection, FragmentSpreadNode):
            summary.spreads.append((selection.name.value, level))
            if in_schema:
                summary.schema_spreads.append(selection.name.value)


def _fragment_costs(document: DocumentNode, limits: DocumentLimits) -> dict[str, _Cost]:
    """Each fragment's cost with its own spreads expanded, each fragment summarized once."""
    summaries: dict[str, _Summary] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            # A duplicate name is UniqueFragmentNamesRule's to report; the first one counts.
            summaries.setdefault(definition.name.value, _summarize(definition.selection_set))
    costs: dict[str, _Cost] = {}
    for name in _dependencies_first(summaries):
        costs[name] = _total(summaries[name], costs, limits)
    return costs


def _dependencies_first(summaries: dict[str, _Summary]) -> list[str]:
    """Fragment names, each after the fragments it spreads (depth-first post-order).

    Iterative, so a chain of hundreds of fragments cannot exhaust the interpreter's stack.
    A spread that closes a cycle finds its target not yet costed and counts as nothing:
    the document is invalid anyway, and NoFragmentCyclesRule says so.
    """
    order: list[str] = []
    entered: set[str] = set()
    for root in summaries:
        if root in entered:
            continue
        entered.add(root)
        stack = [(root, iter(summaries[root].spreads))]
        while stack:
            name, spreads = stack[-1]
            for child, _level in spreads:
                if child in summaries and child not in entered:
                    entered.add(child)
                    stack.append((child, iter(summaries[child].spreads)))
                    break
            else:
                stack.pop()
                order.append(name)
    return order


def _total(summary: _Summary, fragments: dict[str, _Cost], limits: DocumentLimits) -> _Cost:
    """`summary` with its spreads expanded; unknown (or cyclic) fragments count as nothing."""
    depth, aliases, selections = summary.depth, summary.aliases, summary.selections
    introspection = summary.introspection
    schema_aliases = summary.schema_aliases
    for name in summary.schema_spreads:
        spread = fragments.get(name)
        if spread is not None:  # every alias of a fragment spread inside a schema field
            schema_aliases = min(schema_aliases + spread.aliases, 1)
    for name, level in summary.spreads:
        spread = fragments.get(name)
        if spread is not None:
            # Depth needs no cap: it is at most the number of fields in the document.
            depth = max(depth, level + spread.depth)
            aliases = min(aliases + spread.aliases, limits.max_aliases + 1)
            selections = min(selections + spread.selections, limits.max_selections + 1)
            if level == 0:  # a fragment's top-level fields are the spread's root fields
                introspection = min(
                    introspection + spread.introspection, limits.max_introspection + 1
                )
                schema_aliases = min(schema_aliases + spread.schema_aliases, 1)
    return _Cost(
        depth,
        min(aliases, limits.max_aliases + 1),
        min(selections, limits.max_selections + 1),
        min(introspection, limits.max_introspection + 1),
        min(schema_aliases, 1),
    )


def _errors(
    operation: OperationDefinitionNode, cost: _Cost, limits: DocumentLimits
) -> list[GraphQLError]:
    name = f"The operation '{operation.name.value}'" if operation.name else "The operation"
    # Alias and selection counts saturate at limit + 1, so over the limit means "more than".
    found = [
        (
            cost.depth > limits.max_depth,
            f"{name} is nested {cost.depth} levels deep; the limit is {limits.max_depth}.",
            "MAX_DEPTH_LIMIT",
        ),
        (
            cost.aliases > limits.max_aliases,
            f"{name} uses more than {limits.max_aliases} aliases, counting each fragment "
            f"spread in full; the limit is {limits.max_aliases}.",
            "MAX_ALIASES_LIMIT",
        ),
        (
            cost.introspection > limits.max_introspection,
            f"{name} asks for `__schema`, `__type` or `_service` more than "
            f"{limits.max_introspection} times, counting each fragment spread in full; the "
            f"limit is {limits.max_introspection}.",
            "MAX_INTROSPECTION_LIMIT",
        ),
        (
            cost.schema_aliases > 0,
            f"{name} uses an alias inside `__schema`, `__type` or `_service`; ask for each "
            "part of the schema once.",
            "MAX_INTROSPECTION_LIMIT",
        ),
        (
            cost.selections > limits.max_selections,
            f"{name} selects more than {limits.max_selections} fields once its fragments "
            f"are expanded; the limit is {limits.max_selections}.",
            "MAX_SELECTIONS_LIMIT",
        ),
    ]
    return [
        GraphQLError(message, operation, extensions={"code": code})
        for exceeded, message, code in found
        if exceeded
    ]
