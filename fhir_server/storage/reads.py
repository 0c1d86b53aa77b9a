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
from fhir_server.storage.database import Database
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.records import (
    INDEX_PROJECTION,
    MAX_INCLUDED,
    Doc,
    _and,
)


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

