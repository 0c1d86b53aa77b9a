"""RFC 7591 dynamic registration, protected by the initial access token."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from fhir_server.auth.routes import build_auth_router
from tests.auth.conftest import INITIAL_ACCESS_TOKEN, AuthServer

METADATA = {"client_name": "App", "redirect_uris": ["https://app.example.org/cb"],
            "token_endpoint_auth_method": "client_secret_basic", "scope": "user/*.rs"}


def _post(http: httpx.Client, body: object, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post("/auth/register", json=body, headers=headers)


def test_registration_with_initial_access_token(http: httpx.Client) -> None:
    response = _post(http, METADATA, INITIAL_ACCESS_TOKEN)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_id"] and body["client_secret"]
    assert body["client_secret_expires_at"] == 0
    assert body["redirect_uris"] == METADATA["redirect_uris"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"


def test_registration_without_or_with_wrong_token_is_refused(http: httpx.Client) -> None:
    missing = _post(http, METADATA, None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert _post(http, METADATA, "guess").status_code == 401


def test_registration_closed_without_configured_token(auth: AuthServer) -> None:
    app = FastAPI()
    app.include_router(build_auth_router(auth.settings.with_(initial_access_token=None)))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/register", json=METADATA,
                                     headers={"Authorization": "Bearer anything"})

    assert asyncio.run(call()).status_code == 403


def test_bad_metadata_is_refused(http: httpx.Client) -> None:
    cases = [
        {"client_name": "x"},  # authorization_code without redirect_uris
        {**METADATA, "redirect_uris": ["not a uri"]},
        {**METADATA, "grant_types": ["password"]},
        {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt"},
        {"grant_types": ["client_credentials"],
         "token_endpoint_auth_method": "client_secret_basic"},
        {**METADATA, "token_endpoint_auth_method": "private_key_jwt",
         "jwks": {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "d": "AQAB"}]}},
        ["not", "an", "object"],
    ]
    for body in cases:
        response = _post(http, body, INITIAL_ACCESS_TOKEN)
        assert response.status_code == 400, body
        assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
