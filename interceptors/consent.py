"""Consent enforcement at the hook points (order 300, after SMART scopes).

- FILTER_QUERY: every query of the read pipeline gets the Consent document check, so a
  denied resource is never returned, counted, paged, included or used to resolve a chain.
- CAN_SEE: a direct read or vread is not filtered but checked, so that a denied resource is
  answered 403 rather than 404.
- IN_TRANSACTION: the version being written must not fall in a region the writer is denied
  (`collect` for a create, `correct` otherwise); lookups before a write are filtered already.
- BEFORE_*: a patient changes only their own Consents; a RelatedPerson changes none.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.consent import ConsentEngine
from fhir_server.consent.model import relative_reference
from fhir_server.context import RequestContext
from fhir_server.errors import Forbidden
from interceptors.hooks import AccessQuery, Change, Pointcut, hook

ORDER = 300
# Written by the server about a change; governed by the change itself.
_SIDE_RECORDS = ("Provenance", "AuditEvent")


class ConsentInterceptor:
    def __init__(self, engine: ConsentEngine) -> None:
        self.engine = engine

    @staticmethod
    def _direct_read(context: RequestContext, resource_type: str) -> bool:
        return context.interaction in ("read", "vread") and resource_type == context.resource_type

    @hook(Pointcut.FILTER_QUERY, ORDER)
    async def filter_query(self, context: RequestContext, resource_type: str,
                           query: AccessQuery) -> None:
        if self._direct_read(context, resource_type):
            return
        check = self.engine.check(context, resource_type)
        if check is not None:
            query.add_check(check)

    @hook(Pointcut.CAN_SEE, ORDER)
    async def can_see(self, context: RequestContext, resource: dict[str, Any]) -> bool:
        rtype = str(resource.get("resourceType"))
        if not self._direct_read(context, rtype):
            return True
        version = (resource.get("meta") or {}).get("versionId")
        key = {"_id": f"{resource.get('id')}/{version}"}
        return not await self.engine.denies(context, rtype, key, history=True, action="access")

    @hook(Pointcut.IN_TRANSACTION, ORDER)
    async def check_change(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                           db: AsyncDatabase[dict[str, Any]]) -> None:
        for change in changes:
            await self._check_change_one(context, change, session, db)

    async def _check_change_one(self, context: RequestContext, change: Change,
                           session: AsyncClientSession, db: AsyncDatabase[dict[str, Any]]) -> None:
        if change.resource is None or change.resource_type in _SIDE_RECORDS:
            return
        action = "collect" if change.interaction == "create" else "correct"
        if await self.engine.denies(context, change.resource_type, {"_id": change.id},
                                    history=False, action=action, session=session):
            raise Forbidden(f"A Consent of the patient does not permit this change to "
                            f"{change.resource_type}")

    def _check_author(self, context: RequestContext, *resources: dict[str, Any] | None) -> None:
        principal = context.principal
        if principal is None or not principal.fhir_user:
            return
        user = relative_reference(principal.fhir_user, self.engine.base_url)
        if user.startswith("RelatedPerson/"):
            raise Forbidden("A RelatedPerson cannot change a patient's Consent")
        if not user.startswith("Patient/"):
            return
        for resource in resources:
            if resource is None:
                continue
            patient = resource.get("patient") or {}
            ref = relative_reference(str(patient.get("reference", "")), self.engine.base_url)
            if ref != user:
                raise Forbidden("A patient can change their own Consents only")

    @hook(Pointcut.BEFORE_CREATE, ORDER)
    def before_create(self, context: RequestContext, resource: dict[str, Any]) -> None:
        if resource.get("resourceType") == "Consent":
            self._check_author(context, resource)

    @hook(Pointcut.BEFORE_UPDATE, ORDER)
    def before_update(self, context: RequestContext, resource: dict[str, Any],
                      previous: dict[str, Any] | None) -> None:
        if resource.get("resourceType") == "Consent":
            self._check_author(context, resource, previous)

    @hook(Pointcut.BEFORE_DELETE, ORDER)
    def before_delete(self, context: RequestContext, previous: dict[str, Any] | None) -> None:
        if previous is not None and previous.get("resourceType") == "Consent":
            self._check_author(context, previous)
