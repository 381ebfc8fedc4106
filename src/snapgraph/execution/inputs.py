"""What a request carries besides its document, bounded before anything converts it.

The document is bounded by the parser and the validation rules (`limits.py`); this module
bounds the rest, in order of cost, each check before the next piece of work:

1. `needs_credentials`: an operation whose root fields need a credential, from a caller who
   sent none (or one that cannot be sent upstream), is refused right after validation, before
   its variables are looked at: `CredentialsRequired` (UNAUTHENTICATED).
2. `bounded_variables`: the raw JSON variables, before graphql-core coerces them or Strawberry
   converts them: only the operation's declared variables are kept, and every list, string
   and the total number of values are capped. A 55,000-item `orderBy` costs one `len()`.
3. `InputLiteralRule`: the same caps on the values written in the document itself.

    limits = InputLimits(max_list_items=100, max_string_length=4096, max_representations=5000)
    if needs_credentials(document, operation, variables) and not credentials:
        raise CredentialsRequired()
    variables = bounded_variables(variables, operation, limits)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from graphql import (
    ArgumentNode,
    ASTValidationRule,
    BooleanValueNode,
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    ListTypeNode,
    ListValueNode,
    NamedTypeNode,
    NonNullTypeNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    TypeNode,
    VariableNode,
)
from graphql.language import SKIP, VisitorAction

from snapgraph.errors import VariablesInvalid

# Root fields anyone may ask for: they read the schema, never a caller's snapshots. Every
# other root field needs a credential, so a field added later is protected by default.
PUBLIC_ROOT_FIELDS = frozenset({"__typename", "__schema", "__type", "_service"})
# The federation router's batch variable: its list is capped by `max_representations`.
REPRESENTATIONS_TYPE = "_Any"
# Lists and objects written in the document, one inside another: this schema's deepest input
# is three (filter -> createdAt -> min); a representation's own fields may add a few.
MAX_VALUE_NESTING = 8


@dataclass(frozen=True)
class InputLimits:
    """The largest list, string and number of values a request may carry."""

    max_list_items: int = 100
    max_string_length: int = 4_096
    max_representations: int = 5_000

    @property
    def max_values(self) -> int:
        """All values of all variables together: a full batch of representations (each an
        object of two or three values) plus room for every other list at its cap."""
        return 4 * self.max_representations + 20 * self.max_list_items


def needs_credentials(
    document: DocumentNode, operation: OperationDefinitionNode, variables: dict[str, Any] | None
) -> bool:
    """Whether the operation would run a root field that reads the caller's snapshots.

    `@skip` and `@include` are honoured when their condition is a literal or a variable sent
    as a JSON boolean (a frontend's `@include(if: $signedIn)`); any other condition counts as
    included, so the answer errs toward asking for a credential.
    """
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    return any(
        field.name.value not in PUBLIC_ROOT_FIELDS
        for field in _root_fields(operation.selection_set, fragments, variables or {})
    )


def _root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any],
) -> Iterator[FieldNode]:
    """The root fields the operation runs, through fragments (each fragment entered once:
    validation has refused cycles, and a fragment spread twice adds no new field)."""
    pending, entered = [selection_set], set[str]()
    while pending:
        for selection in pending.pop().selections:
            if _skipped(selection.directives or (), variables):
                continue
            if isinstance(selection, FieldNode):
                yield selection
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in entered:
                    entered.add(name)
                    pending.append(fragments[name].selection_set)


def _skipped(directives: Any, variables: dict[str, Any]) -> bool:
    for directive in directives:
        assert isinstance(directive, DirectiveNode)
        condition = _condition(directive, variables)
        if condition is None:
            continue
        if (directive.name.value == "skip" and condition) or (
            directive.name.value == "include" and not condition
        ):
            return True
    return False


def _condition(directive: DirectiveNode, variables: dict[str, Any]) -> bool | None:
    if directive.name.value not in ("skip", "include"):
        return None
    for argument in directive.arguments or ():
        value = argument.value
        if isinstance(value, BooleanValueNode):
            return value.value
        if isinstance(value, VariableNode):
            raw = variables.get(value.name.value)
            return raw if isinstance(raw, bool) else None
    return None


def bounded_variables(
    variables: dict[str, Any] | None, operation: OperationDefinitionNode, limits: InputLimits
) -> dict[str, Any]:
    """The operation's declared variables as sent, each checked against `limits`; raises
    `VariablesInvalid` (BAD_USER_INPUT) naming the first value over a limit. Undeclared
    variables are dropped unread: nothing would use them."""
    if not variables:
        return {}
    declared = {
        definition.variable.name.value: _list_limit(definition.type, limits)
        for definition in operation.variable_definitions or ()
    }
    kept = {name: value for name, value in variables.items() if name in declared}
    budget = _Budget(limits.max_values)
    for name, value in kept.items():
        _check_value(value, f"${name}", declared[name], limits, budget)
    return kept


def _list_limit(type_node: TypeNode, limits: InputLimits) -> int:
    """A representations batch may be as long as `max_representations`; any other list,
    `max_list_items`."""
    while isinstance(type_node, NonNullTypeNode | ListTypeNode):
        type_node = type_node.type
    assert isinstance(type_node, NamedTypeNode)
    if type_node.name.value == REPRESENTATIONS_TYPE:
        return max(limits.max_representations, limits.max_list_items)
    return limits.max_list_items


class _Budget:
    def __init__(self, values: int) -> None:
        self.left = values


def _check_value(
    value: Any, where: str, list_limit: int, limits: InputLimits, budget: _Budget
) -> None:
    """Iterative (a deeply nested value cannot exhaust the stack); every container's size is
    checked before its items are visited, so the walk never exceeds the budget by more than
    one container's worth of checks."""
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        item, path = pending.pop()
        budget.left -= 1
        if budget.left < 0:
            raise _over(f"The variables hold more than {limits.max_values} values in all.")
        if isinstance(item, str):
            if len(item) > limits.max_string_length:
                raise _over(
                    f"`{path}` is longer than {limits.max_string_length} characters.",
                    limit=limits.max_string_length,
                )
        elif isinstance(item, list):
            if len(item) > list_limit:
                raise _over(f"`{path}` has more than {list_limit} items.", limit=list_limit)
            pending += [(element, f"{path}[{index}]") for index, element in enumerate(item)]
        elif isinstance(item, dict):
            if len(item) > limits.max_list_items:
                raise _over(f"`{path}` has more than {limits.max_list_items} fields.")
            for key, element in item.items():
                if len(key) > limits.max_string_length:
                    raise _over(f"`{path}` has a field name over the length limit.")
                pending.append((element, f"{path}.{key}"))


def _over(message: str, **extensions: Any) -> VariablesInvalid:
    return VariablesInvalid.of(message, **extensions)


class InputLiteralRule(ASTValidationRule):
    """Validation: a list or string written in the document over the same caps as variables
    (BAD_USER_INPUT). The document's token limit bounds these already; this makes the caps
    the same whichever way a value arrives. Use it through `input_literal_rule`."""

    limits: ClassVar[InputLimits]
    _list_limit: int | None = None
    _nesting = 0

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        declared = len(node.variable_definitions or ())
        if declared > self.limits.max_list_items:
            self._report(
                node, f"The operation declares more than {self.limits.max_list_items} variables."
            )

    def enter_object_value(self, node: ObjectValueNode, *_args: Any) -> VisitorAction:
        return self._nest(node)

    def leave_object_value(self, *_args: Any) -> None:
        self._nesting -= 1

    def leave_list_value(self, *_args: Any) -> None:
        self._nesting -= 1

    def _nest(self, node: Any) -> VisitorAction:
        """Values nested past `MAX_VALUE_NESTING` are refused and not entered: graphql-core's
        own check of such a value prints it whole at every level (a 8.6 KB literal made a
        520 KB error)."""
        self._nesting += 1
        if self._nesting > MAX_VALUE_NESTING:
            self._report(node, f"A value in the document is nested over {MAX_VALUE_NESTING} deep.")
            self._nesting -= 1
            return SKIP
        return None

    def enter_argument(self, node: ArgumentNode, *_args: Any) -> None:
        batch = node.name.value == "representations"
        self._list_limit = self.limits.max_representations if batch else None

    def enter_list_value(self, node: ListValueNode, *_args: Any) -> VisitorAction:
        limit = self._list_limit or self.limits.max_list_items
        if len(node.values) > limit:
            self._report(node, f"A list in the document has more than {limit} items.")
            return SKIP
        return self._nest(node)

    def enter_string_value(self, node: StringValueNode, *_args: Any) -> None:
        if len(node.value) > self.limits.max_string_length:
            self._report(
                node,
                f"A string in the document is longer than {self.limits.max_string_length} "
                "characters.",
            )

    def _report(self, node: Any, message: str) -> None:
        self.report_error(GraphQLError(message, node, extensions={"code": "BAD_USER_INPUT"}))


def input_literal_rule(limits: InputLimits) -> type[ASTValidationRule]:
    return type("BoundInputLiteralRule", (InputLiteralRule,), {"limits": limits})
