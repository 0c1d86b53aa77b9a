"""The types the coordination workflows (issue 12) and scheduling (issue 13) store: each is
created, read and found over HTTP by its key R4 search parameters, validated by its R4
definition, and placed in a patient's compartment exactly as the R4 Patient
CompartmentDefinition says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Mint

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ENCOUNTER_CLASS = {"system": ACT_CODE, "code": "VR"}  # virtual


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


# One resource of each new type, for patient p1 where the type has a patient.
RESOURCES: dict[str, dict[str, Any]] = {
    "ServiceRequest": {"status": "active", "intent": "order", "subject": ref("Patient/p1"),
                       "category": [concept(SCT, "3457005")]},  # patient referral
    "DetectedIssue": {"status": "preliminary", "patient": ref("Patient/p1"),
                      "code": concept(ACT_CODE, "CAREGAP"), "implicated": [ref("CarePlan/cp1")]},
    "Goal": {"lifecycleStatus": "active", "description": {"text": "HbA1c below 7%"},
             "subject": ref("Patient/p1")},
    "Condition": {"subject": ref("Patient/p1"), "clinicalStatus": concept(CLINICAL_STATUS, "active"),
                  "code": concept(SCT, "44054006")},
    "Observation": {"status": "final", "code": concept(LOINC, "8867-4"), "subject": ref("Patient/p1")},
    "Device": {"identifier": [{"system": "urn:example:engine", "value": "coordination"}],
               "deviceName": [{"name": "coordination engine", "type": "user-friendly-name"}]},
    "HealthcareService": {"active": True, "providedBy": ref("Organization/o1"),
                          "name": "Telehealth consultations"},
    "CommunicationRequest": {"status": "active", "subject": ref("Patient/p1"),
                             "recipient": [ref("Patient/p1")]},
    "Schedule": {"actor": [ref("Practitioner/dr1")]},
    "Slot": {"schedule": ref("Schedule/s1"), "status": "free",
             "start": "2026-03-02T09:00:00Z", "end": "2026-03-02T09:20:00Z"},
    "Location": {"status": "active", "name": "Video room",
                 "physicalType": concept("http://terminology.hl7.org/CodeSystem/location-physical-type", "vi")},
    "Encounter": {"status": "in-progress", "class": ENCOUNTER_CLASS, "subject": ref("Patient/p1"),
                  "appointment": [ref("Appointment/a1")]},
    "AppointmentResponse": {"appointment": ref("Appointment/a1"), "actor": ref("Patient/p1"),
                            "participantStatus": "accepted"},
    "Questionnaire": {"url": "http://example.org/Questionnaire/pre-visit", "status": "active",
                      "item": [{"linkId": "1", "text": "Any new symptoms?", "type": "boolean"}]},
    "QuestionnaireResponse": {"status": "completed", "subject": ref("Patient/p1"),
                              "questionnaire": "http://example.org/Questionnaire/pre-visit"},
}

# One search per type that finds the resource above (the workflows' and scheduling's queries).
KEY_SEARCHES: dict[str, dict[str, str]] = {
    "ServiceRequest": {"category": f"{SCT}|3457005", "status": "active", "patient": "p1"},
    "DetectedIssue": {"code": f"{ACT_CODE}|CAREGAP", "implicated": "CarePlan/cp1"},
    "Goal": {"lifecycle-status": "active", "patient": "Patient/p1"},
    "Condition": {"clinical-status": "active", "subject": "Patient/p1"},
    "Observation": {"patient": "Patient/p1", "code": f"{LOINC}|8867-4"},
    "Device": {"identifier": "urn:example:engine|coordination"},
    "HealthcareService": {"organization": "Organization/o1", "active": "true"},
    "CommunicationRequest": {"status": "active", "recipient": "Patient/p1"},
    "Schedule": {"actor": "Practitioner/dr1"},
    "Slot": {"schedule": "Schedule/s1", "status": "free", "start": "ge2026-03-02T00:00:00Z"},
    "Location": {"name": "video", "status": "active"},
    "Encounter": {"appointment": "Appointment/a1", "class": f"{ACT_CODE}|VR"},
    "AppointmentResponse": {"appointment": "Appointment/a1", "part-status": "accepted"},
    "Questionnaire": {"url": "http://example.org/Questionnaire/pre-visit"},
    "QuestionnaireResponse": {"questionnaire": "http://example.org/Questionnaire/pre-visit",
                              "subject": "Patient/p1"},
}

# What the search above must not find: the same resource changed in the searched element.
MISSES: dict[str, dict[str, Any]] = {
    "ServiceRequest": {"category": [concept(SCT, "409063005")]},  # counselling
    "DetectedIssue": {"implicated": [ref("CarePlan/other")]},
    "Goal": {"lifecycleStatus": "completed"},
    "Condition": {"clinicalStatus": concept(CLINICAL_STATUS, "resolved")},
    "Observation": {"subject": ref("Patient/p2")},
    "Device": {"identifier": [{"system": "urn:example:engine", "value": "other"}]},
    "HealthcareService": {"active": False},
    "CommunicationRequest": {"status": "completed"},
    "Schedule": {"actor": [ref("Practitioner/dr2")]},
    "Slot": {"status": "busy"},
    "Location": {"name": "Ward 3"},
    "Encounter": {"appointment": [ref("Appointment/a2")]},
    "AppointmentResponse": {"participantStatus": "declined"},
    "Questionnaire": {"url": "http://example.org/Questionnaire/other"},
    "QuestionnaireResponse": {"subject": ref("Patient/p2")},
}


def _create(client: httpx.Client, rtype: str, body: dict[str, Any]) -> str:
    created = client.post(f"/{rtype}", json={"resourceType": rtype, **body})
    assert created.status_code == 201, created.text[:1000]
    return str(created.json()["id"])


def _ids(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> set[str]:
    reply = client.get(path, params=params)
    assert reply.status_code == 200, reply.text[:1000]
    return {e["resource"]["id"] for e in reply.json().get("entry", [])}


@pytest.mark.parametrize("rtype", sorted(RESOURCES))
def test_create_read_and_search_by_key_parameters(client: httpx.Client, rtype: str) -> None:
    wanted = _create(client, rtype, RESOURCES[rtype])
    other = _create(client, rtype, {**RESOURCES[rtype], **MISSES[rtype]})
    read = client.get(f"/{rtype}/{wanted}")
    assert read.status_code == 200
    assert {k: v for k, v in read.json().items() if k not in ("id", "meta")} == {
        "resourceType": rtype, **RESOURCES[rtype]}
    assert _ids(client, f"/{rtype}") == {wanted, other}
    assert _ids(client, f"/{rtype}", KEY_SEARCHES[rtype]) == {wanted}


def test_slots_by_schedule_status_and_start(client: httpx.Client) -> None:
    def slot(start: str, status: str = "free", schedule: str = "Schedule/s1") -> str:
        return _create(client, "Slot", {"schedule": ref(schedule), "status": status,
                                        "start": f"2026-03-02T{start}:00Z", "end": f"2026-03-02T{start}:20Z"})

    early, late = slot("08:00"), slot("11:00")
    slot("11:00", status="busy-tentative")
    slot("11:00", schedule="Schedule/s2")
    params = {"schedule": "Schedule/s1", "status": "free", "start": "ge2026-03-02T10:00:00Z"}
    assert _ids(client, "/Slot", params) == {late}
    assert _ids(client, "/Slot", {**params, "start": "lt2026-03-02T10:00:00Z"}) == {early}
    # The chain a booking app uses: free slots of a practitioner's schedules.
    schedule = {"resourceType": "Schedule", "id": "s1", "actor": [ref("Practitioner/dr1")]}
    assert client.put("/Schedule/s1", json=schedule).status_code == 201
    assert _ids(client, "/Slot", {"schedule.actor": "Practitioner/dr1", "status": "free"}) == {early, late}


def test_an_encounter_links_to_its_appointment_and_location(client: httpx.Client) -> None:
    video = {"resourceType": "Location", "id": "video", "status": "active",
             "physicalType": RESOURCES["Location"]["physicalType"]}
    assert client.put("/Location/video", json=video).status_code == 201
    visit = _create(client, "Encounter", {**RESOURCES["Encounter"], "location": [{"location": ref("Location/video")}]})
    _create(client, "Encounter", {**RESOURCES["Encounter"], "appointment": [ref("Appointment/a2")]})
    bundle = client.get("/Encounter", params={"appointment": "Appointment/a1", "_include": "Encounter:location"}).json()
    found = {(e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]}
    assert found == {("Encounter", visit, "match"), ("Location", "video", "include")}


# Structure (a missing mandatory element) is 400; a code outside a required binding is 422.
@pytest.mark.parametrize(("rtype", "body", "where", "status"), [
    ("Observation", {"status": "final"}, "Observation.code", 400),  # min 1
    ("Slot", {"status": "free", "start": "2026-03-02T09:00:00Z", "end": "2026-03-02T09:20:00Z"},
     "Slot.schedule", 400),
    ("Encounter", {"status": "in-progress"}, "Encounter.class", 400),
    ("Goal", {"lifecycleStatus": "active", "subject": ref("Patient/p1")}, "Goal.description", 400),
    ("Observation", {"status": "done", "code": {"text": "x"}}, "Observation.status", 422),
    # R4 binds DetectedIssue.status to observation-status: R5's `mitigated` is not a code of it.
    ("DetectedIssue", {"status": "mitigated"}, "DetectedIssue.status", 422),
    ("AppointmentResponse", {"appointment": ref("Appointment/a1"), "participantStatus": "maybe"},
     "AppointmentResponse.participantStatus", 422),
    ("Questionnaire", {"status": "active", "item": [{"linkId": "1", "type": "essay"}]},
     "Questionnaire.item[0].type", 422),
])
def test_each_type_is_validated_by_its_r4_definition(
        client: httpx.Client, rtype: str, body: dict[str, Any], where: str, status: int) -> None:
    reply = client.post(f"/{rtype}", json={"resourceType": rtype, **body})
    assert reply.status_code == status, reply.text[:1000]
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
    assert any(e.startswith(where) for e in expressions), expressions
    assert _ids(client, f"/{rtype}") == set()  # nothing written


def test_the_patient_compartment_holds_what_the_r4_definition_says(client: httpx.Client) -> None:
    for pid in ("p1", "p2"):
        assert client.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}).status_code == 201
    mine = {rtype: _create(client, rtype, body) for rtype, body in RESOURCES.items()}
    # Observation.performer and Schedule.actor put a resource in a compartment too.
    performed = _create(client, "Observation", {"status": "final", "code": {"text": "self-reported"},
                                                "subject": ref("Patient/p2"), "performer": [ref("Patient/p1")]})
    theirs = _create(client, "Schedule", {"actor": [ref("Patient/p1")]})
    in_compartment = {"ServiceRequest", "DetectedIssue", "Goal", "Condition", "Observation",
                      "CommunicationRequest", "Encounter", "AppointmentResponse", "QuestionnaireResponse"}
    also = {"Observation": performed, "Schedule": theirs}
    for rtype, rid in mine.items():
        if rtype in in_compartment or rtype in also:
            expected = ({rid} if rtype in in_compartment else set()) | ({also[rtype]} if rtype in also else set())
            assert _ids(client, f"/Patient/p1/{rtype}") == expected, rtype
        else:  # Device, HealthcareService, Location, Slot, Questionnaire: no compartment param
            outside = client.get(f"/Patient/p1/{rtype}")
            assert outside.status_code == 400, rtype
            assert outside.json()["issue"][0]["diagnostics"] == f"{rtype} is not in the Patient compartment"
    assert _ids(client, "/Patient/p2/Observation") == {performed}
    # $everything: the compartment, plus the directory resources it references.
    everything = client.get("/Patient/p1/$everything").json()
    types = {e["resource"]["resourceType"] for e in everything["entry"]}
    assert in_compartment | {"Patient", "Schedule"} <= types
    assert not types & {"Slot", "Questionnaire", "HealthcareService"}


def test_a_patient_token_sees_only_her_own_observations_and_encounters(
        secure: Callable[..., httpx.Client], mint: Mint) -> None:
    admin = secure(mint("system/*.cruds"))
    for pid in ("p1", "p2"):
        assert admin.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}).status_code == 201
    own: dict[str, str] = {}
    other: dict[str, str] = {}
    for rtype in ("Observation", "Encounter"):
        own[rtype] = _create(admin, rtype, RESOURCES[rtype])
        other[rtype] = _create(admin, rtype, {**RESOURCES[rtype], "subject": ref("Patient/p2")})
    anna = secure(mint("patient/Observation.rs patient/Encounter.rs", patient="p1"))
    for rtype in ("Observation", "Encounter"):
        assert _ids(admin, f"/{rtype}") == {own[rtype], other[rtype]}
        assert _ids(anna, f"/{rtype}") == {own[rtype]}
        assert _ids(anna, f"/{rtype}", {"subject": "Patient/p2"}) == set()
        assert anna.get(f"/{rtype}/{own[rtype]}").status_code == 200
        assert anna.get(f"/{rtype}/{other[rtype]}").status_code == 404  # not in her record
    # Her token's scopes name no Condition: none is read, even her own.
    condition = _create(admin, "Condition", RESOURCES["Condition"])
    assert anna.get(f"/Condition/{condition}").status_code == 403
    # A write into another patient's record is refused.
    assert secure(mint("patient/Observation.cruds", patient="p1")).post(
        "/Observation", json={"resourceType": "Observation", **RESOURCES["Observation"],
                              "subject": ref("Patient/p2")}).status_code == 403


def test_observation_composites_match_or_are_refused(client: httpx.Client) -> None:
    coded = _create(client, "Observation", {**RESOURCES["Observation"],
                                            "valueCodeableConcept": concept(SCT, "260385009")})
    _create(client, "Observation", {**RESOURCES["Observation"], "valueQuantity": {"value": 72}})
    assert _ids(client, "/Observation", {"code-value-concept": f"{LOINC}|8867-4${SCT}|260385009"}) == {coded}
    assert _ids(client, "/Observation", {"code-value-concept": f"{LOINC}|8867-4${SCT}|10828004"}) == set()
    # A quantity component would need prefixes and ranges: refused, not answered empty.
    refused = client.get("/Observation", params={"code-value-quantity": f"{LOINC}|8867-4$gt70"})
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["code"] == "not-supported"
    rest = client.get("/metadata").json()["rest"][0]
    observation = next(r for r in rest["resource"] if r["type"] == "Observation")
    names = {p["name"] for p in observation["searchParam"]}
    assert "code-value-concept" in names and "code-value-quantity" not in names
