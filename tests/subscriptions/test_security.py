"""With SMART on: Subscriptions belong to their owner, and a notification carries only what its
owner may read at delivery time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.services import auth_settings
from tests.conftest import RunningServer
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import create_active, fast_settings, topic_subscription, unique
from tests.subscriptions.receiver import Receiver

Doc = dict[str, Any]
Client = Callable[..., httpx.Client]


@pytest.fixture(scope="module")
def secure_subs(mongodb_uri: str) -> Iterator[RunningServer]:
    with RunningServer(fast_settings(mongodb_uri, "fhir_subscriptions_secure", auth_enabled=True)) as running:
        yield running


@pytest.fixture
def as_(secure_subs: RunningServer) -> Iterator[Client]:
    """as_(scopes, client_id=..., fhir_user=..., patient=...) -> an HTTP client with that token."""
    settings = secure_subs.settings
    clients: list[httpx.Client] = []

    def make(scope: str, *, client_id: str = "app", fhir_user: str | None = None,
             patient: str | None = None) -> httpx.Client:
        async def mint() -> str:
            db: AsyncMongoClient[Doc] = AsyncMongoClient(settings.mongodb_uri)
            try:
                return await mint_dev_token(db[settings.database], auth_settings(settings), scope.split(),
                                            patient=patient, fhir_user=fhir_user, client_id=client_id)
            finally:
                await db.close()

        client = httpx.Client(base_url=settings.base_url, timeout=30,
                              headers={"Authorization": f"Bearer {asyncio.run(mint())}"})
        clients.append(client)
        return client

    yield make
    admin = make("system/Subscription.cruds", client_id="cleanup")
    for entry in admin.get("/Subscription", params={"_count": "1000"}).json().get("entry", []):
        admin.delete(f"/Subscription/{entry['resource']['id']}")
    for client in clients:
        client.close()


def test_subscriptions_belong_to_their_owner(as_: Client, receiver: Receiver) -> None:
    u = unique()
    scopes = "user/Subscription.cruds user/Task.rs"
    alice = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}a")
    bob = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}b")
    other_app = as_(scopes, client_id="other-app", fhir_user=f"Practitioner/{u}a")
    admin = as_("system/Subscription.rs", client_id="admin")
    sub_id = create_active(alice, topic_subscription("task-status", receiver.url,
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    sub = alice.get(f"/Subscription/{sub_id}").json()
    for stranger in (bob, other_app):
        # A read refused for want of ownership answers as if the Subscription did not exist (404);
        # an update is refused outright (403): it names the resource the caller already knows.
        assert stranger.get(f"/Subscription/{sub_id}").status_code == 404
        assert stranger.get("/Subscription").json().get("entry") is None
        assert stranger.put(f"/Subscription/{sub_id}", json={**sub, "status": "off"}).status_code == 403
        stranger.delete(f"/Subscription/{sub_id}")
        assert stranger.get(f"/Subscription/{sub_id}/$status").status_code == 404
        assert stranger.get(f"/Subscription/{sub_id}/$events").status_code == 404
    assert alice.get(f"/Subscription/{sub_id}").json()["status"] == "active"  # untouched
    assert admin.get(f"/Subscription/{sub_id}").status_code == 200
    # (The server's own in-process Subscriptions of its built-in workflows are the server's.)
    assert [e["resource"]["id"] for e in admin.get("/Subscription").json()["entry"]
            if not e["resource"]["id"].startswith("in-process-")] == [sub_id]
    assert alice.get(f"/Subscription/{sub_id}/$status").status_code == 200


def test_notifications_carry_only_what_the_owner_may_read(as_: Client, receiver: Receiver) -> None:
    u = unique()
    writer = as_("system/Task.cruds system/Patient.cruds", client_id="ehr")
    for p in ("p1", "p2"):
        assert writer.put(f"/Patient/{u}{p}", json={"resourceType": "Patient", "id": f"{u}{p}"}).status_code == 201
    owner = as_("user/Subscription.cruds patient/Task.rs", client_id="app", fhir_user=f"Practitioner/{u}",
                patient=f"{u}p1")
    sub_id = create_active(owner, topic_subscription("task-status", receiver.url,
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    mine = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    theirs = writer.post("/Task", json=task(u, patient=f"Patient/{u}p2")).json()
    moved = writer.put(f"/Task/{mine['id']}", json={**mine, "status": "accepted",
                                                    "for": {"reference": f"Patient/{u}p2"}}).json()
    assert moved["meta"]["versionId"] == "2"
    received = receiver.wait_for(lambda rs: sum(len(r.event_numbers) for r in rs if r.status_type == "event-notification") >= 3)
    bundles = [r.json for r in received if r.status_type == "event-notification"]
    events = [p for b in bundles for p in b["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [int(next(x["valueString"] for x in e["part"] if x["name"] == "event-number")) for e in events] == [1, 2, 3]
    focus = [[x for x in e["part"] if x["name"] == "focus"] for e in events]
    assert focus[0] and focus[0][0]["valueReference"]["reference"].endswith(mine["id"])
    assert focus[1] == [] and focus[2] == []  # another patient's Task; a Task moved out of reach
    entries = [e for b in bundles for e in b["entry"][1:]]
    assert [e["resource"]["id"] for e in entries] == [mine["id"]]
    assert theirs["id"] not in str(bundles)
    # $events, asked by the owner, applies the same rule
    replay = owner.get(f"/Subscription/{sub_id}/$events").json()
    assert [e["resource"]["id"] for e in replay["entry"][1:]] == [mine["id"]]


def test_consent_revoked_stops_notifications_even_for_earlier_events(as_: Client, receiver: Receiver) -> None:
    u = unique()
    admin = as_("system/*.cruds", client_id="ehr")
    assert admin.put(f"/Patient/{u}p", json={"resourceType": "Patient", "id": f"{u}p"}).status_code == 201
    assert admin.put(f"/Practitioner/{u}dr", json={"resourceType": "Practitioner", "id": f"{u}dr"}).status_code == 201
    doctor = as_("user/Subscription.cruds user/Task.rs", client_id="app", fhir_user=f"Practitioner/{u}dr")
    create_active(doctor, topic_subscription("task-status", receiver.url, filters=(f"Task?patient=Patient/{u}p",)))
    before = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()
    receiver.wait_for(lambda rs: any(r.status_type == "event-notification" for r in rs))
    receiver.stop()
    pending = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()  # committed while permitted
    deny = admin.post("/Consent", json={
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{u}p"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
        "provision": {"type": "deny", "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": f"Practitioner/{u}dr"}}]}})
    assert deny.status_code == 201, deny.text
    assert doctor.get(f"/Task/{before['id']}").status_code == 403  # the doctor may no longer read it
    after = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()
    receiver.start()
    received = receiver.wait_for(lambda rs: sum(len(r.event_numbers) for r in rs if r.status_type == "event-notification") >= 3)
    bundles = [r.json for r in received if r.status_type == "event-notification"]
    entries = [e for b in bundles for e in b["entry"][1:]]
    assert [e["resource"]["id"] for e in entries] == [before["id"]]  # nothing after the revocation
    assert pending["id"] not in str(bundles) and after["id"] not in str(bundles)
