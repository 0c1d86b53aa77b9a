"""$find → $hold → $book, $cancel, $reschedule over HTTP on the real database; the hold that
expires by itself; 16 concurrent $books of one Slot, exactly one booked."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.scheduling.conftest import (
    DAY,
    Practice,
    appointment_of,
    iso,
    parameters,
    scheduling_server,
    slot_status,
)
from tests.subscriptions.conftest import wait_until

Doc = dict[str, Any]


def test_find_needs_start_and_end(api: httpx.Client) -> None:
    for params in ({"start": "2031-03-03"}, {"end": "2031-03-03"}, {}):
        response = api.get("/Appointment/$find", params=params)
        assert response.status_code == 400, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    for params in ({"start": "2031-03-04", "end": "2031-03-03"}, {"start": "soon", "end": "2031-03-03"},
                   {"start": "2031-03-03", "end": "2031-03-04", "visit-type": "teleport"},
                   {"start": "2031-03-03", "end": "2031-03-04", "colour": "blue"}):
        response = api.get("/Appointment/$find", params=params)
        assert response.status_code == 400, response.text


def test_find_proposes_free_slots_by_practitioner_and_visit_type(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(virtual=True)
    _other, other_slots = practice.practitioner(virtual=False)
    api.put(f"/Slot/{slots[1]}", json={**api.get(f"/Slot/{slots[1]}").json(), "status": "busy"})
    proposals = practice.find(practitioner=f"Practitioner/{doctor}", patient=f"Patient/{practice.patient}")
    assert [p["slot"][0]["reference"] for p in proposals] == [f"Slot/{s}" for s in (slots[0], *slots[2:])]
    first = proposals[0]
    assert first["status"] == "proposed" and "id" not in first
    actors = [p["actor"]["reference"] for p in first["participant"]]
    assert actors == [f"Patient/{practice.patient}", f"Practitioner/{doctor}", f"Location/{practice.video}"]
    service = f"urn:test:service|consult-{practice.tag}"
    virtual = practice.find(**{"visit-type": "virtual", "service-type": service})
    assert {p["slot"][0]["reference"] for p in virtual} == {f"Slot/{s}" for s in (slots[0], *slots[2:])}
    in_person = practice.find(**{"visit-type": "in-person", "service-type": service})
    assert {p["slot"][0]["reference"] for p in in_person} == {f"Slot/{s}" for s in other_slots}
    assert len(practice.find(**{"service-type": service, "_count": "2"})) == 2
    # POST with Parameters answers the same.
    posted = api.post("/Appointment/$find", json=parameters(
        start="2031-03-03T09:00:00Z", end="2031-03-03T17:00:00Z", practitioner=f"Practitioner/{doctor}"))
    assert posted.status_code == 200, posted.text
    assert len(posted.json()["entry"]) == 3


def test_find_several_practitioners_together(api: httpx.Client) -> None:
    practice = Practice(api)
    one, one_slots = practice.practitioner()
    two, two_slots = practice.practitioner()
    api.put(f"/Slot/{two_slots[0]}", json={**api.get(f"/Slot/{two_slots[0]}").json(), "status": "busy"})
    response = api.get("/Appointment/$find", params=[
        ("start", "2031-03-03T09:00:00Z"), ("end", "2031-03-03T17:00:00Z"),
        ("practitioner", f"Practitioner/{one}"), ("practitioner", f"Practitioner/{two}")])
    assert response.status_code == 200, response.text
    proposals = [e["resource"] for e in response.json()["entry"]]
    assert len(proposals) == 3  # the first quarter hour: the second practitioner is busy
    assert proposals[0]["slot"] == [{"reference": f"Slot/{one_slots[1]}"}, {"reference": f"Slot/{two_slots[1]}"}]
    actors = {p["actor"]["reference"] for p in proposals[0]["participant"]}
    assert {f"Practitioner/{one}", f"Practitioner/{two}"} <= actors


def test_hold_then_book_fills_the_slot_and_keeps_it(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner()
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    held = api.post("/Appointment/$hold", json=parameters(appointment_resource=proposal))
    assert held.status_code == 200, held.text
    appointment = appointment_of(held)
    assert appointment["status"] == "pending" and appointment["slot"] == [{"reference": f"Slot/{slots[0]}"}]
    assert any(e["url"].endswith("appointment-hold-expires") for e in appointment["extension"])
    assert slot_status(api, slots[0]) == "busy-tentative"
    # Held: no one else finds or holds it.
    assert f"Slot/{slots[0]}" not in {p["slot"][0]["reference"] for p in practice.find(practitioner=doctor)}
    again = api.post("/Appointment/$hold", json=parameters(appointment_resource=proposal))
    assert again.status_code == 409, again.text
    assert again.json()["resourceType"] == "OperationOutcome"
    booked = api.post("/Appointment/$book", json=parameters(appointment_reference=f"Appointment/{appointment['id']}"))
    assert booked.status_code == 200, booked.text
    done = appointment_of(booked)
    assert done["id"] == appointment["id"] and done["status"] == "booked"
    assert done["slot"] == [{"reference": f"Slot/{slots[0]}"}]
    assert "extension" not in done
    assert slot_status(api, slots[0]) == "busy"
    assert api.get(f"/Appointment/{appointment['id']}").json()["status"] == "booked"


def test_book_a_proposal_directly_and_refusals(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=2)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    booked = api.post("/Appointment/$book", json=parameters(appointment_resource=proposal))
    assert booked.status_code == 200, booked.text
    assert appointment_of(booked)["status"] == "booked"
    assert slot_status(api, slots[0]) == "busy"
    taken = api.post("/Appointment/$book", json=parameters(appointment_resource=proposal))
    assert taken.status_code == 409
    assert "not free" in taken.json()["issue"][0]["diagnostics"]
    for body, status in (
        ({"resourceType": "Patient"}, 400),
        (parameters(), 400),
        (parameters(appointment_resource={**proposal, "slot": [{"reference": "Slot/nope"}]}), 404),
        (parameters(appointment_resource={**proposal, "slot": []}), 422),
        (parameters(appointment_resource={**proposal, "status": "booked"}), 422),
        (parameters(appointment_reference="Appointment/nope"), 404),
        (parameters(appointment_reference="Patient/nope"), 400),
        (parameters(appointment_resource={**proposal, "slot": [{"reference": f"Slot/{n}"} for n in range(5000)]}), 400),
        (parameters(appointment_resource={**proposal, "slot": "Slot/x"}), 400),
        (parameters(appointment_resource={**proposal, "slot": [{"reference": "Slot/a/b"}]}), 400),
        (parameters(appointment_resource={**proposal, "participant": "everyone"}), 400),
        ({"resourceType": "Parameters", "parameter": [{"name": "appointment-resource"}]}, 400),
        ({"resourceType": "Parameters", "parameter": "x"}, 400),
    ):
        response = api.post("/Appointment/$book", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    # Nothing of the refused attempts was written.
    bundle = api.get("/Appointment", params={"actor": f"Patient/{practice.patient}"}).json()
    assert bundle.get("total", len(bundle.get("entry", []))) == 1


def test_sixteen_concurrent_books_of_one_slot_book_it_once(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    base = str(api.base_url)
    barrier = threading.Barrier(16)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def book() -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            barrier.wait()
            response = client.post("/Appointment/$book", json=parameters(appointment_resource=proposal))
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=book) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(r.status_code for r in answers) == Counter({200: 1, 409: 15}), [r.text for r in answers]
    for response in answers:
        if response.status_code == 409:
            assert response.json()["resourceType"] == "OperationOutcome"
            assert response.json()["issue"][0]["code"] == "conflict"
    holding = api.get("/Appointment", params={"slot": f"Slot/{slots[0]}", "_count": "100"}).json()
    assert [e["resource"]["status"] for e in holding.get("entry", [])] == ["booked"]
    assert slot_status(api, slots[0]) == "busy"
    history = api.get(f"/Slot/{slots[0]}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["busy", "free"]


def _notices(api: httpx.Client, appointment_id: str) -> list[Doc]:
    """The Communications about the Appointment (R4 has no `about` search: its patient's)."""
    patient = api.get(f"/Appointment/{appointment_id}").json()["participant"][0]["actor"]["reference"]
    bundle = api.get("/Communication", params={"subject": patient, "_count": "100"}).json()
    return [e["resource"] for e in bundle.get("entry", [])
            if {"reference": f"Appointment/{appointment_id}"} in e["resource"].get("about", [])]


def test_cancel_frees_the_slots_and_notifies_every_participant_once(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=1)
    proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
    appointment = appointment_of(api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)))
    cancelled = api.post(f"/Appointment/{appointment['id']}/$cancel", json=parameters(reason="patient is ill"))
    assert cancelled.status_code == 200, cancelled.text
    assert appointment_of(cancelled)["status"] == "cancelled"
    assert appointment_of(cancelled)["cancelationReason"] == {"text": "patient is ill"}
    assert slot_status(api, slots[0]) == "free"
    people = {f"Patient/{practice.patient}", f"Practitioner/{doctor}"}
    notices = wait_until(lambda: len(_notices(api, appointment["id"])) == 2 and _notices(api, appointment["id"]),
                         what="cancellation notices")
    assert {n["recipient"][0]["reference"] for n in notices} == people  # not the Location
    # A later version of the cancelled Appointment (still cancelled) announces nothing again.
    current = api.get(f"/Appointment/{appointment['id']}").json()
    assert api.put(f"/Appointment/{appointment['id']}", json={**current, "comment": "noted"}).status_code == 200
    again = api.post(f"/Appointment/{appointment['id']}/$cancel")
    assert again.status_code == 200
    assert len(_notices(api, appointment["id"])) == 2
    # The freed Slot can be booked again.
    assert api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)).status_code == 200


def test_reschedule_moves_the_visit_in_one_step(api: httpx.Client) -> None:
    practice = Practice(api)
    doctor, slots = practice.practitioner(slots=3)
    proposals = practice.find(practitioner=doctor, patient=practice.patient)
    appointment = appointment_of(api.post("/Appointment/$book", json=parameters(appointment_resource=proposals[0])))
    moved = api.post(f"/Appointment/{appointment['id']}/$reschedule",
                     json=parameters(appointment_resource=proposals[2]))
    assert moved.status_code == 200, moved.text
    entries = [e["resource"] for e in moved.json()["entry"]]
    new, old = entries
    assert old["id"] == appointment["id"] and old["status"] == "cancelled"
    assert new["status"] == "booked" and new["slot"] == [{"reference": f"Slot/{slots[2]}"}]
    assert new["extension"][0]["valueReference"] == {"reference": f"Appointment/{appointment['id']}"}
    assert [slot_status(api, s) for s in slots] == ["free", "free", "busy"]
    notices = wait_until(lambda: len(_notices(api, new["id"])) == 2 and _notices(api, new["id"]),
                         what="moved notices")
    assert all("moved" in n["payload"][0]["contentString"] for n in notices)
    assert _notices(api, appointment["id"]) == []  # the replacement announced it
    # A cancelled Appointment cannot be rescheduled: 422 naming the rule, nothing written.
    refused = api.post(f"/Appointment/{appointment['id']}/$reschedule",
                       json=parameters(appointment_resource=proposals[1]))
    assert refused.status_code == 422
    assert "appointment-status-final" in refused.json()["issue"][0]["diagnostics"]
    assert slot_status(api, slots[1]) == "free"


def test_a_hold_expires_by_itself(mongodb_uri: str, tmp_path: Path) -> None:
    with scheduling_server(mongodb_uri, tmp_path, "PT1S") as running, \
            httpx.Client(base_url=running.settings.base_url, timeout=60) as api:
        practice = Practice(api)
        doctor, slots = practice.practitioner(slots=1)
        proposal = practice.find(practitioner=doctor, patient=practice.patient)[0]
        held = appointment_of(api.post("/Appointment/$hold", json=parameters(appointment_resource=proposal)))
        assert slot_status(api, slots[0]) == "busy-tentative"
        wait_until(lambda: slot_status(api, slots[0]) == "free", timeout=30, what="the hold expired")
        expired = api.get(f"/Appointment/{held['id']}").json()
        assert expired["status"] == "cancelled"
        assert expired["cancelationReason"] == {"text": "hold expired"}
        # Too late to book the hold; the Slot is free for anyone.
        late = api.post("/Appointment/$book", json=parameters(appointment_reference=f"Appointment/{held['id']}"))
        assert late.status_code == 422, late.text
        assert api.post("/Appointment/$book", json=parameters(appointment_resource=proposal)).status_code == 200


def test_find_reads_window_by_window_and_misses_nothing(api: httpx.Client) -> None:
    """$find reads free Slots in growing windows of `start` (per Schedule for a few, across all
    Schedules for many): over three weeks, Slots far apart, at the range's very start and just
    before its end are all proposed, in start order, and none at `end`, none busy, none of a
    Schedule not asked (another practice's Slots at the same times)."""
    ours, theirs = Practice(api), Practice(api)
    end = DAY + timedelta(days=21)
    expected: list[str] = []
    for n in range(10):  # ten Schedules: more than PER_SCHEDULE, one query per window
        _, slots = ours.practitioner(slots=1, start=DAY + timedelta(hours=37 * n))
        expected += slots
        theirs.practitioner(slots=1, start=DAY + timedelta(hours=37 * n))
    last_pid, last = ours.practitioner(slots=1, start=end - timedelta(minutes=15))
    _, at_end = ours.practitioner(slots=1, start=end)
    _, busy = ours.practitioner(slots=1, start=DAY + timedelta(days=3))
    assert api.put(f"/Slot/{busy[0]}", json={**api.get(f"/Slot/{busy[0]}").json(),
                                             "status": "busy"}).status_code == 200
    service = f"urn:test:service|consult-{ours.tag}"
    found = ours.find(**{"service-type": service, "end": iso(end), "_count": "100"})
    assert [a["slot"][0]["reference"] for a in found] == [f"Slot/{s}" for s in [*expected, *last]]
    assert [a["start"] for a in found] == sorted(a["start"] for a in found)
    assert f"Slot/{at_end[0]}" not in {a["slot"][0]["reference"] for a in found}
    # One Schedule (its own query per window): the Slot just before the end, three weeks on.
    [one] = ours.find(practitioner=last_pid, end=iso(end))
    assert one["slot"] == [{"reference": f"Slot/{last[0]}"}]
    # A page: the first three only.
    first = ours.find(**{"service-type": service, "end": iso(end), "_count": "3"})
    assert [a["slot"][0]["reference"] for a in first] == [f"Slot/{s}" for s in expected[:3]]
