"""Revoked access tokens (`auth_revoked`): the jti of each of our tokens revoked through RFC 7009,
kept until the token would have expired anyway.

Checking the collection on every request would cost a database round trip per FHIR call, so
each process keeps the revoked jtis in memory and re-reads the collection when its copy is
older than `refresh_seconds`. A revocation takes effect at once in the process that received
it (every validator of one database handle shares one list) and within `refresh_seconds` in
every other process; `refresh_seconds = 0` reads the collection on every check instead.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "auth_revoked"


def _epoch(value: datetime) -> float:
    # A client without tz_aware reads naive datetimes; MongoDB stores UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class RevocationList:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], refresh_seconds: float) -> None:
        self._collection = db[COLLECTION]
        self.refresh_seconds = refresh_seconds
        self._expiry: dict[str, float] = {}  # jti -> when the token expires (epoch seconds)
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def revoke(self, jti: str, expires_at: float) -> None:
        await self._collection.update_one(
            {"_id": jti},
            {"$set": {"expires_at": datetime.fromtimestamp(expires_at, UTC)}},
            upsert=True,
        )
        self._expiry[jti] = expires_at

    async def is_revoked(self, jti: str) -> bool:
        if self.refresh_seconds <= 0:
            return await self._collection.find_one({"_id": jti}, {"_id": 1}) is not None
        if time.monotonic() - self._loaded_at >= self.refresh_seconds:
            await self._refresh()
        return jti in self._expiry

    async def _refresh(self) -> None:
        async with self._lock:
            started = time.monotonic()
            if started - self._loaded_at < self.refresh_seconds:
                return  # another request refreshed while we waited
            now = datetime.now(UTC)
            loaded = {
                doc["_id"]: _epoch(doc["expires_at"])
                async for doc in self._collection.find({"expires_at": {"$gt": now}},
                                                       {"expires_at": 1})
            }
            # Union, never replace: a jti revoked here while the query ran must stay listed.
            # Entries leave only once their token has expired.
            epoch = now.timestamp()
            self._expiry = {
                jti: exp for jti, exp in {**self._expiry, **loaded}.items() if exp > epoch
            }
            self._loaded_at = started


# One list per database handle, so the OAuth endpoints' validator and the FHIR API's see the
# same revocations without waiting for a refresh.
_LISTS: dict[int, RevocationList] = {}


def revocation_list(db: AsyncDatabase[dict[str, Any]], refresh_seconds: float) -> RevocationList:
    key = id(db)
    found = _LISTS.get(key)
    if found is None:
        found = _LISTS[key] = RevocationList(db, refresh_seconds)
        weakref.finalize(db, _LISTS.pop, key, None)
    return found
