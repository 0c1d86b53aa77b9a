"""Provenance for every change (order 400), written in the change's own transaction through
the commit's SessionWriter, with one bulk write for all of a unit's Provenances (which
changes: `fhir_server.audit.events.records_change`)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.audit.events import records_change
from fhir_server.audit.provenance import care_location, provenance_for
from fhir_server.context import RequestContext
from fhir_server.hooks import Change, Pointcut, hook
from fhir_server.storage.pipeline import SessionWriter

_LOCATION = "provenance.location"


class ProvenanceInterceptor:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def _location(self, context: RequestContext, db: AsyncDatabase[dict[str, Any]],
                        session: AsyncClientSession) -> str | None:
        if _LOCATION not in context.attributes:
            principal = context.caller
            context.attributes[_LOCATION] = (
                await care_location(db, principal.fhir_user, self.base_url, session)
                if principal is not None and principal.fhir_user else None)
        location: str | None = context.attributes[_LOCATION]
        return location

    @hook(Pointcut.IN_TRANSACTION)
    async def record(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                     db: AsyncDatabase[dict[str, Any]], writer: SessionWriter) -> None:
        for change in changes:
            if records_change(context, change):
                location = await self._location(context, db, session)
                writer.create("Provenance", provenance_for(context, self.base_url, change, location))
