"""private_key_jwt client authentication (RFC 7523, SMART Backend Services).

The assertion must be signed (RS384 or ES384) by a key of the client's registered JWKS or
JWKS URL chosen by `kid`; iss = sub = client_id; aud = our token URL; exp at most five minutes
ahead; and its jti is used once: it is stored in `auth_jti` until the assertion expires.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from fhir_server.auth.clients import Client
from fhir_server.auth.jose import JoseFailure, check_claims, unverified_header, verify
from fhir_server.auth.jwks_cache import JwksCache
from fhir_server.auth.settings import MAX_BACKEND_TOKEN_SECONDS

JTI = "auth_jti"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = frozenset({"RS384", "ES384"})


class InvalidAssertion(Exception):
    pass


async def _client_keys(client: Client, jwks: JwksCache, kid: str | None) -> KeySet:
    try:
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        if client.jwks_uri:
            return await jwks.get(client.jwks_uri, kid)
    except (httpx.HTTPError, JoseError, ValueError, KeyError) as exc:
        raise InvalidAssertion("client keys unavailable") from exc
    raise InvalidAssertion("client has no registered keys")


async def verify_client_assertion(
    db: AsyncDatabase[dict[str, Any]],
    jwks: JwksCache,
    client: Client,
    assertion: str,
    token_url: str,
    leeway: int = 30,
) -> dict[str, Any]:
    """The assertion's claims if it authenticates `client`; raises InvalidAssertion."""
    now = int(time.time())
    try:
        header = unverified_header(assertion)
        kid = header.get("kid")
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_uri:
            # We only ever fetch the URL registered for the client, never one a token names.
            raise InvalidAssertion("jku does not match the registered jwks_uri")
        key_set = await _client_keys(client, jwks, kid if isinstance(kid, str) else None)
        claims = verify(assertion, key_set, ASSERTION_ALGS)
        check_claims(claims, issuer=client.client_id, audience=token_url, leeway=leeway,
                     now=now)
    except JoseFailure as exc:
        raise InvalidAssertion(str(exc)) from exc
    if claims.get("sub") != client.client_id:
        raise InvalidAssertion("sub must equal the client_id")
    exp = claims["exp"]
    if exp - now > MAX_BACKEND_TOKEN_SECONDS + leeway:
        raise InvalidAssertion("exp is more than five minutes in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        raise InvalidAssertion("jti missing")
    try:
        await db[JTI].insert_one({
            "_id": f"{client.client_id}:{jti}",
            "expires_at": datetime.fromtimestamp(exp + leeway, UTC),
        })
    except DuplicateKeyError as exc:
        raise InvalidAssertion("jti already used") from exc
    return claims
