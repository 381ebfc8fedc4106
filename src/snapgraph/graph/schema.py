"""The Federation 2 subgraph schema, and its printed SDL (`schema.graphql`)."""

from __future__ import annotations

from typing import Any, cast

import strawberry
from graphql import ASTValidationRule, GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator
from strawberry.schema.config import StrawberryConfig

from snapgraph.graph.extensions import GatewayResponse
from snapgraph.graph.resolvers import Query
from snapgraph.graph.types import LONG_SCALAR, Long, Snapshot

SDL_QUERY = "{ _service { sdl } }"
MAX_ALIASES = 50
MAX_TOKENS = 5_000


class GatewaySchema(strawberry.federation.Schema):
    """Strawberry's federation schema, minus its logging of every error with a traceback:
    an expired token is not an incident. `GatewayResponse` logs the unexpected ones."""

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        return None


def build_schema(federation_version: str = "2.11") -> strawberry.federation.Schema:
    """The gateway's schema, a Federation subgraph of `federation_version`.

    >>> build_schema("2.5").federation_version
    (2, 5)
    """
    alias_rules: list[type[ASTValidationRule]] = [create_validator(MAX_ALIASES)]
    return GatewaySchema(
        query=Query,
        types=[Snapshot],
        extensions=[
            GatewayResponse,
            # Frontends send the same few documents over and over: parse/validate each once.
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
            # The schema has no recursion, so depth is bounded; what is left to bound is width:
            # thousands of aliases or tokens cost CPU without asking the upstream anything new.
            # One rule class for the schema's life: MaxAliasesLimiter would build a new class per
            # request, and ValidationCache, keyed on the rules, would then never hit.
            lambda: AddValidationRules(alias_rules),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        ],
        federation_version=cast(Any, federation_version),
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}),
    )


def subgraph_sdl(schema: strawberry.federation.Schema) -> str:
    """The SDL a federation router fetches via `_service { sdl }`; `schema.graphql` holds it."""
    result = schema.execute_sync(SDL_QUERY)
    if result.errors or result.data is None:
        raise RuntimeError(f"cannot print the subgraph SDL: {result.errors}")
    return str(result.data["_service"]["sdl"]).rstrip() + "\n"
