"""The auth subsystem's stores and caches, built once with the application's services
(`fhir_server.services.Services.auth_runtime`): one token validator, one JWKS cache, one
key store for the authorization server's endpoints and for the SMART interceptor alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from starlette.requests import Request

from fhir_server.auth.clients import ClientRegistry
from fhir_server.auth.grants import GrantStore
from fhir_server.auth.jwks_cache import JwksCache
from fhir_server.auth.keys import KeyStore
from fhir_server.auth.launch import LaunchStore
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import TokenValidator
from fhir_server.auth.users import UserStore


@dataclass
class AuthRuntime:
    settings: AuthSettings
    db: AsyncDatabase[dict[str, Any]]
    keys: KeyStore
    jwks: JwksCache
    validator: TokenValidator
    clients: ClientRegistry
    users: UserStore
    launches: LaunchStore
    grants: GrantStore

    @classmethod
    def build(cls, settings: AuthSettings, db: AsyncDatabase[dict[str, Any]]) -> AuthRuntime:
        keys = KeyStore(db)
        jwks = JwksCache(settings.jwks_cache_seconds)
        return cls(settings, db, keys, jwks, TokenValidator(settings, db, keys, jwks),
                   ClientRegistry(db), UserStore(db), LaunchStore(db), GrantStore(db))


def auth_runtime(request: Request) -> AuthRuntime:
    """The application's auth runtime (its services put it there at start-up)."""
    runtime: AuthRuntime = request.app.state.services.auth_runtime
    return runtime
