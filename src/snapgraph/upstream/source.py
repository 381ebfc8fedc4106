"""The data source: one request's view of `GET /v1/snapshots`, in the style of datasource-rest.

One place builds the cache key from the caller's credentials, asks the cache (which calls the
upstream with those credentials on a miss), splits the answer into valid and broken items,
and answers with a value, `SnapshotList`: whatever a field reports is computed from the list
that field used, never read back from shared state.

    source = SnapshotSource(client=client, cache=cache, credentials=creds, request_id="r1")
    answer = await source.snapshots("user")
    answer.rows, answer.broken, answer.stale_age

The answer is checked once, when fetched (`check_items`): a cache hit hands back the rows
(each a list of values in `ROW_FIELDS` order) and the broken-item report as they were then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from snapgraph.cache import CachedList, SnapshotCache, Views
from snapgraph.errors import NotAuthenticated, UpstreamError
from snapgraph.lanes import SLICE, heavy_lane
from snapgraph.upstream.client import UpstreamClient
from snapgraph.upstream.models import BrokenItem, Credentials, Row, check_items

_VIEW = "snapshot-list"
_OUTCOME_RANK = {"hit": 0, "miss": 1, "stale": 2}


@dataclass(frozen=True)
class SnapshotList:
    """One upstream answer: the items that keep the contract (rows), a report of those that do
    not, and, when it was served from a stale cache entry because the upstream failed, its age.
    `version` names the upstream answer it came from (cache key and fetch): two lists with the
    same version hold the same rows. `owner` is the cache key it was fetched under: who asked
    (an HMAC of their credentials, never a credential) and for which `type`. `views` keeps
    the sorted views pages are cut from: the cache entry's own, counted and dropped with it."""

    rows: Sequence[Sequence[Any]]
    broken: tuple[BrokenItem, ...] = ()
    stale_age: float | None = None
    version: str = ""
    owner: str = ""
    views: Views = field(default_factory=Views, compare=False, repr=False)

    @cached_property
    def _by_id(self) -> dict[str, Sequence[Any]]:
        index: dict[str, Sequence[Any]] = {}
        for row in self.rows:
            index.setdefault(row[0], row)  # the first of duplicate ids wins, as in a scan
        return index

    def find(self, snapshot_id: str) -> Sequence[Any] | None:
        """The row of the snapshot with this id, or None; a dict lookup after the first call."""
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
        # What this request's lists cost, for its access line (the most telling of them).
        self._cache_outcome: str | None = None
        self._upstream: dict[str, object] = {}

    def outcome(self) -> dict[str, object]:
        """`cache`: hit, miss (this request fetched) or stale; with a fetch, the upstream's
        `upstream_status` (the HTTP status, or the error code) and `upstream_ms`."""
        if self._cache_outcome is None:
            return {}
        return {"cache": self._cache_outcome, **self._upstream}

    async def snapshots(self, list_type: str | None) -> SnapshotList:
        """The caller's snapshots of `list_type` (None: their own plus public system ones)."""
        if not self._credentials:
            raise NotAuthenticated()
        if list_type not in self._lists:
            self._lists[list_type] = asyncio.ensure_future(self._load(list_type))
        return await self._lists[list_type]

    async def _load(self, list_type: str | None) -> SnapshotList:
        key = self._cache.key_for(self._credentials, list_type)

        async def fetch() -> tuple[list[Row], list[object]]:
            started = time.perf_counter()
            try:
                items = await self._client.list_snapshots(
                    self._credentials,
                    list_type,
                    request_id=self._request_id,
                    caller=self._cache.caller_of(self._credentials),
                )
            except UpstreamError as exc:
                self._note_fetch(exc.code, started)
                raise
            self._note_fetch(200, started)
            rows, broken = await _checked(items)
            return rows, [[item.index, item.id, list(item.fields)] for item in broken]

        entry = await self._cache.load(key, fetch, list_type=list_type, refresh=self._refresh)
        self._note_lookup("stale" if entry.stale else "hit")
        return _answer_of(key, entry)

    def _note_fetch(self, status: int | str, started: float) -> None:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
        self._upstream = {"upstream_status": status, "upstream_ms": elapsed_ms}
        self._note_lookup("miss")

    def _note_lookup(self, outcome: str) -> None:
        if _OUTCOME_RANK[outcome] > _OUTCOME_RANK.get(self._cache_outcome or "", -1):
            self._cache_outcome = outcome


async def _checked(items: list[Any]) -> tuple[list[Row], list[BrokenItem]]:
    """`check_items`, a slice at a time in the heavy lane when the list is long: checking
    10,000 items takes some 30 ms, which must not fall on another user's request at once."""
    if len(items) <= SLICE:
        return check_items(items)
    rows: list[Row] = []
    broken: list[BrokenItem] = []
    async with heavy_lane():
        for start in range(0, len(items), SLICE):
            await asyncio.sleep(0)  # the parse of the body was a slice of its own
            more_rows, more_broken = check_items(items[start : start + SLICE], start=start)
            rows += more_rows
            broken += more_broken
    return rows, broken


def _answer_of(key: str, entry: CachedList) -> SnapshotList:
    """The entry's list, built once per entry (it is kept beside the entry while cached)."""
    answer = entry.derived.get(_VIEW)
    if answer is None:
        broken = tuple(BrokenItem(index, id_, tuple(fields)) for index, id_, fields in entry.broken)
        version = f"{key}:{entry.fetch_id}"
        answer = SnapshotList(entry.items, broken, None, version, key, entry.views)
        entry.derived[_VIEW] = answer
    return replace(answer, stale_age=entry.age) if entry.stale else answer
