"""Signing keys: created on first start, kept in the database, rotated with the old key still
published (and still verifying) until its tokens have expired."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.indexes import ensure_auth_indexes
from fhir_server.auth.keys import SIGNING_ALGS, KeyStore
from fhir_server.auth.startup import start_auth
from fhir_server.auth.tokens import InvalidToken, TokenValidator, mint_access_token
from tests.auth.conftest import AuthServer

DATABASE = "fhir_auth_keys_test"


def test_keys_first_start_rotation_and_retirement(auth: AuthServer) -> None:
    async def main() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(auth.mongodb_uri,
                                                                    tz_aware=True)
        try:
            await client.drop_database(DATABASE)
            db = client[DATABASE]
            await start_auth(auth.settings, db)
            await start_auth(auth.settings, db)  # a second start keeps the same keys
            assert await db["auth_keys"].count_documents({}) == len(SIGNING_ALGS)
            store = KeyStore(db)
            old_kid = (await store.signing_key("RS256")).kid
            token, _ = await mint_access_token(store, auth.settings, client_id="c",
                                               scopes=["user/*.rs"])

            new_kid = await store.rotate("RS256", retain_seconds=3600)
            assert new_kid != old_kid
            assert (await store.signing_key("RS256")).kid == new_kid
            published = {k["kid"] for k in (await store.public_jwks())["keys"]}
            assert {old_kid, new_kid} <= published
            # A token signed before the rotation still validates (fresh process, fresh cache).
            assert (await TokenValidator(auth.settings, db).validate(token)).client_id == "c"

            # Once its retention has passed a retired key leaves the JWKS; tokens it signed
            # no longer validate.
            newer_token, _ = await mint_access_token(store, auth.settings, client_id="c",
                                                     scopes=["user/*.rs"])
            await store.rotate("RS256", retain_seconds=-1)
            fresh = KeyStore(db)
            published = {k["kid"] for k in (await fresh.public_jwks())["keys"]}
            assert new_kid not in published and old_kid in published
            assert (await fresh.signing_key("RS256")).kid in published
            with pytest.raises(InvalidToken):
                await TokenValidator(auth.settings, db).validate(newer_token)

            # Rotation by age at start-up.
            await start_auth(auth.settings.with_(key_rotation_seconds=0), db)
            assert await db["auth_keys"].count_documents({"active": True}) == len(SIGNING_ALGS)
            info = await db["auth_jti"].index_information()
            assert any(v.get("expireAfterSeconds") == 0 for v in info.values())
            await ensure_auth_indexes(db)  # idempotent
        finally:
            await client.drop_database(DATABASE)
            await client.close()

    asyncio.run(main())
