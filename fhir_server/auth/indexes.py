"""Indexes of the auth collections, created at start-up (idempotent)."""

from __future__ import annotations

from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

# Collections whose documents MongoDB deletes by itself once `expires_at` has passed. Every
# read also filters on expires_at, so correctness never depends on the TTL monitor's timing.
TTL_COLLECTIONS = (
    "auth_codes", "auth_refresh_tokens", "auth_logins", "auth_launches", "auth_jti",
    "auth_revoked", "auth_code_tokens",
)


async def ensure_auth_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    for name in TTL_COLLECTIONS:
        await db[name].create_index("expires_at", expireAfterSeconds=0)
    await db["auth_refresh_tokens"].create_index("client_id")
    # A replayed code revokes what was issued from it (grants.GrantStore.replay_code).
    await db["auth_refresh_tokens"].create_index("code")
    await db["auth_code_tokens"].create_index("code")
    await db["auth_keys"].create_index([("alg", 1), ("active", 1), ("created", -1)])
    # A retired key disappears once every token it signed has expired.
    await db["auth_keys"].create_index("retire_at", expireAfterSeconds=0)
