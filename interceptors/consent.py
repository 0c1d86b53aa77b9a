"""Consent's bookkeeping at IN_TRANSACTION (order 300): a labelled version gets its
`patient_labels` (fhir_server.consent.labels), so that label provisions are one flat filter.

What Consent decides (what leaves the server, which writes a `collect` / `correct` provision
refuses) is part of the request's one access decision: fhir_server.access, registered by
interceptors/access.py.
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.consent import ConsentEngine, labels
from fhir_server.context import RequestContext
from fhir_server.hooks import Change, Pointcut, hook
from fhir_server.storage.pipeline import SessionWriter

# Written by the server about a change; governed by the change itself.
_SIDE_RECORDS = ("Provenance", "AuditEvent")


class ConsentInterceptor:
    def __init__(self, engine: ConsentEngine) -> None:
        self.engine = engine

    @hook(Pointcut.IN_TRANSACTION)
    async def stamp_labels(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                           db: AsyncDatabase[dict[str, Any]], writer: SessionWriter) -> None:
        for change in changes:
            if change.resource is not None and change.resource_type not in _SIDE_RECORDS:
                await labels.stamp(self.engine.database, change, session)
