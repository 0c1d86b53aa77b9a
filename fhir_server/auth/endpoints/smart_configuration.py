"""GET .well-known/smart-configuration (SMART App Launch 2.2 §Conformance)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from fhir_server.auth.settings import AuthSettings

CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "context-banner", "context-style",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2",
]

SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
    "offline_access", "online_access",
    "patient/*.cruds", "user/*.cruds", "system/*.cruds",
    "patient/*.rs", "user/*.rs", "system/*.rs",
    "patient/*.read", "patient/*.write", "patient/*.*",
    "user/*.read", "user/*.write", "user/*.*",
    "system/*.read", "system/*.write", "system/*.*",
]


def smart_configuration(settings: AuthSettings) -> dict[str, Any]:
    return {
        "issuer": settings.issuer,
        "jwks_uri": settings.jwks_url,
        "authorization_endpoint": settings.authorize_url,
        "token_endpoint": settings.token_url,
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt", "client_secret_basic", "client_secret_post", "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "registration_endpoint": settings.registration_url,
        "introspection_endpoint": settings.introspection_url,
        "revocation_endpoint": settings.revocation_url,
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "capabilities": CAPABILITIES,
    }


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.get("/.well-known/smart-configuration", include_in_schema=False)
    async def get_smart_configuration() -> JSONResponse:
        return JSONResponse(smart_configuration(settings),
                            headers={"Cache-Control": "public, max-age=300"})

    return api
