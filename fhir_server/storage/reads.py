"""The read pipeline: every query ANDs the access filter gathered from FILTER_QUERY hooks,
and every resource that leaves passes CAN_SEE and WILL_SEE (`release`). No caller can skip
either; searching (searches.py) and writing (writes.py) build on these two."""

from __future__ import annotations

from fhir_server.config import Settings
from fhir_server.context import RequestContext
from fhir_server.errors import (
    Forbidden,
    Gone,
    NotFound,
)
from fhir_server.hooks import AccessQuery, HookRegistry, Pointcut
from fhir_server.search import SearchEngine, keyset
from fhir_server.search.query import Clause, build_filter
from fhir_server.storage import seen
from fhir_server.storage.database import Database
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.readcache import ReadCache
from fhir_server.storage.records import (
    INDEX_PROJECTION,
    MAX_INCLUDED,
    Doc,
    _and,
)
from fhir_server.storage.schema import versions_of


def checked_projection(access: AccessQuery, projection: Doc | None) -> Doc | None:
    """`projection`, widened to the whole document when checks need the index fields."""
    return None if access.checks or access.index_wanted else projection


class ReadPipeline:
    def __init__(
        self, database: Database, hooks: HookRegistry, settings: Settings, search: SearchEngine
    ) -> None:
        if not hooks.frozen:
            # Interceptors are all registered before the repository runs a single query.
            raise ValueError("the repository needs a frozen hook registry (build_interceptors)")
        self.database = database
        self.hooks = hooks
        self.settings = settings
        self.search_engine = search
        # Reads by id from memory, invalidated by the outbox's change stream (readcache.py).
        self.read_cache = ReadCache(database.changes, settings.read_cache) \
            if settings.read_cache > 0 else None

    async def access(self, context: RequestContext, resource_type: str) -> AccessQuery:
        """The access decision for a query on `resource_type`: filters and document checks."""
        query = AccessQuery()
        if self.hooks.has(Pointcut.FILTER_QUERY):
            await self.hooks.call(
                Pointcut.FILTER_QUERY, context=context, resource_type=resource_type, query=query
            )
        return query

    async def access_filter(self, context: RequestContext, resource_type: str) -> Doc | None:
        """The filter part of the access decision only: for lookups that return nothing to
        the client (a write's own target, whose change is checked again in its transaction).
        Paths that return documents use `access` and apply its checks (`passing`)."""
        return _and(*(await self.access(context, resource_type)).filters) or None

    @staticmethod
    async def passing(access: AccessQuery, docs: list[Doc]) -> list[Doc]:
        """The documents every check of `access` lets through, in order."""
        for check in access.checks:
            if not docs:
                break
            verdicts = await check(docs)
            docs = [d for d, ok in zip(docs, verdicts, strict=True) if ok]
        return docs

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
        access = await self.access(context, resource_type)
        doc = await self._current_doc(access, resource_type, resource_id, context)
        if doc is not None and not await self.passing(access, [doc]):
            doc = None
        if doc is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if access.index_wanted:
            seen.remember(context, resource_type, doc)
        return StoredResource.from_current(resource_type, doc)

    async def _current_doc(self, access: AccessQuery, resource_type: str, resource_id: str,
                           context: RequestContext) -> Doc | None:
        """The current document of `resource_id` within the access filter: from the read cache
        when the filter is empty and the cache is up to date (with every change committed
        before the request's ticket: the pull the Consent cache waited for serves), else from
        the database."""
        cache = self.read_cache
        if cache is not None and not access.filters and cache.caches(resource_type) and await cache.ready(
                cache.feed.request_ticket(context.attributes)):
            doc = cache.get(resource_type, resource_id)
            if doc is None:
                ticket = cache.ticket()
                doc = await self.database.current(resource_type).find_one({"_id": resource_id})
                if doc is not None:
                    cache.put(resource_type, resource_id, doc, ticket)
            return doc
        return await self.database.current(resource_type).find_one(
            _and({"_id": resource_id}, *access.filters), checked_projection(access, INDEX_PROJECTION)
        )

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
        access = await self.access(context, resource_type)
        # A version this process committed lately is the stored one (versions never change);
        # with an access filter, only the database can say whether it matches.
        doc = None if access.filters else self.database.recent.get(resource_type, resource_id, version_id)
        if doc is None:
            doc = await self.database.history(resource_type).find_one(
                _and(versions_of(resource_type, resource_id), {"v": version_id}, *access.filters),
                checked_projection(access, INDEX_PROJECTION),
            )
        if doc is not None and not await self.passing(access, [doc]):
            doc = None
        if doc is None:
            raise NotFound(f"{resource_type}/{resource_id}/_history/{version_id} is not known")
        if access.index_wanted:
            seen.remember(context, resource_type, doc)
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

    async def _fetch_included(
        self, context: RequestContext, rtype: str, clause: Clause
    ) -> list[tuple[str, Doc]]:
        access = await self.access(context, rtype)
        base = keyset.merge(build_filter([clause]), _and(*access.filters) or {})
        if "del" not in base:
            base["del"] = False
        projection = checked_projection(access, {"compartments": 0})
        docs = await self.database.current(rtype).find(base, projection).limit(
            MAX_INCLUDED).to_list()
        return [(rtype, d) for d in await self.passing(access, docs)]

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

