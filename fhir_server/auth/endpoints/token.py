"""POST /token: authorization_code (PKCE S256), refresh_token and client_credentials."""

from __future__ import annotations

import hmac
import re
from dataclasses import replace
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.clients import Client
from fhir_server.auth.endpoints._common import (
    NO_STORE,
    authenticate_client,
    oauth_error,
    read_form,
)
from fhir_server.auth.grants import GrantContext
from fhir_server.auth.runtime import AuthRuntime, auth_runtime
from fhir_server.auth.scopes import narrow_scopes, parse_scope, split_scope_string
from fhir_server.auth.settings import AuthSettings
from fhir_server.auth.tokens import mint_access_token, mint_id_token

_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")


async def token_response(
    runtime: AuthRuntime, context: GrantContext, *, refresh_token: str | None = None,
    issue_refresh: bool = True, code_id: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a successful user-facing grant (code or refresh). `code_id`: the
    authorization code the tokens descend from, which records them for a replay to revoke."""
    settings = runtime.settings
    scopes = list(context.scopes)
    token, claims = await mint_access_token(
        runtime.keys, settings, client_id=context.client_id, scopes=scopes,
        subject=context.username, patient=context.patient, encounter=context.encounter,
        fhir_user=context.fhir_user,
    )
    body: dict[str, Any] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
        "scope": " ".join(scopes),
        "need_patient_banner": context.need_patient_banner,
    }
    style = context.smart_style_url or settings.smart_style_url
    if style:
        body["smart_style_url"] = style
    if context.patient:
        body["patient"] = context.patient
    if context.encounter:
        body["encounter"] = context.encounter
    if context.fhir_user and "fhirUser" in scopes:
        body["fhirUser"] = context.fhir_user
    if "openid" in scopes and context.username:
        body["id_token"] = await mint_id_token(
            runtime.keys, settings, client_id=context.client_id, subject=context.username,
            fhir_user=context.fhir_user if "fhirUser" in scopes else None, nonce=context.nonce,
        )
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    elif issue_refresh and ("offline_access" in scopes or "online_access" in scopes):
        ttl = (settings.offline_refresh_ttl if "offline_access" in scopes
               else settings.online_refresh_ttl)
        body["refresh_token"] = await runtime.grants.issue_refresh_token(context, ttl, code_id)
    if code_id is not None and not await runtime.grants.record_issued(
            code_id, claims["jti"], float(claims["exp"])):
        # The code was replayed while this request ran: what it just issued goes too.
        await runtime.validator.revoke(claims)
        if "refresh_token" in body:
            await runtime.grants.revoke_refresh_token(body["refresh_token"], context.client_id)
        raise InvalidGrantError("code already used: the tokens issued from it are revoked")
    return body


async def _replayed(runtime: AuthRuntime, code: str) -> None:
    """RFC 6749 §4.1.2: a code used twice revokes the tokens already issued from it (its
    interception is the likely cause)."""
    issued = await runtime.grants.replay_code(code)
    for jti, expires_at in issued.access_tokens if issued else ():
        await runtime.validator.revoke({"jti": jti, "exp": expires_at})


async def _authorization_code(
    runtime: AuthRuntime, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    code, verifier = form.get("code"), form.get("code_verifier")
    if not code:
        raise InvalidRequestError("code missing")
    if not verifier or not _VERIFIER.match(verifier):
        raise InvalidRequestError("code_verifier missing or malformed")
    grant = await runtime.grants.redeem_code(code)
    if grant is None:
        await _replayed(runtime, code)
        raise InvalidGrantError("code invalid, expired or already used")
    if grant.context.client_id != client.client_id:
        raise InvalidGrantError("code invalid, expired or already used")
    if form.get("redirect_uri") != grant.redirect_uri:
        raise InvalidGrantError("redirect_uri does not match the authorization request")
    if not hmac.compare_digest(create_s256_code_challenge(verifier), grant.code_challenge):
        raise InvalidGrantError("code_verifier does not match the code_challenge")
    return await token_response(runtime, grant.context, code_id=grant.code_id)


async def _refresh_token(
    runtime: AuthRuntime, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    refresh = form.get("refresh_token")
    if not refresh:
        raise InvalidRequestError("refresh_token missing")
    found = await runtime.grants.refresh_grant(refresh)
    if found is None or found[0].client_id != client.client_id:
        raise InvalidGrantError("refresh_token invalid, expired, revoked or not this client's")
    context, code_id = found
    if "scope" in form:
        requested = split_scope_string(form["scope"])
        granted = narrow_scopes(requested, context.scopes)
        if len(granted) != len(set(requested)):
            raise InvalidScopeError("a refresh may only narrow the original scope")
        context = replace(context, scopes=tuple(granted))
    return await token_response(runtime, context, refresh_token=refresh, code_id=code_id)


async def _client_credentials(
    runtime: AuthRuntime, client: Client, form: dict[str, str]
) -> dict[str, Any]:
    if client.auth_method != "private_key_jwt":
        raise UnauthorizedClientError("client_credentials requires private_key_jwt")
    requested = split_scope_string(form.get("scope")) or client.allowed_scopes
    for text in requested:
        scope = parse_scope(text)
        if scope is None or scope.context != "system":
            raise InvalidScopeError(f"{text}: Backend Services grant system/ scopes only")
    granted = narrow_scopes(requested, client.allowed_scopes) if client.scope else requested
    if not granted:
        raise InvalidScopeError("none of the requested scopes is allowed for this client")
    settings = runtime.settings
    token, _ = await mint_access_token(
        runtime.keys, settings, client_id=client.client_id, scopes=granted,
        ttl=settings.backend_token_ttl,
    )
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": settings.backend_token_ttl,
        "scope": " ".join(granted),
    }


GRANTS = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
}


def router(settings: AuthSettings) -> APIRouter:
    api = APIRouter()

    @api.post("/token", include_in_schema=False)
    async def token(request: Request) -> JSONResponse:
        runtime = auth_runtime(request)
        try:
            form = await read_form(request)
            grant_type = form.get("grant_type", "")
            handler = GRANTS.get(grant_type)
            if handler is None:
                raise UnsupportedGrantTypeError(grant_type)
            client = await authenticate_client(request, form, runtime)
            allowed = set(client.grant_types)
            if "authorization_code" in allowed:
                allowed.add("refresh_token")
            if grant_type not in allowed:
                raise UnauthorizedClientError(f"client may not use {grant_type}")
            body = await handler(runtime, client, form)
        except OAuth2Error as error:
            return oauth_error(error)
        return JSONResponse(body, headers=NO_STORE)

    return api
