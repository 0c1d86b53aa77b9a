"""POST /introspect (RFC 7662): for authenticated clients, about tokens this server issued."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.endpoints._common import (
    NO_STORE,
    authenticate_client,
    oauth_error,
    read_form,
)
from fhir_server.auth.jose import looks_like_jwt
from fhir_server.auth.runtime import AuthRuntime, auth_runtime
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import InvalidToken

INACTIVE: dict[str, Any] = {"active": False}
_PASSED_ON = ("scope", "client_id", "sub", "exp", "iat", "nbf", "iss", "aud", "jti",
              "patient", "encounter", "fhirUser")


async def introspect(runtime: AuthRuntime, token: str) -> dict[str, Any]:
    if looks_like_jwt(token):
        try:
            claims = await runtime.validator.validate_claims(token)
        except InvalidToken:
            return INACTIVE
        if claims.get("iss") != runtime.settings.issuer:
            return INACTIVE  # we vouch for our own tokens only
        out = {k: claims[k] for k in _PASSED_ON if k in claims}
        return {"active": True, "token_type": "Bearer", **out}
    info = await runtime.grants.refresh_token_info(token)
    if info is None:
        return INACTIVE
    context = info["context"]
    return {
        "active": True,
        "token_type": "refresh_token",
        "client_id": info["client_id"],
        "scope": " ".join(context["scopes"]),
        "exp": int(info["expires_at"].timestamp()),
        "iss": runtime.settings.issuer,
        **({"sub": context["username"]} if context.get("username") else {}),
        **({"patient": context["patient"]} if context.get("patient") else {}),
    }


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.post("/introspect", include_in_schema=False)
    async def introspect_endpoint(request: Request) -> JSONResponse:
        runtime = auth_runtime(request)
        try:
            form = await read_form(request)
            await authenticate_client(request, form, runtime, allow_public=False)
            token = form.get("token")
            if not token:
                raise InvalidRequestError("token missing")
        except OAuth2Error as error:
            return oauth_error(error)
        return JSONResponse(await introspect(runtime, token), headers=NO_STORE)

    return api
