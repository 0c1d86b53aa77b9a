"""Discovery: .well-known/smart-configuration and the CapabilityStatement security block."""

from __future__ import annotations

import httpx

from fhir_server.auth.capability import OAUTH_URIS, capability_security
from tests.auth.conftest import AuthServer

REQUIRED_CAPABILITIES = {
    "launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
    "client-confidential-asymmetric", "sso-openid-connect", "context-ehr-patient",
    "context-standalone-patient", "permission-offline", "permission-patient",
    "permission-user", "permission-v1", "permission-v2", "authorize-post",
}


def test_discovery_document_has_every_required_field(http: httpx.Client,
                                                     auth: AuthServer) -> None:
    response = http.get("/fhir/.well-known/smart-configuration")
    assert response.status_code == 200
    doc = response.json()
    issuer = auth.settings.issuer
    assert doc["issuer"] == issuer
    assert doc["jwks_uri"] == f"{issuer}/jwks"
    assert doc["authorization_endpoint"] == f"{issuer}/authorize"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["introspection_endpoint"] == f"{issuer}/introspect"
    assert doc["revocation_endpoint"] == f"{issuer}/revoke"
    assert doc["registration_endpoint"] == f"{issuer}/register"
    assert {"private_key_jwt", "client_secret_basic"} <= set(
        doc["token_endpoint_auth_methods_supported"])
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(
        doc["grant_types_supported"])
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert "launch/patient" in doc["scopes_supported"]
    assert set(doc["capabilities"]) >= REQUIRED_CAPABILITIES


def test_every_advertised_endpoint_answers(http: httpx.Client) -> None:
    doc = http.get("/fhir/.well-known/smart-configuration").json()
    jwks = httpx.get(doc["jwks_uri"])
    assert jwks.status_code == 200
    assert {k["alg"] for k in jwks.json()["keys"]} >= {"RS256", "RS384", "ES384"}
    assert all("d" not in k for k in jwks.json()["keys"])  # never the private part
    for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint"):
        assert httpx.post(doc[name], data={}).status_code == 400


def test_capability_statement_security_extension(auth: AuthServer) -> None:
    security = capability_security(auth.settings)
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    ext = security["extension"][0]
    assert ext["url"] == OAUTH_URIS
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["token"] == auth.settings.token_url
    assert uris["authorize"] == auth.settings.authorize_url
