"""The access decision at the hook points (fhir_server.access): registered when auth is on.

Every hook asks this request's one `AccessDecision` (SMART scopes and Consent, compiled once):
- INCOMING_REQUEST (after authentication): the purpose of use in force, from the token,
  narrowed by X-Purpose-Of-Use;
- FILTER_QUERY: `query_filter(type)` for every query of the read pipeline;
- CAN_SEE: `may_release(resource)` for every resource leaving the server;
- BEFORE_CREATE / BEFORE_UPDATE / BEFORE_DELETE: `may_write` (scopes, judged by the new
  version's computed patient compartments) and, for the version changed, Consent's say;
- IN_TRANSACTION (order 300): `may_store`, Consent's `collect` / `correct` provisions.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.access import AccessPolicy, purpose_in_force
from fhir_server.access.purpose import REQUESTED_PURPOSE
from fhir_server.context import RequestContext
from fhir_server.hooks import AccessQuery, Change, Pointcut, hook
from fhir_server.storage.pipeline import SessionWriter


class AccessInterceptor:
    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy

    @hook(Pointcut.INCOMING_REQUEST)
    def purpose_of_use(self, context: RequestContext) -> None:
        principal = context.principal
        if principal is None:
            return  # a public interaction (discovery): nothing is decided for it
        consent = self.policy.consent
        btg = consent is not None and consent.may_break_the_glass(principal.scopes)
        requested = tuple(context.attributes.get(REQUESTED_PURPOSE) or ())
        context.purpose_of_use = purpose_in_force(principal, requested, btg)

    @hook(Pointcut.FILTER_QUERY)
    async def filter_query(self, context: RequestContext, resource_type: str, query: AccessQuery) -> None:
        decision = self.policy.decision(context)
        fragment = await decision.query_filter(resource_type)
        if fragment is not None:
            query.add(fragment)
        check = decision.query_check(resource_type)
        if check is not None:
            query.add_check(check)
        if decision.judges_on_release(resource_type):
            query.want_index()

    @hook(Pointcut.CAN_SEE)
    async def can_see(self, context: RequestContext, resource: dict[str, Any]) -> bool:
        return await self.policy.decision(context).may_release(resource)

    @hook(Pointcut.BEFORE_CREATE)
    def before_create(self, context: RequestContext, resource: dict[str, Any]) -> None:
        self.policy.decision(context).may_write(str(resource.get("resourceType")), "create", resource)

    @hook(Pointcut.BEFORE_UPDATE)
    async def before_update(self, context: RequestContext, resource: dict[str, Any],
                            previous: dict[str, Any] | None) -> None:
        decision = self.policy.decision(context)
        rtype = str(resource.get("resourceType"))
        interaction = "patch" if context.interaction == "patch" else "update"
        if previous is None:
            # Update-as-create (no previous version) needs the create permission too.
            decision.may_write(rtype, "create", resource)
        decision.may_write(rtype, interaction, resource, previous)
        if previous is not None:
            await decision.may_change(rtype, previous)

    @hook(Pointcut.BEFORE_DELETE)
    async def before_delete(self, context: RequestContext, previous: dict[str, Any] | None) -> None:
        decision = self.policy.decision(context)
        rtype = str((previous or {}).get("resourceType") or context.resource_type)
        decision.may_write(rtype, "delete", None, previous)
        if previous is not None:
            await decision.may_change(rtype, previous)

    @hook(Pointcut.IN_TRANSACTION, slot="access-store")
    async def check_changes(self, context: RequestContext, changes: list[Change],
                            session: AsyncClientSession, db: AsyncDatabase[dict[str, Any]],
                            writer: SessionWriter) -> None:
        decision = self.policy.decision(context)
        for change in changes:
            if change.resource is not None:
                # A new resource (a create, an update-as-create, a re-creation) is collected.
                interaction = "create" if change.previous is None else change.interaction
                await decision.may_store(change.resource_type, change.id, interaction, session,
                                         stored=change.stored)
