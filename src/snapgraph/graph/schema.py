"""The Federation 2 subgraph schema, and its printed SDL (`schema.graphql`).

Strawberry defines the schema; the gateway's executor (`execution/`) parses, checks and runs
documents against it with graphql-core, so that limits, error codes and per-field reports
are decided in one place.
"""

from __future__ import annotations

from typing import Any, cast

import strawberry
from graphql import GraphQLError, GraphQLSchema

# FederationAny (the `_Any` scalar) and `entities_resolver` are what strawberry's federation
# Schema builds `_entities` from; neither is exported or documented. tests/test_federation.py
# and tests/test_field_reports.py run `_entities` through them and fail if they change.
from strawberry.federation.schema import FederationAny
from strawberry.schema.config import StrawberryConfig

from snapgraph.graph.context import Info
from snapgraph.graph.entities import resolve_entities
from snapgraph.graph.reports import Reported
from snapgraph.graph.resolvers import Query
from snapgraph.graph.types import LONG_SCALAR, Long, Snapshot

SDL_QUERY = "{ _service { sdl } }"


class GatewaySchema(strawberry.federation.Schema):
    """Strawberry's federation schema with our `_entities` (checked, capped, one lookup per
    id), minus Strawberry's logging of every error: the executor logs the unexpected ones."""

    async def entities_resolver(  # type: ignore[override]
        self, info: Info, representations: list[FederationAny]
    ) -> Reported[list[Any]]:
        return await resolve_entities(info, list(representations))

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        return None


def build_schema(federation_version: str = "2.11") -> GatewaySchema:
    """The gateway's schema, a Federation subgraph of `federation_version`.

    >>> build_schema("2.5").federation_version
    (2, 5)
    """
    return GatewaySchema(
        query=Query,
        types=[Snapshot],
        federation_version=cast(Any, federation_version),
        config=StrawberryConfig(scalar_map={Long: LONG_SCALAR}),
    )


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema Strawberry built. Strawberry has no public accessor for it;
    `_schema` has held it since 0.1 (tests/test_schema.py fails if that changes)."""
    return schema._schema


def subgraph_sdl(schema: strawberry.federation.Schema) -> str:
    """The SDL a federation router fetches via `_service { sdl }`; `schema.graphql` holds it."""
    result = schema.execute_sync(SDL_QUERY)
    if result.errors or result.data is None:
        raise RuntimeError(f"cannot print the subgraph SDL: {result.errors}")
    return str(result.data["_service"]["sdl"]).rstrip() + "\n"
