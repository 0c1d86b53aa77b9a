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
from fhir_server.hooks import AccessQuery
from fhir_server.resource_types import STORED_TYPES
from fhir_server.storage import paging
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.reads import checked_projection
from fhir_server.storage.repository import INDEX_PROJECTION, Repository, _and
from fhir_server.storage.schema import versions_of

Doc = dict[str, Any]
# A total of checked versions (Consent decides per document) is counted one by one, up to this.
MAX_CHECKED_TOTAL = 10_000


@dataclass
class HistoryQuery:
    resource_type: str | None = None  # None: system level
    resource_id: str | None = None
    since: datetime | None = None
    at: tuple[datetime, datetime] | None = None
    count: int = 50
    cursor: str | None = None
    offset: int = 0  # versions skipped after the cursor (_offset: how Medplum pages)
    total_only: bool = False  # _count=0 / _summary=count: Bundle.total, no entries


@dataclass
class HistoryPage:
    entries: list[StoredResource]
    next_cursor: str | None
    total: int | None = None


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


async def _type_filter(
    repo: Repository, context: RequestContext, rtype: str, query: HistoryQuery,
    after: tuple[datetime, str, str] | None,
) -> tuple[Doc, AccessQuery]:
    access = await repo.access(context, rtype)
    base = _and(versions_of(rtype, query.resource_id) if query.resource_id else None, *access.filters)
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
    return flt, access


async def _one_type(
    repo: Repository, context: RequestContext, rtype: str, query: HistoryQuery,
    after: tuple[datetime, str, str] | None, offset: int,
) -> tuple[list[tuple[datetime, str, Doc]], int]:
    """This type's first versions after the cursor, and how many of `offset` it skipped in
    the database (none when documents are checked one by one: a skipped one might be refused)."""
    flt, access = await _type_filter(repo, context, rtype, query, after)
    skip = 0 if access.checks else offset
    # One type skips in the database; several must each keep the first offset + count + 1
    # of their versions so that the merge can skip across them.
    wanted = limit = query.count + 1 + (query.offset - skip)
    while True:
        # Versions the access checks refuse are read past, so a page stays full.
        docs = await repo.database.history(rtype).find(
            flt, checked_projection(access, INDEX_PROJECTION)).sort(
            [("ts", -1), ("_id", -1)]).skip(skip).limit(limit).to_list()
        kept = await repo.passing(access, docs)
        if len(kept) >= wanted or len(docs) < limit:
            break
        limit *= 4
    return [(d["ts"], rtype, d) for d in kept[:wanted]], skip


async def _count(
    repo: Repository, context: RequestContext, rtype: str, query: HistoryQuery,
    after: tuple[datetime, str, str] | None,
) -> int | None:
    """None: more checked versions than are worth counting one by one."""
    flt, access = await _type_filter(repo, context, rtype, query, after)
    if not access.checks:
        return int(await repo.database.history(rtype).count_documents(flt))
    docs = await repo.database.history(rtype).find(flt).limit(MAX_CHECKED_TOTAL + 1).to_list()
    if len(docs) > MAX_CHECKED_TOTAL:
        return None
    return len(await repo.passing(access, docs))


async def history(repo: Repository, context: RequestContext, query: HistoryQuery) -> HistoryPage:
    types = [query.resource_type] if query.resource_type else list(STORED_TYPES)
    after = None
    if query.cursor:
        ts, rtype, key = paging.decode(query.cursor)
        after = (ts, str(rtype), str(key))
    if query.total_only:
        counts = await asyncio.gather(*(_count(repo, context, t, query, after) for t in types))
        return HistoryPage([], None, None if None in counts else sum(c or 0 for c in counts))
    found = await asyncio.gather(*(_one_type(repo, context, t, query, after,
                                             query.offset if len(types) == 1 else 0) for t in types))
    results = [rows for rows, _ in found]
    skip = found[0][1] if len(types) == 1 else 0
    merged = sorted(
        (row for rows in results for row in rows),
        key=lambda row: (row[0], row[1], row[2]["_id"]),
        reverse=True,
    )[query.offset - skip:]
    next_cursor = None
    if query.count and len(merged) > query.count:
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
