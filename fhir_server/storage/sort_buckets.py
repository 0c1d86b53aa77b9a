"""The bucket directory: per type and date sort key, the UTC days that hold some value.

Seek pagination (fhir_server.search.seek) places its windows by it. It is a hint, never a
source of truth: a page's windows tile the whole sort axis whatever it says, so a missing or
extra bucket changes what a page costs, never what it returns. That is why it is written
outside the write's transaction (after the commit), once per day per process, and why reads
may be a few seconds stale.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.search.seek import bucket_of, bucketed_fields

Doc = dict[str, Any]
SORT_BUCKETS = "sort_buckets"
# How long a process trusts the directory it read (another process may add a day).
TTL_SECONDS = 5.0


def sort_bucket_indexes() -> dict[str, list[IndexModel]]:
    return {SORT_BUCKETS: [IndexModel([("t", ASCENDING), ("f", ASCENDING), ("d", ASCENDING)],
                                      name="t_f_d")]}


def bucket_update(resource_type: str, field: str, day: datetime) -> UpdateOne:
    """The idempotent upsert that notes one bucket (also used by bulk loaders)."""
    return UpdateOne({"_id": f"{resource_type}|{field}|{day:%Y%m%d}"},
                     {"$setOnInsert": {"t": resource_type, "f": field, "d": day}}, upsert=True)


class SortBuckets:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db[SORT_BUCKETS]
        self._read: dict[tuple[str, str], tuple[float, list[datetime]]] = {}
        self._noted: set[tuple[str, str, datetime]] = set()

    async def starts(self, resource_type: str, field: str) -> list[datetime]:
        """Bucket starts (ascending) for `field` of `resource_type`, at most TTL_SECONDS old."""
        key = (resource_type, field)
        cached = self._read.get(key)
        if cached is not None and time.monotonic() - cached[0] < TTL_SECONDS:
            return cached[1]
        docs = await self.collection.find({"t": resource_type, "f": field}, {"d": 1, "_id": 0}
                                          ).sort("d", ASCENDING).to_list()
        starts = [bucket_of(d["d"]) for d in docs if isinstance(d.get("d"), datetime)]
        self._read[key] = (time.monotonic(), starts)
        return starts

    async def note(self, resource_type: str, field: str, values: Iterable[datetime]) -> None:
        """Records the days of `values` this process has not noted yet."""
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
                for value in _values(doc, field):
                    days[field].add(bucket_of(value))
        updates += [bucket_update(rtype, f, d) for f, found in days.items() for d in found]
    if updates:
        await db[SORT_BUCKETS].bulk_write(updates, ordered=False)
    return len(updates)


def _values(doc: Doc, dotted: str) -> list[datetime]:
    nodes: list[Any] = [doc]
    for part in dotted.split("."):
        nodes = [n.get(part) for n in nodes if isinstance(n, dict)]
        nodes = [x for n in nodes for x in (n if isinstance(n, list) else [n])]
    return [n for n in nodes if isinstance(n, datetime)]
