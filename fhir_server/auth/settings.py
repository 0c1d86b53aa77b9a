"""Auth settings: one frozen object built from environment variables and the server settings."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from fhir_server.config import Settings

# Backend Services tokens and client assertions may live at most five minutes (SMART 2.2).
MAX_BACKEND_TOKEN_SECONDS = 300


@dataclass(frozen=True)
class IntrospectionEndpoint:
    """An external issuer whose (possibly opaque) tokens we check with RFC 7662.

    `token_prefix` is how an opaque token names its issuer: a token is shown only to the one
    issuer whose prefix it starts with (see `introspection_issuer`). At most one issuer may
    go without a prefix; it receives the opaque tokens no prefix claims.
    """

    url: str
    client_id: str | None = None
    client_secret: str | None = None
    token_prefix: str | None = None


def check_introspection(introspection: Mapping[str, IntrospectionEndpoint]) -> None:
    """Refuses a configuration in which one opaque token could belong to two issuers."""
    unprefixed = [iss for iss, e in introspection.items() if not e.token_prefix]
    if len(unprefixed) > 1:
        raise ValueError("introspection issuers " + ", ".join(sorted(unprefixed))
                         + " have no token_prefix: at most one issuer may go without one")
    prefixes = sorted((e.token_prefix, iss) for iss, e in introspection.items() if e.token_prefix)
    for (first, a), (second, b) in pairwise(prefixes):
        if second.startswith(first):
            raise ValueError(f"token_prefix of {a} ({first!r}) is a prefix of {b}'s ({second!r})")


def introspection_issuer(
    token: str, introspection: Mapping[str, IntrospectionEndpoint]
) -> str | None:
    """The one issuer an opaque token belongs to, or None: the issuer whose `token_prefix`
    starts the token, else the issuer without a prefix. Never a list to try in turn: asking
    one issuer after another would show each issuer's tokens to all the others."""
    fallback = None
    for issuer, endpoint in introspection.items():
        if endpoint.token_prefix and token.startswith(endpoint.token_prefix):
            return issuer
        if not endpoint.token_prefix:
            fallback = issuer
    return fallback


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _env_json(name: str) -> dict[str, Any]:
    raw = os.environ.get(name)
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value


@dataclass(frozen=True)
class AuthSettings:
    # Dev mode (enabled=False) switches every check off; never the default.
    enabled: bool = True
    # Our authorization server's issuer; its endpoints live below it (/authorize, /token...).
    issuer: str = "http://127.0.0.1:8080/auth"
    # The FHIR base URL: the only `aud` our resource server accepts.
    audience: str = "http://127.0.0.1:8080/fhir"
    # issuer -> JWKS URL of authorization servers whose JWT access tokens we accept.
    trusted_issuers: Mapping[str, str] = field(default_factory=dict)
    # issuer -> RFC 7662 endpoint, for external issuers whose tokens we introspect.
    introspection: Mapping[str, IntrospectionEndpoint] = field(default_factory=dict)
    # Bearer token protecting RFC 7591 registration; None closes registration.
    initial_access_token: str | None = None
    # Bearer token an EHR presents to the launch API; None closes the launch API.
    launch_api_token: str | None = None
    access_token_ttl: int = 3600
    backend_token_ttl: int = MAX_BACKEND_TOKEN_SECONDS
    code_ttl: int = 60
    login_ttl: int = 600
    launch_ttl: int = 3600
    offline_refresh_ttl: int = 90 * 86400
    online_refresh_ttl: int = 86400
    # Signing keys older than this are rotated at start-up (old ones stay published).
    key_rotation_seconds: int = 90 * 86400
    signing_alg: str = "RS256"
    jwks_cache_seconds: int = 300
    # How stale this process's copy of the revoked-token list may be (another process may have
    # revoked); 0 reads the database on every request.
    revocation_refresh_seconds: float = 2.0
    clock_skew_seconds: int = 30
    smart_style_url: str | None = None

    def __post_init__(self) -> None:
        check_introspection(self.introspection)

    @property
    def authorize_url(self) -> str:
        return f"{self.issuer}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def introspection_url(self) -> str:
        return f"{self.issuer}/introspect"

    @property
    def revocation_url(self) -> str:
        return f"{self.issuer}/revoke"

    @property
    def registration_url(self) -> str:
        return f"{self.issuer}/register"

    @property
    def launch_url(self) -> str:
        return f"{self.issuer}/launch"

    @property
    def max_token_ttl(self) -> int:
        return max(self.access_token_ttl, self.backend_token_ttl)

    def with_(self, **changes: object) -> AuthSettings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, server: Settings, **overrides: object) -> AuthSettings:
        """Reads FHIR_AUTH_* variables; defaults derive from the server's base URL."""
        introspection = {
            iss: IntrospectionEndpoint(
                url=str(conf["url"]),
                client_id=conf.get("client_id"),
                client_secret=conf.get("client_secret"),
                token_prefix=conf.get("token_prefix") or None,
            )
            for iss, conf in _env_json("FHIR_AUTH_INTROSPECTION").items()
        }
        settings = cls(
            enabled=os.environ.get("FHIR_AUTH_DISABLED", "") not in ("1", "true", "yes"),
            issuer=os.environ.get("FHIR_AUTH_ISSUER", _origin(server.base_url) + "/auth"),
            audience=server.base_url.rstrip("/"),
            trusted_issuers={
                k: str(v) for k, v in _env_json("FHIR_AUTH_TRUSTED_ISSUERS").items()
            },
            introspection=introspection,
            initial_access_token=os.environ.get("FHIR_AUTH_INITIAL_ACCESS_TOKEN") or None,
            launch_api_token=os.environ.get("FHIR_AUTH_LAUNCH_API_TOKEN") or None,
            access_token_ttl=_env_int("FHIR_AUTH_ACCESS_TOKEN_TTL", cls.access_token_ttl),
            backend_token_ttl=min(
                _env_int("FHIR_AUTH_BACKEND_TOKEN_TTL", cls.backend_token_ttl),
                MAX_BACKEND_TOKEN_SECONDS,
            ),
            offline_refresh_ttl=_env_int("FHIR_AUTH_REFRESH_TOKEN_TTL", cls.offline_refresh_ttl),
            key_rotation_seconds=_env_int("FHIR_AUTH_KEY_ROTATION_SECONDS",
                                          cls.key_rotation_seconds),
            smart_style_url=os.environ.get("FHIR_AUTH_SMART_STYLE_URL") or None,
            revocation_refresh_seconds=float(
                os.environ.get("FHIR_AUTH_REVOCATION_REFRESH_SECONDS")
                or cls.revocation_refresh_seconds),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(settings, **clean)  # type: ignore[arg-type]
