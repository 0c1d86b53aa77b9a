"""A server with subscriptions on fast settings, real rest-hook receivers, and helpers.

The server (auth off) has its own database and keeps it across tests: each test makes its own
Subscriptions and resources (unique references), and its Subscriptions are deleted after it,
so the dispatcher's state never meets a database emptied under it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft6Validator
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.config import Settings, SubscriptionSettings
from fhir_server.services import auth_settings
from tests.conftest import RunningServer, make_settings
from tests.helpers import PATIENCE
from tests.subscriptions.receiver import Receiver

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/"
SCHEMA = Path(__file__).resolve().parents[2] / "fhir_server" / "data" / "fhir.schema.json"

Client = Callable[..., httpx.Client]
FAST = SubscriptionSettings(
    allowed_hosts=("127.0.0.1",), retry_initial=0.05, retry_max=0.25, retry_window=3600.0,
    delivery_timeout=2.0, lease_ttl=2.0, scan_interval=0.2, poll_interval=0.3)


def fast_settings(mongodb_uri: str, database: str, **overrides: Any) -> Settings:
    return make_settings(mongodb_uri, database=database, subscriptions=FAST).with_(**overrides)


@pytest.fixture(scope="session")
def subs_server(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(fast_settings(mongodb_uri, "fhir_subscriptions")) as running:
        yield running


@pytest.fixture(scope="session")
def secure_subs(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(fast_settings(mongodb_uri, "fhir_subscriptions_secure", auth_enabled=True)) as running:
        yield running


@pytest.fixture
def as_(secure_subs: RunningServer) -> Iterator[Client]:
    """as_(scopes, client_id=..., fhir_user=..., patient=..., ttl=...) -> an HTTP client with
    that token (in its Authorization header)."""
    settings = secure_subs.settings
    clients: list[httpx.Client] = []

    def make(scope: str, *, client_id: str = "app", fhir_user: str | None = None,
             patient: str | None = None, ttl: int | None = None) -> httpx.Client:
        async def mint() -> str:
            db: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(db[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user, client_id=client_id,
                                            ttl=ttl)
            finally:
                await db.close()

        token = asyncio.run(mint())
        client = httpx.Client(base_url=settings.base_url, timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
        clients.append(client)
        return client

    yield make
    admin = make("system/Subscription.cruds", client_id="cleanup")
    for entry in admin.get("/Subscription", params={"_count": "1000"}).json().get("entry", []):
        admin.delete(f"/Subscription/{entry['resource']['id']}")
    for client in clients:
        client.close()


@pytest.fixture
def api(subs_server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=subs_server.settings.base_url, timeout=30) as client:
        yield client
        # No Subscription of this test keeps retrying into the next one.
        for entry in client.get("/Subscription", params={"_count": "1000"}).json().get("entry", []):
            client.delete(f"/Subscription/{entry['resource']['id']}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def unique(prefix: str = "x") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def topic_subscription(topic: str, endpoint: str, *, filters: tuple[str, ...] = (),
                       content: str = "full-resource", channel: str = "rest-hook",
                       heartbeat: int | None = None, max_count: int | None = None,
                       headers: tuple[str, ...] = ()) -> dict[str, Any]:
    channel_doc: dict[str, Any] = {
        "type": channel, "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]},
    }
    if channel == "rest-hook":
        channel_doc["endpoint"] = endpoint
    extensions = []
    if heartbeat:
        extensions.append({"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if max_count:
        extensions.append({"url": BACKPORT + "backport-max-count", "valuePositiveInt": max_count})
    if extensions:
        channel_doc["extension"] = extensions
    if headers:
        channel_doc["header"] = list(headers)
    sub: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested", "reason": "test", "criteria": TOPIC + topic if "://" not in topic else topic,
        "channel": channel_doc,
    }
    if filters:
        sub["_criteria"] = {"extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f}
                                          for f in filters]}
    return sub


def r4_subscription(criteria: str, endpoint: str, *, payload: str | None = "application/fhir+json",
                    channel: str = "rest-hook") -> dict[str, Any]:
    channel_doc: dict[str, Any] = {"type": channel}
    if channel == "rest-hook":
        channel_doc["endpoint"] = endpoint
    if payload:
        channel_doc["payload"] = payload
    return {"resourceType": "Subscription", "status": "requested", "reason": "test",
            "criteria": criteria, "channel": channel_doc}


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    timeout *= PATIENCE
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s (last: {value!r})")
        time.sleep(0.05)


def create_active(api: httpx.Client, subscription: dict[str, Any]) -> str:
    """Creates a Subscription and waits until the server has activated it."""
    response = api.post("/Subscription", json=subscription)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "requested"
    sub_id: str = response.json()["id"]
    try:
        wait_until(lambda: api.get(f"/Subscription/{sub_id}").json()["status"] == "active",
                   what=f"Subscription/{sub_id} active")
    except AssertionError as exc:
        # What the server says of itself, so that a stalled dispatcher names itself.
        ready = api.get(str(api.base_url.join("/health/ready"))).text
        status = api.get(f"/Subscription/{sub_id}/$status").text
        raise AssertionError(f"{exc}; ready: {ready[:500]}; $status: {status[:1000]}") from None
    return sub_id


def create(api: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = api.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def update(api: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = api.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code == 200, response.text
    updated: dict[str, Any] = response.json()
    return updated


def focus_ids(bundle: dict[str, Any]) -> list[str]:
    """Resource ids of a notification Bundle's entries after the SubscriptionStatus."""
    return [e["fullUrl"].rsplit("/", 1)[-1] for e in bundle["entry"][1:]]


@cache
def _validator(definition: str) -> Draft6Validator:
    schema = json.loads(SCHEMA.read_text())
    return Draft6Validator({"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]})


def check_r4(resource: dict[str, Any]) -> None:
    """Validates a Bundle (its entries' resources each against their own type) against R4."""
    shell = dict(resource)
    if resource["resourceType"] == "Bundle":
        for entry in resource.get("entry", []):
            if "resource" in entry:
                check_r4(entry["resource"])
        shell["entry"] = [{k: v for k, v in e.items() if k != "resource"} for e in resource.get("entry", [])]
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
              for e in _validator(resource["resourceType"]).iter_errors(shell)]
    assert not errors, errors[:5]
