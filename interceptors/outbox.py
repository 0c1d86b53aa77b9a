"""The outbox interceptor: one event per committed change, written inside the change's own
transaction (layout: `fhir_server.storage.outbox`).

A write that fails or whose transaction aborts leaves no event; a committed one always leaves
exactly one. The subscription dispatcher (`subscriptions.matcher`) reads these events in
commit order (change stream, polling as fallback) and marks each one matched (`m`).
"""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.context import RequestContext
from fhir_server.hooks import Change, Pointcut, hook
from fhir_server.storage.outbox import OUTBOX, event_document
from fhir_server.storage.pipeline import SessionWriter

__all__ = ["OutboxInterceptor"]


class OutboxInterceptor:
    @hook(Pointcut.IN_TRANSACTION)
    async def record(
        self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
        db: AsyncDatabase[dict[str, Any]], writer: SessionWriter,
    ) -> None:
        # One insert for all the transaction's changes, in their order (ObjectIds increase),
        # those of the records about them (Provenance) included: the commit's last write.
        if changes:
            writer.insert_last(OUTBOX, [event_document(c) for c in changes])
