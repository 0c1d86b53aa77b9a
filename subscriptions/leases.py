"""Leases in MongoDB: which process does what, so several processes never double up.

A lease document (`_id` = what it guards: `matcher`, or `sub:<id>`) names its holder and an
expiry. The holder renews it every scan; a process that dies stops renewing, and after
`lease_ttl` another process takes it over. Acquiring is one conditional upsert: it matches
only a lease that is free, expired or already ours, and the unique `_id` makes a race lose.

Processes register themselves too (`subscription_dispatchers`), so each can compute its fair
share of the Subscriptions and hand back leases beyond it: work spreads as processes join.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from subscriptions.store import DISPATCHERS, LEASES

Doc = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Leases:
    def __init__(self, db: AsyncDatabase[Doc], ttl: float) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl)
        self.holder = uuid.uuid4().hex
        self.held: set[str] = set()

    async def heartbeat(self) -> int:
        """Registers this process as alive; answers how many processes are."""
        now = utcnow()
        await self.db[DISPATCHERS].update_one(
            {"_id": self.holder}, {"$set": {"until": now + self.ttl}}, upsert=True)
        return max(1, await self.db[DISPATCHERS].count_documents({"until": {"$gt": now}}))

    async def acquire(self, key: str) -> bool:
        now = utcnow()
        try:
            await self.db[LEASES].update_one(
                {"_id": key, "$or": [{"until": {"$lt": now}}, {"holder": self.holder}]},
                {"$set": {"holder": self.holder, "until": now + self.ttl}}, upsert=True)
        except DuplicateKeyError:
            return False
        self.held.add(key)
        return True

    async def renew(self) -> set[str]:
        """Extends every lease still ours; answers which those are (others were taken over)."""
        if not self.held:
            return set()
        now = utcnow()
        await self.db[LEASES].update_many(
            {"_id": {"$in": sorted(self.held)}, "holder": self.holder},
            {"$set": {"until": now + self.ttl}})
        docs = await self.db[LEASES].find(
            {"_id": {"$in": sorted(self.held)}, "holder": self.holder}, {"_id": 1}).to_list()
        self.held = {d["_id"] for d in docs}
        return set(self.held)

    async def release(self, key: str) -> None:
        self.held.discard(key)
        await self.db[LEASES].update_one(
            {"_id": key, "holder": self.holder}, {"$set": {"until": utcnow() - self.ttl}})

    async def release_all(self) -> None:
        for key in list(self.held):
            await self.release(key)
        await self.db[DISPATCHERS].delete_one({"_id": self.holder})

    async def get(self, key: str) -> Doc | None:
        return await self.db[LEASES].find_one({"_id": key})

    async def save(self, key: str, **fields: Any) -> None:
        """Stores state beside a lease we hold (the matcher's resume token)."""
        await self.db[LEASES].update_one({"_id": key, "holder": self.holder}, {"$set": fields})

    @staticmethod
    def share(total: int, processes: int) -> int:
        return math.ceil(total / max(1, processes))
