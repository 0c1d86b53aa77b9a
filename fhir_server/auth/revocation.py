"""Revoked access tokens (`auth_revoked`): the jti of each of our tokens revoked through RFC 7009,
kept until the token would have expired anyway; and, for a client an operator disabled, every
token issued to it up to that moment (`client:<id>`, kept until the longest-lived of them has
expired).

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
CLIENT_PREFIX = "client:"


def _epoch(value: datetime) -> float:
    # A client without tz_aware reads naive datetimes; MongoDB stores UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def _client_revoked(issued_until: object, issued_at: float | None) -> bool:
    if not isinstance(issued_until, int | float):
        return False
    # At or before the moment: a token minted in the second the client was disabled is revoked.
    return issued_at is None or issued_at <= issued_until


class RevocationList:
    def __init__(self, db: AsyncDatabase[dict[str, Any]], refresh_seconds: float) -> None:
        self._collection = db[COLLECTION]
        self.refresh_seconds = refresh_seconds
        # jti -> when the token expires; "client:<id>" -> when its last revoked token expires
        # (epoch seconds).
        self._expiry: dict[str, float] = {}
        self._issued_before: dict[str, float] = {}  # client id -> tokens issued up to then are revoked
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def revoke(self, jti: str, expires_at: float) -> None:
        await self._collection.update_one(
            {"_id": jti},
            {"$set": {"expires_at": datetime.fromtimestamp(expires_at, UTC)}},
            upsert=True,
        )
        self._expiry[jti] = expires_at

    async def revoke_client(self, client_id: str, issued_until: float, expires_at: float) -> None:
        """Revokes every token issued to `client_id` up to `issued_until` (a disabled client's
        live tokens). Tokens issued after it (the client enabled again) stand."""
        await self._collection.update_one(
            {"_id": CLIENT_PREFIX + client_id},
            {"$set": {"issued_until": issued_until,
                      "expires_at": datetime.fromtimestamp(expires_at, UTC)}},
            upsert=True,
        )
        self._expiry[CLIENT_PREFIX + client_id] = expires_at
        self._issued_before[client_id] = issued_until

    async def is_revoked(self, jti: str | None, client_id: str | None = None,
                         issued_at: float | None = None) -> bool:
        """Whether the token with this jti, issued to `client_id` at `issued_at`, is revoked.
        A token of a revoked client without an issue time is revoked (fail closed)."""
        if self.refresh_seconds <= 0:
            ids = [i for i in (jti, CLIENT_PREFIX + client_id if client_id else None) if i]
            docs = [d async for d in self._collection.find({"_id": {"$in": ids}}, {"issued_until": 1})]
            return any(d["_id"] == jti or _client_revoked(d.get("issued_until"), issued_at)
                       for d in docs)
        if time.monotonic() - self._loaded_at >= self.refresh_seconds:
            await self._refresh()
        if jti is not None and jti in self._expiry:
            return True
        return client_id is not None and client_id in self._issued_before and _client_revoked(
            self._issued_before[client_id], issued_at)

    async def _refresh(self) -> None:
        async with self._lock:
            started = time.monotonic()
            if started - self._loaded_at < self.refresh_seconds:
                return  # another request refreshed while we waited
            now = datetime.now(UTC)
            loaded: dict[str, float] = {}
            issued: dict[str, float] = {}
            async for doc in self._collection.find({"expires_at": {"$gt": now}},
                                                   {"expires_at": 1, "issued_until": 1}):
                loaded[doc["_id"]] = _epoch(doc["expires_at"])
                if doc["_id"].startswith(CLIENT_PREFIX):
                    issued[doc["_id"][len(CLIENT_PREFIX):]] = float(doc.get("issued_until") or 0)
            # Union, never replace: a jti revoked here while the query ran must stay listed.
            # Entries leave only once their token has expired.
            epoch = now.timestamp()
            self._expiry = {
                jti: exp for jti, exp in {**self._expiry, **loaded}.items() if exp > epoch
            }
            # A later disable of the same client moves its moment forward, never back.
            self._issued_before = {
                client: max(self._issued_before.get(client, 0.0), issued.get(client, 0.0))
                for client in {*self._issued_before, *issued}
                if CLIENT_PREFIX + client in self._expiry
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
