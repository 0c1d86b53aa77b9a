"""Verified-token cache and revocation list (tokens.TokenValidator, revocation.RevocationList):
what the cache remembers never outlives a revocation, an exp, or a changed byte."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth import tokens
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.revocation import RevocationList
from fhir_server.auth.tokens import InvalidToken, TokenValidator, mint_access_token
from tests.auth.conftest import DATABASE, AuthServer

Db = AsyncDatabase[dict[str, Any]]


async def _mint(auth: AuthServer, db: Db, **options: Any) -> tuple[str, dict[str, Any]]:
    return await mint_access_token(KeyStore(db), auth.settings, client_id="c1",
                                   scopes=["user/Task.rs"], **options)


def test_revocation_in_this_process_applies_to_a_cached_token(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        token, claims = await _mint(auth, db)
        api = TokenValidator(auth.settings, db)  # the FHIR API's validator
        endpoints = TokenValidator(auth.settings, db)  # the OAuth endpoints' own
        assert (await api.validate(token)).client_id == "c1"
        await endpoints.revoke(claims)
        with pytest.raises(InvalidToken, match="revoked"):
            await api.validate(token)

    auth.run(work)


def test_revocation_by_another_process_applies_within_the_refresh_interval(auth: AuthServer) -> None:
    settings = auth.settings.with_(revocation_refresh_seconds=0.2)

    async def work(db: Db) -> None:
        token, claims = await _mint(auth, db)
        api = TokenValidator(settings, db)
        await api.validate(token)
        # Another server process: its own connection, its own in-memory list.
        other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(auth.mongodb_uri, tz_aware=True)
        try:
            await TokenValidator(settings, other[DATABASE]).revoke(claims)
        finally:
            await other.close()
        await asyncio.sleep(0.3)
        with pytest.raises(InvalidToken, match="revoked"):
            await api.validate(token)

    auth.run(work)


def test_refresh_zero_reads_the_database_every_time(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        revocations = RevocationList(db, refresh_seconds=0)
        assert not await revocations.is_revoked("jti-0")
        soon = datetime.now(UTC) + timedelta(minutes=5)
        await db["auth_revoked"].insert_one({"_id": "jti-0", "expires_at": soon})
        assert await revocations.is_revoked("jti-0")

    auth.run(work)


def test_a_cached_token_still_expires(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def work(db: Db) -> None:
        token, _ = await _mint(auth, db, ttl=60)
        validator = TokenValidator(auth.settings, db)
        await validator.validate(token)
        later = time.time() + 60 + auth.settings.clock_skew_seconds + 1
        monkeypatch.setattr(tokens.time, "time", lambda: later)
        with pytest.raises(InvalidToken, match="expired"):
            await validator.validate(token)

    auth.run(work)


def test_the_cache_is_keyed_by_the_whole_token(auth: AuthServer) -> None:
    """A verified signature pasted onto other claims is not a cache hit."""

    async def work(db: Db) -> None:
        token, claims = await _mint(auth, db)
        validator = TokenValidator(auth.settings, db)
        await validator.validate(token)
        header, _, signature = token.split(".")
        forged = base64.urlsafe_b64encode(json.dumps({**claims, "scope": "system/*.cruds"}).encode())
        with pytest.raises(InvalidToken, match="signature"):
            await validator.validate(f"{header}.{forged.rstrip(b'=').decode()}.{signature}")

    auth.run(work)


def test_a_principal_changed_by_one_request_is_not_seen_by_the_next(auth: AuthServer) -> None:
    async def work(db: Db) -> None:
        token, _ = await _mint(auth, db)
        validator = TokenValidator(auth.settings, db)
        first = await validator.validate(token)
        first.patient = "someone-else"
        assert (await validator.validate(token)).patient is None

    auth.run(work)
