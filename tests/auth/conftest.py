"""Auth test fixtures: the auth routers in a small FastAPI app on a real uvicorn, over the
real embedded database. The same app plays a trusted external EHR (its JWKS and an RFC 7662
introspection endpoint under /ehr), so external-issuer checks also go over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from joserfc import jwt
from joserfc.jwk import RSAKey
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.auth.routes import build_auth_router, build_well_known_router
from fhir_server.auth.runtime import AuthRuntime
from fhir_server.auth.settings import AuthSettings, IntrospectionEndpoint
from fhir_server.auth.startup import start_auth
from tests.helpers import wipe

DATABASE = "fhir_auth_test"
INITIAL_ACCESS_TOKEN = "initial-access-token-for-tests"
LAUNCH_API_TOKEN = "launch-api-token-for-tests"
EHR_ISSUER = "https://ehr.example.org/oauth"
INTROSPECTED_ISSUER = "https://introspected.example.org"
OPAQUE_EHR_TOKEN = "opaque-token-from-the-ehr"
T = TypeVar("T")

# The external EHR's signing key (it publishes the public half at /ehr/jwks).
EHR_KEY = RSAKey.generate_key(2048, parameters={"kid": "ehr-1", "alg": "RS256"})
# A Backend Services client that registers a jwks_uri (served at /client/jwks).
CLIENT_URL_KEY = RSAKey.generate_key(2048, parameters={"kid": "client-1", "alg": "RS384"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class _Services:
    """The part of the application's services the auth endpoints use."""

    auth_runtime: AuthRuntime


@dataclass
class AuthServer:
    origin: str
    settings: AuthSettings
    mongodb_uri: str

    @property
    def fhir_base(self) -> str:
        return self.settings.audience

    def run(self, work: Callable[[AsyncDatabase[dict[str, Any]]], Awaitable[T]]) -> T:
        """Runs `work(db)` on a fresh event loop with its own async client."""

        async def main() -> T:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                self.mongodb_uri, tz_aware=True
            )
            try:
                return await work(client[DATABASE])
            finally:
                await client.close()

        return asyncio.run(main())


def _ehr_routes(app: FastAPI) -> None:
    @app.get("/ehr/jwks")
    async def ehr_jwks() -> dict[str, Any]:
        return {"keys": [EHR_KEY.as_dict(private=False)]}

    @app.get("/client/jwks")
    async def client_jwks() -> dict[str, Any]:
        return {"keys": [CLIENT_URL_KEY.as_dict(private=False)]}

    @app.post("/ehr/introspect")
    async def ehr_introspect(request: Request) -> dict[str, Any]:
        form = parse_qs((await request.body()).decode())
        if request.headers.get("authorization") != "Basic " + base64.b64encode(
            b"rs:rs-secret"
        ).decode():
            return {"active": False}
        if form.get("token") == [OPAQUE_EHR_TOKEN]:
            return {"active": True, "scope": "user/Observation.rs", "client_id": "ehr-app",
                    "exp": int(time.time()) + 300, "aud": request.app.state.audience,
                    "iss": INTROSPECTED_ISSUER, "fhirUser": "Practitioner/ehr-doc"}
        return {"active": False}


def build_app(settings: AuthSettings, mongodb_uri: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri, tz_aware=True)
        db = client[DATABASE]
        await start_auth(settings, db)
        app.state.services = _Services(AuthRuntime.build(settings, db))
        app.state.audience = settings.audience
        try:
            yield
        finally:
            await client.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(build_auth_router(settings), prefix="/auth")
    app.include_router(build_well_known_router(settings), prefix="/fhir")
    _ehr_routes(app)
    return app


@pytest.fixture(scope="session")
def auth_server(mongodb_uri: str) -> Iterator[AuthServer]:
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = AuthSettings(
        issuer=f"{origin}/auth",
        audience=f"{origin}/fhir",
        trusted_issuers={EHR_ISSUER: f"{origin}/ehr/jwks"},
        introspection={INTROSPECTED_ISSUER: IntrospectionEndpoint(
            f"{origin}/ehr/introspect", "rs", "rs-secret", token_prefix="opaque-")},
        initial_access_token=INITIAL_ACCESS_TOKEN,
        launch_api_token=LAUNCH_API_TOKEN,
        smart_style_url=f"{origin}/style.json",
    )
    config = uvicorn.Config(build_app(settings, mongodb_uri), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("auth test server did not start")
        time.sleep(0.02)
    yield AuthServer(origin, settings, mongodb_uri)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def auth(auth_server: AuthServer) -> Iterator[AuthServer]:
    """The server, with every auth collection but the signing keys emptied."""
    with MongoClient(auth_server.mongodb_uri) as client:
        wipe(client[DATABASE], keep=lambda name: not name.startswith("auth_") or name == "auth_keys")
    yield auth_server


@pytest.fixture
def http(auth: AuthServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=auth.origin, timeout=30, follow_redirects=False) as client:
        yield client


# -- helpers -------------------------------------------------------------------------------

def register(http: httpx.Client, **metadata: Any) -> dict[str, Any]:
    response = http.post("/auth/register", json=metadata,
                         headers={"Authorization": f"Bearer {INITIAL_ACCESS_TOKEN}"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def add_user(auth: AuthServer, username: str, password: str, fhir_user: str, *,
             totp: bool = False, patients: tuple[str, ...] = ()) -> str | None:
    from fhir_server.auth.users import UserStore

    return auth.run(lambda db: UserStore(db).add(username, password, fhir_user, totp=totp,
                                                 patients=patients))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def authorize_params(auth: AuthServer, client: dict[str, Any], challenge: str,
                     scope: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "scope": scope,
        "state": secrets.token_urlsafe(8),
        "aud": auth.fhir_base,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return params


def redirect_query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), response.text
    location = response.headers["location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def login_for_code(http: httpx.Client, params: dict[str, str], username: str, password: str,
                   **more: str) -> dict[str, str]:
    """Shows the login page, then posts credentials (and `more`, e.g. a patient choice);
    returns the redirect's query parameters."""
    page = http.get("/auth/authorize", params=params)
    assert page.status_code == 200 and "<form" in page.text, page.text
    response = http.post("/auth/authorize",
                         data={**params, "username": username, "password": password, **more})
    return redirect_query(response)


def exchange(http: httpx.Client, client: dict[str, Any], code: str, verifier: str,
             **extra: str) -> httpx.Response:
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": client["redirect_uris"][0], "client_id": client["client_id"]}
    data.update(extra)
    auth = None
    if "client_secret" in client:
        auth = (client["client_id"], client["client_secret"])
    return http.post("/auth/token", data=data, auth=auth)


def decode_unverified(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def ehr_token(claims: dict[str, Any]) -> str:
    return jwt.encode({"alg": "RS256", "kid": "ehr-1"}, claims, EHR_KEY, algorithms=["RS256"])
