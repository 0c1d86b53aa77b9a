"""The dispatcher's collections and the few queries it runs on them.

- `subscription_state`: per Subscription, its owner (principal at creation) and `n`, the
  number of events matched so far (`eventsSinceSubscriptionStart`). Only the matcher
  increments `n`, inside the transaction that stores the notifications.
- `subscription_notifications`: one document per (Subscription, event number): which
  version of which resource, the interaction, the commit time. `_id` is `"<sub>:<n>"`, so a
  number can never be used twice. Kept for `$events` replay (retention in settings).
- `subscription_delivery`: per Subscription, what the channel has acknowledged (`acked`)
  and the current failure streak (attempts, since when, last error).
- `subscription_leases` / `subscription_dispatchers`: see `subscriptions.leases`.
- `subscription_ws_tokens`: websocket binding tokens (hashed).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

Doc = dict[str, Any]
STATE = "subscription_state"
NOTIFICATIONS = "subscription_notifications"
DELIVERY = "subscription_delivery"
LEASES = "subscription_leases"
DISPATCHERS = "subscription_dispatchers"
WS_TOKENS = "subscription_ws_tokens"


def store_indexes() -> dict[str, list[IndexModel]]:
    return {
        STATE: [],
        NOTIFICATIONS: [IndexModel([("s", ASCENDING), ("n", ASCENDING)], name="s_n"),
                        IndexModel([("at", ASCENDING)], name="at")],
        DELIVERY: [],
        LEASES: [],
        DISPATCHERS: [],
        WS_TOKENS: [],
    }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db

    # ------------------------------------------------------------------ state

    async def state(self, sub: str) -> Doc:
        return await self.db[STATE].find_one({"_id": sub}) or {"_id": sub, "n": 0, "owner": None}

    async def counters(self, subs: list[str]) -> dict[str, int]:
        docs = await self.db[STATE].find({"_id": {"$in": subs}}, {"n": 1}).to_list()
        return {d["_id"]: int(d.get("n", 0)) for d in docs}

    # ------------------------------------------------------------------ notifications

    async def pending(self, sub: str, after: int, limit: int) -> list[Doc]:
        cursor = self.db[NOTIFICATIONS].find({"s": sub, "n": {"$gt": after}}).sort("n", ASCENDING)
        return await cursor.limit(limit).to_list()

    async def events(self, sub: str, first: int, last: int, limit: int) -> list[Doc]:
        cursor = self.db[NOTIFICATIONS].find({"s": sub, "n": {"$gte": first, "$lte": last}})
        return await cursor.sort("n", ASCENDING).limit(limit).to_list()

    async def purge(self, before: datetime) -> int:
        result = await self.db[NOTIFICATIONS].delete_many({"at": {"$lt": before}})
        return int(result.deleted_count)

    # ------------------------------------------------------------------ delivery

    async def delivery(self, sub: str) -> Doc:
        doc = await self.db[DELIVERY].find_one({"_id": sub})
        return doc or {"_id": sub, "acked": 0, "attempts": 0}

    async def ack_many(self, acked: dict[str, int], at: datetime) -> None:
        await self.db[DELIVERY].bulk_write([
            UpdateOne({"_id": sub}, {"$max": {"acked": n},
                                     "$set": {"attempts": 0, "failing_since": None, "last_sent": at}},
                      upsert=True)
            for sub, n in acked.items()], ordered=False)

    async def touch(self, sub: str, at: datetime) -> None:
        """A successful send that carried no event (handshake, heartbeat)."""
        await self.db[DELIVERY].update_one(
            {"_id": sub}, {"$set": {"attempts": 0, "failing_since": None, "last_sent": at}},
            upsert=True)

    async def failure(self, sub: str, error: str, at: datetime) -> Doc:
        doc = await self.db[DELIVERY].find_one_and_update(
            {"_id": sub}, {"$inc": {"attempts": 1}, "$set": {"last_error": error, "last_error_at": at}},
            upsert=True, return_document=ReturnDocument.AFTER)
        assert doc is not None  # upserted
        if doc.get("failing_since") is None:
            doc["failing_since"] = at
            await self.db[DELIVERY].update_one({"_id": sub}, {"$set": {"failing_since": at}})
        return dict(doc)

    async def reset(self, sub: str) -> None:
        """Reactivated by its owner: a new failure streak (and retry window) starts."""
        await self.db[DELIVERY].update_one(
            {"_id": sub}, {"$set": {"attempts": 0, "failing_since": None}}, upsert=True)

    # ------------------------------------------------------------------ websocket tokens

    async def save_token(self, token: str, subs: list[str], expires: datetime) -> None:
        await self.db[WS_TOKENS].insert_one({"_id": token_hash(token), "subs": subs, "exp": expires})

    async def redeem_token(self, token: str, now: datetime) -> list[str] | None:
        doc = await self.db[WS_TOKENS].find_one({"_id": token_hash(token)})
        if doc is None or doc["exp"] <= now:
            return None
        return list(doc["subs"])

    async def purge_tokens(self, now: datetime) -> None:
        await self.db[WS_TOKENS].delete_many({"exp": {"$lt": now - timedelta(minutes=1)}})
