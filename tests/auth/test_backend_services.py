"""SMART Backend Services: client_credentials with private_key_jwt (RS384 and ES384)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.auth.conftest import AuthServer, decode_unverified, register

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
Key = RSAKey | ECKey


def _key(alg: str) -> Key:
    params: Any = {"kid": f"k-{alg}-{uuid.uuid4().hex[:6]}", "alg": alg, "use": "sig"}
    if alg == "RS384":
        return RSAKey.generate_key(2048, parameters=params)
    return ECKey.generate_key("P-384", parameters=params)


def _assertion(key: Key, client_id: str, aud: str, *, exp_in: int = 240,
               jti: str | None = None, alg: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in,
              "iat": now, "jti": jti or uuid.uuid4().hex}
    algorithm = alg or str(key.get("alg"))
    return jwt.encode({"alg": algorithm, "kid": key.kid, "typ": "JWT"}, claims, key,
                      algorithms=[algorithm])


def _token(http: httpx.Client, assertion: str, scope: str = "system/Observation.rs"
           ) -> httpx.Response:
    return http.post("/auth/token", data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion,
    })


@pytest.fixture(params=["RS384", "ES384"])
def backend(request: pytest.FixtureRequest, http: httpx.Client) -> tuple[dict[str, Any], Key]:
    key = _key(request.param)
    client = register(http, client_name="Backend", grant_types=["client_credentials"],
                      token_endpoint_auth_method="private_key_jwt",
                      jwks={"keys": [key.as_dict(private=False)]},
                      scope="system/Observation.rs system/Patient.rs")
    return client, key


def test_client_credentials_grant(http: httpx.Client, auth: AuthServer,
                                  backend: tuple[dict[str, Any], Key]) -> None:
    client, key = backend
    response = _token(http, _assertion(key, client["client_id"], auth.settings.token_url))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] <= 300
    assert "refresh_token" not in body
    assert body["scope"] == "system/Observation.rs"
    claims = decode_unverified(body["access_token"])
    assert claims["exp"] - claims["iat"] <= 300
    assert claims["client_id"] == client["client_id"]


def test_replayed_jti_is_refused(http: httpx.Client, auth: AuthServer,
                                 backend: tuple[dict[str, Any], Key]) -> None:
    client, key = backend
    jti = uuid.uuid4().hex
    assert _token(http, _assertion(key, client["client_id"], auth.settings.token_url,
                                   jti=jti)).status_code == 200
    replay = _token(http, _assertion(key, client["client_id"], auth.settings.token_url,
                                     jti=jti))
    assert replay.status_code == 401
    assert replay.json()["error"] == "invalid_client"


def test_exp_more_than_five_minutes_ahead_is_refused(
    http: httpx.Client, auth: AuthServer, backend: tuple[dict[str, Any], Key]
) -> None:
    client, key = backend
    response = _token(http, _assertion(key, client["client_id"], auth.settings.token_url,
                                       exp_in=3600))
    assert response.status_code == 401


def test_expired_assertion_is_refused(http: httpx.Client, auth: AuthServer,
                                      backend: tuple[dict[str, Any], Key]) -> None:
    client, key = backend
    response = _token(http, _assertion(key, client["client_id"], auth.settings.token_url,
                                       exp_in=-120))
    assert response.status_code == 401


def test_wrong_aud_is_refused(http: httpx.Client, auth: AuthServer,
                              backend: tuple[dict[str, Any], Key]) -> None:
    client, key = backend
    response = _token(http, _assertion(key, client["client_id"], auth.fhir_base))
    assert response.status_code == 401


def test_assertion_signed_by_another_key_is_refused(
    http: httpx.Client, auth: AuthServer, backend: tuple[dict[str, Any], Key]
) -> None:
    client, key = backend
    impostor = _key(str(key.get("alg")))
    forged = jwt.encode({"alg": str(key.get("alg")), "kid": key.kid},
                        {"iss": client["client_id"], "sub": client["client_id"],
                         "aud": auth.settings.token_url, "exp": int(time.time()) + 60,
                         "jti": uuid.uuid4().hex}, impostor, algorithms=[str(key.get("alg"))])
    assert _token(http, forged).status_code == 401


def test_scope_beyond_registration_and_non_system_scopes_are_refused(
    http: httpx.Client, auth: AuthServer, backend: tuple[dict[str, Any], Key]
) -> None:
    client, key = backend
    url = auth.settings.token_url
    outside = _token(http, _assertion(key, client["client_id"], url), "system/Condition.rs")
    assert outside.status_code == 400 and outside.json()["error"] == "invalid_scope"
    user = _token(http, _assertion(key, client["client_id"], url), "user/Observation.rs")
    assert user.status_code == 400 and user.json()["error"] == "invalid_scope"


def test_jwks_uri_registration(http: httpx.Client, auth: AuthServer) -> None:
    from tests.auth.conftest import CLIENT_URL_KEY, EHR_KEY

    client = register(http, client_name="Backend by URL", grant_types=["client_credentials"],
                      token_endpoint_auth_method="private_key_jwt",
                      jwks_uri=f"{auth.origin}/client/jwks", scope="system/*.rs")
    url = auth.settings.token_url
    good = _token(http, _assertion(CLIENT_URL_KEY, client["client_id"], url))
    assert good.status_code == 200, good.text
    # A key that is not in the registered set (even one we can fetch elsewhere) is refused.
    stranger = _token(http, _assertion(EHR_KEY, client["client_id"], url, alg="RS256"))
    assert stranger.status_code == 401
