"""What the portal's `patient/` token may do with the two types that have no patient
compartment: read a Questionnaire (a definition the patient answers), and create, read, bind
and delete her own Subscriptions (confined to their owner) — while every type with a
compartment stays within hers, and another's Subscription stays out of her reach."""

from __future__ import annotations

from typing import Any

import httpx

from tests.clients.conftest import SmartServer

PORTAL_SCOPES = "patient/Questionnaire.rs patient/Subscription.cruds patient/Appointment.rs"
TOPIC = "http://fhir.care-coord.example/SubscriptionTopic/appointment-status"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def _subscription(patient: str) -> dict[str, Any]:
    return {"resourceType": "Subscription", "status": "requested", "reason": "portal view", "criteria": TOPIC,
            "_criteria": {"extension": [{"url": f"{BACKPORT}backport-filter-criteria",
                                         "valueString": f"Appointment?patient=Patient/{patient}"}]},
            "channel": {"type": "websocket", "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": f"{BACKPORT}backport-payload-content", "valueCode": "id-only"}]}}}


def _client(smart: SmartServer, token: str) -> httpx.Client:
    return httpx.Client(base_url=smart.base, timeout=30, headers={"Authorization": f"Bearer {token}"})


def test_a_patient_token_reads_questionnaires_and_keeps_its_own_subscriptions(smart: SmartServer) -> None:
    with _client(smart, smart.mint("system/*.cruds")) as admin:
        for pid in ("p1", "p2"):
            assert admin.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}).status_code == 201
        questionnaire = admin.post("/Questionnaire", json={
            "resourceType": "Questionnaire", "status": "active", "url": "http://example.org/Questionnaire/pre-visit"})
        assert questionnaire.status_code == 201
        visit = admin.post("/Appointment", json={"resourceType": "Appointment", "status": "booked", "participant": [
            {"actor": {"reference": "Patient/p2"}, "status": "accepted"}]})
        assert visit.status_code == 201
    anna = _client(smart, smart.mint(PORTAL_SCOPES, patient="p1", fhir_user="Patient/p1"))
    bob = _client(smart, smart.mint(PORTAL_SCOPES, patient="p2", fhir_user="Patient/p2"))
    with anna, bob:
        found = anna.get("/Questionnaire", params={"url": "http://example.org/Questionnaire/pre-visit"})
        assert found.status_code == 200
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [questionnaire.json()["id"]]
        assert anna.get(f"/Questionnaire/{questionnaire.json()['id']}").status_code == 200
        # No write on a definition, not even with a scope that names it.
        assert anna.post("/Questionnaire", json={"resourceType": "Questionnaire", "status": "draft"}).status_code == 403
        with _client(smart, smart.mint("patient/Questionnaire.cruds", patient="p1", fhir_user="Patient/p1")) as writer:
            draft = {"resourceType": "Questionnaire", "status": "draft"}
            assert writer.post("/Questionnaire", json=draft).status_code == 403
            changed = {**questionnaire.json(), "title": "changed by a patient"}
            assert writer.put(f"/Questionnaire/{questionnaire.json()['id']}", json=changed).status_code == 403
        created = anna.post("/Subscription", json=_subscription("p1"))
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert anna.get(f"/Subscription/{sid}").status_code == 200
        binding = anna.get(f"/Subscription/{sid}/$get-ws-binding-token")
        assert binding.status_code == 200, binding.text
        # Another patient's token sees nothing of it and cannot remove it.
        assert bob.get(f"/Subscription/{sid}").status_code == 404
        assert bob.get("/Subscription").json().get("entry", []) == []
        bob.delete(f"/Subscription/{sid}")  # (a delete of what one cannot see deletes nothing)
        assert anna.get(f"/Subscription/{sid}").status_code == 200
        # Compartment-bound types stay bound: Bob's visit is not Anna's to read.
        assert anna.get(f"/Appointment/{visit.json()['id']}").status_code == 404
        assert anna.delete(f"/Subscription/{sid}").status_code in (200, 204)
        assert anna.get(f"/Subscription/{sid}").status_code == 410


def test_a_binary_is_in_the_compartment_of_its_security_context_patient(smart: SmartServer) -> None:
    with _client(smart, smart.mint("system/*.cruds")) as admin:
        ids = {}
        for pid in ("p1", "p2"):
            assert admin.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}).status_code == 201
            made = admin.post("/Binary", content=f"letter of {pid}".encode(), headers={
                "Content-Type": "application/pdf", "X-Security-Context": f"Patient/{pid}"})
            assert made.status_code == 201, made.text
            ids[pid] = made.json()["id"] if made.content else made.headers["location"].split("/")[-3]
    with _client(smart, smart.mint("patient/Binary.r", patient="p1", fhir_user="Patient/p1")) as anna:
        mine = anna.get(f"/Binary/{ids['p1']}", headers={"Accept": "application/pdf"})
        assert mine.status_code == 200 and mine.content == b"letter of p1"
        assert anna.get(f"/Binary/{ids['p2']}", headers={"Accept": "application/pdf"}).status_code == 404
    # Its patient's Consent governs it: a family member the Consent denies is refused.
    with _client(smart, smart.mint("system/*.cruds")) as admin:
        assert admin.put("/RelatedPerson/clara", json={"resourceType": "RelatedPerson", "id": "clara",
                                                       "patient": {"reference": "Patient/p1"}}).status_code == 201
        assert admin.post("/Consent", json={
            "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p1"},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]},
            "provision": {"type": "deny", "actor": [{"role": {"text": "IRCP"},
                                                     "reference": {"reference": "RelatedPerson/clara"}}]}}).status_code == 201
    with _client(smart, smart.mint("patient/Binary.r", patient="p1", fhir_user="RelatedPerson/clara")) as clara:
        assert clara.get(f"/Binary/{ids['p1']}", headers={"Accept": "application/pdf"}).status_code == 403
