"""Every published topic: its triggers, and each of its filters, end to end over rest-hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.subscriptions import builders as b
from tests.subscriptions.conftest import (
    TOPIC,
    check_r4,
    create,
    create_active,
    focus_ids,
    topic_subscription,
    unique,
    update,
)
from tests.subscriptions.receiver import Received, Receiver

Doc = dict[str, Any]
PARTICIPATION_MODE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"

# topic -> (resource builder: (u, other) -> resource, {filter: value(u)})
FILTER_CASES: dict[str, tuple[Callable[[str, bool], Doc], dict[str, Callable[[str], str]]]] = {
    "task-status": (
        lambda u, other: b.task(u + ("x" if other else ""), status="draft" if other else "requested",
                                code="approve" if other else "fulfill"),
        {"owner": lambda u: f"Practitioner/{u}", "patient": lambda u: f"Patient/{u}",
         "status": lambda u: "requested", "code": lambda u: f"{b.TASK_CODES}|fulfill"}),
    "appointment-status": (
        lambda u, other: b.appointment(u + ("x" if other else "")),
        {"actor": lambda u: f"Practitioner/{u}", "patient": lambda u: f"Patient/{u}"}),
    "careplan-activity": (
        lambda u, other: b.careplan(u + ("x" if other else "")),
        {"patient": lambda u: f"Patient/{u}", "care-team": lambda u: f"CareTeam/{u}"}),
    "careteam-membership": (
        lambda u, other: b.careteam(u + ("x" if other else "")),
        {"patient": lambda u: f"Patient/{u}", "participant": lambda u: f"Practitioner/{u}"}),
    "communication-received": (
        lambda u, other: b.communication(u + ("x" if other else "")),
        {"recipient": lambda u: f"Practitioner/{u}", "patient": lambda u: f"Patient/{u}",
         "thread": lambda u: f"Communication/{u}"}),
    "documentreference-added": (
        lambda u, other: b.document(u + ("x" if other else ""), loinc="18842-5" if other else "11488-4"),
        {"patient": lambda u: f"Patient/{u}", "type": lambda u: "http://loinc.org|11488-4"}),
    "consent-changed": (
        lambda u, other: b.consent(u + ("x" if other else "")),
        {"patient": lambda u: f"Patient/{u}"}),
    # An alert of the messaging workflow (auth is off here, so a client may write one).
    "communication-unrendered": (
        lambda u, other: {"resourceType": "Basic", "code": {"coding": [
            {"system": "http://fhir.care-coord.example/CodeSystem/messaging", "code": "unrendered"}]},
            "subject": {"reference": f"Communication/{u}{'x' if other else ''}"},
            "author": {"reference": f"Practitioner/{u}{'x' if other else ''}"},
            "extension": [{"url": "http://fhir.care-coord.example/StructureDefinition/alert-channel",
                           "valueCoding": {"system": PARTICIPATION_MODE, "code": "EMAILWRIT" if other else "SMSWRIT"}}]},
        {"participant": lambda u: f"Practitioner/{u}", "message": lambda u: f"Communication/{u}",
         "channel": lambda u: f"{PARTICIPATION_MODE}|SMSWRIT"}),
}


@pytest.mark.parametrize("topic", sorted(FILTER_CASES))
def test_each_filter_of_each_topic(api: httpx.Client, receiver: Receiver, topic: str) -> None:
    build, filters = FILTER_CASES[topic]
    u = unique()
    resource_type = build(u, False)["resourceType"]
    for name, value in filters.items():
        create_active(api, topic_subscription(topic, f"{receiver.url}/{name}",
                                              filters=(f"{resource_type}?{name}={value(u)}",)))
    create(api, build(u, True))  # matches no filter: would be event 1 if it matched
    wanted = create(api, build(u, False))["id"]
    events = receiver.wait_for(lambda rs: {r.path for r in rs if r.body and r.status_type == "event-notification"}
                               >= {f"/hook/{n}" for n in filters})
    for name in filters:
        [got] = [r for r in events if r.path == f"/hook/{name}" and r.status_type == "event-notification"]
        assert got.event_numbers == [1], name
        assert focus_ids(got.json) == [wanted], name
        assert got.json["entry"][1]["resource"]["id"] == wanted
        check_r4(got.json)


def _events(receiver: Receiver, count: int) -> list[Doc]:
    """The notification Bundles once `count` events arrived (a Bundle may carry several)."""
    def numbers(rs: list[Received]) -> list[int]:
        return [n for r in rs if r.body and r.status_type == "event-notification" for n in r.event_numbers]

    received = receiver.wait_for(lambda rs: len(numbers(rs)) >= count)
    assert numbers(received) == list(range(1, len(numbers(received)) + 1))
    return [r.json for r in received if r.body and r.status_type == "event-notification"]


def _entries(bundles: list[Doc]) -> list[Doc]:
    return [e for bundle in bundles for e in bundle["entry"][1:]]


def _methods(bundles: list[Doc]) -> list[tuple[str, str]]:
    return [(e["request"]["method"], e["fullUrl"].rsplit("/", 1)[-1]) for e in _entries(bundles)]


def _subscribe(api: httpx.Client, receiver: Receiver, topic: str, flt: str) -> None:
    create_active(api, topic_subscription(topic, receiver.url, filters=(flt,)))


def test_task_created_or_status_changed(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "task-status", f"Task?patient=Patient/{u}")
    t = create(api, b.task(u))
    update(api, {**t, "description": "no status change"})
    changed = update(api, {**t, "status": "accepted"})
    api.delete(f"/Task/{t['id']}")
    sentinel = create(api, b.task(u))
    bundles = _events(receiver, 3)
    assert _methods(bundles) == [("POST", t["id"]), ("PUT", t["id"]), ("POST", sentinel["id"])]
    assert _entries(bundles)[1]["resource"]["meta"]["versionId"] == changed["meta"]["versionId"]


def test_appointment_booked_cancelled_noshow(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "appointment-status", f"Appointment?patient=Patient/{u}")
    a = create(api, b.appointment(u, status="proposed"))
    a = update(api, {**a, "status": "booked"})
    a = update(api, {**a, "comment": "bring the referral letter"})
    a = update(api, {**a, "status": "cancelled"})
    n = create(api, b.appointment(u, status="noshow"))
    bundles = _events(receiver, 3)
    assert _methods(bundles) == [("PUT", a["id"]), ("PUT", a["id"]), ("POST", n["id"])]
    assert [e["resource"]["status"] for e in _entries(bundles)] == ["booked", "cancelled", "noshow"]


def test_careplan_activity_changed(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "careplan-activity", f"CarePlan?patient=Patient/{u}")
    plan = create(api, b.careplan(u, activities=0))
    plan = update(api, {**plan, "activity": b.careplan(u, activities=1)["activity"]})
    plan = update(api, {**plan, "title": "no activity change"})
    plan["activity"][0]["detail"]["status"] = "completed"
    plan = update(api, plan)
    sentinel = create(api, b.careplan(u, activities=2))
    assert _methods(_events(receiver, 3)) == [("PUT", plan["id"]), ("PUT", plan["id"]), ("POST", sentinel["id"])]


def test_careteam_membership_changed(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "careteam-membership", f"CareTeam?patient=Patient/{u}")
    team = create(api, b.careteam(u, [f"Practitioner/{u}"]))
    team = update(api, {**team, "name": "renamed"})
    team = update(api, {**team, "participant": b.careteam(u, [f"Practitioner/{u}", f"RelatedPerson/{u}"])["participant"]})
    team = update(api, {**team, "participant": b.careteam(u, [f"RelatedPerson/{u}"])["participant"]})
    assert _methods(_events(receiver, 3)) == [("POST", team["id"]), ("PUT", team["id"]), ("PUT", team["id"])]


def test_communication_received(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "communication-received", f"Communication?recipient=Practitioner/{u}")
    message = create(api, b.communication(u))
    message = update(api, {**message, "received": "2026-11-21T10:00:00Z"})
    message = update(api, {**message, "received": "2026-11-21T11:00:00Z"})  # already received
    sentinel = create(api, b.communication(u))
    assert _methods(_events(receiver, 3)) == [("POST", message["id"]), ("PUT", message["id"]), ("POST", sentinel["id"])]


def test_documentreference_added(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "documentreference-added", f"DocumentReference?patient=Patient/{u}")
    doc = create(api, b.document(u))
    update(api, {**doc, "description": "an update is not an addition"})
    sentinel = create(api, b.document(u))
    assert _methods(_events(receiver, 2)) == [("POST", doc["id"]), ("POST", sentinel["id"])]


def test_consent_changed_including_delete(api: httpx.Client, receiver: Receiver) -> None:
    u = unique()
    _subscribe(api, receiver, "consent-changed", f"Consent?patient=Patient/{u}")
    consent = create(api, b.consent(u))
    consent = update(api, {**consent, "status": "inactive"})
    assert api.delete(f"/Consent/{consent['id']}").status_code == 200
    bundles = _events(receiver, 3)
    assert _methods(bundles) == [("POST", consent["id"]), ("PUT", consent["id"]), ("DELETE", consent["id"])]
    assert "resource" not in _entries(bundles)[2]  # a deletion has no content


def test_topics_are_published(api: httpx.Client) -> None:
    statement = api.get("/metadata").json()
    [subscription] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    topics = {e["valueCanonical"] for e in subscription.get("extension", [])}
    # Beside ours, the Gravity SDOHCC topics of the closed-loop referral (tests/workflows/test_referral.py).
    gravity = {"http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task",
               "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Servicerequest"}
    assert topics == {TOPIC + name for name in FILTER_CASES} | gravity
    assert {op["name"] for op in subscription["operation"]} >= {"status", "events", "get-ws-binding-token"}
    websocket = [e for e in statement["rest"][0]["extension"]
                 if e["url"] == "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"]
    assert websocket and websocket[0]["valueUrl"].endswith("/fhir/$subscription-ws")
