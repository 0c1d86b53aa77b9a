"""The bucket directory: per type and date sort key, the UTC hours that hold some value.

Seek pagination (fhir_server.search.seek) places its windows by it. It is a hint, never a
source of truth: a page's windows tile the whole sort axis whatever it says, so a missing or
extra bucket changes what a page costs, never what it returns. That is why it is written
outside the write's transaction (after the commit), once per hour per process, and why reads
may be stale: a process rereads the newest buckets every TTL_SECONDS and the whole directory
every FULL_SECONDS (a bucket noted in the past, e.g. a back-dated `sent`, shows then).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.search.seek import bucket_of, bucketed_fields

Doc = dict[str, Any]
SORT_BUCKETS = "sort_buckets"
# How long a process trusts the directory it read (another process may add an hour).
TTL_SECONDS = 5.0
FULL_SECONDS = 300.0


def sort_bucket_indexes() -> dict[str, list[IndexModel]]:
    return {SORT_BUCKETS: [IndexModel([("t", ASCENDING), ("f", ASCENDING), ("d", ASCENDING)],
                                      name="t_f_d")]}


def bucket_update(resource_type: str, field: str, start: datetime) -> UpdateOne:
    """The idempotent upsert that notes one bucket (also used by bulk loaders). One document
    per day lists that day's hours: a year is 365 documents to read, not 8,760."""
    day = start.replace(hour=0)
    return UpdateOne({"_id": f"{resource_type}|{field}|{day:%Y%m%d}"},
                     {"$setOnInsert": {"t": resource_type, "f": field, "d": day},
                      "$addToSet": {"h": start.hour}}, upsert=True)


@dataclass(frozen=True)
class _Read:
    full: float  # when the whole directory was last read (time.monotonic)
    newest: float  # when its newest end was last reread
    starts: list[datetime]


class SortBuckets:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db[SORT_BUCKETS]
        self._read: dict[tuple[str, str], _Read] = {}
        self._noted: set[tuple[str, str, datetime]] = set()

    async def starts(self, resource_type: str, field: str) -> list[datetime]:
        """Bucket starts (ascending) for `field` of `resource_type`."""
        key = (resource_type, field)
        now = time.monotonic()
        cached = self._read.get(key)
        if cached is None or now - cached.full > FULL_SECONDS:
            cached = _Read(now, now, await self._find(resource_type, field, None))
            self._read[key] = cached
        elif now - cached.newest > TTL_SECONDS:
            # Only the newest end grows as a server writes: reread from the newest known on.
            since = cached.starts[-1] if cached.starts else None
            newer = [d for d in await self._find(resource_type, field, since)
                     if since is None or d > since]
            cached = _Read(cached.full, now, cached.starts + newer)
            self._read[key] = cached
        return cached.starts

    async def _find(self, resource_type: str, field: str, since: datetime | None
                    ) -> list[datetime]:
        query: Doc = {"t": resource_type, "f": field}
        if since is not None:
            query["d"] = {"$gte": since.replace(hour=0)}
        docs = await self.collection.find(query, {"d": 1, "h": 1, "_id": 0}).to_list()
        return sorted({bucket_of(d["d"]) + timedelta(hours=h) for d in docs
                       if isinstance(d.get("d"), datetime)
                       for h in d.get("h") or [] if isinstance(h, int) and 0 <= h < 24})

    async def note(self, resource_type: str, field: str, values: Iterable[datetime]) -> None:
        """Records the buckets of `values` this process has not noted yet."""
        fresh = {day for day in map(bucket_of, values)
                 if (resource_type, field, day) not in self._noted}
        if not fresh:
            return
        await self.collection.bulk_write(
            [bucket_update(resource_type, field, day) for day in sorted(fresh)], ordered=False)
        self._noted.update((resource_type, field, day) for day in fresh)


async def rebuild(db: AsyncDatabase[Doc], resource_types: Iterable[str]) -> int:
    """Notes the buckets of every stored version (after a bulk import that bypassed the
    write pipeline, or on upgrade); reads each collection once. Returns buckets upserted."""
    updates: list[UpdateOne] = []
    for rtype in resource_types:
        fields = bucketed_fields(rtype)
        days: dict[str, set[datetime]] = {f: set() for f in fields}
        async for doc in db[rtype].find({}, {f: 1 for f in fields}):
            for field in fields:
                for value in values_of(doc, field):
                    days[field].add(bucket_of(value))
        updates += [bucket_update(rtype, f, d) for f, found in days.items() for d in found]
    if updates:
        await db[SORT_BUCKETS].bulk_write(updates, ordered=False)
    return len(updates)


def values_of(doc: Doc, dotted: str) -> list[datetime]:
    """The dates at `dotted` in a stored document (a list at any step is walked)."""
    nodes: list[Any] = [doc]
    for part in dotted.split("."):
        nodes = [n.get(part) for n in nodes if isinstance(n, dict)]
        nodes = [x for n in nodes for x in (n if isinstance(n, list) else [n])]
    return [n for n in nodes if isinstance(n, datetime)]
