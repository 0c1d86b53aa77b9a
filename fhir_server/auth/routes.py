"""Router builders the application mounts: OAuth endpoints at /auth, discovery under the
FHIR base path."""

from __future__ import annotations

from fastapi import APIRouter

from fhir_server.auth.endpoints import (
    authorize,
    introspect,
    jwks,
    launch,
    register,
    revoke,
    smart_configuration,
    token,
)
from fhir_server.auth.settings import AuthSettings


def build_auth_router(settings: AuthSettings) -> APIRouter:
    """/authorize, /token, /introspect, /revoke, /register, /jwks, /launch (mount at /auth)."""
    api = APIRouter()
    for module in (authorize, token, introspect, revoke, register, jwks, launch):
        api.include_router(module.router(settings))
    return api


def build_well_known_router(settings: AuthSettings) -> APIRouter:
    """/.well-known/smart-configuration (mount under the FHIR base path)."""
    return smart_configuration.router(settings)
