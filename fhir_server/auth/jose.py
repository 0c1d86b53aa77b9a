"""JWS verification with the checks that tokens and client assertions share.

The algorithm allow-list is decided by us, never by the token: `none` and every HMAC
algorithm are refused outright, which also closes the "HS256 signed with the RSA public key"
confusion. The key is chosen by `kid` and must match the header's algorithm family.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Collection
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})


class JoseFailure(Exception):
    """The JWT is malformed, badly signed or uses a refused algorithm."""


def _b64json(part: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JoseFailure("malformed JWT") from exc
    if not isinstance(value, dict):
        raise JoseFailure("malformed JWT")
    return value


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def unverified_header(token: str) -> dict[str, Any]:
    if not looks_like_jwt(token):
        raise JoseFailure("not a JWT")
    return _b64json(token.split(".")[0])


def unverified_claims(token: str) -> dict[str, Any]:
    if not looks_like_jwt(token):
        raise JoseFailure("not a JWT")
    return _b64json(token.split(".")[1])


def verify(token: str, key_set: KeySet, algorithms: Collection[str]) -> dict[str, Any]:
    """Checks the signature of `token` against `key_set`; returns its claims (not yet
    validated: exp, aud, iss are the caller's)."""
    header = unverified_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms or alg not in ASYMMETRIC_ALGS:
        raise JoseFailure(f"algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    family = RSAKey if alg.startswith("RS") else ECKey
    candidates = [
        k for k in key_set.keys
        if isinstance(k, family) and (kid is None or k.kid == kid)
        and k.get("alg") in (None, alg)
    ]
    if not candidates:
        raise JoseFailure(f"no key for kid {kid!r} and alg {alg}")
    if kid is None and len(candidates) > 1:
        raise JoseFailure("token has no kid and several keys could have signed it")
    try:
        token_obj = jwt.decode(token, candidates[0], algorithms=[alg])
    except (JoseError, ValueError) as exc:
        raise JoseFailure(f"bad signature or encoding: {exc}") from exc
    return dict(token_obj.claims)


def check_claims(
    claims: dict[str, Any], *, issuer: str | None, audience: str, leeway: int,
    now: int,
) -> None:
    """exp is required and in the future; nbf/iat not in the future; aud contains `audience`;
    iss equals `issuer` (unless None)."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise JoseFailure("exp missing")
    if exp + leeway < now:
        raise JoseFailure("token expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf - leeway > now:
        raise JoseFailure("token not yet valid")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if audience.rstrip("/") not in [a.rstrip("/") for a in auds if isinstance(a, str)]:
        raise JoseFailure("wrong audience")
    if issuer is not None and claims.get("iss") != issuer:
        raise JoseFailure("wrong issuer")
