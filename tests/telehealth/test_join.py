"""The virtual visit over HTTP with auth on: booking a virtual Appointment makes the engine
record the room; `$join` answers a per-participant, expiring join to participants only
(403 otherwise), inside the window only (409 otherwise), audited; the first join creates the
Encounter once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from pymongo import MongoClient

from fhir_server.operations.join import VISIT_SYSTEM
from fhir_server.storage.database import CONDITIONAL_LOCKS
from fhir_server.storage.pipeline.locks import lock_id
from telehealth.builtin import CHANNEL
from telehealth.virtual_service import URL as VIRTUAL_SERVICE
from telehealth.virtual_service import VirtualService, with_service
from telehealth.virtual_service import read as read_service
from tests.subscriptions.conftest import wait_until
from tests.telehealth.conftest import TeleServer, join, make_visit, output, virtual_appointment


def test_booking_a_virtual_appointment_records_its_room_and_no_secret(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    address = tele.session_address(admin, visit.appointment)
    assert address == f"{tele.base}/$visit/{visit.appointment}"
    appointment = admin.get(f"/Appointment/{visit.appointment}").json()
    service = read_service(appointment)
    assert service is not None and service.channel_type == CHANNEL and service.max_participants == 4
    extension = next(e for e in appointment["extension"] if e["url"] == VIRTUAL_SERVICE)
    assert {e["url"] for e in extension["extension"]} == {"channelType", "address", "maxParticipants"}
    assert "token" not in str(appointment) and "sessionKey" not in str(appointment)
    # Recorded once: the booking and the engine's one update (Provenance names the engine).
    assert appointment["meta"]["versionId"] == "2"
    history = admin.get(f"/Appointment/{visit.appointment}/_history").json()
    assert history["total"] == 2 if "total" in history else len(history["entry"]) == 2
    provenance = admin.get("/Provenance", params={"target": f"Appointment/{visit.appointment}"}).json()
    agents = [a["who"].get("reference") for p in provenance.get("entry", []) for a in p["resource"]["agent"]]
    assert "Device/coordination-engine" in agents


def test_an_appointment_in_person_or_not_booked_gets_no_room(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin, status="proposed")
    in_person = virtual_appointment(f"Patient/{visit.patient}", f"Practitioner/{visit.practitioner}",
                                    datetime.now(UTC) + timedelta(minutes=5))
    del in_person["extension"]
    other = admin.post("/Appointment", json=in_person).json()["id"]
    # A third, virtual and booked, is served after the two: when it has its room, the others were seen.
    later = make_visit(admin)
    tele.session_address(admin, later.appointment)
    for aid in (visit.appointment, other):
        appointment = admin.get(f"/Appointment/{aid}").json()
        assert appointment["meta"]["versionId"] == "1"
        assert read_service(appointment) is None or read_service(appointment).address is None  # type: ignore[union-attr]
    # Booking the proposed one later gives it its room.
    proposed = admin.get(f"/Appointment/{visit.appointment}").json()
    proposed["status"] = "booked"
    assert admin.put(f"/Appointment/{visit.appointment}", json=proposed).status_code == 200
    assert tele.session_address(admin, visit.appointment).endswith(f"/$visit/{visit.appointment}")


def test_participants_join_and_the_first_join_creates_the_encounter_once(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    doctor, patient = tele.practitioner(visit.practitioner), tele.patient(visit.patient)

    joined = join(doctor, visit.appointment)
    assert joined.status_code == 200, joined.text
    assert joined.headers["cache-control"] == "no-store"
    got = output(joined)
    assert got["url"] == f"{tele.base}/$visit/{visit.appointment}#token={got['token']}"
    assert got["participant"] == {"reference": f"Practitioner/{visit.practitioner}"}
    expires = datetime.fromisoformat(got["expires"].replace("Z", "+00:00"))
    assert timedelta(minutes=55) < expires - datetime.now(UTC) <= timedelta(hours=1)

    # 16 patients' joins at once (a nervous patient, many tabs): one Encounter.
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: join(patient, visit.appointment), range(16)))
    assert [a.status_code for a in answers] == [200] * 16
    tokens = {output(a)["token"] for a in answers}
    assert len(tokens) == 16  # each join its own token
    assert {output(a)["participant"]["reference"] for a in answers} == {f"Patient/{visit.patient}"}

    found = admin.get("/Encounter", params={"identifier": f"{VISIT_SYSTEM}|Appointment/{visit.appointment}"}).json()
    assert len(found["entry"]) == 1
    encounter = found["entry"][0]["resource"]
    assert encounter["class"]["code"] == "VR" and encounter["status"] == "in-progress"
    assert encounter["appointment"] == [{"reference": f"Appointment/{visit.appointment}"}]
    assert encounter["subject"] == {"reference": f"Patient/{visit.patient}"}
    assert {output(a)["encounter"]["reference"] for a in [joined, *answers]} == {f"Encounter/{encounter['id']}"}
    # The patient may read the visit's Encounter (it is in her compartment).
    assert patient.get(f"/Encounter/{encounter['id']}").status_code == 200


def test_32_concurrent_first_joins_all_succeed_and_create_the_encounter_in_one_transaction(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    patient, doctor = tele.patient(visit.patient), tele.practitioner(visit.practitioner)

    # Nobody has joined yet: all 32 are first joins (the doctor's and the patient's tabs).
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda n: join(doctor if n % 4 == 0 else patient, visit.appointment), range(32)))
    assert [a.status_code for a in answers] == [200] * 32, [a.text[:200] for a in answers if a.status_code != 200]

    found = admin.get("/Encounter", params={"identifier": f"{VISIT_SYSTEM}|Appointment/{visit.appointment}"}).json()
    assert len(found["entry"]) == 1
    encounter = found["entry"][0]["resource"]
    assert {output(a)["encounter"]["reference"] for a in answers} == {f"Encounter/{encounter['id']}"}
    assert encounter["meta"]["versionId"] == "1"
    # One transaction took the conditional create's lock: the first joins shared one create
    # (before, each of the 32 ran its own conditional create, racing for that lock).
    settings = tele.running.settings
    with MongoClient(settings.mongodb_uri) as client:
        lock = client[settings.database][CONDITIONAL_LOCKS].find_one(
            {"_id": lock_id("Encounter", [("identifier", f"{VISIT_SYSTEM}|Appointment/{visit.appointment}")])})
    assert lock is not None and lock["n"] == 1, lock


def test_anyone_but_a_participant_is_refused_403(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    stranger = admin.post("/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    other_patient = admin.post("/Patient", json={"resourceType": "Patient"}).json()["id"]
    for client in (tele.practitioner(stranger), tele.patient(other_patient), admin,
                   tele.client(tele.mint("user/Appointment.rs", fhir_user=f"Practitioner/{stranger}",
                                         patient=visit.patient))):
        refused = join(client, visit.appointment)
        assert refused.status_code == 403, refused.text
        assert refused.json()["resourceType"] == "OperationOutcome"
    # Naming someone else as the participant changes nothing.
    named = join(tele.practitioner(stranger), visit.appointment,
                 {"resourceType": "Parameters",
                  "parameter": [{"name": "participant", "valueReference": {"reference": f"Patient/{visit.patient}"}}]})
    assert named.status_code == 403
    # A declined participant no longer takes part.
    appointment = admin.get(f"/Appointment/{visit.appointment}").json()
    for p in appointment["participant"]:
        if p["actor"]["reference"] == f"Practitioner/{visit.practitioner}":
            p["status"] = "declined"
    assert admin.put(f"/Appointment/{visit.appointment}", json=appointment).status_code == 200
    assert join(tele.practitioner(visit.practitioner), visit.appointment).status_code == 403
    # No Encounter came of any of it.
    found = admin.get("/Encounter", params={"identifier": f"{VISIT_SYSTEM}|Appointment/{visit.appointment}"}).json()
    assert found.get("entry", []) == []


def test_a_related_person_joins_only_with_the_patients_consent(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    daughter = admin.post("/RelatedPerson", json={
        "resourceType": "RelatedPerson", "active": True, "patient": {"reference": f"Patient/{visit.patient}"}}).json()["id"]
    her = tele.client(tele.mint(PATIENT := "patient/Appointment.rs", patient=visit.patient,
                                fhir_user=f"RelatedPerson/{daughter}"))
    assert PATIENT
    refused = join(her, visit.appointment)
    assert refused.status_code == 403, refused.text
    consent = {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{visit.patient}"},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "deny", "provision": [{"type": "permit", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": f"RelatedPerson/{daughter}"}}]}]},
    }
    written = admin.post("/Consent", json=consent)
    assert written.status_code == 201, written.text
    allowed = join(her, visit.appointment)
    assert allowed.status_code == 200, allowed.text
    assert output(allowed)["participant"] == {"reference": f"RelatedPerson/{daughter}"}
    # Another patient's RelatedPerson, with the same words in her own patient's Consent: 403.
    stranger = admin.post("/RelatedPerson", json={"resourceType": "RelatedPerson",
                                                  "patient": {"reference": f"Patient/{visit.patient}x"}}).json()["id"]
    theirs = tele.client(tele.mint("patient/Appointment.rs", patient=visit.patient, fhir_user=f"RelatedPerson/{stranger}"))
    assert join(theirs, visit.appointment).status_code == 403


def test_outside_the_window_is_409_and_says_when(tele: TeleServer) -> None:
    admin = tele.admin()
    now = datetime.now(UTC)
    for start in (now + timedelta(hours=1, minutes=5), now - timedelta(hours=2, minutes=5)):
        visit = make_visit(admin, start)
        tele.session_address(admin, visit.appointment)
        late = join(tele.patient(visit.patient), visit.appointment)
        assert late.status_code == 409, late.text
        assert "can be joined from" in late.json()["issue"][0]["diagnostics"]
    # Just inside: an hour before, two hours after.
    for start in (now + timedelta(minutes=58), now - timedelta(hours=1, minutes=58)):
        visit = make_visit(admin, start)
        tele.session_address(admin, visit.appointment)
        assert join(tele.patient(visit.patient), visit.appointment).status_code == 200


def test_a_cancelled_or_in_person_visit_cannot_be_joined(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    appointment = admin.get(f"/Appointment/{visit.appointment}").json()
    appointment["status"] = "cancelled"
    assert admin.put(f"/Appointment/{visit.appointment}", json=appointment).status_code == 200
    cancelled = join(tele.patient(visit.patient), visit.appointment)
    assert cancelled.status_code == 409 and "cancelled" in cancelled.text
    in_person = virtual_appointment(f"Patient/{visit.patient}", f"Practitioner/{visit.practitioner}",
                                    datetime.now(UTC))
    del in_person["extension"]
    aid = admin.post("/Appointment", json=in_person).json()["id"]
    assert join(tele.patient(visit.patient), aid).status_code == 409


def test_bad_input_is_an_operation_outcome(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    patient = tele.patient(visit.patient)
    for body in ('{"resourceType": "Patient"}', '[1]', '{"resourceType": "Parameters", "parameter": 3}',
                 '{"resourceType": "Parameters", "parameter": [{"name": "participant", "valueReference": {"reference": 5}}]}'):
        bad = patient.post(f"/Appointment/{visit.appointment}/$join", content=body,
                           headers={"Content-Type": "application/fhir+json"})
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["resourceType"] == "OperationOutcome"
    assert join(patient, "no-such-visit").status_code == 404
    assert tele.client().post(f"/Appointment/{visit.appointment}/$join").status_code == 401
    assert patient.get(f"/Appointment/{visit.appointment}/$join").status_code == 405


def test_joins_are_audited_also_when_refused(tele: TeleServer) -> None:
    admin = tele.admin()
    visit = make_visit(admin)
    tele.session_address(admin, visit.appointment)
    stranger = admin.post("/Practitioner", json={"resourceType": "Practitioner"}).json()["id"]
    assert join(tele.patient(visit.patient), visit.appointment).status_code == 200
    assert join(tele.practitioner(stranger), visit.appointment).status_code == 403
    path = f"/fhir/Appointment/{visit.appointment}/$join"

    def events() -> list[dict[str, object]]:
        bundle = admin.get("/AuditEvent", params={"_count": "200", "_sort": "-_lastUpdated"}).json()
        return [e["resource"] for e in bundle.get("entry", [])
                if any(x.get("name") == path for x in e["resource"].get("entity", []))]

    found = wait_until(lambda: len(events()) >= 2 and events(), 20, "the AuditEvents of $join")
    outcomes = sorted(e["outcome"] for e in found)
    assert outcomes == ["0", "4"] or outcomes == ["0", "8"], outcomes
    users = {a.get("who", {}).get("reference") for e in found for a in e["agent"]}
    assert f"Patient/{visit.patient}" in users and f"Practitioner/{stranger}" in users
    assert isinstance(httpx, object)


def test_the_capability_statement_declares_join(tele: TeleServer) -> None:
    body = tele.client().get("/metadata").json()
    appointment = next(r for r in body["rest"][0]["resource"] if r["type"] == "Appointment")
    assert {"name": "join", "definition": "http://fhir.care-coord.example/OperationDefinition/Appointment-join"} \
        in appointment["operation"]
    patient = next(r for r in body["rest"][0]["resource"] if r["type"] == "Patient")
    assert "join" not in {o["name"] for o in patient.get("operation", [])}


def test_with_auth_off_the_participant_is_named(client: httpx.Client) -> None:
    """Dev mode has no caller to match: `participant` is required and must take part."""
    visit = make_visit(client)
    # The shared dev-mode server's database is emptied per test, its engine's Subscription with
    # it: the session is recorded here as the engine records it (the engine is tested above).
    appointment = client.get(f"/Appointment/{visit.appointment}").json()
    session = VirtualService(CHANNEL, f"{client.base_url}/$visit/{visit.appointment}".replace("fhir//", "fhir/"),
                             (), 4)
    assert client.put(f"/Appointment/{visit.appointment}", json=with_service(appointment, session)).status_code == 200
    assert join(client, visit.appointment).status_code == 400
    stranger = {"resourceType": "Parameters",
                "parameter": [{"name": "participant", "valueReference": {"reference": "Practitioner/nobody"}}]}
    assert join(client, visit.appointment, stranger).status_code == 403
    named = {"resourceType": "Parameters",
             "parameter": [{"name": "participant", "valueReference": {"reference": f"Patient/{visit.patient}"}}]}
    joined = join(client, visit.appointment, named)
    assert joined.status_code == 200, joined.text
    assert output(joined)["participant"] == {"reference": f"Patient/{visit.patient}"}
