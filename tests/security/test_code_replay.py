"""RFC 6749 §4.1.2: an authorization code used twice is refused, and the tokens already
issued from it stop working (its interception is the likely cause). Over HTTP, on the full
server with SMART on: the FHIR API answers 401 to the revoked access token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.clients import ClientRegistry
from fhir_server.auth.users import UserStore
from tests.conftest import RunningServer

REDIRECT = "https://app.example.org/callback"


def _setup(server: RunningServer) -> dict[str, Any]:
    settings = server.settings

    async def work() -> dict[str, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
        try:
            db = client[settings.database]
            username = f"doc-{secrets.token_hex(4)}"
            await UserStore(db).add(username, "correct horse", "Practitioner/doc-1")
            registered, _ = await ClientRegistry(db).register({
                "client_name": "Replay app", "redirect_uris": [REDIRECT],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            })
            return {"client_id": registered.client_id, "username": username}
        finally:
            await client.close()

    return asyncio.run(work())


@pytest.fixture
def origin(secure_server: RunningServer) -> Iterator[httpx.Client]:
    base = secure_server.settings.base_url
    with httpx.Client(base_url=base.rsplit("/fhir", 1)[0], timeout=30) as http:
        yield http


def _code(http: httpx.Client, server: RunningServer, app: dict[str, Any]) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code", "client_id": app["client_id"], "redirect_uri": REDIRECT,
        "scope": "user/*.rs offline_access", "state": secrets.token_urlsafe(8),
        "aud": server.settings.base_url, "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    assert http.get("/auth/authorize", params=params).status_code == 200
    answer = http.post("/auth/authorize", data={**params, "username": app["username"],
                                                "password": "correct horse"})
    assert answer.status_code in (302, 303), answer.text
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    return query["code"][0], verifier


def _exchange(http: httpx.Client, app: dict[str, Any], code: str, verifier: str) -> httpx.Response:
    return http.post("/auth/token", data={
        "grant_type": "authorization_code", "code": code, "code_verifier": verifier,
        "redirect_uri": REDIRECT, "client_id": app["client_id"]})


def _refresh(http: httpx.Client, app: dict[str, Any], token: str) -> httpx.Response:
    return http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                          "client_id": app["client_id"]})


def test_replayed_code_revokes_the_tokens_issued_from_it(
    secure_server: RunningServer, secure: Any, origin: httpx.Client,
) -> None:
    app = _setup(secure_server)
    code, verifier = _code(origin, secure_server, app)
    first = _exchange(origin, app, code, verifier)
    assert first.status_code == 200, first.text
    access, refresh = first.json()["access_token"], first.json()["refresh_token"]
    assert secure(access).get("/Patient").status_code == 200
    # A token minted later through the refresh token descends from the code as well.
    refreshed = _refresh(origin, app, refresh)
    assert refreshed.status_code == 200
    later = refreshed.json()["access_token"]
    assert secure(later).get("/Patient").status_code == 200

    replay = _exchange(origin, app, code, verifier)
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"

    for token in (access, later):
        r = secure(token).get("/Patient")
        assert r.status_code == 401
        assert r.json()["resourceType"] == "OperationOutcome"
    refused = _refresh(origin, app, refresh)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


def test_other_codes_keep_their_tokens(
    secure_server: RunningServer, secure: Any, origin: httpx.Client,
) -> None:
    """Only the replayed code's tokens go: another authorization of the same user stays."""
    app = _setup(secure_server)
    code, verifier = _code(origin, secure_server, app)
    other_code, other_verifier = _code(origin, secure_server, app)
    assert _exchange(origin, app, code, verifier).status_code == 200
    other = _exchange(origin, app, other_code, other_verifier).json()
    assert _exchange(origin, app, code, verifier).status_code == 400
    assert secure(other["access_token"]).get("/Patient").status_code == 200
    assert _refresh(origin, app, other["refresh_token"]).status_code == 200
    # A code never issued is refused without harm.
    assert _exchange(origin, app, "not-a-code", verifier).status_code == 400
