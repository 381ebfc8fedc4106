"""Per-request state: who is calling, and the data source that fetches for them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeAlias

import strawberry
from graphql import GraphQLError

from snapgraph.cache import CachedList, SnapshotCache
from snapgraph.errors import NotAuthenticated, UpstreamBadResponse
from snapgraph.graph.types import Snapshot
from snapgraph.upstream.client import UpstreamClient
from snapgraph.upstream.models import BrokenItem, Credentials, split_valid_items


class SnapshotSource:
    """One request's view of the upstream: the caller's snapshots, fetched at most once per
    `type` within the request, through the shared cache.

    Items that break the contract are left out and reported in `errors` (once per list).
    """

    def __init__(
        self,
        *,
        client: UpstreamClient,
        cache: SnapshotCache,
        credentials: Credentials,
        request_id: str,
        refresh: bool = False,
    ) -> None:
        self._client = client
        self._cache = cache
        self._credentials = credentials
        self._request_id = request_id
        self._refresh = refresh
        self._lists: dict[str | None, asyncio.Future[list[Snapshot]]] = {}
        self.errors: list[GraphQLError] = []
        self.stale_age: float | None = None

    async def visible(self, info: Info, list_type: str | None) -> list[Snapshot]:
        """The caller's snapshots of `list_type` (None: their own plus public system ones)."""
        if list_type not in self._lists:
            path = info.path.as_list()
            self._lists[list_type] = asyncio.ensure_future(self._snapshots(list_type, path))
        return await self._lists[list_type]

    async def _snapshots(self, list_type: str | None, path: list[str | int]) -> list[Snapshot]:
        entry = await self._load(list_type)
        valid, broken = split_valid_items(entry.items)
        self.errors.extend(_broken_item_error(item, path) for item in broken)
        return [Snapshot.from_info(item) for item in valid]

    async def _load(self, list_type: str | None) -> CachedList:
        if not self._credentials:
            raise NotAuthenticated()
        entry = await self._cache.load(
            self._cache.key_for(self._credentials, list_type),
            lambda: self._client.list_snapshots(
                self._credentials, list_type, request_id=self._request_id
            ),
            list_type=list_type,
            refresh=self._refresh,
        )
        if entry.stale:
            self.stale_age = max(self.stale_age or 0.0, entry.age)
        return entry


def _broken_item_error(item: BrokenItem, path: list[str | int]) -> GraphQLError:
    named = f"Snapshot {item.id!r}" if item.id is not None else f"Snapshot at position {item.index}"
    error = UpstreamBadResponse(
        f"{named} breaks the upstream contract ({', '.join(item.fields)}) and was left out.",
        snapshotId=item.id,
        fields=list(item.fields),
    )
    return GraphQLError(str(error), path=path, original_error=error, extensions=error.extensions)


@dataclass
class Context:
    request_id: str
    snapshots: SnapshotSource
    extra_headers: dict[str, str] = field(default_factory=dict)


Info: TypeAlias = strawberry.Info[Context, None]
