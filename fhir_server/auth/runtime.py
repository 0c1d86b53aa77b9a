"""Per-application auth objects (stores and caches), built on first use from the database the
application's services hold (`app.state.services.database.db`)."""

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


def auth_runtime(request: Request, settings: AuthSettings) -> AuthRuntime:
    state = request.app.state
    runtime: AuthRuntime | None = getattr(state, "auth_runtime", None)
    db: AsyncDatabase[dict[str, Any]] = state.services.database.db
    if runtime is None or runtime.db is not db or runtime.settings is not settings:
        runtime = AuthRuntime.build(settings, db)
        state.auth_runtime = runtime
    return runtime
