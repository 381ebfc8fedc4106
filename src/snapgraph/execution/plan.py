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

`snapshotsConnection` compiles too: its selection, a fixed tree of small objects
(`SnapshotConnection`, `PageInfo`, `SnapshotEdge`) around the same `Snapshot` leaves, becomes
`Branch`es, merged per request into a `PageShape` that builds the page's answer.

`compile_plan` answers None for whatever it does not cover (introspection, `_service`,
`_entities`, mutations, fields added later): that runs through graphql-core, the reference
that the compiled path is tested against (tests/test_compiled_plans.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import attrgetter, itemgetter
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

from snapgraph.graph.pages import Page
from snapgraph.upstream.models import ROW_FIELDS

ROOT_FIELDS = frozenset({"snapshots", "snapshot", "snapshotsConnection", "__typename"})
TYPENAME = "__typename"
CONNECTION = "snapshotsConnection"
# The objects of a connection: each field's type when it is an object ("Snapshot": the
# leaves of `ItemShape`), None for a leaf. Checked against the schema at startup.
CONNECTION_TYPES: dict[str, dict[str, str | None]] = {
    "SnapshotConnection": {"edges": "SnapshotEdge", "pageInfo": "PageInfo", "totalCount": None},
    "SnapshotEdge": {"cursor": None, "node": "Snapshot"},
    "PageInfo": {
        "hasNextPage": None,
        "hasPreviousPage": None,
        "startCursor": None,
        "endCursor": None,
    },
}
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
class Branch:
    """A field under a connection as written: its response key and name, the conditions on
    its way, and what it selects: further branches, or (for `node`) a snapshot's leaves."""

    conditions: Conditions
    key: str
    name: str
    children: tuple[Branch, ...] = ()
    leaves: tuple[LeafField, ...] = ()

    @property
    def leaf_count(self) -> int:
        """Leaf selections as written, as `resolvers.selected_leaves` counts them."""
        if not self.children and not self.leaves:
            return 1
        return len(self.leaves) + sum(child.leaf_count for child in self.children)


@dataclass(frozen=True, slots=True)
class RootField:
    """One root field node as written, with the leaves of its selection flattened (for a
    connection, its branches)."""

    conditions: Conditions
    key: str
    name: str
    node: FieldNode
    leaves: tuple[LeafField, ...]
    branches: tuple[Branch, ...] = ()

    @property
    def leaf_count(self) -> int:
        return len(self.leaves) + sum(branch.leaf_count for branch in self.branches)


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


# A value of a page's answer, read from the page (and for an edge, its index on the page).
PageGetter = Callable[[Page], Any]
EdgeGetter = Callable[[Page, int], Any]


@dataclass(frozen=True, slots=True)
class PageShape:
    """What a connection's page becomes: its keys in order, each with how to read it."""

    fields: tuple[tuple[str, PageGetter], ...]

    def build(self, page: Page) -> dict[str, Any]:
        return {key: read(page) for key, read in self.fields}


@dataclass(frozen=True, slots=True)
class RootGroup:
    """A root response key after CollectFields: its field, every node merged into it, and the
    shape of its items (of a connection: the shape of its page)."""

    key: str
    name: str
    nodes: tuple[FieldNode, ...]
    shape: ItemShape
    leaf_count: int  # selections as written, over every node: the result budget's unit
    page: PageShape | None = None


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
        _check_connection_types(schema)

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
            branches: tuple[Branch, ...] = ()
            if node.name.value == CONNECTION and node.selection_set is not None:
                branches = self._branches(node.selection_set, "SnapshotConnection")
            elif node.selection_set is not None:
                leaves = tuple(self._leaves(node.selection_set))
            roots.append(RootField(path, _key(node), node.name.value, node, leaves, branches))
        return roots

    def _branches(self, selections: SelectionSetNode, type_name: str) -> tuple[Branch, ...]:
        branches = []
        fields = CONNECTION_TYPES[type_name]
        for node, path in self._flatten(selections, (), type_name):
            name = node.name.value
            if name != TYPENAME and name not in fields:
                raise _NotCovered
            child_type = fields.get(name)
            branch = Branch(path, _key(node), name)
            if child_type == "Snapshot" and node.selection_set is not None:
                branch = replace(branch, leaves=tuple(self._leaves(node.selection_set)))
            elif child_type is not None and node.selection_set is not None:
                branch = replace(branch, children=self._branches(node.selection_set, child_type))
            branches.append(branch)
        return tuple(branches)

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


def _check_connection_types(schema: GraphQLSchema) -> None:
    """The connection's types hold exactly the fields `CONNECTION_TYPES` knows, or the
    gateway does not start (a field added later must be taught to the plan, not dropped)."""
    for type_name, fields in CONNECTION_TYPES.items():
        graphql_type = schema.get_type(type_name)
        assert isinstance(graphql_type, GraphQLObjectType)
        if set(graphql_type.fields) != set(fields):
            raise RuntimeError(f"{type_name}'s fields are not the plan's: teach the plan")


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
    leaf_count = sum(root.leaf_count for root in unique)
    nodes = tuple(root.node for root in unique)
    page = None
    if roots[0].name == CONNECTION:
        page = _page_shape([root.branches for root in roots], variables)
    return RootGroup(key, roots[0].name, nodes, _shape(first), leaf_count, page)


def _collect(
    selections: list[tuple[Branch, ...]], variables: VariableValues
) -> dict[str, list[Branch]]:
    """CollectFields over the selections of every node merged into one field: the branches
    that run, by response key, in the order their keys first appear."""
    merged: dict[str, list[Branch]] = {}
    for branches in selections:
        for branch in branches:
            if _included(branch.conditions, variables):
                merged.setdefault(branch.key, []).append(branch)
    return merged


def _page_shape(selections: list[tuple[Branch, ...]], variables: VariableValues) -> PageShape:
    fields: list[tuple[str, PageGetter]] = []
    for key, branches in _collect(selections, variables).items():
        name = branches[0].name
        children = [branch.children for branch in branches]
        read: PageGetter
        if name == "edges":
            read = _edges_reader(children, variables)
        elif name == "pageInfo":
            read = _object_reader(_page_info_fields(children, variables))
        elif name == "totalCount":
            read = attrgetter("total_count")
        else:
            read = _constant("SnapshotConnection")
        fields.append((key, read))
    return PageShape(tuple(fields))


_PAGE_INFO = {
    "hasNextPage": attrgetter("has_next_page"),
    "hasPreviousPage": attrgetter("has_previous_page"),
    "startCursor": attrgetter("start_cursor"),
    "endCursor": attrgetter("end_cursor"),
}


def _page_info_fields(
    selections: list[tuple[Branch, ...]], variables: VariableValues
) -> list[tuple[str, PageGetter]]:
    return [
        (key, _PAGE_INFO.get(branches[0].name) or _constant("PageInfo"))
        for key, branches in _collect(selections, variables).items()
    ]


def _object_reader(fields: list[tuple[str, PageGetter]]) -> PageGetter:
    return lambda page: {key: read(page) for key, read in fields}


def _edges_reader(selections: list[tuple[Branch, ...]], variables: VariableValues) -> PageGetter:
    fields: list[tuple[str, EdgeGetter]] = []
    for key, branches in _collect(selections, variables).items():
        name = branches[0].name
        read: EdgeGetter
        if name == "node":
            read = _node_reader([branch.leaves for branch in branches], variables)
        elif name == "cursor":
            read = _cursor
        else:
            read = _edge_typename
        fields.append((key, read))
    return lambda page: [
        {key: read(page, index) for key, read in fields} for index in range(len(page.rows))
    ]


def _node_reader(selections: list[tuple[LeafField, ...]], variables: VariableValues) -> EdgeGetter:
    first: dict[str, int | None] = {}
    for leaves in selections:
        for leaf in leaves:
            if leaf.key not in first and _included(leaf.conditions, variables):
                first[leaf.key] = leaf.index
    build = _shape(first).build
    return lambda page, index: build(page.rows[index])


def _cursor(page: Page, index: int) -> str:
    return page.cursor(index)


def _edge_typename(page: Page, index: int) -> str:
    return "SnapshotEdge"


def _constant(value: str) -> PageGetter:
    return lambda page: value


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
