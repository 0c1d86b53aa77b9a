"""`plan`: the first step of every write. Decides, inside the unit's transaction, what each
resource's next version is, and prepares it; nothing is written yet.

In order: the target (conditional criteria resolved under the lock of their canonical form,
`locks.py`); If-Match; the patch applied; id and meta stamped; search values extracted and
compartments computed (`Planned.compartments`, before any hook sees the change); the
BEFORE_* hooks (validation, SMART, Consent, audit's append-only rule, Subscription admission;
a hook may amend the resource, which is then indexed again); the unchanged check; the new
version's documents. What a plan looks up, it looks up in the unit's session through the read
pipeline's access filter, so a client never changes (or learns of) what it may not see.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server import fhirjson
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest, Forbidden, Gone, NotFound, PreconditionFailed
from fhir_server.hooks import Pointcut
from fhir_server.jsonpatch import apply_patch
from fhir_server.storage.pipeline import locks
from fhir_server.storage.pipeline.versions import Doc, Planned, Versions
from fhir_server.storage.records import INDEX_PROJECTION, _and, unchanged
from fhir_server.storage.searches import SearchPipeline

Criteria = list[tuple[str, str]]


class Planner:
    def __init__(self, reads: SearchPipeline, versions: Versions) -> None:
        self.reads = reads
        self.versions = versions
        self.hooks = reads.hooks
        self.database = reads.database

    # ------------------------------------------------------------------ targets

    async def current(self, session: AsyncClientSession | None, context: RequestContext,
                      resource_type: str, resource_id: str) -> Doc | None:
        # Hidden by the access filter is "not known": a 412 or 409 would disclose it.
        access = await self.reads.access_filter(context, resource_type)
        return await self.database.current(resource_type).find_one(
            _and({"_id": resource_id}, access), session=session)

    async def current_many(self, session: AsyncClientSession | None, context: RequestContext,
                           keys: list[tuple[str, str]]) -> dict[tuple[str, str], Doc]:
        """The current documents of many resources: one query per type (bulk writers)."""
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in keys:
            by_type.setdefault(resource_type, []).append(resource_id)
        found: dict[tuple[str, str], Doc] = {}
        for resource_type, ids in by_type.items():
            access = await self.reads.access_filter(context, resource_type)
            query = _and({"_id": {"$in": ids}}, access)
            async for doc in self.database.current(resource_type).find(query, session=session):
                found[(resource_type, doc["_id"])] = doc
        return found

    async def resolve(self, session: AsyncClientSession, context: RequestContext,
                      resource_type: str, criteria: Criteria, *, lock: bool) -> list[Doc]:
        """What conditional criteria match (at most two), under their lock when the write
        may create (conditional create, conditional update): see locks.py."""
        if lock:
            await locks.hold(self.database.db, session, resource_type, criteria)
        return await self.reads.find_matches(context, resource_type, criteria, session=session)

    async def _hidden(self, session: AsyncClientSession, context: RequestContext,
                      resource_type: str, resource_id: str) -> bool:
        if await self.reads.access_filter(context, resource_type) is None:
            return False
        exists = await self.database.current(resource_type).find_one(
            {"_id": resource_id}, {"_id": 1}, session=session)
        return exists is not None

    # ------------------------------------------------------------------ interactions

    async def create(self, session: AsyncClientSession | None, context: RequestContext,
                     resource: dict[str, Any], *, resource_id: str | None = None,
                     if_none_exist: Criteria | None = None) -> Planned:
        """POST: a new resource (`resource_id` when the caller assigned it already), or, with
        If-None-Exist, the one match (412 for several; takes the unit's session)."""
        resource_type: str = resource["resourceType"]
        planned = await self._version(context, resource_type, resource_id or str(uuid.uuid4()),
                                      resource, None, "create")
        if if_none_exist is None:
            return planned
        assert session is not None, "a conditional create is planned in its transaction"
        matches = await self.resolve(session, context, resource_type, if_none_exist, lock=True)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist criteria match more than one {resource_type}", code="duplicate")
        if not matches:
            return planned
        doc = await self.database.current(resource_type).find_one(
            {"_id": matches[0]["_id"]}, INDEX_PROJECTION, session=session)
        assert doc is not None
        return Planned(resource_type, doc["_id"], "create", "matched", previous=doc)

    async def update(self, session: AsyncClientSession, context: RequestContext,
                     resource_type: str, resource_id: str, resource: dict[str, Any], *,
                     if_match: int | None = None) -> Planned:
        """PUT: update, or update-as-create when the id is new (or was deleted)."""
        previous = await self.current(session, context, resource_type, resource_id)
        if previous is None and await self._hidden(session, context, resource_type, resource_id):
            raise Forbidden(f"changing {resource_type}/{resource_id} is not permitted")
        check_if_match(resource_type, resource_id, previous, if_match)
        return await self.update_from(context, resource_type, resource_id, resource, previous)

    async def update_from(self, context: RequestContext, resource_type: str, resource_id: str,
                          resource: dict[str, Any], previous: Doc | None) -> Planned:
        """PUT over a current document already looked up (the loader looks up in bulk)."""
        planned = await self._version(context, resource_type, resource_id, resource, previous, "update")
        if previous is not None and unchanged(previous, resource):
            return Planned(resource_type, resource_id, "update", "unchanged", previous=previous,
                           resource=resource, index=planned.index)
        return planned

    async def conditional_update(self, session: AsyncClientSession, context: RequestContext,
                                 resource_type: str, criteria: Criteria, resource: dict[str, Any],
                                 *, if_match: int | None = None) -> Planned:
        """PUT Type?criteria: no match creates, one match updates it, several are 412. Under
        the criteria's lock, so concurrent ones create one resource and update it."""
        matches = await self.resolve(session, context, resource_type, criteria, lock=True)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The criteria match more than one {resource_type}", code="multiple-matches")
        body_id = resource.get("id")
        if matches:
            match_id = str(matches[0]["_id"])
            if body_id is not None and body_id != match_id:
                raise BadRequest(
                    f"The resource id '{body_id}' differs from the matching {resource_type}/{match_id}")
            return await self.update(session, context, resource_type, match_id, resource,
                                     if_match=if_match)
        if isinstance(body_id, str):
            return await self.update(session, context, resource_type, body_id, resource,
                                     if_match=if_match)
        return await self.create(session, context, resource)

    async def patch(self, session: AsyncClientSession, context: RequestContext,
                    resource_type: str, resource_id: str, operations: Any, *,
                    if_match: int | None = None) -> Planned:
        previous = await self.current(session, context, resource_type, resource_id)
        if previous is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        if previous.get("del"):
            raise Gone(f"{resource_type}/{resource_id} was deleted")
        check_if_match(resource_type, resource_id, previous, if_match)
        patched = apply_patch(fhirjson.loads(previous["res"]), operations)
        if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
            raise BadRequest("a patch may not change resourceType or id", code="invariant")
        return await self._version(context, resource_type, resource_id, patched, previous, "patch")

    async def delete(self, session: AsyncClientSession, context: RequestContext,
                     resource_type: str, resource_id: str, *, if_match: int | None = None) -> Planned:
        """A tombstone, or nothing when there is nothing to delete: deleting what does not
        exist (or no longer) is not an error (R4 http.html#delete)."""
        previous = await self.current(session, context, resource_type, resource_id)
        check_if_match(resource_type, resource_id, previous, if_match)
        if previous is None or previous.get("del"):
            return Planned(resource_type, resource_id, "delete", "absent", previous=previous)
        planned = Planned(resource_type, resource_id, "delete", "deleted", previous=previous,
                          index={"compartments": previous.get("compartments")})
        await self.before_write(context, planned)
        planned.version = self.versions.build(resource_type, resource_id, None, previous, "delete")
        return planned

    async def conditional_delete(self, session: AsyncClientSession, context: RequestContext,
                                 resource_type: str, criteria: Criteria) -> Planned:
        """DELETE Type?criteria: one match is deleted; none deletes nothing; several are 412.
        No lock: a delete never creates, so two at once cannot make a duplicate."""
        matches = await self.resolve(session, context, resource_type, criteria, lock=False)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"The criteria match more than one {resource_type}", code="multiple-matches")
        if not matches:
            return Planned(resource_type, "", "delete", "absent")
        return await self.delete(session, context, resource_type, str(matches[0]["_id"]))

    # ------------------------------------------------------------------ the new version

    async def _version(self, context: RequestContext, resource_type: str, resource_id: str,
                       resource: dict[str, Any], previous: Doc | None, interaction: str) -> Planned:
        live = previous is not None and not previous.get("del")
        at = self.versions.stamp(resource, resource_id, previous)
        index = self.versions.index(resource_type, resource)
        planned = Planned(resource_type, resource_id, interaction, "updated" if live else "created",
                          previous=previous, resource=resource, index=index)
        before = fhirjson.dumps(resource)
        await self.before_write(context, planned)
        raw = fhirjson.dumps(resource)
        if raw != before:
            planned.index = index = self.versions.index(resource_type, resource)
        planned.version = self.versions.build(resource_type, resource_id, resource, previous,
                                              interaction, stamped=(at, index, raw))
        return planned

    async def before_write(self, context: RequestContext, planned: Planned) -> None:
        """The BEFORE_* hooks of one planned change: the one place they are called from."""
        previous = planned.previous
        prior = fhirjson.loads(previous["res"]) if previous and previous.get("res") else None
        if planned.interaction == "delete":
            await self.hooks.call(Pointcut.BEFORE_DELETE, context=context, previous=prior)
        elif planned.outcome == "created":
            await self.hooks.call(Pointcut.BEFORE_CREATE, context=context, resource=planned.resource)
        else:
            await self.hooks.call(Pointcut.BEFORE_UPDATE, context=context,
                                  resource=planned.resource, previous=prior)


def check_if_match(resource_type: str, resource_id: str, previous: Doc | None,
                   if_match: int | None) -> None:
    if if_match is None:
        return
    if previous is None or previous.get("del"):
        raise PreconditionFailed(f"If-Match given but {resource_type}/{resource_id} does not exist")
    if previous["v"] != if_match:
        raise PreconditionFailed(
            f"If-Match version {if_match} is not the current version {previous['v']} "
            f"of {resource_type}/{resource_id}")
