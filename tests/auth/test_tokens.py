"""tokens.TokenValidator: what a bearer token must be, and every way a bad one is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import pytest
from joserfc.jwk import RSAKey
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.assertions import InvalidAssertion, verify_client_assertion
from fhir_server.auth.clients import Client
from fhir_server.auth.jwks_cache import JwksCache
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.tokens import InvalidToken, TokenValidator, mint_access_token, sign
from fhir_server.context import Principal
from tests.auth.conftest import (
    EHR_ISSUER,
    OPAQUE_EHR_TOKEN,
    AuthServer,
    ehr_token,
)

Db = AsyncDatabase[dict[str, Any]]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(auth: AuthServer, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": auth.settings.issuer, "aud": auth.fhir_base, "sub": "c1",
              "client_id": "c1", "scope": "patient/Observation.rs", "patient": "p1",
              "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _validate(auth: AuthServer, make: Any) -> Principal:
    """Builds a token with `make(db, keys)` and validates it, in one event loop."""

    async def work(db: Db) -> Principal:
        keys = KeyStore(db)
        token = await make(db, keys)
        return await TokenValidator(auth.settings, db).validate(token)

    return auth.run(work)


def _refused(auth: AuthServer, make: Any, reason: str) -> None:
    with pytest.raises(InvalidToken) as info:
        _validate(auth, make)
    assert reason in str(info.value)


def test_valid_token_gives_principal(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        token, _ = await mint_access_token(keys, auth.settings, client_id="c1",
                                           scopes=["patient/Observation.rs"], patient="p1",
                                           fhir_user="Patient/p1")
        return token

    principal = _validate(auth, make)
    assert principal.patient == "p1"
    assert principal.scopes == frozenset({"patient/Observation.rs"})
    assert principal.client_id == "c1"
    assert principal.fhir_user == "Patient/p1"
    assert principal.issuer == auth.settings.issuer


def test_expired(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        past = int(time.time()) - 3600
        return await sign(keys, "RS256", _claims(auth, iat=past - 60, exp=past))

    _refused(auth, make, "expired")


def test_missing_exp(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        claims = _claims(auth)
        del claims["exp"]
        return await sign(keys, "RS256", claims)

    _refused(auth, make, "exp")


def test_wrong_audience(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return await sign(keys, "RS256", _claims(auth, aud="https://other.example.org/fhir"))

    _refused(auth, make, "audience")


def test_untrusted_issuer(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return await sign(keys, "RS256", _claims(auth, iss="https://evil.example.org"))

    _refused(auth, make, "untrusted issuer")


def test_our_issuer_but_foreign_key(auth: AuthServer) -> None:
    foreign = RSAKey.generate_key(2048, parameters={"kid": "x", "alg": "RS256"})

    async def make(db: Db, keys: KeyStore) -> str:
        from joserfc import jwt

        return jwt.encode({"alg": "RS256", "kid": "x"}, _claims(auth), foreign,
                          algorithms=["RS256"])

    _refused(auth, make, "no key")


def test_alg_none(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(_claims(auth)).encode())}."

    _refused(auth, make, "not accepted")


def test_hs256_signed_with_our_public_key(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        key = await keys.signing_key("RS256")
        public_pem = key.as_pem(private=False)
        header = _b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
        payload = _b64(json.dumps(_claims(auth)).encode())
        mac = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(mac)}"

    _refused(auth, make, "not accepted")


def test_tampered_payload(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        token = await sign(keys, "RS256", _claims(auth, scope="patient/Observation.rs"))
        header, _, signature = token.split(".")
        forged = _b64(json.dumps(_claims(auth, scope="system/*.cruds")).encode())
        return f"{header}.{forged}.{signature}"

    _refused(auth, make, "signature")


def test_id_token_is_not_an_access_token(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return await sign(keys, "RS256", _claims(auth, aud="some-client-id"))

    _refused(auth, make, "audience")


def test_revoked_token(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        token, claims = await mint_access_token(keys, auth.settings, client_id="c1",
                                                scopes=["user/*.rs"])
        await TokenValidator(auth.settings, db).revoke(claims)
        return token

    _refused(auth, make, "revoked")


def test_garbage(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return "a.b.c"

    _refused(auth, make, "malformed")


def test_replayed_jti_in_client_assertion(auth: AuthServer) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k", "alg": "RS384"})
    client = Client("replay-client", auth_method="private_key_jwt",
                    grant_types=("client_credentials",),
                    jwks={"keys": [key.as_dict(private=False)]})

    async def work(db: Db) -> None:
        from joserfc import jwt

        now = int(time.time())
        assertion = jwt.encode(
            {"alg": "RS384", "kid": "k"},
            {"iss": client.client_id, "sub": client.client_id, "aud": auth.settings.token_url,
             "exp": now + 60, "jti": uuid.uuid4().hex}, key, algorithms=["RS384"])
        cache = JwksCache()
        await verify_client_assertion(db, cache, client, assertion, auth.settings.token_url)
        with pytest.raises(InvalidAssertion, match="jti"):
            await verify_client_assertion(db, cache, client, assertion,
                                          auth.settings.token_url)

    auth.run(work)


# -- external issuers ----------------------------------------------------------------------

def test_trusted_external_issuer_via_its_jwks(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return ehr_token(_claims(auth, iss=EHR_ISSUER, fhirUser="Practitioner/ehr-9",
                                 patient=None, scope="user/*.rs"))

    principal = _validate(auth, make)
    assert principal.issuer == EHR_ISSUER
    assert principal.fhir_user == "Practitioner/ehr-9"


def test_external_issuer_token_for_another_audience(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return ehr_token(_claims(auth, iss=EHR_ISSUER, aud="https://ehr.example.org/fhir"))

    _refused(auth, make, "audience")


def test_token_claiming_external_issuer_signed_by_us(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return await sign(keys, "RS256", _claims(auth, iss=EHR_ISSUER))

    _refused(auth, make, "no key")


def test_opaque_token_by_introspection(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return OPAQUE_EHR_TOKEN

    principal = _validate(auth, make)
    assert principal.fhir_user == "Practitioner/ehr-doc"
    assert principal.scopes == frozenset({"user/Observation.rs"})


def test_unknown_opaque_token(auth: AuthServer) -> None:
    async def make(db: Db, keys: KeyStore) -> str:
        return "not-a-token-anyone-issued"

    _refused(auth, make, "unknown token")
