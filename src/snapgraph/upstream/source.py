"""The data source: one request's view of `GET /v1/snapshots`, in the style of datasource-rest.

One place builds the cache key from the caller's credentials, asks the cache (which calls the
upstream with those credentials on a miss), splits the answer into valid and broken items,
and answers with a value, `SnapshotList`: whatever a field reports is computed from the list
that field used, never read back from shared state.

    source = SnapshotSource(client=client, cache=cache, credentials=creds, request_id="r1")
    answer = await source.snapshots("user")
    answer.items, answer.broken, answer.stale_age
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

from snapgraph.cache import CachedList, SnapshotCache
from snapgraph.errors import NotAuthenticated
from snapgraph.upstream.client import UpstreamClient
from snapgraph.upstream.models import BrokenItem, Credentials, SnapshotInfo, split_valid_items


@dataclass(frozen=True)
class SnapshotList:
    """One upstream answer: the items that keep the contract, a report of those that do not,
    and, when it was served from a stale cache entry because the upstream failed, its age."""

    items: tuple[SnapshotInfo, ...]
    broken: tuple[BrokenItem, ...] = ()
    stale_age: float | None = None

    @cached_property
    def _by_id(self) -> dict[str, SnapshotInfo]:
        index: dict[str, SnapshotInfo] = {}
        for item in self.items:
            index.setdefault(item.id, item)  # the first of duplicate ids wins, as in a scan
        return index

    def find(self, snapshot_id: str) -> SnapshotInfo | None:
        """The snapshot with this id, or None; a dict lookup after the first call."""
        return self._by_id.get(snapshot_id)

    def broken_about(self, snapshot_id: str) -> tuple[BrokenItem, ...]:
        """The broken items a lookup of `snapshot_id` must mention: those with that id, and
        those whose id is unknown (one of them may have been it)."""
        return tuple(item for item in self.broken if item.id in (snapshot_id, None))


class SnapshotSource:
    """The caller's snapshots, fetched at most once per `type` within one request."""

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
        self._lists: dict[str | None, asyncio.Future[SnapshotList]] = {}

    @property
    def authenticated(self) -> bool:
        return bool(self._credentials)

    async def snapshots(self, list_type: str | None) -> SnapshotList:
        """The caller's snapshots of `list_type` (None: their own plus public system ones)."""
        if not self._credentials:
            raise NotAuthenticated()
        if list_type not in self._lists:
            self._lists[list_type] = asyncio.ensure_future(self._load(list_type))
        return await self._lists[list_type]

    async def _load(self, list_type: str | None) -> SnapshotList:
        entry = await self._cache.load(
            self._cache.key_for(self._credentials, list_type),
            lambda: self._client.list_snapshots(
                self._credentials, list_type, request_id=self._request_id
            ),
            list_type=list_type,
            refresh=self._refresh,
        )
        return _answer_of(entry)


def _answer_of(entry: CachedList) -> SnapshotList:
    valid, broken = split_valid_items(entry.items)
    return SnapshotList(tuple(valid), tuple(broken), entry.age if entry.stale else None)
