"""AuditEvents stored a batch to a document, and read as if each had its own.

A default read writes one AuditEvent. On the embedded database a document costs ~0.3 ms of
database CPU before its first secondary index entry, and each entry ~0.1 ms more; a batch
of the audit writer's events (docs/performance.md) stored as ONE document costs ~0.06 ms per
event. So the audit writer stores each batch as documents of up to `CHUNK_EVENTS` events in
`BATCHES`:

    {_id: "<batch>.<k>", ts: oldest event's ts, tz: newest event's ts,
     p: [every `patient` value of its events], c: [every Consent entity], e: [the events]}

Each event in `e` is exactly the document a lone AuditEvent is stored as (`_id`, `ts`,
`res`, `sp`, ...), its id `<batch>.<k>.<n>`: a read by id finds its document by `_id`
alone. `p` and `c` hold each value once per document, so their multikey indexes gain one
entry per patient (Consent) per batch, not per event.

`AuditEventView` is what `Database.current("AuditEvent")` hands out: the collection of lone
AuditEvents (those a write stores in its own transaction, and those clients create) with
every query also run over the batches' events — `$unwind`ed, the very same filter matched
on each event. So every search parameter, read, vread, `_history`, sort and paging means
what it meant: the batches only add a pre-filter (`prefilter`) that picks candidate
documents by an index, and never decides a match itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import cmp_to_key
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.write_concern import WriteConcern

from fhir_server.search import keyset
from fhir_server.storage.inserts import insert_new

Doc = dict[str, Any]
AUDIT_EVENT = "AuditEvent"
BATCHES = "AuditEvent_batches"
# Events per document, and their JSON bytes: a document stays far below MongoDB's 16 MiB
# (an event's stored document is about twice its JSON: the text plus its search values).
CHUNK_EVENTS = 500
CHUNK_BYTES = 3 * 1024 * 1024
_EVENTS: list[Doc] = [{"$unwind": "$e"}, {"$replaceRoot": {"newRoot": "$e"}}]
CONSENT = "Consent/"
# A page newest first (`_sort=-_lastUpdated`, the default) without an index to narrow by reads
# the batches in windows of their newest event's time (`tz`), back from now: the first this
# wide, each next one WALK_GROWTH times wider, until the page is full and no older batch can
# hold a newer event; past WALK_SPAN the rest is one last window.
WALK_FIRST = timedelta(seconds=2)
WALK_GROWTH = 4
WALK_SPAN = timedelta(days=366 * 30)
# A page an index narrows (ids, a patient, a Consent) is read as it is: windows that kept the
# narrowing (compound indexes (p, tz), (c, tz)) cost the embedded database twice as much for
# a patient in every batch (bench/audit_pages.py), so they were not kept.
NARROWING = ("_id", "c", "p")
INDEXES = [
    IndexModel([("p", ASCENDING)], name="batch_patient", sparse=True),
    IndexModel([("c", ASCENDING)], name="batch_consent", sparse=True),
    IndexModel([("tz", DESCENDING)], name="batch_newest"),
    IndexModel([("ts", DESCENDING)], name="batch_oldest"),
]


def document_of(event_id: str) -> str | None:
    """The batch document holding the event `event_id`, if it is a batched event's id."""
    head, dot, _ = event_id.rpartition(".")
    return head if dot and "." in head else None


def pack(doc_id: str, events: list[Doc]) -> Doc:
    """The batch document of `events` (stored documents of AuditEvents)."""
    patients: dict[str, None] = {}
    consents: dict[str, None] = {}
    for event in events:
        sp = event.get("sp") or {}
        patients.update(dict.fromkeys(_strings(sp.get("patient"))))
        consents.update(dict.fromkeys(e for e in _strings(sp.get("entity")) if e.startswith(CONSENT)))
    doc: Doc = {"_id": doc_id, "ts": min(e["ts"] for e in events), "tz": max(e["ts"] for e in events)}
    if patients:
        doc["p"] = list(patients)
    if consents:
        doc["c"] = list(consents)
    doc["e"] = events
    return doc


async def store(collection: AsyncCollection[Doc], events: list[Doc], write_concern: WriteConcern) -> None:
    """Stores batched events (grouped by their ids' documents), ignoring documents stored
    already: a batch replayed after a crash is stored once."""
    grouped: dict[str, list[Doc]] = {}
    for event in events:
        doc_id = document_of(event["_id"])
        assert doc_id is not None, "not a batched event's id"
        grouped.setdefault(doc_id, []).append(event)
    docs = [pack(doc_id, group) for doc_id, group in grouped.items()]
    await insert_new(collection, docs, write_concern)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


# -- the pre-filter: which batch documents may hold a matching event ------------------------
def prefilter(flt: Doc | None) -> Doc:
    """A filter on batch documents that every document holding an event matching `flt`
    meets, on one indexed field (the embedded database uses an index only when each field
    of a filter is in it). `{}` when nothing in `flt` narrows by an index: every batch is
    a candidate. It only narrows; the events are matched by `flt` itself."""
    found: dict[str, Any] = {}
    _collect(flt or {}, found)
    for field in ("_id", "c", "p", "tz", "ts"):
        if field in found:
            return {field: found[field]}
    return {}


def _collect(flt: Doc, found: dict[str, Any]) -> None:
    for key, cond in flt.items():
        if key == "$and" and isinstance(cond, list):
            for part in cond:
                if isinstance(part, dict):
                    _collect(part, found)
        elif key == "_id":
            ids = _values(cond)
            if ids is not None:
                found.setdefault("_id", {"$in": sorted({d for i in ids if (d := document_of(i))})})
        elif key == "sp.patient":
            values = _values(cond)
            if values is not None:
                found.setdefault("p", {"$in": values})
        elif key == "sp.entity":
            values = _values(cond)
            if values is not None and all(v.startswith(CONSENT) for v in values):
                found.setdefault("c", {"$in": values})
        elif key == "ts" and isinstance(cond, dict):
            low = [v for op, v in cond.items() if op in ("$gt", "$gte") and isinstance(v, datetime)]
            high = [v for op, v in cond.items() if op in ("$lt", "$lte") and isinstance(v, datetime)]
            if low:
                found.setdefault("tz", {"$gte": max(low)})
            if high:
                found.setdefault("ts", {"$lte": min(high)})
        elif key == "ts" and isinstance(cond, datetime):
            found.setdefault("tz", {"$gte": cond})


def _values(cond: Any) -> list[str] | None:
    """The strings an equality or `$in` condition allows (None: another kind of condition)."""
    if isinstance(cond, str):
        return [cond]
    if isinstance(cond, dict) and set(cond) == {"$in"} and isinstance(cond["$in"], list) and all(
            isinstance(v, str) for v in cond["$in"]):
        return list(cond["$in"])
    return None


# -- the view --------------------------------------------------------------------------------
def _union(flt: Doc | None, tail: list[Doc]) -> Doc:
    """The `$unionWith` stage adding the batches' events matching `flt` (`tail` after)."""
    pre = prefilter(flt)
    pipeline = ([{"$match": pre}] if pre else []) + _EVENTS + ([{"$match": flt}] if flt else []) + tail
    return {"$unionWith": {"coll": BATCHES, "pipeline": pipeline}}


def _sort_stage(keys: list[tuple[str, int]] | None) -> list[Doc]:
    return [{"$sort": dict(keys)}] if keys else []


class _Cursor:
    """What `find` answers: sort / skip / limit, then `to_list` or `async for`."""

    def __init__(self, view: AuditEventView, flt: Doc | None, projection: Doc | None,
                 session: Any, sort: list[tuple[str, int]] | None = None, skip: int = 0,
                 limit: int = 0) -> None:
        self._view, self._filter, self._projection, self._session = view, flt, projection, session
        self._sort, self._skip, self._limit = sort, skip, limit

    def sort(self, keys: Any, direction: int | None = None) -> _Cursor:
        self._sort = [(keys, direction or ASCENDING)] if isinstance(keys, str) else list(keys)
        return self

    def skip(self, n: int) -> _Cursor:
        self._skip = n
        return self

    def limit(self, n: int) -> _Cursor:
        self._limit = n
        return self

    def pipeline(self) -> list[Doc]:
        # Each side keeps only its first skip + limit in order: the union's first ones are
        # among them.
        side: list[Doc] = _sort_stage(self._sort) + ([{"$limit": self._skip + self._limit}] if self._limit else [])
        stages: list[Doc] = ([{"$match": self._filter}] if self._filter else []) + side
        stages.append(_union(self._filter, side))
        stages += _sort_stage(self._sort)
        stages += [{"$skip": self._skip}] if self._skip else []
        stages += [{"$limit": self._limit}] if self._limit else []
        stages += [{"$project": self._projection}] if self._projection else []
        return stages

    async def _in_session(self) -> list[Doc]:
        """The same answer as two queries merged here: MongoDB does not take `$unionWith`
        in a transaction (a write's plan reads AuditEvents in one)."""
        side: list[Doc] = _sort_stage(self._sort) + (
            [{"$limit": self._skip + self._limit}] if self._limit else [])
        lone = await (await self._view.lone.aggregate(
            ([{"$match": self._filter}] if self._filter else []) + side, session=self._session)).to_list()
        pre = prefilter(self._filter)
        stages: list[Doc] = [{"$match": pre}] if pre else []
        stages += _EVENTS + ([{"$match": self._filter}] if self._filter else []) + side
        batched = await (await self._view.batches.aggregate(stages, session=self._session)).to_list()
        return self._page(lone + batched)

    def _page(self, docs: list[Doc]) -> list[Doc]:
        """Lone and batched events read apart, as the one answer: sorted, skipped, limited,
        projected."""
        if self._sort:
            keys = self._sort
            docs.sort(key=cmp_to_key(lambda a, b: keyset.compare_docs(a, b, keys)))
        docs = docs[self._skip:self._skip + self._limit if self._limit else None]
        return [_projected(d, self._projection) for d in docs] if self._projection else docs

    def _walks(self) -> bool:
        """Whether this is a page newest first that no index narrows (see WALK_FIRST)."""
        return (self._session is None and self._limit > 0 and self._sort is not None
                and self._sort[:1] == [("ts", DESCENDING)]
                and not any(field in prefilter(self._filter) for field in NARROWING))

    async def _newest_first(self) -> list[Doc]:
        """The page, its batched events read window by window back from now. Every batch
        not read yet has `tz` at or before the last window's start, so each of its events is
        at least as old: once the page's last event is newer than that, the page is whole."""
        wanted = self._skip + self._limit
        side: list[Doc] = [*_sort_stage(self._sort), {"$limit": wanted}]
        match: list[Doc] = [{"$match": self._filter}] if self._filter else []
        docs = await (await self._view.lone.aggregate(match + side)).to_list()
        # The filter's own lower bound on `tz` (prefilter): no window needs to go past it.
        floor = prefilter(self._filter).get("tz", {}).get("$gte")
        now = datetime.now(UTC)
        high: datetime | None = None  # the first window is open upward (clocks differ)
        width = WALK_FIRST
        found: list[Doc] = []
        while True:
            low = (high or now) - width
            last = width > WALK_SPAN or (floor is not None and low <= floor)
            window: Doc = {"$gt": low} if not last else {"$gte": floor} if floor is not None else {}
            if high is not None:
                window["$lte"] = high
            head: list[Doc] = [{"$match": {"tz": window}}] if window else []
            found += await (await self._view.batches.aggregate(head + _EVENTS + match + side)).to_list()
            found.sort(key=cmp_to_key(lambda a, b: keyset.compare_docs(a, b, self._sort or [])))
            del found[wanted:]
            if last or (len(found) == wanted and found[-1]["ts"] > low):
                break
            high, width = low, width * WALK_GROWTH
        return self._page(docs + found)

    async def to_list(self, length: int | None = None) -> list[Doc]:
        if self._session is not None:
            return await self._in_session()
        if self._walks():
            walked = await self._newest_first()
            return walked[:length] if length is not None else walked
        cursor = await self._view.lone.aggregate(self.pipeline())
        docs: list[Doc] = await cursor.to_list(length)
        return docs

    async def __aiter__(self) -> AsyncIterator[Doc]:
        if self._session is not None or self._walks():
            for doc in await (self._in_session() if self._session is not None else self._newest_first()):
                yield doc
            return
        cursor = await self._view.lone.aggregate(self.pipeline())
        async for doc in cursor:
            yield doc


def _projected(doc: Doc, projection: Doc) -> Doc:
    """A top-level projection applied here (what a write's plan asks for: `_id`, `v`, ...)."""
    if all(not v for v in projection.values()):
        return {k: v for k, v in doc.items() if k not in projection}
    keep = {k.split(".")[0] for k, v in projection.items() if v} | {"_id"}
    return {k: v for k, v in doc.items() if k in keep}


class AuditEventView:
    """The AuditEvents, lone and batched, as one collection for every query the server runs
    on them; writes (and everything else) go to the lone events' collection."""

    def __init__(self, lone: AsyncCollection[Doc], batches: AsyncCollection[Doc]) -> None:
        self.lone = lone
        self.batches = batches

    @property
    def name(self) -> str:
        return self.lone.name

    def find(self, filter: Doc | None = None, projection: Doc | None = None, *,
             session: Any = None, sort: Any = None, skip: int = 0, limit: int = 0) -> _Cursor:
        cursor = _Cursor(self, filter, projection, session, skip=skip, limit=limit)
        return cursor.sort(sort) if sort else cursor

    async def find_one(self, filter: Doc | None = None, projection: Doc | None = None, *,
                       session: Any = None, sort: Any = None) -> Doc | None:
        docs = await self.find(filter, projection, session=session, sort=sort, limit=1).to_list()
        return docs[0] if docs else None

    async def count_documents(self, filter: Doc, *, session: Any = None) -> int:
        if session is not None:
            return len(await self.find(filter, {"_id": 1}, session=session).to_list())
        pipeline = [{"$match": filter}, _union(filter, []), {"$count": "n"}]
        cursor = await self.lone.aggregate(pipeline, session=session)
        docs = await cursor.to_list()
        return int(docs[0]["n"]) if docs else 0

    async def aggregate(self, pipeline: list[Doc], *, session: Any = None) -> Any:
        """`pipeline` over every event: its first `$match` also picks the batch documents."""
        first = pipeline[0].get("$match") if pipeline else None
        head = [pipeline[0], _union(first, [])] if first is not None else [_union(None, []), *pipeline[:1]]
        stages = [*head, *pipeline[1:]]
        return await self.lone.aggregate(stages, session=session)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lone, name)
