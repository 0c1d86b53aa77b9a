"""The splitter directory: per type and string, token or number sort key, the values a sample
of the writes noted, each with how many resources it stands for (search.valueseek).

A write notes its values when a hash of its resource id falls in 1/SAMPLE, adding SAMPLE to
each value's count (and to the missing group's when it has none). Like the bucket directory
(storage.sort_buckets) it is a hint, written after the commit and read stale: a page's reads
tile the whole axis whatever it says, so a count that is off, or a value never noted,
changes what a page costs, never what it returns. Counts only grow (an update that moves a
Task from `requested` to `completed` does not take it off `requested`): a value that was
heavy stays walked on `ts`, which is bounded either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import ASCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.search.valueseek import SAMPLE, sortable, values_at

Doc = dict[str, Any]
SORT_VALUES = "sort_values"
# How long a process trusts the directory it read (other processes note values too).
TTL_SECONDS = 30.0
# Longer strings are not noted: a splitter is a bound, and a bound need not be a long name.
MAX_LENGTH = 200
MISSING = "\x00missing"


def sort_value_indexes() -> dict[str, list[IndexModel]]:
    return {SORT_VALUES: [IndexModel([("t", ASCENDING), ("f", ASCENDING)], name="t_f")]}


def sampled(resource_id: str) -> bool:
    """Whether this resource's writes note their values: 1 in SAMPLE, the same in every
    process (a hash of the id, not a random draw)."""
    digest = hashlib.blake2b(resource_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % SAMPLE == 0


def value_update(resource_type: str, field: str, value: Any, count: int = SAMPLE) -> UpdateOne:
    """The upsert adding `count` resources to one value (None: the missing group)."""
    tag = MISSING if value is None else f"{type(value).__name__}:{value}"
    return UpdateOne({"_id": f"{resource_type}|{field}|{tag}"},
                     {"$setOnInsert": {"t": resource_type, "f": field, "v": value},
                      "$inc": {"n": count}}, upsert=True)


def notable(values: Iterable[Any]) -> list[Any]:
    """The values of one resource worth noting: strings (not too long) and numbers; [None]
    when it has none (the missing group)."""
    out = [v for v in dict.fromkeys(values) if sortable(v)
           and not (isinstance(v, str) and len(v) > MAX_LENGTH)]
    return out or [None]


@dataclass(frozen=True)
class Splitters:
    values: list[tuple[Any, float]]  # (value, resources it stands for), ascending
    missing: float  # resources without a value


@dataclass(frozen=True)
class _Read:
    at: float
    splitters: Splitters


class SortValues:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.collection = db[SORT_VALUES]
        self._read: dict[tuple[str, str], _Read] = {}

    async def splitters(self, resource_type: str, field: str) -> Splitters:
        key = (resource_type, field)
        now = time.monotonic()
        cached = self._read.get(key)
        if cached is None or now - cached.at > TTL_SECONDS:
            docs = await self.collection.find({"t": resource_type, "f": field},
                                              {"v": 1, "n": 1, "_id": 0}).to_list()
            values = sorted((d["v"], float(d.get("n") or 0)) for d in docs
                            if sortable(d.get("v")))
            missing = sum(float(d.get("n") or 0) for d in docs if d.get("v") is None)
            cached = _Read(now, Splitters(values, missing))
            self._read[key] = cached
        return cached.splitters

    async def note(self, resource_type: str, resource_id: str,
                   values: Mapping[str, Iterable[Any]]) -> None:
        """Notes the values of one written version, by field, when its id is sampled."""
        if not values or not sampled(resource_id):
            return
        updates = [value_update(resource_type, field, v)
                   for field, found in values.items() for v in notable(found)]
        if updates:
            await self.collection.bulk_write(updates, ordered=False)


async def rebuild(db: AsyncDatabase[Doc], fields: Mapping[str, Iterable[str]]) -> int:
    """Notes the splitters of every stored resource as its writes would have (after a bulk
    import that bypassed the write pipeline); reads each collection once. Returns values
    upserted. Counts are set, not added: a rebuild twice is a rebuild once."""
    updates: list[UpdateOne] = []
    for rtype, names in fields.items():
        names = list(names)
        counts: dict[tuple[str, str], tuple[Any, int]] = {}
        async for doc in db[rtype].find({"del": False}, {n: 1 for n in names}):
            if not sampled(str(doc["_id"])):
                continue
            for name in names:
                for value in notable(values_at(doc, name)):
                    tag = (name, MISSING if value is None else f"{type(value).__name__}:{value}")
                    counts[tag] = (value, counts.get(tag, (value, 0))[1] + SAMPLE)
        await db[SORT_VALUES].delete_many({"t": rtype, "f": {"$in": names}})
        updates += [value_update(rtype, name, value, n) for (name, _), (value, n) in counts.items()]
    if updates:
        await db[SORT_VALUES].bulk_write(updates, ordered=False)
    return len(updates)

