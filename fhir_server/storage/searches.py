"""Search execution on top of the read pipeline: the main page (keyset-paged), chains and
`_has` as their own access-filtered searches, `_include`/`_revinclude`, system search, and
the matching of conditional criteria."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import cached_property, cmp_to_key
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server.context import RequestContext
from fhir_server.errors import (
    BadRequest,
)
from fhir_server.hooks import AccessQuery
from fhir_server.resource_types import STORED
from fhir_server.search import Join, SearchQuery, keyset, seek, valueseek
from fhir_server.search.query import Clause, build_filter
from fhir_server.storage import paging
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.reads import ReadPipeline, checked_projection
from fhir_server.storage.records import (
    INDEX_PROJECTION,
    MAX_INCLUDE_ROUNDS,
    MAX_INCLUDED,
    MAX_JOIN_MATCHES,
    Doc,
    SearchPage,
    _and,
)
from fhir_server.storage.sort_buckets import SortBuckets
from fhir_server.storage.sort_values import SortValues, Splitters

# What a document check reads of a stored document (see fhir_server.hooks.DocumentCheck).
CHECKED_FIELDS = {"_id": 1, "id": 1, "ts": 1, "sp": 1, "compartments": 1}
# A total of checked documents is counted one by one, up to this many.
MAX_CHECKED_TOTAL = 10_000


class SearchPipeline(ReadPipeline):
    async def search(
        self, context: RequestContext, query: SearchQuery, *, with_total: bool = True
    ) -> SearchPage:
        """Runs a parsed search through the read pipeline; keyset-paged on sort key + _id.

        Chains and `_has` run first as their own access-filtered searches; then one page of
        matches; then `_include`/`_revinclude` (each fetch access-filtered too). Every
        resource returned passes `release`.
        """
        rtype = query.resource_type
        base, access = await self._search_filter(context, query)
        keys = keyset.sort_keys(query.sort)
        backward, cursor = _page_cursor(query.cursor, len(keys))
        # A "previous" page is the page after the cursor in the reversed order, turned round.
        walk = [(f, -d) for f, d in keys] if backward else keys
        wants_sp = bool(query.includes or query.revincludes) or any(
            f.startswith("sp.") for f, _ in keys)
        projection = checked_projection(access, {"compartments": 0} if wants_sp else INDEX_PROJECTION)
        docs: list[Doc] = []
        if query.count > 0:
            docs = await self._page(rtype, base, walk, cursor, query.count, projection, access)
        more = len(docs) > query.count
        docs = docs[: query.count]
        if backward:
            docs.reverse()
        next_cursor = prev_cursor = None
        if docs and (more if not backward else True):
            next_cursor = paging.encode([">", *keyset.cursor_of(docs[-1], keys)])
        if docs and (cursor is not None if not backward else more):
            prev_cursor = paging.encode(["<", *keyset.cursor_of(docs[0], keys)])
        entries: list[StoredResource] = []
        kept: list[tuple[str, Doc]] = []
        for doc in docs:
            released = await self.release(context, StoredResource.from_current(rtype, doc))
            if released is not None:
                entries.append(released)
                kept.append((rtype, doc))
        total = None
        if query.total in ("accurate", "estimate") and with_total:
            total = await self._count(self.database.current(rtype), base, access)
        elif query.total is None and cursor is None and next_cursor is None and query.count > 0:
            total = len(entries)  # the whole result is on this page: the total costs nothing
        includes = await self._included(context, query, kept) if kept else []
        return SearchPage(entries, total, next_cursor, includes, prev_cursor)

    async def search_types(
        self, context: RequestContext, queries: list[SearchQuery]
    ) -> SearchPage:
        """System-level search over several types, newest first (keyset on ts + _id)."""
        keys = [("ts", -1), ("_id", -1)]
        first = queries[0]
        backward, cursor = _page_cursor(first.cursor, len(keys))
        if backward:
            raise BadRequest("this search pages forward only")
        merged: list[tuple[str, Doc]] = []
        counted: int | None = 0
        for query in queries:
            base, access = await self._search_filter(context, query)
            collection = self.database.current(query.resource_type)
            if first.total in ("accurate", "estimate"):
                found = await self._count(collection, base, access)
                counted = None if found is None or counted is None else counted + found
            if first.count == 0:
                continue
            docs = await self._keyset_page(
                collection, base, keys, cursor, first.count,
                checked_projection(access, INDEX_PROJECTION), access)
            merged.extend((query.resource_type, d) for d in docs)
        merged.sort(key=lambda item: (item[1]["ts"], item[1]["_id"]), reverse=True)
        next_cursor = None
        if len(merged) > first.count:
            merged = merged[: first.count]
            next_cursor = paging.encode([">", *keyset.cursor_of(merged[-1][1], keys)])
        entries = []
        for rtype, doc in merged:
            released = await self.release(context, StoredResource.from_current(rtype, doc))
            if released is not None:
                entries.append(released)
        total: int | None = None
        if first.total in ("accurate", "estimate"):
            total = counted
        elif first.total is None and cursor is None and next_cursor is None and first.count:
            total = len(entries)
        return SearchPage(entries, total, next_cursor)

    async def find_matches(
        self, context: RequestContext, resource_type: str, params: list[tuple[str, str]],
        *, session: AsyncClientSession | None = None, limit: int = 2,
    ) -> list[Doc]:
        """Resources matching conditional criteria (at most `limit`), through the access filter."""
        if not params:
            raise BadRequest("conditional operations need search criteria")
        query = self.search_engine.parse(resource_type, params, strict=True)
        base, access = await self._search_filter(context, query, session=session)
        projection = _with_checked({"_id": 1, "v": 1}, access)
        if not access.checks:
            cursor = self.database.current(resource_type).find(base, projection, session=session)
            return await cursor.limit(limit).to_list()
        # Checked documents are refused after the query: read on until `limit` pass.
        out: list[Doc] = []
        async for batch in _batches(self.database.current(resource_type).find(
                base, projection, session=session)):
            out += await self.passing(access, batch)
            if len(out) >= limit:
                break
        return out[:limit]

    async def judged_ids(
        self, context: RequestContext, resource_type: str, ids: list[str], params: list[tuple[str, str]],
    ) -> list[str]:
        """Which of `ids` match `params` and pass this request's access decision (its filter
        and its checks), in no particular order; nothing leaves, nothing is audited.

        One aggregation: the ids as its first stage, the query's filter with the access
        filter ANDed (the same filter document as every query's) as its second. The embedded
        database plans a find that ANDs `_id: {$in: ...}` with any other condition as a
        collection scan; a first `$match` on `_id` alone is a seek on the `_id` index.
        Keep `ids` to a page's worth: its `$in` grows quadratically with their number."""
        if not ids:
            return []
        query = self.search_engine.parse(resource_type, params, strict=True)
        if query.joins:
            raise BadRequest("judged_ids takes no chained criteria")
        base, access = await self._search_filter(context, query)
        cursor = await self.database.current(resource_type).aggregate([
            {"$match": {"_id": {"$in": ids}}}, {"$match": base},
            {"$project": _with_checked({"_id": 1}, access)}])
        docs = await self.passing(access, await cursor.to_list())
        return [str(d["_id"]) for d in docs]

    async def _search_filter(
        self, context: RequestContext, query: SearchQuery,
        *, session: AsyncClientSession | None = None,
    ) -> tuple[Doc, AccessQuery]:
        """The query's filter with its chains / _has resolved and the access filter ANDed,
        and the access decision (whose checks the caller applies to what the filter finds)."""
        clauses = list(query.clauses)
        for join in query.joins:
            clauses.append(await self._resolve_join(context, join, query.resource_type, session))
        access = await self.access(context, query.resource_type)
        return keyset.merge(build_filter(clauses), _and(*access.filters) or {}), access

    async def _resolve_join(
        self, context: RequestContext, join: Join, resource_type: str,
        session: AsyncClientSession | None,
    ) -> Clause:
        if join.kind == "chain":
            refs: list[str] = []
            for sub in join.queries:
                ids = await self._matching_ids(context, sub, "_id", session)
                refs.extend(f"{sub.resource_type}/{i}" for i in ids)
            return Clause({join.field: {"$in": refs}}, 1)
        sub = join.queries[0]
        referenced = await self._matching_ids(context, sub, join.field, session)
        # The other type's references, restricted to this type: "Type/id" -> id.
        prefix = f"{resource_type}/"
        ids = sorted({r[len(prefix):] for r in referenced if r.startswith(prefix)})
        return Clause({"_id": {"$in": ids}}, 0, positive=False)

    async def _matching_ids(
        self, context: RequestContext, sub: SearchQuery, field: str,
        session: AsyncClientSession | None,
    ) -> list[str]:
        """Values of `field` (an id, or references) over every match of a sub-search.

        A sub-match never leaves the server, so it does not pass `release` (CAN_SEE and
        WILL_SEE, where the audit trail records what a client was shown): what it may match
        is decided by the access filter of its own type (FILTER_QUERY), ANDed into its query
        like every other, and only the ids or references it needs are fetched.
        """
        base, access = await self._search_filter(context, sub, session=session)
        projection = _with_checked({field: 1, "_id": 1}, access)
        docs = await self.database.current(sub.resource_type).find(
            base, projection, session=session
        ).limit(MAX_JOIN_MATCHES + 1).to_list()
        if len(docs) > MAX_JOIN_MATCHES:
            raise BadRequest(
                f"a chained or _has criterion on {sub.resource_type} matches more than "
                f"{MAX_JOIN_MATCHES} resources; narrow it", code="too-costly")
        docs = await self.passing(access, docs)
        out: list[str] = []
        for doc in docs:
            value = doc.get("_id") if field == "_id" else _dig(doc, field)
            out.extend(v for v in (value if isinstance(value, list) else [value])
                       if isinstance(v, str))
        return out

    async def _count(self, collection: Any, base: Doc, access: AccessQuery) -> int | None:
        """How many documents match and pass the checks; None (no total) past MAX_CHECKED_TOTAL
        checked documents: a count that included refused ones would disclose them."""
        if not access.checks:
            count: int = await collection.count_documents(base)
            return count
        counted = seen = 0
        async for batch in _batches(collection.find(base, CHECKED_FIELDS)):
            seen += len(batch)
            if seen > MAX_CHECKED_TOTAL:
                return None
            counted += len(await self.passing(access, batch))
        return counted

    async def _page(
        self, rtype: str, base: Doc, walk: list[tuple[str, int]], cursor: list[Any] | None,
        count: int, projection: Doc | None, access: AccessQuery,
    ) -> list[Doc]:
        """Up to count + 1 documents after `cursor`: sought window by window where the filter
        allows it (search.seek), else in one query."""
        collection = self.database.current(rtype)
        if self.settings.search_seek and (
                vplan := valueseek.plan(rtype, base, walk, self._index_keys(rtype))) and (
                cursor is None or cursor[0] is None or valueseek.sortable(cursor[0])):
            splitters = await self._sort_values.splitters(rtype, vplan.field)
            starts = await self._sort_buckets.starts(rtype, valueseek.TIE)
            if splitters.values and starts:
                return await self._value_page(collection, vplan, splitters, starts, walk,
                                              cursor, count, projection, access)
        plan = seek.plan(rtype, base, walk, self._index_keys(rtype)) if (
            self.settings.search_seek) else None
        if plan is not None and (cursor is None or isinstance(cursor[0], datetime)):
            starts = await self._sort_buckets.starts(rtype, plan.field)
            # A kind of search that matched few last time is cheaper as one query: seeking
            # pays a round trip per window (and per `$in` value).
            shape = _shape(collection, plan.filters[0], plan)
            few = seek.expected(self._seek_rates.get(shape), starts,
                                cursor[0] if cursor else None, plan.direction,
                                self._seek_clock_rates.get(shape))
            if starts and (few is None or few * len(plan.filters) > max(seek.FEW, 4 * count)):
                return await self._seek_page(
                    collection, plan, starts, walk, cursor, count, projection, access)
        return await self._keyset_page(collection, base, walk, cursor, count, projection, access)

    async def _value_page(
        self, collection: Any, plan: valueseek.ValuePlan, splitters: Splitters,
        starts: list[datetime], keys: list[tuple[str, int]], cursor: list[Any] | None,
        count: int, projection: Doc | None, access: AccessQuery,
    ) -> list[Doc]:
        """One walk of the value axis per equality filter of the plan, merged in sort order."""
        wanted = count + 1
        walks = await asyncio.gather(*(
            self._value_one(collection, plan, flt, splitters, starts, keys, cursor, wanted,
                            projection, access) for flt in plan.filters))
        return _merged(walks, keys, wanted)

    async def _value_one(
        self, collection: Any, plan: valueseek.ValuePlan, flt: Doc, splitters: Splitters,
        starts: list[datetime], keys: list[tuple[str, int]], cursor: list[Any] | None,
        wanted: int, projection: Doc | None, access: AccessQuery,
    ) -> list[Doc]:
        """The page of one equality filter: light stretches of the axis one query each, a
        heavy value on `ts` windows (search.valueseek)."""
        walk = valueseek.ValueWalk(plan.direction, splitters.values, splitters.missing, cursor)
        residual = plan.residual(flt)
        projection = _keeping(projection, residual)
        out: list[Doc] = []
        seen: set[Any] = set()
        while len(out) < wanted:
            step = walk.next(wanted - len(out))
            if step is None:
                break
            if step.heavy:
                point, ts_plan = plan.point(flt, step.value)
                after = cursor[1] if cursor is not None and step.at_cursor else None
                docs = await self._seek_one(collection, ts_plan, point, starts, keys, cursor,
                                            wanted - len(out), projection, access,
                                            after=after, seen=seen)
            else:
                docs = await self._window(collection, plan.query(flt, step.cond), keys, cursor,
                                          wanted - len(out), projection, access, seen,
                                          residual)
            out.extend(docs)
            seen.update(d["_id"] for d in docs)
        return out

    @cached_property
    def _sort_values(self) -> SortValues:
        return SortValues(self.database.db)

    @cached_property
    def _seek_clock_rates(self) -> dict[str, float]:
        """The same per hour of the whole axis, gaps included (seek.expected takes both)."""
        return {}

    @cached_property
    def _seek_rates(self) -> dict[str, float]:
        """Matches per hour of the sort axis each kind of search saw (search.seek.Windows)."""
        return {}

    @cached_property
    def _sort_buckets(self) -> SortBuckets:
        return SortBuckets(self.database.db)

    @cached_property
    def _declared_keys(self) -> dict[str, list[list[tuple[str, int]]]]:
        """The key patterns of each collection's declared indexes (fixed before start-up)."""
        return {name: [list(model.document["key"].items()) for model in models]
                for name, models in self.database.declared_indexes().items()}

    def _index_keys(self, rtype: str) -> list[list[tuple[str, int]]]:
        return self._declared_keys.get(rtype, [])

    async def _seek_page(
        self, collection: Any, plan: seek.SeekPlan, starts: list[datetime],
        keys: list[tuple[str, int]], cursor: list[Any] | None, count: int,
        projection: Doc | None, access: AccessQuery,
    ) -> list[Doc]:
        """One walk of windows per equality filter of the plan, merged in sort order."""
        wanted = count + 1
        # The walks of a split `$in` run side by side: a page waits for the slowest only.
        walks = await asyncio.gather(*(
            self._seek_one(collection, plan, flt, starts, keys, cursor, wanted, projection,
                           access, after=cursor[0] if cursor else None)
            for flt in plan.filters))
        return _merged(walks, keys, wanted)

    async def _seek_one(
        self, collection: Any, plan: seek.SeekPlan, flt: Doc, starts: list[datetime],
        keys: list[tuple[str, int]], cursor: list[Any] | None, wanted: int,
        projection: Doc | None, access: AccessQuery, *, after: datetime | None,
        seen: set[Any] | None = None,
    ) -> list[Doc]:
        """Up to `wanted` documents of `flt` after `cursor`, on windows of `plan.field`
        from `after` (its value at the cursor, when the cursor lies on this walk) on; none
        of `seen` (which it extends)."""
        field, direction = plan.field, plan.direction
        nulls = field not in keyset.NEVER_NULL
        out: list[Doc] = []
        seen = set() if seen is None else seen
        residual = plan.residual(flt)
        projection = _keeping(projection, residual)

        async def read(condition: Any) -> int:
            docs = await self._window(collection, plan.window(flt, condition), keys, cursor,
                                      wanted - len(out), projection, access, seen, residual)
            out.extend(docs)
            seen.update(d["_id"] for d in docs)
            return len(docs)

        # Missing values sort first ascending, last descending (as MongoDB sorts them).
        if nulls and direction > 0 and cursor is None:
            await read(None)
        # How dense this kind of search was last time (per type, fields and sort; values
        # differ, so it is a starting width, not a promise).
        shape = _shape(collection, flt, plan)
        rates = self._seek_rates
        windows = seek.Windows(direction, starts, after, datetime.now(UTC),
                               seek.first_width(rates.get(shape), wanted))
        found: int | None = None
        while len(out) < wanted:
            condition = windows.next(found, wanted - len(out))
            if condition is None:
                break
            found = await read(condition)
        last = keyset.value_of(out[-1], field, direction) if len(out) >= wanted else None
        last = last if isinstance(last, datetime) else None
        if (rate := windows.rate(len(out), last)) is not None:
            rates[shape] = rate if shape not in rates else 0.7 * rates[shape] + 0.3 * rate
        clock = self._seek_clock_rates
        if (rate := windows.clock_rate(len(out), last)) is not None:
            clock[shape] = rate if shape not in clock else 0.7 * clock[shape] + 0.3 * rate
        if nulls and direction < 0 and len(out) < wanted:
            await read(None)
        return out

    async def _window(
        self, collection: Any, flt: Doc, keys: list[tuple[str, int]], cursor: list[Any] | None,
        need: int, projection: Doc | None, access: AccessQuery, seen: set[Any],
        residual: Doc | None = None,
    ) -> list[Doc]:
        """Up to `need` documents of one window, in order, after the cursor, not yet seen,
        meeting the `residual` equalities the query left out (seek.SeekPlan.residual) and
        passing the access checks (the others are read past)."""
        limit = need
        while True:
            docs = await collection.find(flt, projection).sort(keys).limit(limit).to_list()
            fresh = [d for d in docs if d["_id"] not in seen
                     and (cursor is None or keyset.is_after(d, keys, cursor))
                     and (not residual or seek.keeps(d, residual))]
            fresh = await self.passing(access, fresh)
            if len(fresh) >= need or len(docs) < limit:
                return fresh[:need]
            limit *= 4

    async def _keyset_page(
        self, collection: Any, base: Doc, keys: list[tuple[str, int]], cursor: list[Any] | None,
        count: int, projection: Doc | None, access: AccessQuery,
    ) -> list[Doc]:
        """Up to count + 1 documents after `cursor` in `keys` order (see search.keyset) that
        pass the access checks (refused ones are read past, so pages stay full)."""
        out: list[Doc] = []
        for phase in keyset.phases(keys, cursor):
            wanted = count + 1 - len(out)
            limit = wanted
            while True:
                docs = await collection.find(keyset.merge(base, phase), projection).sort(
                    keys).limit(limit).to_list()
                fresh = [d for d in docs if cursor is None or keyset.is_after(d, keys, cursor)]
                fresh = await self.passing(access, fresh)
                if len(fresh) >= wanted or len(docs) < limit:
                    break
                limit *= 4
            out.extend(fresh[:wanted])
            if len(out) > count:
                break
        return out

    async def _included(
        self, context: RequestContext, query: SearchQuery, matches: list[tuple[str, Doc]]
    ) -> list[StoredResource]:
        """`_include` and `_revinclude` targets of the matches (`:iterate` up to 3 rounds)."""
        seen = {(t, d["_id"]) for t, d in matches}
        frontier = matches
        out: list[StoredResource] = []
        for round_ in range(MAX_INCLUDE_ROUNDS):
            includes = [i for i in query.includes if round_ == 0 or i.iterate]
            revincludes = [i for i in query.revincludes if round_ == 0 or i.iterate]
            if not (includes or revincludes) or not frontier:
                break
            found: list[tuple[str, Doc]] = []
            wanted: dict[str, set[str]] = {}
            for rtype, doc in frontier:
                for include in includes:
                    if include.source_type not in ("*", rtype):
                        continue
                    for ref in self._references(rtype, doc, include.param):
                        target, _, rid = ref.partition("/")
                        if "/" in rid or target not in STORED:
                            continue
                        if include.target in (None, target) and (target, rid) not in seen:
                            wanted.setdefault(target, set()).add(rid)
            for target, ids in wanted.items():
                found += await self._fetch_included(
                    context, target, Clause({"_id": {"$in": sorted(ids)}}, 0, positive=False))
            for include in revincludes:
                refs = [f"{t}/{d['_id']}" for t, d in frontier]
                params = ([include.param] if include.param else
                          [p.code for p in self.search_engine.reference_params(
                              include.source_type)])
                for code in params:
                    found += await self._fetch_included(
                        context, include.source_type, Clause({f"sp.{code}": {"$in": refs}}, 1))
            frontier = []
            for rtype, doc in found:
                if (rtype, doc["_id"]) in seen or len(out) >= MAX_INCLUDED:
                    continue
                seen.add((rtype, doc["_id"]))
                released = await self.release(context, StoredResource.from_current(rtype, doc))
                if released is not None:
                    out.append(released)
                    frontier.append((rtype, doc))
        return out

    def _references(self, rtype: str, doc: Doc, code: str | None) -> list[str]:
        sp = doc.get("sp") or {}
        codes = [code] if code else [p.code for p in self.search_engine.reference_params(rtype)]
        refs: list[str] = []
        for c in codes:
            value = sp.get(c)
            refs.extend(v for v in (value if isinstance(value, list) else [value])
                        if isinstance(v, str))
        return refs


def _merged(walks: list[list[Doc]], keys: list[tuple[str, int]], wanted: int) -> list[Doc]:
    """The walks' pages as one, in sort order, each document once."""
    merged: dict[Any, Doc] = {}
    for docs in walks:
        for doc in docs:
            merged.setdefault(doc["_id"], doc)
    out = list(merged.values())
    if len(walks) > 1:
        out.sort(key=cmp_to_key(lambda a, b: keyset.compare_docs(a, b, keys)))
    return out[:wanted]


def _keeping(projection: Doc | None, residual: Doc) -> Doc | None:
    """`projection` without the exclusions of what the `residual` test reads."""
    if residual and projection and any(k.split(".")[0] in projection for k in residual):
        return {k: v for k, v in projection.items()
                if not any(r.split(".")[0] == k for r in residual)}
    return projection


def _shape(collection: Any, flt: Doc, plan: seek.SeekPlan) -> str:
    """A kind of search: type, equality fields (not their values), sort key and direction."""
    return "|".join([collection.name, *sorted(flt), plan.field, str(plan.direction)])


def _with_checked(projection: Doc, access: AccessQuery) -> Doc:
    """An inclusion `projection` that also holds what the access checks read."""
    if not access.checks:
        return projection
    out = dict(CHECKED_FIELDS)
    for key in projection:
        if not any(key == k or key.startswith(f"{k}.") for k in out):
            out[key] = 1
    return out


async def _batches(cursor: Any, size: int = 200) -> Any:
    batch: list[Doc] = []
    async for doc in cursor:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _page_cursor(token: str | None, width: int) -> tuple[bool, list[Any] | None]:
    """(backward, sort key) of a search paging cursor: [">" or "<", *sort values, id]."""
    if not token:
        return False, None
    values = paging.decode(token)
    if len(values) != width + 1 or values[0] not in (">", "<"):
        raise BadRequest("the paging cursor does not belong to this search")
    return values[0] == "<", values[1:]



def _dig(doc: Doc, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node

