"""Refresh tokens: only with offline_access/online_access, bound to the client, narrowing only."""

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
def app_client(http: httpx.Client, auth: AuthServer) -> dict[str, Any]:
    add_user(auth, "doc", "pw pw pw", "Practitioner/doc-1")
    return register(http, client_name="Refresh app", redirect_uris=[REDIRECT],
                    token_endpoint_auth_method="none")


def _tokens(http: httpx.Client, auth: AuthServer, client: dict[str, Any],
            scope: str) -> dict[str, Any]:
    verifier, challenge = pkce()
    query = login_for_code(http, authorize_params(auth, client, challenge, scope),
                           "doc", "pw pw pw")
    body: dict[str, Any] = exchange(http, client, query["code"], verifier).json()
    return body


def _refresh(http: httpx.Client, client: dict[str, Any], token: str,
             **extra: str) -> httpx.Response:
    return http.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": token,
                                          "client_id": client["client_id"], **extra})


def test_no_refresh_token_without_offline_or_online_access(
    http: httpx.Client, auth: AuthServer, app_client: dict[str, Any]
) -> None:
    assert "refresh_token" not in _tokens(http, auth, app_client, "user/*.rs")
    assert "refresh_token" in _tokens(http, auth, app_client, "user/*.rs online_access")


def test_refresh_may_narrow_but_never_widen(http: httpx.Client, auth: AuthServer,
                                           app_client: dict[str, Any]) -> None:
    first = _tokens(http, auth, app_client, "user/Observation.rs user/Patient.rs offline_access")
    refresh = first["refresh_token"]
    same = _refresh(http, app_client, refresh)
    assert same.status_code == 200, same.text
    assert same.headers["cache-control"] == "no-store"
    assert set(same.json()["scope"].split()) == set(first["scope"].split())
    narrowed = _refresh(http, app_client, refresh, scope="user/Observation.r")
    assert narrowed.status_code == 200
    assert narrowed.json()["scope"] == "user/Observation.r"
    wider = _refresh(http, app_client, refresh, scope="user/Observation.cruds")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
    other_type = _refresh(http, app_client, refresh, scope="user/Condition.rs")
    assert other_type.status_code == 400


def test_refresh_token_is_bound_to_its_client(http: httpx.Client, auth: AuthServer,
                                             app_client: dict[str, Any]) -> None:
    refresh = _tokens(http, auth, app_client, "user/*.rs offline_access")["refresh_token"]
    thief = register(http, client_name="Thief", redirect_uris=[REDIRECT],
                     token_endpoint_auth_method="none")
    stolen = _refresh(http, thief, refresh)
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"


def test_revoked_refresh_token_stops_working(http: httpx.Client, auth: AuthServer,
                                            app_client: dict[str, Any]) -> None:
    refresh = _tokens(http, auth, app_client, "user/*.rs offline_access")["refresh_token"]
    revoked = http.post("/auth/revoke", data={"token": refresh,
                                              "client_id": app_client["client_id"]})
    assert revoked.status_code == 200
    assert _refresh(http, app_client, refresh).status_code == 400
