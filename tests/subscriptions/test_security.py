"""With SMART on: Subscriptions belong to their owner, and a notification carries only what its
owner may read at delivery time."""

from __future__ import annotations

from tests.subscriptions.builders import task
from tests.subscriptions.conftest import Client, create_active, topic_subscription, unique, wait_until
from tests.subscriptions.receiver import Receiver


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
    """Events about another patient's Task, or a Task moved out of reach, are no events of a
    `patient/` owner's Subscription (tests/subscriptions/test_event_access.py counts them for
    every payload content): only what the owner may read is numbered and carried."""
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
    again = writer.post("/Task", json=task(u, patient=f"Patient/{u}p1")).json()
    received = receiver.wait_for(lambda rs: sum(len(r.event_numbers) for r in rs if r.status_type == "event-notification") >= 2)
    bundles = [r.json for r in received if r.status_type == "event-notification"]
    events = [p for b in bundles for p in b["entry"][0]["resource"]["parameter"] if p["name"] == "notification-event"]
    assert [int(next(x["valueString"] for x in e["part"] if x["name"] == "event-number")) for e in events] == [1, 2]
    entries = [e for b in bundles for e in b["entry"][1:]]
    assert [e["resource"]["id"] for e in entries] == [mine["id"], again["id"]]
    assert [e["resource"]["meta"]["versionId"] for e in entries] == ["1", "1"]
    assert theirs["id"] not in str(bundles)
    # $events, asked by the owner, holds the same two events
    replay = owner.get(f"/Subscription/{sub_id}/$events").json()
    assert [e["resource"]["id"] for e in replay["entry"][1:]] == [mine["id"], again["id"]]


def test_consent_revoked_stops_notifications_even_for_earlier_events(as_: Client, receiver: Receiver) -> None:
    u = unique()
    admin = as_("system/*.cruds", client_id="ehr")
    assert admin.put(f"/Patient/{u}p", json={"resourceType": "Patient", "id": f"{u}p"}).status_code == 201
    assert admin.put(f"/Practitioner/{u}dr", json={"resourceType": "Practitioner", "id": f"{u}dr"}).status_code == 201
    doctor = as_("user/Subscription.cruds user/Task.rs", client_id="app", fhir_user=f"Practitioner/{u}dr")
    sub_id = create_active(doctor, topic_subscription("task-status", receiver.url,
                                                      filters=(f"Task?patient=Patient/{u}p",)))
    before = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()
    receiver.wait_for(lambda rs: any(r.status_type == "event-notification" for r in rs))
    receiver.stop()
    pending = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()  # committed while permitted

    def count() -> str:
        status = doctor.get(f"/Subscription/{sub_id}/$status").json()["entry"][0]["resource"]["parameter"]
        return str(next(p["valueString"] for p in status if p["name"] == "events-since-subscription-start"))

    # Judged when the matcher reaches it: wait for that, the Consent below must come after.
    wait_until(lambda: count() == "2", what="the pending Task numbered")
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
    # The administrator's own Subscription gets `after`: by then the matcher has judged it for
    # the doctor's too (it numbers in commit order). Denied to the doctor: no event of his.
    witness = Receiver().start()
    try:
        create_active(admin, topic_subscription("task-status", witness.url, filters=(f"Task?patient=Patient/{u}p",)))
        again = admin.post("/Task", json=task(u, patient=f"Patient/{u}p")).json()
        witness.wait_for(lambda rs: any(again["id"] in r.body.decode() for r in rs))
    finally:
        witness.stop()
    assert count() == "2"
    receiver.start()
    received = receiver.wait_for(lambda rs: sum(len(r.event_numbers) for r in rs if r.status_type == "event-notification") >= 2)
    bundles = [r.json for r in received if r.status_type == "event-notification"]
    assert [n for r in received if r.status_type == "event-notification" for n in r.event_numbers] == [1, 2]
    entries = [e for b in bundles for e in b["entry"][1:]]
    # `pending` was an event when committed, but goes without focus or content now.
    assert [e["resource"]["id"] for e in entries] == [before["id"]]
    assert pending["id"] not in str(bundles) and after["id"] not in str(bundles)
