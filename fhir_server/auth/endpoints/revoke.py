"""POST /revoke (RFC 7009): a client revokes its own refresh or access token. The answer is
200 whether or not the token was known, so it reveals nothing."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.auth.endpoints._common import (
    NO_STORE,
    authenticate_client,
    oauth_error,
    read_form,
)
from fhir_server.auth.jose import looks_like_jwt
from fhir_server.auth.runtime import auth_runtime
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import InvalidToken


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.post("/revoke", include_in_schema=False)
    async def revoke(request: Request) -> Response:
        runtime = auth_runtime(request)
        try:
            form = await read_form(request)
            client = await authenticate_client(request, form, runtime)
            token = form.get("token")
            if not token:
                raise InvalidRequestError("token missing")
        except OAuth2Error as error:
            return oauth_error(error)
        if looks_like_jwt(token):
            try:
                claims = await runtime.validator.validate_claims(token)
            except InvalidToken:
                claims = {}
            if claims.get("iss") == settings.issuer and claims.get("client_id") == (
                client.client_id
            ):
                await runtime.validator.revoke(claims)
        else:
            await runtime.grants.revoke_refresh_token(token, client.client_id)
        return Response(status_code=200, headers=NO_STORE)

    return api
