"""The outbox: one event per committed change, written inside the change's own transaction.

A write that fails or whose transaction aborts leaves no event; a committed one always leaves
exactly one. The subscription dispatcher (`subscriptions.matcher`) reads these events in
commit order (change stream, polling as fallback) and marks each one matched (`m`).
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.context import RequestContext
from fhir_server.storage.pipeline import SessionWriter
from interceptors.hooks import Change, Pointcut, hook

OUTBOX = "outbox"
# After every other IN_TRANSACTION hook (provenance is 400): the event is the last write.
ORDER = 500


def outbox_indexes() -> dict[str, list[IndexModel]]:
    # The polling fallback looks for unmatched events in _id order.
    return {OUTBOX: [IndexModel([("m", ASCENDING), ("_id", ASCENDING)], name="m_id")]}


def event_document(change: Change) -> dict[str, Any]:
    return {
        "_id": ObjectId(),
        "t": change.resource_type,
        "r": change.id,
        "v": change.version_id,
        "i": change.interaction,
        "ts": change.last_updated,
        "m": False,
    }


class OutboxInterceptor:
    @hook(Pointcut.IN_TRANSACTION, ORDER)
    async def record(
        self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
        db: AsyncDatabase[dict[str, Any]], writer: SessionWriter,
    ) -> None:
        # One insert for all the transaction's changes, in their order (ObjectIds increase).
        if changes:
            await db[OUTBOX].insert_many([event_document(c) for c in changes], session=session)
