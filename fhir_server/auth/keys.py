"""Our signing keys: generated on first start, kept in MongoDB (`auth_keys`), rotated by age.

One active key per algorithm. A rotated key stops signing at once but stays in the JWKS until
every token it signed has expired (`retire_at`), so resource servers can still verify them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet, RSAKey
from pymongo.asynchronous.database import AsyncDatabase

COLLECTION = "auth_keys"
SIGNING_ALGS = ("RS256", "RS384", "ES384")
# How long the in-process copy of the key set is trusted before re-reading the database
# (another process may have rotated).
CACHE_SECONDS = 30.0

Key = RSAKey | ECKey


def generate_key(alg: str) -> Key:
    kid = uuid.uuid4().hex
    params: dict[str, Any] = {"kid": kid, "alg": alg, "use": "sig"}
    if alg.startswith("RS"):
        return RSAKey.generate_key(2048, parameters=params)  # type: ignore[arg-type]
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters=params)  # type: ignore[arg-type]
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params)  # type: ignore[arg-type]
    raise ValueError(f"unsupported signing algorithm {alg}")


def _import(jwk: dict[str, Any]) -> Key:
    if jwk["kty"] == "RSA":
        return RSAKey.import_key(jwk)
    return ECKey.import_key(jwk)


@dataclass
class StoredKey:
    kid: str
    alg: str
    key: Key
    active: bool
    created: datetime


class KeyStore:
    """Reads and maintains the key set; safe to share across requests of one process."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._collection = db[COLLECTION]
        self._cache: list[StoredKey] = []
        self._loaded_at = 0.0
        # Importing a private key costs milliseconds (RSA consistency checks) and a kid's key
        # never changes, so each is imported once; a reload only re-reads which are current.
        self._imported: dict[str, Key] = {}
        self._lock = asyncio.Lock()

    def _key(self, doc: dict[str, Any]) -> Key:
        key = self._imported.get(doc["_id"])
        if key is None:
            key = self._imported[doc["_id"]] = _import(doc["jwk"])
        return key

    async def _load(self) -> list[StoredKey]:
        started = time.monotonic()
        now = datetime.now(UTC)
        cursor = self._collection.find(
            {"$or": [{"active": True}, {"retire_at": {"$gt": now}}]}
        ).sort("created", -1)
        keys = [
            StoredKey(d["_id"], d["alg"], self._key(d), bool(d["active"]), d["created"])
            async for d in cursor
        ]
        current = {k.kid for k in keys}
        self._imported = {kid: key for kid, key in self._imported.items() if kid in current}
        self._cache, self._loaded_at = keys, started
        return keys

    async def keys(self, refresh: bool = False) -> list[StoredKey]:
        if refresh or not self._cache or time.monotonic() - self._loaded_at > CACHE_SECONDS:
            asked = time.monotonic()
            # One reload at a time: requests arriving together wait for it, not repeat it (a
            # reload that began after we asked has seen everything we could want).
            async with self._lock:
                if self._cache and self._loaded_at >= asked:
                    return self._cache
                return await self._load()
        return self._cache

    async def _insert(self, alg: str) -> None:
        key = generate_key(alg)
        await self._collection.insert_one({
            "_id": key.kid,
            "alg": alg,
            "jwk": key.as_dict(private=True),
            "active": True,
            "created": datetime.now(UTC),
            "retire_at": None,
        })

    async def ensure_keys(self, rotate_after_seconds: int, retain_seconds: int) -> None:
        """Creates a key for each algorithm that has none; rotates keys older than allowed."""
        now = datetime.now(UTC)
        for alg in SIGNING_ALGS:
            current = await self._collection.find_one({"alg": alg, "active": True},
                                                      sort=[("created", -1)])
            if current is None:
                await self._insert(alg)
            elif current["created"] < now - timedelta(seconds=rotate_after_seconds):
                await self.rotate(alg, retain_seconds)
        await self._load()

    async def rotate(self, alg: str, retain_seconds: int) -> str:
        """Retires the active key(s) of `alg` (published `retain_seconds` more) and makes a new
        one; returns the new kid."""
        retire_at = datetime.now(UTC) + timedelta(seconds=retain_seconds)
        await self._collection.update_many(
            {"alg": alg, "active": True}, {"$set": {"active": False, "retire_at": retire_at}}
        )
        await self._insert(alg)
        keys = await self._load()
        return next(k.kid for k in keys if k.alg == alg and k.active)

    async def signing_key(self, alg: str) -> Key:
        for refresh in (False, True):
            for stored in await self.keys(refresh=refresh):
                if stored.alg == alg and stored.active:
                    return stored.key
        raise LookupError(f"no active {alg} signing key: ensure_keys was not run")

    async def key_set(self, refresh: bool = False) -> KeySet:
        return KeySet([k.key for k in await self.keys(refresh=refresh)])

    async def has_kid(self, kid: str) -> bool:
        if any(k.kid == kid for k in await self.keys()):
            return True
        return any(k.kid == kid for k in await self.keys(refresh=True))

    async def public_jwks(self) -> dict[str, Any]:
        return {"keys": [k.key.as_dict(private=False) for k in await self.keys()]}
