"""Shared by the OAuth endpoints: form parsing, OAuth error responses, client authentication."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl, unquote

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse

from fhir_server.auth.assertions import ASSERTION_TYPE, InvalidAssertion, verify_client_assertion
from fhir_server.auth.clients import Client, verify_secret
from fhir_server.auth.jose import JoseFailure, unverified_claims
from fhir_server.auth.runtime import AuthRuntime

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body; a parameter given twice is an error (RFC 6749 §3.1)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequestError("body must be application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise InvalidRequestError("body too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("body is not UTF-8") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise InvalidRequestError(f"parameter {name} repeated")
        form[name] = value
    return form


def oauth_error(error: OAuth2Error) -> JSONResponse:
    status = 401 if error.error == "invalid_client" else (error.status_code or 400)
    body: dict[str, Any] = {"error": error.error}
    description = error.get_error_description()
    if description:
        body["error_description"] = description
    headers = dict(NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="token"'
    return JSONResponse(body, status_code=status, headers=headers)


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidClientError(description="malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClientError(description="malformed Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


async def authenticate_client(
    request: Request, form: dict[str, str], runtime: AuthRuntime, *, allow_public: bool = True
) -> Client:
    """The client making this request, authenticated by the method it registered."""
    basic = _basic_credentials(request)
    if basic is not None:
        client = await runtime.clients.get(basic[0])
        if client is None or client.auth_method != "client_secret_basic" or not verify_secret(
            client, basic[1]
        ):
            raise InvalidClientError(description="client authentication failed")
        return client
    assertion = form.get("client_assertion")
    if assertion is not None:
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClientError(description="unsupported client_assertion_type")
        try:
            issuer = unverified_claims(assertion).get("iss")
        except JoseFailure as exc:
            raise InvalidClientError(description="malformed client_assertion") from exc
        client_id = form.get("client_id") or issuer
        if not isinstance(client_id, str) or issuer != client_id:
            raise InvalidClientError(description="client_assertion iss must be the client_id")
        client = await runtime.clients.get(client_id)
        if client is None or client.auth_method != "private_key_jwt":
            raise InvalidClientError(description="client authentication failed")
        try:
            await verify_client_assertion(
                runtime.db, runtime.jwks, client, assertion, runtime.settings.token_url,
                leeway=runtime.settings.clock_skew_seconds,
            )
        except InvalidAssertion as exc:
            raise InvalidClientError(description=f"client_assertion refused: {exc}") from exc
        return client
    client_id = form.get("client_id")
    if not client_id:
        raise InvalidClientError(description="client authentication required")
    client = await runtime.clients.get(client_id)
    if client is None:
        raise InvalidClientError(description="client authentication failed")
    if "client_secret" in form:
        if client.auth_method != "client_secret_post" or not verify_secret(
            client, form["client_secret"]
        ):
            raise InvalidClientError(description="client authentication failed")
        return client
    if not allow_public or not client.public:
        raise InvalidClientError(description="client authentication required")
    return client
