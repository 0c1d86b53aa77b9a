"""The history interaction at instance, type and system level, newest first.

Reads the per-type history collections through the repository's access filter. `_since`
keeps versions at or after an instant; `_at` keeps versions current at some point within
the period the value denotes; paging is keyset on (ts, key) like search.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.context import RequestContext
from fhir_server.resource_types import STORED_TYPES
from fhir_server.storage import paging
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.repository import INDEX_PROJECTION, Repository, _and

Doc = dict[str, Any]


@dataclass
class HistoryQuery:
    resource_type: str | None = None  # None: system level
    resource_id: str | None = None
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    count: int = 50
    cursor: str | None = None


@dataclass
class HistoryPage:
    entries: list[StoredResource]
    next_cursor: str | None


async def _at_filter(repo: Repository, rtype: str, base: Doc, at: tuple[datetime, datetime]) -> Doc:
    """Versions current during [start, end): changed within it, or last changed before it."""
    start, end = at
    history = repo.database.history(rtype)
    cursor = await history.aggregate([
        {"$match": _and(base, {"ts": {"$lt": start}})},
        {"$sort": {"id": 1, "v": -1}},
        {"$group": {"_id": "$id", "key": {"$first": "$_id"}}},
    ])
    before = await cursor.to_list()
    carried = [d["key"] for d in before]
    within: Doc = {"ts": {"$gte": start, "$lt": end}}
    return {"$or": [within, {"_id": {"$in": carried}}]} if carried else within


async def _one_type(
    repo: Repository, context: RequestContext, rtype: str, query: HistoryQuery,
    after: tuple[datetime, str, str] | None,
) -> list[tuple[datetime, str, Doc]]:
    access = await repo.access_filter(context, rtype)
    base = _and({"id": query.resource_id} if query.resource_id else None, access)
    flt = _and(base, {"ts": {"$gte": query.since}} if query.since else None)
    if query.at:
        flt = _and(flt, await _at_filter(repo, rtype, base, query.at))
    if after is not None:
        ts, after_type, after_key = after
        if rtype < after_type:
            page = {"ts": {"$lte": ts}}
        elif rtype == after_type:
            page = paging.after([("ts", -1), ("_id", -1)], [ts, after_key])
        else:
            page = {"ts": {"$lt": ts}}
        flt = _and(flt, page)
    docs = await repo.database.history(rtype).find(flt, INDEX_PROJECTION).sort(
        [("ts", -1), ("_id", -1)]
    ).limit(query.count + 1).to_list()
    return [(d["ts"], rtype, d) for d in docs]


async def history(repo: Repository, context: RequestContext, query: HistoryQuery) -> HistoryPage:
    types = [query.resource_type] if query.resource_type else list(STORED_TYPES)
    after = None
    if query.cursor:
        ts, rtype, key = paging.decode(query.cursor)
        after = (ts, str(rtype), str(key))
    results = await asyncio.gather(*(_one_type(repo, context, t, query, after) for t in types))
    merged = sorted(
        (row for rows in results for row in rows),
        key=lambda row: (row[0], row[1], row[2]["_id"]),
        reverse=True,
    )
    next_cursor = None
    if len(merged) > query.count:
        merged = merged[: query.count]
        if merged:  # _count=0 asks for no entries: no page to continue from
            last = merged[-1]
            next_cursor = paging.encode([last[0], last[1], last[2]["_id"]])
    entries: list[StoredResource] = []
    for _, rtype, doc in merged:
        released = await repo.release(context, StoredResource.from_history(rtype, doc))
        if released is not None:
            entries.append(released)
    return HistoryPage(entries, next_cursor)
