"""What a browser needs of us, checked without a browser (test_fhirclient_js.py does it with
one): CORS on discovery, token and FHIR endpoints, and a login page whose CSP lets the form's
answer redirect to the app."""

from __future__ import annotations

import httpx

from tests.clients.conftest import SmartServer

APP = "https://app.example.org"


def test_preflight_for_a_bearer_request(smart: SmartServer) -> None:
    response = httpx.options(f"{smart.base}/Task", headers={
        "Origin": APP, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, prefer"})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers


def test_cors_on_discovery_token_and_fhir_responses(smart: SmartServer) -> None:
    origin = {"Origin": APP}
    discovery = httpx.get(f"{smart.base}/.well-known/smart-configuration", headers=origin)
    assert discovery.headers["access-control-allow-origin"] == "*"
    token = httpx.post(f"{smart.origin}/auth/token", data={"grant_type": "authorization_code"},
                       headers=origin)
    assert token.status_code >= 400 and token.headers["access-control-allow-origin"] == "*"
    refused = httpx.get(f"{smart.base}/Task", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"
    assert "WWW-Authenticate" in refused.headers["access-control-expose-headers"]


def test_login_page_lets_its_form_redirect_to_the_app(smart: SmartServer) -> None:
    client = smart.add_client("--name", "csp", "--redirect-uri", f"{APP}/cb", "--auth-method", "none")
    page = httpx.get(f"{smart.origin}/auth/authorize", params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": f"{APP}/cb",
        "scope": "patient/Task.rs", "state": "s", "aud": smart.base,
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256"})
    assert page.status_code == 200 and "<form" in page.text
    csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
    assert csp["form-action"] == f"'self' {APP}"
    assert csp["frame-ancestors"] == "'none'"
