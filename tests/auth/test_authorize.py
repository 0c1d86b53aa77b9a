"""Authorization code flow: PKCE S256, state, aud, single-use codes, login, id_token."""

from __future__ import annotations

from typing import Any

import httpx
import pyotp
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.auth.conftest import (
    AuthServer,
    add_user,
    authorize_params,
    exchange,
    login_for_code,
    pkce,
    redirect_query,
    register,
)

REDIRECT = "https://app.example.org/callback"


@pytest.fixture
def app_client(http: httpx.Client) -> dict[str, Any]:
    return register(http, client_name="Test app", redirect_uris=[REDIRECT],
                    token_endpoint_auth_method="none")


@pytest.fixture
def doctor(auth: AuthServer) -> None:
    add_user(auth, "doc", "correct horse", "Practitioner/doc-1")


def test_code_flow_with_pkce_s256_and_state(http: httpx.Client, auth: AuthServer,
                                            app_client: dict[str, Any], doctor: None) -> None:
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/Observation.rs openid fhirUser")
    query = login_for_code(http, params, "doc", "correct horse")
    assert query["state"] == params["state"]
    response = exchange(http, app_client, query["code"], verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "user/Observation.rs openid fhirUser"
    assert body["fhirUser"] == "Practitioner/doc-1"
    principal = auth.run(lambda db: _validate(auth, db, body["access_token"]))
    assert principal.fhir_user == "Practitioner/doc-1"
    assert principal.client_id == app_client["client_id"]


async def _validate(auth: AuthServer, db: Any, token: str) -> Any:
    from fhir_server.auth.tokens import TokenValidator

    return await TokenValidator(auth.settings, db).validate(token)


def test_id_token_is_rs256_and_carries_fhir_user(http: httpx.Client, auth: AuthServer,
                                                 app_client: dict[str, Any],
                                                 doctor: None) -> None:
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "openid fhirUser", nonce="n-0S6")
    query = login_for_code(http, params, "doc", "correct horse")
    body = exchange(http, app_client, query["code"], verifier).json()
    keys = KeySet.import_key_set(http.get("/auth/jwks").json())
    id_token = jwt.decode(body["id_token"], keys, algorithms=["RS256"])
    assert id_token.header["alg"] == "RS256"
    claims = id_token.claims
    assert claims["iss"] == auth.settings.issuer
    assert claims["aud"] == app_client["client_id"]
    assert claims["fhirUser"] == f"{auth.fhir_base}/Practitioner/doc-1"
    assert claims["nonce"] == "n-0S6"
    assert claims["sub"] == "doc"


def test_plain_pkce_is_refused(http: httpx.Client, auth: AuthServer,
                               app_client: dict[str, Any]) -> None:
    verifier, _ = pkce()
    params = authorize_params(auth, app_client, verifier, "user/*.rs",
                              code_challenge_method="plain")
    query = redirect_query(http.get("/auth/authorize", params=params))
    assert query["error"] == "invalid_request"
    assert query["state"] == params["state"]


def test_missing_pkce_is_refused(http: httpx.Client, auth: AuthServer,
                                 app_client: dict[str, Any]) -> None:
    params = authorize_params(auth, app_client, "x", "user/*.rs")
    del params["code_challenge"], params["code_challenge_method"]
    assert redirect_query(http.get("/auth/authorize", params=params))["error"] == (
        "invalid_request")


def test_wrong_verifier_is_refused(http: httpx.Client, auth: AuthServer,
                                   app_client: dict[str, Any], doctor: None) -> None:
    _, challenge = pkce()
    other_verifier, _ = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    query = login_for_code(http, params, "doc", "correct horse")
    response = exchange(http, app_client, query["code"], other_verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_is_single_use(http: httpx.Client, auth: AuthServer,
                            app_client: dict[str, Any], doctor: None) -> None:
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    query = login_for_code(http, params, "doc", "correct horse")
    assert exchange(http, app_client, query["code"], verifier).status_code == 200
    again = exchange(http, app_client, query["code"], verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_is_bound_to_redirect_uri_and_client(http: httpx.Client, auth: AuthServer,
                                                  app_client: dict[str, Any],
                                                  doctor: None) -> None:
    other = register(http, client_name="Other", redirect_uris=[REDIRECT],
                     token_endpoint_auth_method="none")
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    query = login_for_code(http, params, "doc", "correct horse")
    assert exchange(http, other, query["code"], verifier).status_code == 400
    verifier, challenge = pkce()
    query = login_for_code(http, authorize_params(auth, app_client, challenge, "user/*.rs"),
                           "doc", "correct horse")
    wrong = exchange(http, app_client, query["code"], verifier,
                     redirect_uri="https://evil.example.org/cb")
    assert wrong.status_code == 400


def test_state_is_required(http: httpx.Client, auth: AuthServer,
                           app_client: dict[str, Any]) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    del params["state"]
    assert redirect_query(http.get("/auth/authorize", params=params))["error"] == (
        "invalid_request")


def test_wrong_aud_is_refused(http: httpx.Client, auth: AuthServer,
                              app_client: dict[str, Any]) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs",
                              aud="https://other.example.org/fhir")
    query = redirect_query(http.get("/auth/authorize", params=params))
    assert query["error"] == "invalid_request"
    assert "aud" in query["error_description"]


def test_unregistered_redirect_uri_is_not_followed(http: httpx.Client, auth: AuthServer,
                                                   app_client: dict[str, Any]) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs",
                              redirect_uri="https://evil.example.org/cb")
    response = http.get("/auth/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers


def test_wrong_password_shows_the_form_again(http: httpx.Client, auth: AuthServer,
                                             app_client: dict[str, Any],
                                             doctor: None) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    response = http.post("/auth/authorize",
                         data={**params, "username": "doc", "password": "wrong"})
    assert response.status_code == 401
    assert "<form" in response.text and "location" not in response.headers


def test_totp_second_factor(http: httpx.Client, auth: AuthServer,
                            app_client: dict[str, Any]) -> None:
    secret = add_user(auth, "nurse", "s3cret pass", "Practitioner/n-1", totp=True)
    assert secret
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    no_code = http.post("/auth/authorize",
                        data={**params, "username": "nurse", "password": "s3cret pass"})
    assert no_code.status_code == 401
    bad = http.post("/auth/authorize", data={**params, "username": "nurse",
                                             "password": "s3cret pass", "totp": "000000"
                                             if pyotp.TOTP(secret).now() != "000000"
                                             else "111111"})
    assert bad.status_code == 401
    code = pyotp.TOTP(secret).now()
    good = http.post("/auth/authorize", data={**params, "username": "nurse",
                                              "password": "s3cret pass", "totp": code})
    assert "code" in redirect_query(good)
    # The same one-time code cannot be used twice.
    replay = http.post("/auth/authorize", data={**params, "username": "nurse",
                                                "password": "s3cret pass", "totp": code})
    assert replay.status_code == 401


def test_authorize_post_is_accepted(http: httpx.Client, auth: AuthServer,
                                    app_client: dict[str, Any]) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "user/*.rs")
    response = http.post("/auth/authorize", data=params)
    assert response.status_code == 200 and "<form" in response.text


def test_confidential_symmetric_client(http: httpx.Client, auth: AuthServer,
                                       doctor: None) -> None:
    client = register(http, client_name="Conf", redirect_uris=[REDIRECT],
                      token_endpoint_auth_method="client_secret_basic")
    assert client["client_secret"]
    verifier, challenge = pkce()
    query = login_for_code(http, authorize_params(auth, client, challenge, "user/*.rs"),
                           "doc", "correct horse")
    assert exchange(http, client, query["code"], verifier).status_code == 200
    verifier, challenge = pkce()
    query = login_for_code(http, authorize_params(auth, client, challenge, "user/*.rs"),
                           "doc", "correct horse")
    bad = exchange(http, {**client, "client_secret": "nope"}, query["code"], verifier)
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_client"
