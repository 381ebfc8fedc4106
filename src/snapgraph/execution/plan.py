"""Compiled plans: a validated query over the flat part of the schema, turned into a recipe.

`Query.snapshots` and `Query.snapshot` return `Snapshot`s, whose fields are all scalars, and
the rows in the cache already hold each field's output value. So a document that selects only
those (plus `__typename`) compiles, once, into: the root fields in document order, each with
its `@skip`/`@include` conditions, arguments and the leaf fields an item gets, in order. Running
a plan is then a dict built per item from its row, instead of one graphql-core `execute_field`
per value.

The plan follows the spec's CollectFields: fragments (named and inline) are flattened, the
first included occurrence of a response key decides its position, and fields that share a
response key merge. Conditions are evaluated per request, not per item.

`compile_plan` answers None for whatever it does not cover (introspection, `_service`,
`_entities`, mutations, fields added later): that runs through graphql-core, the reference
that the compiled path is tested against (tests/test_compiled_plans.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLIncludeDirective,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLSkipDirective,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
)
from graphql.execution import VariableValues, get_directive_values

from snapgraph.upstream.models import ROW_FIELDS

ROOT_FIELDS = frozenset({"snapshots", "snapshot", "__typename"})
TYPENAME = "__typename"
# Where a selection node's skip/include directives are: the nodes along the path that carry one.
Conditions = tuple[SelectionNode, ...]


@dataclass(frozen=True, slots=True)
class LeafField:
    """One leaf selection of an item: its response key and the row index it reads (None:
    `__typename`), under the conditions of every node on its path."""

    conditions: Conditions
    key: str
    index: int | None


@dataclass(frozen=True, slots=True)
class RootField:
    """One root field node as written, with the leaves of its selection flattened."""

    conditions: Conditions
    key: str
    name: str
    node: FieldNode
    leaves: tuple[LeafField, ...]


@dataclass(frozen=True, slots=True)
class ItemShape:
    """What each item of a root field becomes: keys in order, and how to read them."""

    keys: tuple[str, ...]
    read: Any  # itemgetter over the row, values in `keys` order (typename added after)
    typename_at: tuple[int, ...]  # positions of `__typename` keys, filled with "Snapshot"

    def build(self, row: Any) -> dict[str, Any]:
        values = self.read(row)
        if self.typename_at:
            values = list(values)
            for position in self.typename_at:
                values.insert(position, "Snapshot")
        return dict(zip(self.keys, values, strict=True))


@dataclass(frozen=True, slots=True)
class RootGroup:
    """A root response key after CollectFields: its field, every node merged into it, and the
    shape of its items."""

    key: str
    name: str
    nodes: tuple[FieldNode, ...]
    shape: ItemShape
    leaf_count: int  # selections as written, over every node: the result budget's unit


@dataclass(frozen=True)
class Plan:
    """A compiled operation: run it with `groups(variables)` and the rows of each group."""

    operation: OperationDefinitionNode
    roots: tuple[RootField, ...]

    def groups(self, variables: VariableValues) -> list[RootGroup]:
        """The root fields that run for these variables, merged by response key, in order."""
        merged: dict[str, list[RootField]] = {}
        for root in self.roots:
            if _included(root.conditions, variables):
                merged.setdefault(root.key, []).append(root)
        return [_group(key, roots, variables) for key, roots in merged.items()]


class Planner:
    """Compiles operations of one schema (whose `Snapshot` fields must all be row values)."""

    def __init__(self, schema: GraphQLSchema) -> None:
        snapshot_type = schema.get_type("Snapshot")
        assert isinstance(snapshot_type, GraphQLObjectType)
        self._indexes = _row_indexes(snapshot_type)

    def compile(self, document: DocumentNode, operation: OperationDefinitionNode) -> Plan | None:
        """The operation's plan, or None when it selects anything the plan does not cover."""
        if operation.operation != OperationType.QUERY:
            return None
        fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        try:
            roots = _Compiler(fragments, self._indexes).roots(operation.selection_set, ())
        except _NotCovered:
            return None
        return Plan(operation, tuple(roots))


class _NotCovered(Exception):
    """The document selects something only graphql-core runs."""


class _Compiler:
    def __init__(
        self, fragments: dict[str, FragmentDefinitionNode], indexes: dict[str, int]
    ) -> None:
        self._fragments = fragments
        self._indexes = indexes

    def roots(self, selections: SelectionSetNode, conditions: Conditions) -> list[RootField]:
        roots: list[RootField] = []
        for node, path in self._flatten(selections, conditions, "Query"):
            if node.name.value not in ROOT_FIELDS:
                raise _NotCovered
            leaves: tuple[LeafField, ...] = ()
            if node.selection_set is not None:
                leaves = tuple(self._leaves(node.selection_set))
            roots.append(RootField(path, _key(node), node.name.value, node, leaves))
        return roots

    def _leaves(self, selections: SelectionSetNode) -> list[LeafField]:
        leaves = []
        for node, path in self._flatten(selections, (), "Snapshot"):
            name = node.name.value
            if node.selection_set is not None or (name != TYPENAME and name not in self._indexes):
                raise _NotCovered
            leaves.append(LeafField(path, _key(node), self._indexes.get(name)))
        return leaves

    def _flatten(
        self, selections: SelectionSetNode, conditions: Conditions, type_name: str
    ) -> list[tuple[FieldNode, Conditions]]:
        """Every field under `selections`, fragments expanded, with the conditions on its way."""
        fields: list[tuple[FieldNode, Conditions]] = []
        for node in selections.selections:
            path = (*conditions, node) if _has_conditions(node) else conditions
            if isinstance(node, FieldNode):
                fields.append((node, path))
            elif isinstance(node, InlineFragmentNode):
                condition = node.type_condition.name.value if node.type_condition else None
                self._check_type(condition, type_name)
                fields += self._flatten(node.selection_set, path, type_name)
            elif isinstance(node, FragmentSpreadNode):
                fragment = self._fragments[node.name.value]
                self._check_type(fragment.type_condition.name.value, type_name)
                fields += self._flatten(fragment.selection_set, path, type_name)
        return fields

    @staticmethod
    def _check_type(condition: str | None, type_name: str) -> None:
        if condition is not None and condition != type_name:
            raise _NotCovered  # an abstract type condition: not in this flat schema today


def _row_indexes(snapshot_type: GraphQLObjectType) -> dict[str, int]:
    """GraphQL field name -> index in a row. Strawberry names fields in camelCase after the
    Python attribute, which is the contract's field name (`ROW_FIELDS`). A field that is not
    a row value fails here, at startup, rather than being served wrong."""
    indexes = {}
    for graphql_name in snapshot_type.fields:
        python_name = "".join(f"_{c.lower()}" if c.isupper() else c for c in graphql_name)
        if python_name not in ROW_FIELDS:
            raise RuntimeError(f"Snapshot.{graphql_name} is not a row value: teach the plan")
        indexes[graphql_name] = ROW_FIELDS.index(python_name)
    return indexes


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _has_conditions(node: Any) -> bool:
    return any(directive.name.value in ("skip", "include") for directive in node.directives or ())


def _included(conditions: Conditions, variables: VariableValues) -> bool:
    for node in conditions:
        skip = get_directive_values(GraphQLSkipDirective, node, variables)
        if skip is not None and skip["if"] is True:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, variables)
        if include is not None and include["if"] is False:
            return False
    return True


def _group(key: str, roots: list[RootField], variables: VariableValues) -> RootGroup:
    first: dict[str, int | None] = {}
    for root in roots:
        for leaf in root.leaves:
            if leaf.key not in first and _included(leaf.conditions, variables):
                first[leaf.key] = leaf.index
    # A fragment spread twice yields the same node twice; CollectFields keeps it once.
    unique = list({id(root.node): root for root in reversed(roots)}.values())[::-1]
    leaf_count = sum(len(root.leaves) for root in unique)
    nodes = tuple(root.node for root in unique)
    return RootGroup(key, roots[0].name, nodes, _shape(first), leaf_count)


def _shape(fields: dict[str, int | None]) -> ItemShape:
    keys = tuple(fields)
    indexes = [index for index in fields.values() if index is not None]
    typename_at = tuple(position for position, index in enumerate(fields.values()) if index is None)
    if not indexes:
        read: Any = lambda row: ()  # noqa: E731 - a getter of nothing: only __typename
    elif len(indexes) == 1:
        only = indexes[0]
        read = lambda row: (row[only],)  # noqa: E731 - itemgetter(i) returns a bare value
    else:
        read = itemgetter(*indexes)
    return ItemShape(keys, read, typename_at)
