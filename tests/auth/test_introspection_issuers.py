"""Opaque tokens through the FHIR API with two introspecting issuers: each token is shown to
the one issuer it belongs to (by its token prefix), and an answer must name our audience.

The two issuers are real HTTP servers in this test; each records every token it is shown."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pymongo import MongoClient

from fhir_server.auth.settings import AuthSettings, IntrospectionEndpoint
from tests.conftest import RunningServer, make_settings

ISSUER_A = "https://a.example.org"
ISSUER_B = "https://b.example.org"


@dataclass
class FakeIssuer:
    """An RFC 7662 endpoint that vouches for its `tokens` (token -> extra claims)."""

    audience: str = ""
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/introspect"

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                issuer.seen.append(token)
                claims = issuer.tokens.get(token)
                answer: dict[str, Any] = {"active": False}
                if claims is not None:
                    answer = {"active": True, "scope": "user/Patient.rs", "client_id": "app",
                              "exp": int(time.time()) + 300, "aud": issuer.audience, **claims}
                    answer = {k: v for k, v in answer.items() if v is not None}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class Setup:
    base: str
    a: FakeIssuer
    b: FakeIssuer


@pytest.fixture(scope="module")
def setup(mongodb_uri: str) -> Iterator[Setup]:
    a, b = FakeIssuer(), FakeIssuer()
    a.start()
    b.start()
    settings = make_settings(mongodb_uri, database="fhir_introspection", auth_enabled=True)
    a.audience = b.audience = settings.base_url.rstrip("/")
    config = {ISSUER_A: {"url": a.url, "token_prefix": "a."},
              ISSUER_B: {"url": b.url, "token_prefix": "b."}}
    # The server reads its issuers from the environment once, while it starts.
    before = os.environ.get("FHIR_AUTH_INTROSPECTION")
    os.environ["FHIR_AUTH_INTROSPECTION"] = json.dumps(config)
    try:
        with RunningServer(settings) as running:
            yield Setup(running.settings.base_url, a, b)
    finally:
        if before is None:
            os.environ.pop("FHIR_AUTH_INTROSPECTION", None)
        else:
            os.environ["FHIR_AUTH_INTROSPECTION"] = before
        for issuer in (a, b):
            assert issuer.server is not None
            issuer.server.shutdown()
            issuer.server.server_close()


@pytest.fixture
def issuers(setup: Setup, mongodb_uri: str) -> Setup:
    setup.a.seen.clear()
    setup.b.seen.clear()
    setup.a.tokens.clear()
    setup.b.tokens.clear()
    with MongoClient(mongodb_uri) as client:
        client["fhir_introspection"]["Patient"].delete_many({})
    return setup


def _search(setup: Setup, token: str) -> httpx.Response:
    return httpx.get(f"{setup.base}/Patient", headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_token_of_issuer_a_reaches_only_a(issuers: Setup) -> None:
    issuers.a.tokens["a.token-1"] = {"iss": ISSUER_A}
    response = _search(issuers, "a.token-1")
    assert response.status_code == 200, response.text
    assert issuers.a.seen == ["a.token-1"]
    assert issuers.b.seen == []


def test_token_a_does_not_know_is_never_tried_at_b(issuers: Setup) -> None:
    # B would vouch for it: trying issuers in turn would let B answer for A's token.
    issuers.b.tokens["a.unknown"] = {"iss": ISSUER_B}
    response = _search(issuers, "a.unknown")
    assert response.status_code == 401
    assert issuers.a.seen == ["a.unknown"]
    assert issuers.b.seen == []


def test_token_no_issuer_claims_is_shown_to_nobody(issuers: Setup) -> None:
    response = _search(issuers, "c.someone-elses-token")
    assert response.status_code == 401
    assert issuers.a.seen == []
    assert issuers.b.seen == []


def test_answer_without_audience_is_refused(issuers: Setup) -> None:
    issuers.b.tokens["b.no-aud"] = {"iss": ISSUER_B, "aud": None}
    response = _search(issuers, "b.no-aud")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issuers.b.seen == ["b.no-aud"]


def test_answer_for_another_audience_is_refused(issuers: Setup) -> None:
    issuers.b.tokens["b.other-aud"] = {"iss": ISSUER_B, "aud": "https://elsewhere.example.org/fhir"}
    assert _search(issuers, "b.other-aud").status_code == 401


def test_two_issuers_without_prefix_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="token_prefix"):
        AuthSettings(introspection={ISSUER_A: IntrospectionEndpoint("http://a/introspect"),
                                    ISSUER_B: IntrospectionEndpoint("http://b/introspect")})


def test_overlapping_prefixes_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="prefix"):
        AuthSettings(introspection={
            ISSUER_A: IntrospectionEndpoint("http://a/introspect", token_prefix="tok"),
            ISSUER_B: IntrospectionEndpoint("http://b/introspect", token_prefix="tok.b")})
