"""The interceptor for Subscription resources: admission, status lifecycle, ownership.

- Admission (BEFORE_CREATE / BEFORE_UPDATE): a Subscription this server cannot honour is
  refused (422), including rest-hook endpoints that fail the SSRF policy.
- Status is the server's: a client may ask for `off`; anything else becomes `requested`
  (the dispatcher then handshakes and sets `active`, or `error` when delivery keeps failing),
  except that an `active` / `error` Subscription whose criteria and channel did not change
  keeps its status. The server's own writes carry `SERVER_WRITE` and pass untouched.
- Ownership (IN_TRANSACTION): the creating principal is stored beside the Subscription, and
  its key on the stored documents, so that FILTER_QUERY confines every read and write of
  Subscriptions to their owner (or a `system/` scope on Subscription). The owner's own updates
  record their token as the owner's grant (`subscriptions.grant`).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.context import RequestContext
from fhir_server.hooks import AccessQuery, Change, Pointcut, hook
from fhir_server.storage import schema
from fhir_server.storage.pipeline import SessionWriter
from subscriptions.endpoints import EndpointPolicy, EndpointRefused
from subscriptions.grant import registered_backend
from subscriptions.model import SpecParser, refuse
from subscriptions.owner import has_system_access, owner_key, principal_doc
from subscriptions.store import STATE

Doc = dict[str, Any]
SERVER_WRITE = "subscription_server_write"
# The fields that, changed, make a Subscription a new one to handshake and activate.
_DEFINING = ("criteria", "_criteria", "channel", "end")


def server_context(base_url: str) -> RequestContext:
    context = RequestContext.system(base_url, "subscription-dispatcher")
    context.attributes[SERVER_WRITE] = True
    return context


class SubscriptionGuard:
    def __init__(self, parser: SpecParser, policy: EndpointPolicy) -> None:
        self.parser = parser
        self.policy = policy

    async def _admit(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        if resource.get("resourceType") != "Subscription":
            return
        server = bool(context.attributes.get(SERVER_WRITE))
        spec = self.parser.parse(resource, internal=server)
        if server:
            return
        if spec.channel.type == "rest-hook" and spec.channel.endpoint:
            try:
                await self.policy.check(spec.channel.endpoint)
            except EndpointRefused as exc:
                raise refuse(str(exc), "Subscription.channel.endpoint") from None
        resource["status"] = self._status(resource, previous)
        if resource["status"] in ("requested", "off"):
            resource.pop("error", None)

    @staticmethod
    def _status(resource: Doc, previous: Doc | None) -> str:
        if resource.get("status") == "off":
            return "off"
        if previous is not None and previous.get("status") in ("active", "error"):
            unchanged = all(previous.get(k) == resource.get(k) for k in _DEFINING)
            asked_again = resource.get("status") in ("requested", "active") and previous["status"] == "error"
            if unchanged and not asked_again:
                return str(previous["status"])
        return "requested"

    @hook(Pointcut.BEFORE_CREATE)
    async def before_create(self, context: RequestContext, resource: Doc) -> None:
        await self._admit(context, resource, None)

    @hook(Pointcut.BEFORE_UPDATE)
    async def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        await self._admit(context, resource, previous)

    @hook(Pointcut.IN_TRANSACTION)
    async def record_owner(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                           db: AsyncDatabase[Doc], writer: SessionWriter) -> None:
        for change in changes:
            await self._record_owner_one(context, change, session, db)

    async def _record_owner_one(self, context: RequestContext, change: Change, session: AsyncClientSession,
                           db: AsyncDatabase[Doc]) -> None:
        if change.resource_type != "Subscription":
            return
        state = db[STATE]
        if change.previous is None and change.resource is not None:
            owner = principal_doc(context.principal, context.purpose_of_use,
                                  registered=await registered_backend(db, context.principal))
            await state.update_one({"_id": change.id}, {"$set": {"owner": owner},
                                                        "$setOnInsert": {"n": 0}},
                                   upsert=True, session=session)
        else:
            found = await state.find_one({"_id": change.id}, {"owner": 1}, session=session)
            owner = found.get("owner") if found else None
            principal = context.principal
            if (owner and change.resource is not None and principal is not None and principal.kind == "token"
                    and owner.get("key") == owner_key(principal)):
                # The owner's own update: its token is the grant from now on (renewing an
                # expiring one). An administrator's or the server's update keeps the owner's.
                owner = principal_doc(principal, context.purpose_of_use,
                                      registered=await registered_backend(db, principal))
                await state.update_one({"_id": change.id}, {"$set": {"owner": owner}}, session=session)
        key = owner.get("key") if owner else None
        await db[change.resource_type].update_one(
            {"_id": change.id}, {"$set": {"owner": key}}, session=session)
        await db[schema.history_collection(change.resource_type)].update_one(
            {"_id": schema.history_key(change.id, change.version_id)}, {"$set": {"owner": key}},
            session=session)

    @hook(Pointcut.FILTER_QUERY)
    def filter_query(self, context: RequestContext, resource_type: str, query: AccessQuery) -> None:
        principal = context.principal
        if resource_type != "Subscription" or principal is None or principal.kind != "token" \
                or has_system_access(principal):
            return
        query.add({"owner": owner_key(principal)})
