"""The write pipeline: hooks(before) -> precondition (versionId) -> assign id/meta -> extract
index values -> {current, history, IN_TRANSACTION hooks} in one MongoDB transaction ->
hooks(after commit). What a write looks up, it looks up through the read pipeline's access
filter, so a client never changes (or learns of) what it may not see."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from fhir_server import fhirjson
from fhir_server.context import RequestContext
from fhir_server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PreconditionFailed,
)
from fhir_server.hooks import Change, Pointcut
from fhir_server.jsonpatch import apply_patch
from fhir_server.storage.database import CONDITIONAL_LOCKS
from fhir_server.storage.documents import StoredResource, now, stamp_meta
from fhir_server.storage.records import (
    INDEX_PROJECTION,
    MAX_WRITE_ATTEMPTS,
    Doc,
    NewVersion,
    StaleVersion,
    WriteOutcome,
    _and,
    unchanged,
)
from fhir_server.storage.searches import SearchPipeline


class WritePipeline(SearchPipeline):
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
            Pointcut.IN_TRANSACTION, context=context, changes=[version.change], session=session,
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
            raw: bytes | None = fhirjson.dumps(resource)
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
        prev_resource = fhirjson.loads(previous["res"]) if previous and previous.get("res") else None
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
                _raise_if_pinned(resource_type, resource_id, if_match)
                if isinstance(exc, DuplicateKeyError) and await self._hidden(
                    context, resource_type, resource_id
                ):
                    # It exists, but not for this client: not a race to retry.
                    raise Forbidden(
                        f"changing {resource_type}/{resource_id} is not permitted"
                    ) from None
        raise _contended(resource_type, resource_id)

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
            prior = fhirjson.loads(previous["res"])
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
                _raise_if_pinned(resource_type, resource_id, if_match)
        raise _contended(resource_type, resource_id)

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
                Pointcut.BEFORE_DELETE, context=context, previous=fhirjson.loads(previous["res"])
            )
            try:
                return await self._commit(context, resource_type, resource_id, None, previous, "delete")
            except StaleVersion:
                _raise_if_pinned(resource_type, resource_id, if_match)
        raise _contended(resource_type, resource_id)

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
                previous=fhirjson.loads(previous["res"]) if previous.get("res") else None,
            )


def _raise_if_pinned(resource_type: str, resource_id: str, if_match: int | None) -> None:
    """A write lost a race to a concurrent one: with If-Match that is the client's 412; without,
    the caller reads the new current version and tries again."""
    if if_match is not None:
        raise PreconditionFailed(f"{resource_type}/{resource_id} changed concurrently; If-Match failed")


def _contended(resource_type: str, resource_id: str) -> Conflict:
    return Conflict(f"{resource_type}/{resource_id} is being changed too often; try again")
