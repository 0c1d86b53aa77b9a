"""The outbox collection: one event document per committed change, in commit order.

Storage owns its layout: the outbox interceptor (`interceptors.outbox`) writes these
documents inside each change's transaction; the subscription matcher (`subscriptions.matcher`)
reads them in `_id` order and marks each one matched (`m`).
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from fhir_server.hooks import Change

OUTBOX = "outbox"


def outbox_indexes() -> dict[str, list[IndexModel]]:
    # The polling fallback looks for unmatched events in _id order.
    return {OUTBOX: [IndexModel([("m", ASCENDING), ("_id", ASCENDING)], name="m_id")]}


def event_document(change: Change) -> dict[str, Any]:
    """t: type, r: id, v: version, i: interaction, ts: commit time, m: matched yet."""
    return {
        "_id": ObjectId(),
        "t": change.resource_type,
        "r": change.id,
        "v": change.version_id,
        "i": change.interaction,
        "ts": change.last_updated,
        "m": False,
    }
