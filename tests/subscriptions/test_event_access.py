"""An event its owner may not see is no event of that Subscription (docs/subscriptions.md,
"Security"): it is not numbered, so no notification of any payload content, no `$status`
count and no `$events` entry tells the owner that something changed. The owner's grant is the
token it created (or last updated) the Subscription with: revoked or expired, it decides
nothing and deliveries stop, until the owner renews it with an update.

Each test ends its writes with one that a second, server-wide Subscription (a `system/`
client's) also gets: once that one arrived, the matcher has numbered everything before it
(it numbers in commit order), so the owner's counts are final without any fixed wait."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pymongo import MongoClient
from websockets.sync.client import connect

from tests.conftest import RunningServer
from tests.subscriptions.builders import task
from tests.subscriptions.conftest import (
    Client,
    create_active,
    r4_subscription,
    topic_subscription,
    unique,
    wait_until,
)
from tests.subscriptions.receiver import Receiver

Doc = dict[str, Any]
WRITER = "system/Task.cruds system/Patient.cruds system/Subscription.cruds"


def event_count(client: httpx.Client, sub_id: str) -> int:
    status = client.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]
    return int(next(p["valueString"] for p in status["parameter"]
                    if p["name"] == "events-since-subscription-start"))


def replayed(client: httpx.Client, sub_id: str) -> list[int]:
    bundle = client.get(f"/Subscription/{sub_id}/$events").json()
    return [int(part["valueString"]) for p in bundle["entry"][0]["resource"]["parameter"]
            if p["name"] == "notification-event" for part in p["part"] if part["name"] == "event-number"]


def numbers(receiver: Receiver) -> list[int]:
    return [n for r in receiver.events() for n in r.event_numbers]


class Barrier:
    """A `system/` client's Subscription to every Task of `Practitioner/<u>`, full resources."""

    def __init__(self, writer: httpx.Client, u: str) -> None:
        self.receiver = Receiver().start()
        create_active(writer, topic_subscription("task-status", self.receiver.url,
                                                 filters=(f"Task?owner=Practitioner/{u}",)))

    def passed(self, resource: Doc) -> None:
        """Waits until the notification of this version arrived: everything before is numbered."""
        marker = f'"versionId":"{resource["meta"]["versionId"]}"'
        self.receiver.wait_for(lambda rs: any(
            resource["id"] in r.body.decode() and marker in r.body.decode().replace(" ", "") for r in rs),
            timeout=30)

    def stop(self) -> None:
        self.receiver.stop()


@pytest.fixture
def world(as_: Client) -> Any:
    u = unique()
    writer = as_(WRITER, client_id="ehr")
    for p in ("p1", "p2"):
        assert writer.put(f"/Patient/{u}{p}", json={"resourceType": "Patient", "id": f"{u}{p}"}).status_code == 201
    barrier = Barrier(writer, u)
    yield u, writer, barrier
    barrier.stop()


def write_both_patients(writer: httpx.Client, u: str) -> tuple[Doc, Doc]:
    """p1's Task, p2's Task, p1's Task moved to p2, p2's Task updated, a second p1 Task: of
    these, a p1 reader may see the first and the last only. Answers (first, last)."""
    mine = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    theirs = writer.post("/Task", json=task(u, patient=f"Patient/{u}p2")).json()
    moved = writer.put(f"/Task/{mine['id']}", json={**mine, "status": "accepted",
                                                    "for": {"reference": f"Patient/{u}p2"}})
    assert moved.status_code == 200
    assert writer.put(f"/Task/{theirs['id']}", json={**theirs, "status": "accepted"}).status_code == 200
    last = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    return mine, last


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_a_patient_owner_counts_only_its_own_patients_events(
        as_: Client, receiver: Receiver, world: Any, content: str) -> None:
    u, writer, barrier = world
    owner = as_("patient/Subscription.cruds patient/Task.rs", client_id="portal",
                fhir_user=f"Patient/{u}p1", patient=f"{u}p1")
    sub_id = create_active(owner, topic_subscription("task-status", receiver.url, content=content,
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    mine, last = write_both_patients(writer, u)
    barrier.passed(last)
    assert event_count(owner, sub_id) == 2
    receiver.wait_for(lambda _: len(numbers(receiver)) >= 2)
    assert numbers(receiver) == [1, 2]
    assert replayed(owner, sub_id) == [1, 2]
    bodies = "".join(r.body.decode() for r in receiver.requests)
    focus = [p for r in receiver.events() for p in r.json["entry"][0]["resource"]["parameter"]
             if p["name"] == "notification-event"]
    if content == "empty":
        assert all(part["name"] != "focus" for e in focus for part in e["part"])
        assert mine["id"] not in bodies and last["id"] not in bodies
    else:
        refs = [part["valueReference"]["reference"].rsplit("/", 1)[-1] for e in focus
                for part in e["part"] if part["name"] == "focus"]
        assert refs == [mine["id"], last["id"]]


@pytest.mark.parametrize("payload", [None, "application/fhir+json"])
def test_an_r4_criteria_subscription_counts_only_what_its_owner_may_read(
        as_: Client, receiver: Receiver, world: Any, payload: str | None) -> None:
    u, writer, barrier = world
    owner = as_("patient/Subscription.cruds patient/Task.rs", client_id="portal",
                fhir_user=f"Patient/{u}p1", patient=f"{u}p1")
    sub_id = create_active(owner, r4_subscription(f"Task?owner=Practitioner/{u}", receiver.url,
                                                  payload=payload))
    mine, last = write_both_patients(writer, u)
    barrier.passed(last)
    assert event_count(owner, sub_id) == 2
    posts = receiver.wait_for(lambda rs: len(rs) >= 3)  # the handshake, then one POST per event
    assert len(posts) == 3
    if payload:
        assert [json.loads(r.body)["id"] for r in posts[1:]] == [mine["id"], last["id"]]


def test_a_user_token_with_only_patient_scopes_counts_no_task_events(
        as_: Client, receiver: Receiver, world: Any) -> None:
    u, writer, barrier = world
    owner = as_("user/Subscription.cruds user/Patient.rs", client_id="app", fhir_user=f"Practitioner/{u}")
    sub_id = create_active(owner, topic_subscription("task-status", receiver.url, content="empty",
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    _, last = write_both_patients(writer, u)
    barrier.passed(last)
    assert event_count(owner, sub_id) == 0
    assert replayed(owner, sub_id) == []
    assert [r.status_type for r in receiver.requests] == ["handshake"]


def revoke(mongo: MongoClient[Doc], server: RunningServer, client: httpx.Client) -> None:
    """What POST /auth/revoke records for one of our tokens (RFC 7009); answers once the
    server refuses the token (its revocation list, which the grants share, has it)."""
    token = str(client.headers["Authorization"]).split()[1]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    mongo[server.settings.database]["auth_revoked"].insert_one(
        {"_id": claims["jti"], "expires_at": datetime.fromtimestamp(claims["exp"], UTC)})
    wait_until(lambda: client.get("/Subscription").status_code == 401, what="the token refused")


def test_a_revoked_grant_stops_deliveries_until_the_owner_renews_it(
        as_: Client, receiver: Receiver, world: Any, mongo: MongoClient[Doc],
        secure_subs: RunningServer) -> None:
    u, writer, barrier = world
    scopes = "user/Subscription.cruds user/Task.rs"
    owner = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}")
    admin = as_("system/Subscription.rs", client_id="admin")
    sub_id = create_active(owner, topic_subscription("task-status", receiver.url, content="id-only",
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    first = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    receiver.wait_for(lambda _: numbers(receiver) == [1])
    revoke(mongo, secure_subs, owner)
    while_revoked = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    barrier.passed(while_revoked)
    assert event_count(admin, sub_id) == 1
    # The owner renews the grant: an update (one that changes something: an identical PUT
    # writes nothing) with a current token of the same client and user.
    renewed = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}")
    sub = renewed.get(f"/Subscription/{sub_id}").json()
    assert renewed.put(f"/Subscription/{sub_id}", json={**sub, "reason": "renewed"}).status_code == 200
    assert admin.get(f"/Subscription/{sub_id}").json()["status"] == "active"  # kept: nothing defining changed
    after = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    barrier.passed(after)
    receiver.wait_for(lambda _: len(numbers(receiver)) >= 2)
    assert numbers(receiver) == [1, 2]
    bodies = "".join(r.body.decode() for r in receiver.requests)
    assert first["id"] in bodies and after["id"] in bodies and while_revoked["id"] not in bodies


def test_an_expired_grant_sets_the_subscription_to_error_until_renewed(
        as_: Client, receiver: Receiver, world: Any) -> None:
    u, writer, barrier = world
    scopes = "user/Subscription.cruds user/Task.rs"
    owner = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}", ttl=12)
    admin = as_("system/Subscription.rs", client_id="admin")
    sub_id = create_active(owner, topic_subscription("task-status", receiver.url, content="id-only",
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    writer.post("/Task", json=task(u, patient=f"Patient/{u}p1"))
    receiver.wait_for(lambda _: numbers(receiver) == [1])
    stored = wait_until(lambda: (s := admin.get(f"/Subscription/{sub_id}").json())["status"] == "error" and s,
                        timeout=40, what="error once the token expired")
    assert "authorization expired or was revoked" in stored["error"]
    expired = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    barrier.passed(expired)
    assert event_count(admin, sub_id) == 1
    renewed = as_(scopes, client_id="app", fhir_user=f"Practitioner/{u}")
    assert renewed.put(f"/Subscription/{sub_id}", json={**stored, "status": "requested"}).status_code == 200
    wait_until(lambda: admin.get(f"/Subscription/{sub_id}").json()["status"] == "active", what="active again")
    after = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    receiver.wait_for(lambda _: len(numbers(receiver)) >= 2)
    assert numbers(receiver) == [1, 2]
    assert after["id"] in receiver.events()[-1].body.decode()
    assert expired["id"] not in "".join(r.body.decode() for r in receiver.requests)


def test_a_revoked_grant_refuses_websocket_bindings(
        as_: Client, world: Any, mongo: MongoClient[Doc], secure_subs: RunningServer) -> None:
    u, writer, barrier = world
    owner = as_("user/Subscription.cruds user/Task.rs", client_id="app", fhir_user=f"Practitioner/{u}")
    admin = as_("system/Subscription.rs", client_id="admin")
    sub_id = create_active(owner, topic_subscription("task-status", "", channel="websocket", content="id-only",
                                                     filters=(f"Task?owner=Practitioner/{u}",)))
    params = {p["name"]: next(v for k, v in p.items() if k.startswith("value"))
              for p in owner.get(f"/Subscription/{sub_id}/$get-ws-binding-token").json()["parameter"]}
    with connect(params["websocket-url"]) as ws:
        ws.send(f"bind-with-token {params['token']}")
        handshake = json.loads(ws.recv(timeout=10))["entry"][0]["resource"]["parameter"]
        assert next(p["valueCode"] for p in handshake if p["name"] == "type") == "handshake"
        first = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
        assert first["id"] in ws.recv(timeout=15)
    revoke(mongo, secure_subs, owner)
    while_revoked = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    barrier.passed(while_revoked)
    assert event_count(admin, sub_id) == 1
    with connect(params["websocket-url"]) as ws:
        ws.send(f"bind-with-token {params['token']} 0")  # the binding token itself is still valid
        assert ws.recv(timeout=10) == (f"error {sub_id} the owner's authorization expired or was revoked: "
                                       "update the Subscription with a current token to renew it")


def test_a_chain_in_criteria_is_resolved_as_the_owner(as_: Client, receiver: Receiver, world: Any) -> None:
    """`Task?patient.family=...` by an owner who may read Tasks but no Patient: matched as the
    server, it would tell the owner which of the Tasks' patients bear the name."""
    u, writer, barrier = world
    assert writer.put(f"/Patient/{u}named", json={"resourceType": "Patient", "id": f"{u}named",
                                                   "name": [{"family": f"Secret{u}"}]}).status_code == 201
    owner = as_("user/Subscription.cruds user/Task.rs", client_id="app", fhir_user=f"Practitioner/{u}")
    reader = as_("user/Subscription.cruds user/Task.rs user/Patient.rs", client_id="app2",
                 fhir_user=f"Practitioner/{u}")
    blind = create_active(owner, r4_subscription(f"Task?patient.family=Secret{u}", receiver.url))
    sighted = create_active(reader, r4_subscription(f"Task?patient.family=Secret{u}", receiver.url))
    named = writer.post("/Task", json=task(u, patient=f"Patient/{u}named")).json()
    barrier.passed(named)
    assert event_count(reader, sighted) == 1  # one who may read the Patient: a match
    assert event_count(owner, blind) == 0
    assert owner.get("/Task", params={"patient.family": f"Secret{u}"}).json().get("entry") is None
