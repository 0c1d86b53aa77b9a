"""Short-lived grants kept in MongoDB: authorization codes (`auth_codes`, single use),
refresh tokens (`auth_refresh_tokens`) and login sessions of the authorize page
(`auth_logins`). Only SHA-256 digests of the secrets are stored.

A redeemed code stays on record until the last token issued from it expires, and every access
token issued from it (directly or through its refresh token) is noted in `auth_code_tokens`
until it expires: RFC 6749 §4.1.2 asks that a replayed code revoke the tokens already issued
from it."""

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
CODE_TOKENS = "auth_code_tokens"


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
    code_id: str | None = None  # the code's digest: what the tokens issued from it record


@dataclass(frozen=True)
class Issued:
    """What a replayed code leaves to revoke: its access tokens (jti, expiry in epoch seconds)."""

    access_tokens: list[tuple[str, float]]


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
        return CodeGrant(_context(doc), doc["redirect_uri"], doc["code_challenge"],
                         code_id=doc["_id"])

    async def record_issued(self, code_id: str, jti: str, expires_at: float) -> bool:
        """Notes an access token issued from a code and keeps the code on record until it
        expires. False when the code was replayed meanwhile (the caller revokes it then)."""
        until = datetime.fromtimestamp(expires_at, UTC)
        await self._db[CODE_TOKENS].insert_one(
            {"_id": jti, "code": code_id, "exp": expires_at, "expires_at": until})
        # Noted first, checked second: a replay that marks the code before this check is
        # seen here, one that marks it after finds the token noted above.
        code = await self._db[CODES].find_one_and_update(
            {"_id": code_id}, {"$max": {"expires_at": until}},
            projection={"replayed": 1}, return_document=ReturnDocument.AFTER,
        )
        return code is not None and not code.get("replayed", False)

    async def replay_code(self, code: str) -> Issued | None:
        """A used code presented again: marks it replayed (so a redemption still in flight
        revokes what it issues), revokes its refresh tokens and returns its access tokens.
        None when the code was never issued or was not used."""
        code_id = digest(code)
        doc = await self._db[CODES].find_one_and_update(
            {"_id": code_id, "used": True}, {"$set": {"replayed": True}},
        )
        if doc is None:
            return None
        await self._db[REFRESH_TOKENS].update_many({"code": code_id}, {"$set": {"revoked": True}})
        issued = self._db[CODE_TOKENS].find({"code": code_id}, {"exp": 1})
        return Issued([(str(t["_id"]), float(t["exp"])) async for t in issued])

    async def issue_refresh_token(self, context: GrantContext, ttl_seconds: int,
                                  code_id: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds)
        await self._db[REFRESH_TOKENS].insert_one({
            "_id": digest(token),
            "client_id": context.client_id,
            "context": asdict(context),
            "code": code_id,
            "revoked": False,
            "expires_at": expires_at,
        })
        if code_id is not None:
            # The code stays on record as long as its refresh token can mint access tokens.
            await self._db[CODES].update_one({"_id": code_id}, {"$max": {"expires_at": expires_at}})
        return token

    async def refresh_context(self, token: str) -> GrantContext | None:
        grant = await self.refresh_grant(token)
        return grant[0] if grant else None

    async def refresh_grant(self, token: str) -> tuple[GrantContext, str | None] | None:
        """The context behind a live refresh token, and the code it was issued from."""
        doc = await self._db[REFRESH_TOKENS].find_one(
            {"_id": digest(token), "revoked": False, "expires_at": {"$gt": datetime.now(UTC)}}
        )
        return (_context(doc), doc.get("code")) if doc else None

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
