"""The repository: the one write pipeline and the one read pipeline of the server.

Write: hooks(before) -> precondition (versionId) -> assign id/meta -> extract index values ->
{current, history, IN_TRANSACTION hooks} in one MongoDB transaction -> hooks(after commit).
Read: every query ANDs the access filter gathered from FILTER_QUERY hooks, and every resource
that leaves passes CAN_SEE and WILL_SEE (see `release`). No caller can skip either.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
)
from fhir_server.jsonpatch import apply_patch
from fhir_server.resource_types import STORED
from fhir_server.search import Join, SearchEngine, SearchQuery, keyset
from fhir_server.search.query import Clause, build_filter
from fhir_server.storage import paging
from fhir_server.storage.database import CONDITIONAL_LOCKS, Database
from fhir_server.storage.documents import StoredResource, now, stamp_meta
from interceptors.hooks import AccessQuery, Change, HookRegistry, Pointcut

Doc = dict[str, Any]
# Fields of a stored document a client never sees.
INDEX_PROJECTION = {"sp": 0, "compartments": 0}
MAX_WRITE_ATTEMPTS = 8
# Search bounds: ids a chain / _has may resolve to, resources _include/_revinclude may add to
# a page, and rounds of :iterate.
MAX_JOIN_MATCHES = 10_000
MAX_INCLUDED = 1_000
MAX_INCLUDE_ROUNDS = 3


class StaleVersion(Exception):
    """The current version moved under us between the read and the write (optimistic lock)."""


@dataclass
class WriteOutcome:
    stored: StoredResource
    created: bool  # 201 rather than 200
    changed: bool = True  # False: nothing written (conditional create match, no-op update)
    warnings: list[Any] = field(default_factory=list)


@dataclass
class NewVersion:
    """A version about to be written: its two documents and what it means."""

    current: Doc
    history: Doc
    change: Change
    stored: StoredResource


@dataclass
class SearchPage:
    entries: list[StoredResource]
    total: int | None
    next_cursor: str | None
    includes: list[StoredResource] = field(default_factory=list)


def _and(*filters: Doc | None) -> Doc:
    present = [f for f in filters if f]
    if not present:
        return {}
    return present[0] if len(present) == 1 else {"$and": present}


def unchanged(previous: Doc | None, resource: dict[str, Any]) -> bool:
    """True when `resource` says nothing new over the live `previous` version: an update that
    writes no new version and fires no event (as HAPI does)."""
    if previous is None or previous.get("del") or not previous.get("res"):
        return False
    return without_server_meta(orjson.loads(previous["res"])) == without_server_meta(resource)


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = out.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if meta:
            out["meta"] = meta
        else:
            out.pop("meta")
    return out


class Repository:
    def __init__(
        self, database: Database, hooks: HookRegistry, settings: Settings, search: SearchEngine
    ) -> None:
        self.database = database
        self.hooks = hooks
        self.settings = settings
        self.search_engine = search

    # ------------------------------------------------------------------ read pipeline

    async def access_filter(self, context: RequestContext, resource_type: str) -> Doc | None:
        if not self.hooks.has(Pointcut.FILTER_QUERY):
            return None
        query = AccessQuery()
        await self.hooks.call(
            Pointcut.FILTER_QUERY, context=context, resource_type=resource_type, query=query
        )
        return _and(*query.filters) or None

    async def release(self, context: RequestContext, stored: StoredResource) -> StoredResource | None:
        """The last gate for every resource leaving the server: CAN_SEE, then WILL_SEE."""
        if stored.raw is None:
            return stored
        if self.hooks.has(Pointcut.CAN_SEE) and not await self.hooks.call(
            Pointcut.CAN_SEE, context=context, resource=stored.resource
        ):
            return None
        if self.hooks.has(Pointcut.WILL_SEE):
            replacement = await self.hooks.call(
                Pointcut.WILL_SEE, context=context, resource=stored.resource
            )
            if replacement is not None:
                stored.replace(replacement)
        return stored

    async def _find_current(
        self, context: RequestContext, resource_type: str, resource_id: str
    ) -> StoredResource:
        access = await self.access_filter(context, resource_type)
        doc = await self.database.current(resource_type).find_one(
            _and({"_id": resource_id}, access), INDEX_PROJECTION
        )
        if doc is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return StoredResource.from_current(resource_type, doc)

    async def read(
        self, context: RequestContext, resource_type: str, resource_id: str
    ) -> StoredResource:
        stored = await self._find_current(context, resource_type, resource_id)
        if stored.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted", headers={"ETag": stored.etag})
        return await self._released_or_forbidden(context, stored)

    async def vread(
        self, context: RequestContext, resource_type: str, resource_id: str, version_id: int
    ) -> StoredResource:
        access = await self.access_filter(context, resource_type)
        doc = await self.database.history(resource_type).find_one(
            _and({"id": resource_id, "v": version_id}, access), INDEX_PROJECTION
        )
        if doc is None:
            raise NotFound(f"{resource_type}/{resource_id}/_history/{version_id} is not known")
        stored = StoredResource.from_history(resource_type, doc)
        if stored.deleted:
            raise Gone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
        return await self._released_or_forbidden(context, stored)

    async def _released_or_forbidden(
        self, context: RequestContext, stored: StoredResource
    ) -> StoredResource:
        released = await self.release(context, stored)
        if released is None:
            raise Forbidden(f"access to {stored.resource_type}/{stored.id} is not permitted")
        return released

    async def search(
        self, context: RequestContext, query: SearchQuery, *, with_total: bool = True
    ) -> SearchPage:
        """Runs a parsed search through the read pipeline; keyset-paged on sort key + _id.

        Chains and `_has` run first as their own access-filtered searches; then one page of
        matches; then `_include`/`_revinclude` (each fetch access-filtered too). Every
        resource returned passes `release`.
        """
        rtype = query.resource_type
        base = await self._search_filter(context, query)
        keys = keyset.sort_keys(query.sort)
        cursor = paging.decode(query.cursor) if query.cursor else None
        if cursor is not None and len(cursor) != len(keys):
            raise BadRequest("the paging cursor does not belong to this search")
        wants_sp = bool(query.includes or query.revincludes) or any(
            f.startswith("sp.") for f, _ in keys)
        projection = {"compartments": 0} if wants_sp else INDEX_PROJECTION
        docs: list[Doc] = []
        if query.count > 0:
            docs = await self._keyset_page(
                self.database.current(rtype), base, keys, cursor, query.count, projection)
        next_cursor = None
        if len(docs) > query.count:
            docs = docs[: query.count]
            next_cursor = paging.encode(keyset.cursor_of(docs[-1], keys))
        entries: list[StoredResource] = []
        kept: list[tuple[str, Doc]] = []
        for doc in docs:
            released = await self.release(context, StoredResource.from_current(rtype, doc))
            if released is not None:
                entries.append(released)
                kept.append((rtype, doc))
        total = None
        if query.total in ("accurate", "estimate") and with_total:
            total = await self.database.current(rtype).count_documents(base)
        elif query.total is None and cursor is None and next_cursor is None and query.count > 0:
            total = len(entries)  # the whole result is on this page: the total costs nothing
        includes = await self._included(context, query, kept) if kept else []
        return SearchPage(entries, total, next_cursor, includes)

    async def search_types(
        self, context: RequestContext, queries: list[SearchQuery]
    ) -> SearchPage:
        """System-level search over several types, newest first (keyset on ts + _id)."""
        keys = [("ts", -1), ("_id", -1)]
        first = queries[0]
        cursor = paging.decode(first.cursor) if first.cursor else None
        if cursor is not None and len(cursor) != len(keys):
            raise BadRequest("the paging cursor does not belong to this search")
        merged: list[tuple[str, Doc]] = []
        for query in queries:
            base = await self._search_filter(context, query)
            docs = await self._keyset_page(
                self.database.current(query.resource_type), base, keys, cursor, first.count,
                INDEX_PROJECTION)
            merged.extend((query.resource_type, d) for d in docs)
        merged.sort(key=lambda item: (item[1]["ts"], item[1]["_id"]), reverse=True)
        next_cursor = None
        if len(merged) > first.count:
            merged = merged[: first.count]
            next_cursor = paging.encode(keyset.cursor_of(merged[-1][1], keys))
        entries = []
        for rtype, doc in merged:
            released = await self.release(context, StoredResource.from_current(rtype, doc))
            if released is not None:
                entries.append(released)
        total = len(entries) if cursor is None and next_cursor is None else None
        return SearchPage(entries, total, next_cursor)

    async def find_matches(
        self, context: RequestContext, resource_type: str, params: list[tuple[str, str]],
        *, session: AsyncClientSession | None = None, limit: int = 2,
    ) -> list[Doc]:
        """Resources matching conditional criteria (at most `limit`), through the access filter."""
        if not params:
            raise BadRequest("conditional operations need search criteria")
        query = self.search_engine.parse(resource_type, params, strict=True)
        base = await self._search_filter(context, query, session=session)
        cursor = self.database.current(resource_type).find(
            base, {"_id": 1, "v": 1}, session=session
        )
        return await cursor.limit(limit).to_list()

    async def _search_filter(
        self, context: RequestContext, query: SearchQuery,
        *, session: AsyncClientSession | None = None,
    ) -> Doc:
        """The query's filter with its chains / _has resolved and the access filter ANDed."""
        clauses = list(query.clauses)
        for join in query.joins:
            clauses.append(await self._resolve_join(context, join, query.resource_type, session))
        access = await self.access_filter(context, query.resource_type)
        return keyset.merge(build_filter(clauses), access or {})

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

        When CAN_SEE/WILL_SEE hooks exist, the matches are released one by one, so a chain
        never reveals anything about resources the client could not read itself.
        """
        base = await self._search_filter(context, sub, session=session)
        gated = self.hooks.has(Pointcut.CAN_SEE) or self.hooks.has(Pointcut.WILL_SEE)
        projection: Doc | None = None if gated else {field: 1, "_id": 1}
        docs = await self.database.current(sub.resource_type).find(
            base, projection, session=session
        ).limit(MAX_JOIN_MATCHES + 1).to_list()
        if len(docs) > MAX_JOIN_MATCHES:
            raise BadRequest(
                f"a chained or _has criterion on {sub.resource_type} matches more than "
                f"{MAX_JOIN_MATCHES} resources; narrow it", code="too-costly")
        out: list[str] = []
        for doc in docs:
            if gated:
                stored = StoredResource.from_current(sub.resource_type, doc)
                if await self.release(context, stored) is None:
                    continue
            value = doc.get("_id") if field == "_id" else _dig(doc, field)
            out.extend(v for v in (value if isinstance(value, list) else [value])
                       if isinstance(v, str))
        return out

    async def _keyset_page(
        self, collection: Any, base: Doc, keys: list[tuple[str, int]], cursor: list[Any] | None,
        count: int, projection: Doc,
    ) -> list[Doc]:
        """Up to count + 1 documents after `cursor` in `keys` order (see search.keyset)."""
        out: list[Doc] = []
        for phase in keyset.phases(keys, cursor):
            wanted = count + 1 - len(out)
            limit = wanted
            while True:
                docs = await collection.find(keyset.merge(base, phase), projection).sort(
                    keys).limit(limit).to_list()
                fresh = [d for d in docs if cursor is None or keyset.is_after(d, keys, cursor)]
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

    async def _fetch_included(
        self, context: RequestContext, rtype: str, clause: Clause
    ) -> list[tuple[str, Doc]]:
        access = await self.access_filter(context, rtype)
        base = keyset.merge(build_filter([clause]), access or {})
        if "del" not in base:
            base["del"] = False
        docs = await self.database.current(rtype).find(base, {"compartments": 0}).limit(
            MAX_INCLUDED).to_list()
        return [(rtype, d) for d in docs]

    async def read_many(
        self, context: RequestContext, resource_type: str, ids: list[str]
    ) -> list[StoredResource]:
        """Live resources by id (missing and hidden ones are left out), through the pipeline."""
        if not ids:
            return []
        found = await self._fetch_included(context, resource_type, Clause({"_id": {"$in": ids}}))
        out = []
        for rtype, doc in found:
            released = await self.release(context, StoredResource.from_current(rtype, doc))
            if released is not None:
                out.append(released)
        return out

    # ------------------------------------------------------------------ write pipeline

    def _index(self, resource_type: str, resource: dict[str, Any]) -> Doc:
        sp = self.search_engine.index_fields(resource_type, resource)
        compartments = self.search_engine.compartments(resource_type, resource, sp)
        return {"sp": sp, "compartments": compartments} if compartments else {"sp": sp}

    async def write_version(
        self,
        session: AsyncClientSession,
        context: RequestContext,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        previous: Doc | None,
        interaction: str,
    ) -> tuple[StoredResource, Change]:
        """Writes one new version (current + history + IN_TRANSACTION hooks) in `session`."""
        version = self.new_version(resource_type, resource_id, resource, previous, interaction)
        current = self.database.current(resource_type)
        if previous is None:
            await current.insert_one(version.current, session=session)
        else:
            result = await current.replace_one(
                {"_id": resource_id, "v": previous["v"]}, version.current, session=session
            )
            if result.matched_count != 1:
                raise StaleVersion()
        await self.database.history(resource_type).insert_one(version.history, session=session)
        await self.hooks.call(
            Pointcut.IN_TRANSACTION, context=context, change=version.change, session=session,
            db=self.database.db,
        )
        return version.stored, version.change

    def new_version(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        previous: Doc | None,
        interaction: str,
    ) -> NewVersion:
        """The documents of a new version (no I/O): what every write path stores."""
        version = previous["v"] + 1 if previous else 1
        at = now()
        if resource is not None:
            stamp_meta(resource, resource_id, version, at)
            raw: bytes | None = orjson.dumps(resource)
            index = self._index(resource_type, resource)
        else:
            raw = None
            # A tombstone keeps its compartments so that access rules still apply to it.
            index = {"compartments": previous.get("compartments")} if previous else {}
        deleted = resource is None
        current_doc = {"_id": resource_id, "v": version, "ts": at, "del": deleted, "res": raw, **index}
        method = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}[interaction]
        history_doc = {
            "_id": f"{resource_id}/{version}", "id": resource_id, "v": version, "ts": at,
            "del": deleted, "res": raw, "m": method, **index,
        }
        prev_resource = orjson.loads(previous["res"]) if previous and previous.get("res") else None
        change = Change(resource_type, resource_id, version, interaction, at, resource, prev_resource)
        stored = StoredResource(resource_type, resource_id, version, at, deleted, raw, method)
        return NewVersion(current_doc, history_doc, change, stored)

    async def _commit(
        self,
        context: RequestContext,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        previous: Doc | None,
        interaction: str,
    ) -> StoredResource:
        async def work(session: AsyncClientSession) -> tuple[StoredResource, Change]:
            return await self.write_version(
                session, context, resource_type, resource_id, resource, previous, interaction
            )

        stored, change = await self.database.in_transaction(work)
        await self.hooks.call(Pointcut.AFTER_COMMIT, context=context, change=change)
        return stored

    async def create(
        self,
        context: RequestContext,
        resource: dict[str, Any],
        *,
        if_none_exist: list[tuple[str, str]] | None = None,
    ) -> WriteOutcome:
        resource_type: str = resource["resourceType"]
        await self.hooks.call(Pointcut.BEFORE_CREATE, context=context, resource=resource)
        if if_none_exist is not None:
            return await self._conditional_create(context, resource_type, resource, if_none_exist)
        resource_id = str(uuid.uuid4())
        stored = await self._commit(context, resource_type, resource_id, resource, None, "create")
        return WriteOutcome(stored, created=True)

    async def _conditional_create(
        self, context: RequestContext, resource_type: str, resource: dict[str, Any],
        criteria: list[tuple[str, str]],
    ) -> WriteOutcome:
        # Two clients creating with the same criteria at once: both upsert this lock document
        # inside their transactions, so one conflicts, retries, and then sees the other's resource.
        canonical = f"{resource_type}?" + "&".join(f"{k}={v}" for k, v in sorted(criteria))
        lock_id = hashlib.sha256(canonical.encode()).hexdigest()

        async def work(session: AsyncClientSession) -> tuple[StoredResource, Change | None]:
            await self.database.db[CONDITIONAL_LOCKS].update_one(
                {"_id": lock_id}, {"$inc": {"n": 1}}, upsert=True, session=session
            )
            matches = await self.find_matches(context, resource_type, criteria, session=session)
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"If-None-Exist criteria match more than one {resource_type}", code="duplicate"
                )
            if matches:
                doc = await self.database.current(resource_type).find_one(
                    {"_id": matches[0]["_id"]}, INDEX_PROJECTION, session=session
                )
                assert doc is not None
                return StoredResource.from_current(resource_type, doc), None
            return await self.write_version(
                session, context, resource_type, str(uuid.uuid4()), resource, None, "create"
            )

        stored, change = await self.database.in_transaction(work)
        if change is None:
            released = await self._released_or_forbidden(context, stored)
            return WriteOutcome(released, created=False, changed=False)
        await self.hooks.call(Pointcut.AFTER_COMMIT, context=context, change=change)
        return WriteOutcome(stored, created=True)

    async def update(
        self,
        context: RequestContext,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        """PUT: update, or update-as-create when the id is new (or was deleted)."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            previous = await self.current_doc(context, resource_type, resource_id)
            live = previous is not None and not previous.get("del")
            self.check_if_match(resource_type, resource_id, previous, if_match)
            # Every attempt: a retry may turn an update-as-create into an update, which needs
            # the update permission, not the create one.
            await self.before_write(context, resource, previous if live else None)
            if previous is not None and unchanged(previous, resource):
                stored = StoredResource.from_current(resource_type, previous)
                return WriteOutcome(stored, created=False, changed=False)
            try:
                stored = await self._commit(
                    context, resource_type, resource_id, resource, previous, "update"
                )
                return WriteOutcome(stored, created=not live)
            except (StaleVersion, DuplicateKeyError) as exc:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"{resource_type}/{resource_id} changed concurrently; If-Match failed"
                    ) from None
                if isinstance(exc, DuplicateKeyError) and await self._hidden(
                    context, resource_type, resource_id
                ):
                    # It exists, but not for this client: not a race to retry.
                    raise Forbidden(
                        f"changing {resource_type}/{resource_id} is not permitted"
                    ) from None
        raise Conflict(f"{resource_type}/{resource_id} is being changed too often; try again")

    async def _hidden(self, context: RequestContext, resource_type: str, resource_id: str) -> bool:
        """True when the resource exists but the access filter keeps it from this client."""
        exists = await self.database.current(resource_type).find_one({"_id": resource_id}, {"_id": 1})
        return exists is not None and await self.current_doc(context, resource_type, resource_id) is None

    async def patch(
        self,
        context: RequestContext,
        resource_type: str,
        resource_id: str,
        operations: Any,
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        for _ in range(MAX_WRITE_ATTEMPTS):
            previous = await self.current_doc(context, resource_type, resource_id)
            if previous is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known")
            if previous.get("del"):
                raise Gone(f"{resource_type}/{resource_id} was deleted")
            self.check_if_match(resource_type, resource_id, previous, if_match)
            prior = orjson.loads(previous["res"])
            patched = apply_patch(prior, operations)
            if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
                raise BadRequest("a patch may not change resourceType or id", code="invariant")
            await self.before_write(context, patched, previous)
            try:
                stored = await self._commit(
                    context, resource_type, resource_id, patched, previous, "patch"
                )
                return WriteOutcome(stored, created=False)
            except StaleVersion:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"{resource_type}/{resource_id} changed concurrently; If-Match failed"
                    ) from None
        raise Conflict(f"{resource_type}/{resource_id} is being changed too often; try again")

    async def delete(
        self,
        context: RequestContext,
        resource_type: str,
        resource_id: str,
        *,
        if_match: int | None = None,
    ) -> StoredResource | None:
        """Deletes; returns the tombstone, or None when there was nothing to delete.

        Deleting what does not exist, or no longer exists, changes nothing and is not an error
        (FHIR R4 http.html#delete: 200/204 "if the resource does not exist at all").
        """
        for _ in range(MAX_WRITE_ATTEMPTS):
            previous = await self.current_doc(context, resource_type, resource_id)
            self.check_if_match(resource_type, resource_id, previous, if_match)
            if previous is None or previous.get("del"):
                return None
            await self.hooks.call(
                Pointcut.BEFORE_DELETE, context=context, previous=orjson.loads(previous["res"])
            )
            try:
                return await self._commit(context, resource_type, resource_id, None, previous, "delete")
            except StaleVersion:
                if if_match is not None:
                    raise PreconditionFailed(
                        f"{resource_type}/{resource_id} changed concurrently; If-Match failed"
                    ) from None
        raise Conflict(f"{resource_type}/{resource_id} is being changed too often; try again")

    async def conditional_update(
        self,
        context: RequestContext,
        resource_type: str,
        criteria: list[tuple[str, str]],
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> WriteOutcome:
        """PUT Type?criteria: no match creates, one match updates it, several are 412."""
        matches = await self.find_matches(context, resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The criteria match more than one {resource_type}", code="multiple-matches"
            )
        body_id = resource.get("id")
        if matches:
            match_id = str(matches[0]["_id"])
            if body_id is not None and body_id != match_id:
                raise BadRequest(
                    f"The resource id '{body_id}' differs from the matching {resource_type}/{match_id}"
                )
            return await self.update(context, resource_type, match_id, resource, if_match=if_match)
        if isinstance(body_id, str):
            return await self.update(context, resource_type, body_id, resource, if_match=if_match)
        return await self.create(context, resource)

    async def conditional_delete(
        self, context: RequestContext, resource_type: str, criteria: list[tuple[str, str]]
    ) -> StoredResource | None:
        """DELETE Type?criteria: one match is deleted; none deletes nothing; several are 412."""
        matches = await self.find_matches(context, resource_type, criteria)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The criteria match more than one {resource_type}", code="multiple-matches"
            )
        if not matches:
            return None
        return await self.delete(context, resource_type, str(matches[0]["_id"]))

    async def current_doc(
        self, context: RequestContext, resource_type: str, resource_id: str,
        *, session: AsyncClientSession | None = None,
    ) -> Doc | None:
        # Writes see only what the client may see: a resource hidden by the access filter
        # is "not known" to it, so its existence is not disclosed by a 412 or 409.
        access = await self.access_filter(context, resource_type)
        return await self.database.current(resource_type).find_one(
            _and({"_id": resource_id}, access), session=session
        )

    @staticmethod
    def check_if_match(
        resource_type: str, resource_id: str, previous: Doc | None, if_match: int | None
    ) -> None:
        if if_match is None:
            return
        if previous is None or previous.get("del"):
            raise PreconditionFailed(f"If-Match given but {resource_type}/{resource_id} does not exist")
        if previous["v"] != if_match:
            raise PreconditionFailed(
                f"If-Match version {if_match} is not the current version {previous['v']} "
                f"of {resource_type}/{resource_id}"
            )

    async def before_write(
        self, context: RequestContext, resource: dict[str, Any], previous: Doc | None
    ) -> None:
        if previous is None:
            await self.hooks.call(Pointcut.BEFORE_CREATE, context=context, resource=resource)
        else:
            await self.hooks.call(
                Pointcut.BEFORE_UPDATE, context=context, resource=resource,
                previous=orjson.loads(previous["res"]) if previous.get("res") else None,
            )


def _dig(doc: Doc, dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node
