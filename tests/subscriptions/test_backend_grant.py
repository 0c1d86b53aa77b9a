"""A backend service's Subscription holds its grant from the client's registration
(subscriptions/grant.py). The client is registered for `client_credentials` with `system/`
scopes, and it re-authenticates by itself. So its Subscription keeps delivering after the
token it was created with has expired (3 s here). It stops once the client is disabled, and
events while it is disabled get no number. A user's grant still ends with its token
(test_event_access.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.auth.clients import ClientRegistry
from fhir_server.services import auth_settings
from tests.auth.conftest import decode_unverified
from tests.conftest import RunningServer
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import create_active, fast_settings, topic_subscription, unique, wait_until
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_event_access import event_count, numbers

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BACKEND_SCOPES = "system/Subscription.cruds system/Task.rs"
# Backend tokens live 3 s; registrations and revocations are read on every look (0), so a
# disabled client counts at once and the test needs no wait for a refresh.
ENV = {"FHIR_AUTH_BACKEND_TOKEN_TTL": "3", "FHIR_AUTH_REVOCATION_REFRESH_SECONDS": "0"}


@pytest.fixture(scope="module")
def backend_server(mongodb_uri: str) -> Iterator[RunningServer]:
    settings = fast_settings(mongodb_uri, "fhir_subscriptions_backend", auth_enabled=True)
    with pytest.MonkeyPatch.context() as patch:  # the auth settings are read when the app is built
        for key, value in ENV.items():
            patch.setenv(key, value)
        running = RunningServer(settings).__enter__()
    yield running
    running.__exit__(None, None, None)


def _db(server: RunningServer, work: Any) -> Any:
    async def run() -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.settings.mongodb_uri, tz_aware=True)
        try:
            return await work(client[server.settings.database])
        finally:
            await client.close()
    return asyncio.run(run())


class Backend:
    """A registered Backend Services client (private_key_jwt, RS384)."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.key = RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:8], "alg": "RS384"})
        metadata = {"client_name": "Backend", "grant_types": ["client_credentials"],
                    "token_endpoint_auth_method": "private_key_jwt", "scope": BACKEND_SCOPES,
                    "jwks": {"keys": [self.key.as_dict(private=False)]}}
        self.client_id: str = _db(server, lambda db: ClientRegistry(db).register(metadata))[0].client_id
        self.token_url = auth_settings(server.settings).token_url

    def token(self) -> httpx.Response:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "exp": now + 240,
                  "iat": now, "jti": uuid.uuid4().hex}
        assertion = jwt.encode({"alg": "RS384", "kid": self.key.kid, "typ": "JWT"}, claims, self.key,
                               algorithms=["RS384"])
        return httpx.post(self.token_url, timeout=30, data={
            "grant_type": "client_credentials", "scope": BACKEND_SCOPES,
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})

    def disabled(self, disabled: bool) -> None:
        assert _db(self.server, lambda db: ClientRegistry(db).set_disabled(self.client_id, disabled))


def _client(server: RunningServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.settings.base_url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def test_a_backend_subscription_outlives_its_token_and_stops_when_the_client_is_disabled(
        backend_server: RunningServer) -> None:
    u = unique()
    backend = Backend(backend_server)
    issued = backend.token()
    assert issued.status_code == 200, issued.text
    assert issued.json()["expires_in"] == 3
    # The EHR that writes the Tasks, and an administrator who reads the counts (dev tokens of
    # clients that are not registered: their grants are their tokens', an hour).
    writer = _client(backend_server, _db(backend_server, lambda db: mint_dev_token(
        db, auth_settings(backend_server.settings), ["system/Task.cruds", "system/Subscription.cruds"],
        client_id="ehr", ttl=3600)))
    receiver = Receiver().start()
    try:
        with _client(backend_server, issued.json()["access_token"]) as service, writer:
            sub_id = create_active(service, topic_subscription(
                "task-status", receiver.url, content="id-only", filters=(f"Task?owner=Practitioner/{u}",)))
            first = writer.post("/Task", json=task(u)).json()
            receiver.wait_for(lambda _: numbers(receiver) == [1])

            # The token expires (the API allows its clock skew beyond; a token's grant did
            # not); the backend service would fetch a new one when it next calls.
            expires = decode_unverified(issued.json()["access_token"])["exp"]
            wait_until(lambda: time.time() > expires + 0.5, 30, "the backend token expired")
            after_expiry = writer.post("/Task", json=task(u)).json()
            receiver.wait_for(lambda _: numbers(receiver) == [1, 2], timeout=30)
            assert writer.get(f"/Subscription/{sub_id}").json()["status"] == "active"

            # Disabled: no token any more, and the Subscription's events get no number.
            backend.disabled(True)
            refused = backend.token()
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text
            while_disabled = writer.post("/Task", json=task(u)).json()
            # A Subscription of the writer's on the same Tasks: once it has the next change,
            # the matcher has decided the backend's event for that Task too (in commit order).
            barrier = Receiver().start()
            try:
                create_active(writer, topic_subscription("task-status", barrier.url, content="id-only",
                                                         filters=(f"Task?owner=Practitioner/{u}",)))
                marker = writer.put(f"/Task/{while_disabled['id']}",
                                    json={**while_disabled, "status": "accepted"}).json()
                # (Created after the Task, so the only Task event it gets is the marker's.)
                barrier.wait_for(lambda rs: any(marker["id"] in r.body.decode() for r in rs), timeout=30)
                assert event_count(writer, sub_id) == 2
            finally:
                barrier.stop()

            # Enabled again: the grant holds again, without any update; the next event is number 3.
            backend.disabled(False)
            later = writer.post("/Task", json=task(u)).json()
            receiver.wait_for(lambda _: numbers(receiver) == [1, 2, 3], timeout=30)
            bodies = [r.body.decode() for r in receiver.events()]
            assert first["id"] in bodies[0] and after_expiry["id"] in bodies[1] and later["id"] in bodies[2]
            assert while_disabled["id"] not in "".join(bodies)
            assert event_count(writer, sub_id) == 3
    finally:
        receiver.stop()
