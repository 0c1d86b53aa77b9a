"""`fhirpy` (PyPI) with a token from SMART Backend Services: client_credentials, authenticated
by a private_key_jwt assertion signed with PyJWT (RS384 and ES384), the client registered
through RFC 7591 dynamic registration."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound

from tests.clients.conftest import INITIAL_ACCESS_TOKEN, TASK, SmartServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _key_pair(alg: str) -> tuple[Any, dict[str, Any]]:
    """A private key and the public JWK Set the client registers."""
    if alg == "RS384":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update({"kid": uuid.uuid4().hex, "alg": alg, "use": "sig"})
    return private, {"keys": [jwk]}


def _backend_token(smart: SmartServer, alg: str, scope: str) -> dict[str, Any]:
    private, jwks = _key_pair(alg)
    with httpx.Client(timeout=30) as http:
        config = http.get(f"{smart.base}/.well-known/smart-configuration").json()
        assert alg in config["token_endpoint_auth_signing_alg_values_supported"]
        registered = http.post(config["registration_endpoint"], headers={
            "Authorization": f"Bearer {INITIAL_ACCESS_TOKEN}"}, json={
            "client_name": f"nightly export ({alg})", "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks,
            "scope": "system/Task.rs system/Patient.rs"})
        assert registered.status_code == 201, registered.text
        client_id = registered.json()["client_id"]
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": client_id, "sub": client_id, "aud": config["token_endpoint"],
             "iat": now, "exp": now + 240, "jti": uuid.uuid4().hex},
            private, algorithm=alg, headers={"kid": jwks["keys"][0]["kid"], "typ": "JWT"})
        response = http.post(config["token_endpoint"], data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        assert response.status_code == 200, response.text
        token: dict[str, Any] = response.json()
        # The same assertion again is a replay.
        replay = http.post(config["token_endpoint"], data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})
        assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"
    return token


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_token_searches_and_reads(smart: SmartServer, world: dict[str, str],
                                                    alg: str) -> None:
    token = _backend_token(smart, alg, "system/Task.rs system/Patient.rs")
    assert token["token_type"] == "Bearer" and token["expires_in"] <= 300
    assert "refresh_token" not in token
    fhir = SyncFHIRClient(smart.base, authorization=f"Bearer {token['access_token']}")

    # Two to a page: fhirpy follows our `next` links, each request bearing the token.
    tasks = fhir.resources("Task").limit(2).fetch_all()
    assert {t.id for t in tasks} == {world[k] for k in ("requested_p1", "completed_p1",
                                                        "requested_p2", "completed_p2")}
    one = fhir.reference("Task", world["requested_p2"]).to_resource()
    assert one["status"] == "requested" and one["for"]["reference"] == "Patient/p2"
    patient = fhir.resources("Patient").search(_id="p1").get()
    assert patient["name"][0]["family"] == "Chalmers"

    # system/*.rs reads everything it names, and nothing else; it writes nothing.
    with pytest.raises(ForbiddenError):
        fhir.reference("Practitioner", "dr1").to_resource()
    with pytest.raises(ForbiddenError):
        fhir.resource("Task", **TASK).save()
    with pytest.raises(ResourceNotFound):
        fhir.reference("Task", "no-such-task").to_resource()


def test_backend_services_scope_is_capped_by_registration(smart: SmartServer) -> None:
    token = _backend_token(smart, "ES384", "system/Task.rs system/Task.cud system/Observation.rs")
    assert token["scope"].split() == ["system/Task.rs"]
