"""RFC 7662 introspection and RFC 7009 revocation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.auth.conftest import (
    AuthServer,
    add_user,
    authorize_params,
    exchange,
    login_for_code,
    pkce,
    register,
)

REDIRECT = "https://app.example.org/callback"


@pytest.fixture
def tokens(http: httpx.Client, auth: AuthServer) -> tuple[dict[str, Any], dict[str, Any]]:
    add_user(auth, "doc", "pw pw pw", "Practitioner/doc-1")
    client = register(http, client_name="Conf", redirect_uris=[REDIRECT],
                      token_endpoint_auth_method="client_secret_basic")
    verifier, challenge = pkce()
    params = authorize_params(auth, client, challenge, "user/*.rs offline_access fhirUser")
    query = login_for_code(http, params, "doc", "pw pw pw")
    body = exchange(http, client, query["code"], verifier).json()
    return client, body


def _introspect(http: httpx.Client, client: dict[str, Any], token: str) -> httpx.Response:
    return http.post("/auth/introspect", data={"token": token},
                     auth=(client["client_id"], client["client_secret"]))


def test_introspection_of_access_and_refresh_tokens(
    http: httpx.Client, auth: AuthServer, tokens: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    client, body = tokens
    info = _introspect(http, client, body["access_token"]).json()
    assert info["active"] is True
    assert info["client_id"] == client["client_id"]
    assert info["scope"] == body["scope"]
    assert info["fhirUser"] == "Practitioner/doc-1"
    assert info["iss"] == auth.settings.issuer
    refresh = _introspect(http, client, body["refresh_token"]).json()
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert _introspect(http, client, "nonsense").json() == {"active": False}


def test_introspection_requires_client_authentication(
    http: httpx.Client, tokens: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, body = tokens
    response = http.post("/auth/introspect", data={"token": body["access_token"]})
    assert response.status_code == 401
    public = register(http, client_name="Public", redirect_uris=[REDIRECT],
                      token_endpoint_auth_method="none")
    as_public = http.post("/auth/introspect", data={"token": body["access_token"],
                                                    "client_id": public["client_id"]})
    assert as_public.status_code == 401


def test_revoked_access_token_is_inactive(
    http: httpx.Client, tokens: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    client, body = tokens
    revoked = http.post("/auth/revoke", data={"token": body["access_token"]},
                        auth=(client["client_id"], client["client_secret"]))
    assert revoked.status_code == 200
    assert _introspect(http, client, body["access_token"]).json() == {"active": False}


def test_a_client_cannot_revoke_another_clients_token(
    http: httpx.Client, tokens: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    client, body = tokens
    other = register(http, client_name="Other", redirect_uris=[REDIRECT],
                     token_endpoint_auth_method="client_secret_basic")
    for token in (body["access_token"], body["refresh_token"]):
        response = http.post("/auth/revoke", data={"token": token},
                             auth=(other["client_id"], other["client_secret"]))
        assert response.status_code == 200  # RFC 7009: no hint whether it existed
        assert _introspect(http, client, token).json()["active"] is True


def test_revocation_of_unknown_token_is_200(
    http: httpx.Client, tokens: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    client, _ = tokens
    response = http.post("/auth/revoke", data={"token": "never-issued"},
                         auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200
