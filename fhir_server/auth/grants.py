"""Short-lived grants kept in MongoDB: authorization codes (`auth_codes`, single use),
refresh tokens (`auth_refresh_tokens`) and login sessions of the authorize page
(`auth_logins`). Only SHA-256 digests of the secrets are stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase

CODES = "auth_codes"
REFRESH_TOKENS = "auth_refresh_tokens"
LOGINS = "auth_logins"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class GrantContext:
    """What an authorization carries into the token response."""

    client_id: str
    scopes: tuple[str, ...]
    username: str | None = None
    fhir_user: str | None = None
    patient: str | None = None
    encounter: str | None = None
    need_patient_banner: bool = False
    smart_style_url: str | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class CodeGrant:
    context: GrantContext
    redirect_uri: str
    code_challenge: str
    extra: dict[str, Any] = field(default_factory=dict)


def _context(doc: dict[str, Any]) -> GrantContext:
    data = dict(doc["context"])
    data["scopes"] = tuple(data["scopes"])
    return GrantContext(**data)


class GrantStore:
    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db

    async def issue_code(self, grant: CodeGrant, ttl_seconds: int) -> str:
        code = secrets.token_urlsafe(32)
        await self._db[CODES].insert_one({
            "_id": digest(code),
            "context": asdict(grant.context),
            "redirect_uri": grant.redirect_uri,
            "code_challenge": grant.code_challenge,
            "used": False,
            "expires_at": datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        })
        return code

    async def redeem_code(self, code: str) -> CodeGrant | None:
        """The grant behind `code`, once: a second redemption (or an expired code) is None."""
        doc = await self._db[CODES].find_one_and_update(
            {"_id": digest(code), "used": False, "expires_at": {"$gt": datetime.now(UTC)}},
            {"$set": {"used": True}},
            return_document=ReturnDocument.BEFORE,
        )
        if doc is None:
            return None
        return CodeGrant(_context(doc), doc["redirect_uri"], doc["code_challenge"])

    async def issue_refresh_token(self, context: GrantContext, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(32)
        await self._db[REFRESH_TOKENS].insert_one({
            "_id": digest(token),
            "client_id": context.client_id,
            "context": asdict(context),
            "revoked": False,
            "expires_at": datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        })
        return token

    async def refresh_context(self, token: str) -> GrantContext | None:
        doc = await self._db[REFRESH_TOKENS].find_one(
            {"_id": digest(token), "revoked": False, "expires_at": {"$gt": datetime.now(UTC)}}
        )
        return _context(doc) if doc else None

    async def refresh_token_info(self, token: str) -> dict[str, Any] | None:
        doc = await self._db[REFRESH_TOKENS].find_one(
            {"_id": digest(token), "revoked": False, "expires_at": {"$gt": datetime.now(UTC)}}
        )
        return doc

    async def revoke_refresh_token(self, token: str, client_id: str) -> bool:
        result = await self._db[REFRESH_TOKENS].update_one(
            {"_id": digest(token), "client_id": client_id}, {"$set": {"revoked": True}}
        )
        return result.modified_count == 1

    async def start_login(self, username: str, ttl_seconds: int) -> str:
        ticket = secrets.token_urlsafe(32)
        await self._db[LOGINS].insert_one({
            "_id": digest(ticket),
            "username": username,
            "expires_at": datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        })
        return ticket

    async def login_user(self, ticket: str) -> str | None:
        doc = await self._db[LOGINS].find_one(
            {"_id": digest(ticket), "expires_at": {"$gt": datetime.now(UTC)}}
        )
        return str(doc["username"]) if doc else None
