"""Access tokens: minting ours (JWT via joserfc) and validating any bearer token we accept.

Accepted: JWTs signed by our own keys or by a trusted external issuer's JWKS, with `aud` =
our FHIR base URL, `iss` trusted and `exp` in the future; or tokens an external issuer vouches
for through RFC 7662 introspection (an opaque token goes to the one issuer it belongs to, by
its token prefix, and the answer must name our audience). Our own tokens can be revoked (RFC 7009): their jti is
then listed in `auth_revoked` until they expire.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
from joserfc import jwt
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.jose import (
    ASYMMETRIC_ALGS,
    JoseFailure,
    check_claims,
    looks_like_jwt,
    unverified_claims,
    unverified_header,
    verify,
)
from fhir_server.auth.jwks_cache import JwksCache
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.revocation import RevocationList, revocation_list
from fhir_server.auth.scopes import split_scope_string
from fhir_server.auth.settings import AuthSettings, IntrospectionEndpoint, introspection_issuer
from fhir_server.context import Principal

# A verified JWT is remembered (by its full text: header, claims and signature) for at most
# this long and never past its exp, so a key deleted from the key set stops being trusted
# within a minute, as it would through KeyStore's own cache.
VERIFIED_CACHE_SECONDS = 60.0
VERIFIED_CACHE_SIZE = 4096


class InvalidToken(Exception):
    """The bearer token is not acceptable; `str(exc)` says why (safe to show the client)."""


async def sign(keys: KeyStore, alg: str, claims: dict[str, Any], typ: str = "JWT") -> str:
    key = await keys.signing_key(alg)
    header = {"alg": alg, "kid": key.kid, "typ": typ}
    return jwt.encode(header, claims, key, algorithms=[alg])


async def mint_access_token(
    keys: KeyStore,
    settings: AuthSettings,
    *,
    client_id: str,
    scopes: list[str],
    subject: str | None = None,
    patient: str | None = None,
    encounter: str | None = None,
    fhir_user: str | None = None,
    ttl: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """Signs an access token for our FHIR server; returns (token, claims)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject or client_id,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + (ttl if ttl is not None else settings.access_token_ttl),
        "jti": uuid.uuid4().hex,
    }
    if patient:
        claims["patient"] = patient
    if encounter:
        claims["encounter"] = encounter
    if fhir_user:
        claims["fhirUser"] = fhir_user
    return await sign(keys, settings.signing_alg, claims, typ="at+jwt"), claims


async def mint_id_token(
    keys: KeyStore,
    settings: AuthSettings,
    *,
    client_id: str,
    subject: str,
    fhir_user: str | None,
    nonce: str | None = None,
) -> str:
    """An OpenID Connect id_token (RS256) carrying fhirUser."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": client_id,
        "sub": subject,
        "iat": now,
        "exp": now + settings.access_token_ttl,
    }
    if fhir_user:
        claims["fhirUser"] = fhir_user if "://" in fhir_user else (
            f"{settings.audience}/{fhir_user}"
        )
    if nonce:
        claims["nonce"] = nonce
    return await sign(keys, "RS256", claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    scope = claims.get("scope")
    if isinstance(scope, str):
        scopes = split_scope_string(scope)
    else:
        scp = claims.get("scp")
        scopes = [s for s in scp if isinstance(s, str)] if isinstance(scp, list) else []
    fhir_user = claims.get("fhirUser")
    client_id = claims.get("client_id") or claims.get("azp") or claims.get("sub")
    # The purpose of use the authorization server grants (fhir_server.access.purpose).
    purpose = claims.get("purpose_of_use")
    purposes = split_scope_string(purpose) if isinstance(purpose, str) else (
        [p for p in purpose if isinstance(p, str)] if isinstance(purpose, list) else [])
    return Principal(
        client_id=str(client_id) if client_id else None,
        fhir_user=str(fhir_user) if fhir_user else None,
        patient=str(claims["patient"]) if claims.get("patient") else None,
        encounter=str(claims["encounter"]) if claims.get("encounter") else None,
        scopes=frozenset(scopes),
        token_id=str(claims["jti"]) if claims.get("jti") else None,
        issuer=str(claims["iss"]) if claims.get("iss") else None,
        purpose_of_use=tuple(purposes),
        expires_at=int(claims["exp"]) if isinstance(claims.get("exp"), int | float)
        and not isinstance(claims.get("exp"), bool) else None,
    )


@dataclass(frozen=True)
class _Verified:
    claims: dict[str, Any]
    principal: Principal
    until: float  # epoch seconds


class TokenValidator:
    """Turns a bearer token into a Principal, or raises InvalidToken.

    Signature and claims checks of a JWT are remembered (see VERIFIED_CACHE_SECONDS); whether
    one of our tokens was revoked is asked on every call (RevocationList, in memory).
    """

    def __init__(
        self,
        settings: AuthSettings,
        db: AsyncDatabase[dict[str, Any]],
        keys: KeyStore | None = None,
        jwks: JwksCache | None = None,
        revocations: RevocationList | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.keys = keys or KeyStore(db)
        self.jwks = jwks or JwksCache(settings.jwks_cache_seconds)
        self.revocations = revocations or revocation_list(
            db, settings.revocation_refresh_seconds)
        self._verified: dict[str, _Verified] = {}

    async def validate(self, token: str) -> Principal:
        verified = await self._validate(token)
        # A copy: the caller's request may not change what the next request sees.
        return replace(verified.principal)

    async def validate_claims(self, token: str) -> dict[str, Any]:
        return dict((await self._validate(token)).claims)

    async def _validate(self, token: str) -> _Verified:
        token = token.strip()
        now = time.time()
        verified = self._verified.get(token)
        if verified is None or verified.until <= now:
            self._verified.pop(token, None)
            claims, signed = await self._check(token)
            verified = _Verified(claims, principal_from_claims(claims), self._until(claims, now))
            if signed:  # introspection answers are asked for again each time
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[token] = verified
        claims = verified.claims
        if claims.get("iss") == self.settings.issuer:
            jti, iat = claims.get("jti"), claims.get("iat")
            if await self.revocations.is_revoked(
                    jti if isinstance(jti, str) else None, verified.principal.client_id,
                    float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None):
                raise InvalidToken("token revoked")
        return verified

    def _until(self, claims: dict[str, Any], now: float) -> float:
        exp = claims.get("exp")
        limit = now + VERIFIED_CACHE_SECONDS
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            return min(limit, exp + self.settings.clock_skew_seconds)
        return now

    async def _check(self, token: str) -> tuple[dict[str, Any], bool]:
        """(claims, whether we checked a signature); signature, issuer, audience and times,
        not revocation."""
        if not token:
            raise InvalidToken("empty token")
        if not looks_like_jwt(token):
            return await self._introspect_any(token), False
        try:
            issuer = unverified_claims(token).get("iss")
        except JoseFailure as exc:
            raise InvalidToken(str(exc)) from exc
        if not isinstance(issuer, str):
            raise InvalidToken("token has no issuer")
        if issuer == self.settings.issuer:
            claims = await self._verify_own(token)
        elif issuer in self.settings.trusted_issuers:
            claims = await self._verify_external(token, issuer)
        elif issuer in self.settings.introspection:
            endpoint = self.settings.introspection[issuer]
            return await self._introspect(token, endpoint, issuer), False
        else:
            shown = "".join(c for c in issuer[:200] if c.isprintable())  # the token's word: bounded
            raise InvalidToken(f"untrusted issuer '{shown}': expected '{self.settings.issuer}' "
                               "(this server's own) or a configured trusted issuer")
        try:
            check_claims(claims, issuer=issuer, audience=self.settings.audience,
                         leeway=self.settings.clock_skew_seconds, now=int(time.time()))
        except JoseFailure as exc:
            raise InvalidToken(str(exc)) from exc
        return claims, True

    async def _verify_own(self, token: str) -> dict[str, Any]:
        try:
            try:
                claims = verify(token, await self.keys.key_set(), ASYMMETRIC_ALGS)
            except JoseFailure:
                # Another process may have rotated keys since our cache was filled.
                claims = verify(token, await self.keys.key_set(refresh=True), ASYMMETRIC_ALGS)
        except JoseFailure as exc:
            raise InvalidToken(str(exc)) from exc
        return claims

    async def _verify_external(self, token: str, issuer: str) -> dict[str, Any]:
        url = self.settings.trusted_issuers[issuer]
        try:
            kid = unverified_header(token).get("kid")
            kid = kid if isinstance(kid, str) else None
            key_set = await self.jwks.get(url, kid)
            return verify(token, key_set, ASYMMETRIC_ALGS)
        except JoseFailure as exc:
            raise InvalidToken(str(exc)) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken("issuer keys unavailable") from exc

    async def _introspect_any(self, token: str) -> dict[str, Any]:
        issuer = introspection_issuer(token, self.settings.introspection)
        if issuer is None:
            raise InvalidToken("unknown token")
        return await self._introspect(token, self.settings.introspection[issuer], issuer)

    async def _introspect(
        self, token: str, endpoint: IntrospectionEndpoint, issuer: str
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if endpoint.client_id and endpoint.client_secret:
            # RFC 6749 §2.3.1: form-urlencode both parts before base64.
            pair = f"{quote(endpoint.client_id, safe='')}:{quote(endpoint.client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                response = await http.post(
                    endpoint.url, data={"token": token, "token_type_hint": "access_token"},
                    headers=headers,
                )
            response.raise_for_status()
            claims: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken("introspection failed") from exc
        if claims.get("active") is not True:
            raise InvalidToken("token not active")
        now = int(time.time())
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp + self.settings.clock_skew_seconds < now:
            raise InvalidToken("token expired")
        # RFC 7662 makes `aud` optional; we require it, else a token the issuer granted for
        # another resource server would be accepted here.
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.settings.audience not in auds:
            raise InvalidToken("wrong audience" if aud is not None else "introspection answer has no audience")
        claims.setdefault("iss", issuer)
        if claims["iss"] != issuer:
            raise InvalidToken("wrong issuer")
        return claims

    async def revoke(self, claims: dict[str, Any]) -> None:
        """Lists one of our tokens as revoked until it would have expired anyway."""
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not jti or not isinstance(exp, int | float):
            return
        await self.revocations.revoke(jti, float(exp))

