"""EHR launch (launch API -> launch parameter -> context in the token response) and
standalone launch with the patient picker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.auth.conftest import (
    LAUNCH_API_TOKEN,
    AuthServer,
    add_user,
    authorize_params,
    decode_unverified,
    exchange,
    login_for_code,
    pkce,
    redirect_query,
    register,
)

REDIRECT = "https://app.example.org/callback"


@pytest.fixture
def app_client(http: httpx.Client) -> dict[str, Any]:
    return register(http, client_name="Launch app", redirect_uris=[REDIRECT],
                    token_endpoint_auth_method="none")


def _launch(http: httpx.Client, **context: Any) -> str:
    response = http.post("/auth/launch", json=context,
                         headers={"Authorization": f"Bearer {LAUNCH_API_TOKEN}"})
    assert response.status_code == 201, response.text
    launch: str = response.json()["launch"]
    return launch


def test_launch_api_requires_its_token(http: httpx.Client) -> None:
    assert http.post("/auth/launch", json={"patient": "p1"}).status_code == 401
    wrong = http.post("/auth/launch", json={"patient": "p1"},
                      headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    bad = http.post("/auth/launch", json={"patient": "../x"},
                    headers={"Authorization": f"Bearer {LAUNCH_API_TOKEN}"})
    assert bad.status_code == 400


def test_ehr_launch_context_reaches_token_response(http: httpx.Client, auth: AuthServer,
                                                   app_client: dict[str, Any]) -> None:
    launch = _launch(http, patient="pat-7", encounter="enc-3", fhirUser="Practitioner/d9",
                     need_patient_banner=False)
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge,
                              "launch openid fhirUser patient/Observation.rs", launch=launch)
    # The EHR named the user, so no login page: straight back with a code.
    query = redirect_query(http.get("/auth/authorize", params=params))
    assert query["state"] == params["state"]
    body = exchange(http, app_client, query["code"], verifier).json()
    assert body["patient"] == "pat-7"
    assert body["encounter"] == "enc-3"
    assert body["fhirUser"] == "Practitioner/d9"
    assert body["need_patient_banner"] is False
    assert body["smart_style_url"] == auth.settings.smart_style_url
    claims = decode_unverified(body["access_token"])
    assert claims["patient"] == "pat-7"
    assert decode_unverified(body["id_token"])["fhirUser"].endswith("/Practitioner/d9")


def test_ehr_launch_without_user_asks_for_login(http: httpx.Client, auth: AuthServer,
                                                app_client: dict[str, Any]) -> None:
    add_user(auth, "doc", "pw pw pw", "Practitioner/doc-1")
    launch = _launch(http, patient="pat-8")
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "launch patient/*.rs",
                              launch=launch)
    query = login_for_code(http, params, "doc", "pw pw pw")
    body = exchange(http, app_client, query["code"], verifier).json()
    assert body["patient"] == "pat-8"
    assert body["need_patient_banner"] is True


def test_unknown_launch_is_refused(http: httpx.Client, auth: AuthServer,
                                  app_client: dict[str, Any]) -> None:
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "launch patient/*.rs",
                              launch="made-up")
    assert redirect_query(http.get("/auth/authorize", params=params))["error"] == (
        "invalid_request")


def test_standalone_patient_picker(http: httpx.Client, auth: AuthServer,
                                   app_client: dict[str, Any]) -> None:
    add_user(auth, "doc", "pw pw pw", "Practitioner/doc-1")
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "launch/patient patient/*.rs")
    picker = http.post("/auth/authorize",
                       data={**params, "username": "doc", "password": "pw pw pw"})
    assert picker.status_code == 200 and "Select patient" in picker.text
    ticket = picker.text.split("name='login_ticket' value='")[1].split("'")[0]
    chosen = http.post("/auth/authorize",
                       data={**params, "login_ticket": ticket, "patient": "pat-42"})
    body = exchange(http, app_client, redirect_query(chosen)["code"], verifier).json()
    assert body["patient"] == "pat-42"
    assert body["need_patient_banner"] is True


def test_picker_offers_only_a_related_persons_patients(http: httpx.Client, auth: AuthServer,
                                                       app_client: dict[str, Any]) -> None:
    add_user(auth, "mum", "pw pw pw", "RelatedPerson/rp-1", patients=("kid-1", "kid-2"))
    _, challenge = pkce()
    params = authorize_params(auth, app_client, challenge, "launch/patient patient/*.rs")
    picker = http.post("/auth/authorize",
                       data={**params, "username": "mum", "password": "pw pw pw"})
    ticket = picker.text.split("name='login_ticket' value='")[1].split("'")[0]
    assert "kid-1" in picker.text and "kid-2" in picker.text
    other = http.post("/auth/authorize",
                      data={**params, "login_ticket": ticket, "patient": "stranger"})
    assert other.status_code == 200 and "Select patient" in other.text


def test_patient_user_gets_own_context_and_no_user_scopes(
    http: httpx.Client, auth: AuthServer, app_client: dict[str, Any]
) -> None:
    add_user(auth, "pat", "pw pw pw", "Patient/p-55")
    verifier, challenge = pkce()
    params = authorize_params(auth, app_client, challenge,
                              "launch/patient patient/*.rs user/*.cruds")
    query = login_for_code(http, params, "pat", "pw pw pw")
    body = exchange(http, app_client, query["code"], verifier).json()
    assert body["patient"] == "p-55"
    assert "user/*.cruds" not in body["scope"].split()
