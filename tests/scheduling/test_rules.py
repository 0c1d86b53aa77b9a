"""The Appointment state machine on plain REST writes (422 naming the rule, nothing written),
participants' AppointmentResponses, and the override scope (403 without it; audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Mint
from tests.scheduling.conftest import Practice, appointment_of, created, parameters, slot_status
from tests.subscriptions.conftest import wait_until

Doc = dict[str, Any]


def appointment(status: str, *actors: str) -> Doc:
    return {"resourceType": "Appointment", "status": status,
            "start": "2031-03-03T09:00:00Z", "end": "2031-03-03T09:15:00Z",
            "participant": [{"actor": {"reference": a}, "status": "needs-action"} for a in actors]}


@pytest.mark.parametrize(("before", "after", "rule"), [
    ("booked", "proposed", "appointment-status-transition"),
    ("booked", "pending", "appointment-status-transition"),
    ("pending", "fulfilled", "appointment-status-transition"),
    ("arrived", "noshow", "appointment-status-transition"),
    ("cancelled", "booked", "appointment-status-final"),
    ("fulfilled", "arrived", "appointment-status-final"),
    ("noshow", "booked", "appointment-status-final"),
])
def test_refused_transitions_are_422_naming_the_rule(api: httpx.Client, before: str, after: str, rule: str) -> None:
    stored = created(api, appointment(before, "Patient/p1"))
    response = api.put(f"/Appointment/{stored['id']}", json={**stored, "status": after})
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule" and issue["diagnostics"].startswith(f"{rule}:")
    assert issue["expression"] == ["Appointment.status"]
    assert api.get(f"/Appointment/{stored['id']}").json()["meta"]["versionId"] == "1"
    patched = api.patch(f"/Appointment/{stored['id']}", content=b'[{"op":"replace","path":"/status","value":"%s"}]'
                        % after.encode(), headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 422, patched.text


@pytest.mark.parametrize(("before", "after"), [
    ("proposed", "pending"), ("pending", "booked"), ("booked", "arrived"), ("booked", "checked-in"),
    ("arrived", "fulfilled"), ("booked", "noshow"), ("booked", "cancelled"), ("fulfilled", "entered-in-error"),
    ("waitlist", "booked"), ("booked", "booked"),
])
def test_allowed_transitions(api: httpx.Client, before: str, after: str) -> None:
    stored = created(api, appointment(before, "Patient/p1"))
    response = api.put(f"/Appointment/{stored['id']}", json={**stored, "status": after})
    assert response.status_code == 200, response.text


def test_any_status_may_be_created(api: httpx.Client) -> None:
    for status in ("proposed", "booked", "fulfilled", "cancelled", "noshow"):
        created(api, appointment(status, "Patient/p1"))


def test_appointment_responses_set_participant_status_and_book(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    held = appointment_of(api.post("/Appointment/$hold", json=parameters(appointment_resource=proposal)))
    aid = held["id"]
    for actor in (f"Patient/{practice.patient}", f"Practitioner/{doctor}", f"Location/{practice.video}"):
        created(api, {"resourceType": "AppointmentResponse", "appointment": {"reference": f"Appointment/{aid}"},
                      "actor": {"reference": actor}, "participantStatus": "accepted"})
    booked = wait_until(lambda: (a := api.get(f"/Appointment/{aid}").json())["status"] == "booked" and a,
                        what="booked by the answers")
    assert {p["status"] for p in booked["participant"]} == {"accepted"}
    assert slot_status(api, slots[0]) == "busy"


def test_a_decline_is_recorded_and_books_nothing(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    held = appointment_of(api.post("/Appointment/$hold", json=parameters(appointment_resource=proposal)))
    created(api, {"resourceType": "AppointmentResponse", "appointment": {"reference": f"Appointment/{held['id']}"},
                  "actor": {"reference": f"Practitioner/{doctor}"}, "participantStatus": "declined"})

    def declined() -> Doc | None:
        current: Doc = api.get(f"/Appointment/{held['id']}").json()
        statuses = {p["actor"]["reference"]: p["status"] for p in current["participant"]}
        return current if statuses[f"Practitioner/{doctor}"] == "declined" else None

    current = wait_until(declined, what="the decline recorded")
    assert current["status"] == "pending"
    assert slot_status(api, slots[0]) == "busy-tentative"


# ------------------------------------------------------------------ the override scope, with SMART on

WRITE = "system/Appointment.cruds system/Slot.cruds system/Schedule.cruds system/Practitioner.cruds " \
        "system/Patient.cruds system/Location.cruds system/AuditEvent.rs"


def test_override_needs_its_scope_and_is_audited(secure: Callable[..., httpx.Client], mint: Mint) -> None:
    plain = secure(mint(WRITE))
    practice = Practice(plain)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    assert plain.post("/Appointment/$book", json=parameters(appointment_resource=proposal)).status_code == 200
    # Taken: without the scope an override is 403, and a plain $book 409.
    refused = plain.post("/Appointment/$book", json=parameters(appointment_resource=proposal, override=True))
    assert refused.status_code == 403, refused.text
    assert "scheduling/override" in refused.json()["issue"][0]["diagnostics"]
    assert plain.post("/Appointment/$book", json=parameters(appointment_resource=proposal)).status_code == 409
    overrider = secure(mint(f"{WRITE} scheduling/override"))
    booked = overrider.post("/Appointment/$book", json=parameters(appointment_resource=proposal, override=True))
    assert booked.status_code == 200, booked.text
    second = appointment_of(booked)
    events = plain.get("/AuditEvent", params={"subtype": "override", "_count": "50"}).json()
    overrides = [e["resource"] for e in events.get("entry", [])]
    assert len(overrides) == 1
    what = [e["what"].get("reference") for e in overrides[0]["entity"] if "what" in e]
    assert f"Slot/{slots[0]}" in what and f"Appointment/{second['id']}" in what
    holders = plain.get("/Appointment", params={"slot": f"Slot/{slots[0]}", "status": "booked"}).json()
    assert len(holders["entry"]) == 2


# ------------------------------------------------------------------ Slots only through the operations

def _refused_for_slots(response: httpx.Response, expression: str) -> None:
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "business-rule" and issue["diagnostics"].startswith("slot-taken-by-operation:")
    assert issue["expression"] == [expression]


def _holders(api: httpx.Client, slot_id: str) -> list[Doc]:
    found = api.get("/Appointment", params={"slot": f"Slot/{slot_id}", "status": "pending,booked,arrived,checked-in",
                                            "_count": "100"}).json()
    return [e["resource"] for e in found.get("entry", [])]


def test_a_plain_write_cannot_make_an_appointment_hold_a_slot(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=2)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    # 16 clients POST a booked Appointment on the same free Slot at once: none is written (a
    # plain write cannot see the others), the Slot stays free, and $book still takes it once.
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: api.post("/Appointment", json={**proposal, "status": "booked"}), range(16)))
    for answer in answers:
        _refused_for_slots(answer, "Appointment.slot")
    assert _holders(api, slots[0]) == [] and slot_status(api, slots[0]) == "free"
    booked = appointment_of(api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)))
    assert [a["id"] for a in _holders(api, slots[0])] == [booked["id"]]
    # Nor may an update add a Slot to a booked Appointment, or a transaction entry do either.
    grown = {**booked, "slot": [*booked["slot"], {"reference": f"Slot/{slots[1]}"}]}
    _refused_for_slots(api.put(f"/Appointment/{booked['id']}", json=grown), "Appointment.slot")
    assert api.get(f"/Appointment/{booked['id']}").json()["meta"]["versionId"] == booked["meta"]["versionId"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**proposal, "status": "pending", "slot": [{"reference": f"Slot/{slots[1]}"}]},
         "request": {"method": "POST", "url": "Appointment"}}]}
    refused = api.post("/", json=bundle)
    assert refused.status_code == 422, refused.text
    assert _holders(api, slots[1]) == []
    # What holds no Slot stays a plain write: a proposal, a cancelled record, an update that
    # keeps the Slots it had.
    created(api, {**proposal, "status": "proposed"})
    created(api, {**proposal, "status": "cancelled"})
    kept = api.put(f"/Appointment/{booked['id']}", json={**booked, "comment": "bring the letter"})
    assert kept.status_code == 200, kept.text


def test_a_plain_write_cannot_free_a_taken_slot(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=2)
    proposals = practice.find(practitioner=doctor, patient=practice.patient)
    api.post("/Appointment/$book", json=parameters(appointment_resource=proposals[0]))
    api.post("/Appointment/$hold", json=parameters(appointment_resource=proposals[1]))
    for slot_id, status in ((slots[0], "busy"), (slots[1], "busy-tentative")):
        slot = api.get(f"/Slot/{slot_id}").json()
        assert slot["status"] == status
        _refused_for_slots(api.put(f"/Slot/{slot_id}", json={**slot, "status": "free"}), "Slot.status")
        patched = api.patch(f"/Slot/{slot_id}", content=b'[{"op":"replace","path":"/status","value":"free"}]',
                            headers={"Content-Type": "application/json-patch+json"})
        _refused_for_slots(patched, "Slot.status")
        assert slot_status(api, slot_id) == status
        # A second client's $book of the Slot is still refused.
        assert api.post("/Appointment/$book", json=parameters(appointment_resource=proposals[0 if status == "busy" else 1])
                        ).status_code == 409
    # A free Slot may still be marked unavailable by the scheduling system that publishes it.
    _, more = practice.practitioner(slots=1)
    slot = api.get(f"/Slot/{more[0]}").json()
    assert api.put(f"/Slot/{more[0]}", json={**slot, "status": "busy-unavailable"}).status_code == 200


def test_a_plainly_cancelled_appointment_gives_its_slots_back(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    booked = appointment_of(api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)))
    assert slot_status(api, slots[0]) == "busy"
    cancelled = api.put(f"/Appointment/{booked['id']}", json={**booked, "status": "cancelled"})
    assert cancelled.status_code == 200, cancelled.text
    wait_until(lambda: slot_status(api, slots[0]) == "free", what="the Slot freed by the workflow")
    again = api.post("/Appointment/$book", json=parameters(appointment_resource=proposal))
    assert again.status_code == 200, again.text
    assert [a["id"] for a in _holders(api, slots[0])] == [appointment_of(again)["id"]]
    # The freed Slot went free → busy → free → busy once each, whatever the redeliveries.
    history = api.get(f"/Slot/{slots[0]}/_history", params={"_count": "50"}).json()
    statuses = [e["resource"]["status"] for e in reversed(history["entry"])]
    assert statuses == ["free", "busy", "free", "busy"], statuses


def test_a_plainly_cancelled_appointment_naming_a_slot_elsewhere_still_gives_its_own_back(api: httpx.Client) -> None:
    """The workflow reads what was stored leniently: a Slot reference of another server
    (valid FHIR) is not ours to give back, and does not stop the Slots that are (before, the
    strict reader refused the whole Appointment and the Slot stayed busy for good)."""
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    booked = appointment_of(api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)))
    assert slot_status(api, slots[0]) == "busy"
    elsewhere = {"reference": "https://elsewhere.example.org/fhir/Slot/1"}
    cancelled = api.put(f"/Appointment/{booked['id']}",
                        json={**booked, "status": "cancelled", "slot": [*booked["slot"], elsewhere]})
    assert cancelled.status_code == 200, cancelled.text
    wait_until(lambda: slot_status(api, slots[0]) == "free", what="the Slot freed by the workflow")
    # The rules on every write still count such a reference as a Slot held: a plain write
    # may not make a booked Appointment hold it.
    other = created(api, appointment("proposed", f"Patient/{practice.patient}"))
    taken = api.put(f"/Appointment/{other['id']}", json={**other, "status": "booked", "slot": [elsewhere]})
    assert taken.status_code == 422, taken.text
    assert taken.json()["issue"][0]["diagnostics"].startswith("slot-taken-by-operation:")
