"""A care-coordination world on the SMART-enabled server, with realistic people.

Anna (the patient), her daughter Clara (RelatedPerson, family access), Dr. Gray (her GP),
Dr. Chen (cardiology, on Anna's care team through her PractitionerRole at the heart clinic),
Paul (a pharmacist outside the care team) and an auditor. Bob is another patient.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.conftest import Mint

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

# name -> (scopes, patient in context, fhirUser)
PEOPLE: dict[str, tuple[str, str | None, str]] = {
    "anna": ("patient/*.cruds", "anna", "Patient/anna"),
    "clara": ("patient/*.rs", "anna", "RelatedPerson/clara"),
    "gray": ("user/*.rs user/*.cu", None, "Practitioner/gray"),
    "chen": ("user/*.rs user/*.cu", None, "Practitioner/chen"),
    "paul": ("user/*.rs", None, "Practitioner/paul"),
    "auditor": ("user/AuditEvent.rs user/Provenance.rs", None, "Practitioner/auditor"),
}


def ref(value: str) -> dict[str, str]:
    return {"reference": value}


RESOURCES: list[dict[str, Any]] = [
    {"resourceType": "Organization", "id": "heart-clinic", "name": "Heart clinic"},
    *({"resourceType": "Practitioner", "id": p, "name": [{"family": p.title()}]}
      for p in ("gray", "chen", "paul", "auditor")),
    {"resourceType": "PractitionerRole", "id": "chen-cardiology", "practitioner": ref("Practitioner/chen"),
     "organization": ref("Organization/heart-clinic"), "location": [ref("Location/cardio-ward")]},
    {"resourceType": "PractitionerRole", "id": "gray-gp", "practitioner": ref("Practitioner/gray"),
     "location": [ref("Location/gp-practice")]},
    {"resourceType": "Patient", "id": "anna", "name": [{"family": "Adams", "given": ["Anna"]}]},
    {"resourceType": "Patient", "id": "bob", "name": [{"family": "Baker", "given": ["Bob"]}]},
    {"resourceType": "RelatedPerson", "id": "clara", "patient": ref("Patient/anna"),
     "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "DAU"}]}]},
    {"resourceType": "CareTeam", "id": "anna-team", "status": "active", "subject": ref("Patient/anna"),
     "participant": [{"member": ref("Practitioner/gray")}, {"member": ref("PractitionerRole/chen-cardiology")},
                     {"member": ref("RelatedPerson/clara")}]},
    {"resourceType": "Task", "id": "anna-task", "status": "requested", "intent": "order",
     "for": ref("Patient/anna"), "requester": ref("Practitioner/gray"), "authoredOn": "2026-10-01",
     "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}},
    {"resourceType": "Task", "id": "bob-task", "status": "requested", "intent": "order",
     "for": ref("Patient/bob"), "requester": ref("Practitioner/gray")},
    {"resourceType": "Appointment", "id": "anna-visit", "status": "booked",
     "participant": [{"actor": ref("Patient/anna"), "status": "accepted"},
                     {"actor": ref("Practitioner/chen"), "status": "accepted"}]},
    {"resourceType": "CarePlan", "id": "anna-plan", "status": "active", "intent": "plan",
     "subject": ref("Patient/anna")},
    {"resourceType": "Communication", "id": "anna-message", "status": "completed",
     "subject": ref("Patient/anna"), "sender": ref("Practitioner/gray"),
     "recipient": [ref("RelatedPerson/clara")], "sent": "2026-10-02T09:00:00Z",
     "payload": [{"contentString": "Your mother's results are in."}]},
]


def consent(provision: dict[str, Any] | None = None, *, policy: str = "OPTOUT", patient: str = "anna",
            status: str = "active", cid: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": ref(f"Patient/{patient}"),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": policy}]},
    }
    if cid:
        resource["id"] = cid
    if provision is not None:
        resource["provision"] = provision
    return resource


def actor(reference: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]}, "reference": ref(reference)}


def classes(*types: str) -> list[dict[str, str]]:
    return [{"system": "http://hl7.org/fhir/resource-types", "code": t} for t in types]


def ids(bundle: dict[str, Any], rtype: str | None = None) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])
            if (rtype is None or e["resource"]["resourceType"] == rtype)
            and e.get("search", {}).get("mode") != "outcome"}


@dataclass
class World:
    admin: httpx.Client
    people: dict[str, httpx.Client]
    started: str  # FHIR instant: AuditEvents of earlier tests are older

    def __getattr__(self, name: str) -> httpx.Client:
        if name in self.people:
            return self.people[name]
        raise AttributeError(name)

    def consent(self, resource: dict[str, Any], by: str = "anna") -> str:
        """Anna (or `by`) records a Consent; returns its id."""
        client = self.people[by] if by != "admin" else self.admin
        reply = client.post("/Consent", json=resource)
        assert reply.status_code == 201, reply.text
        cid: str = reply.json()["id"]
        return cid


@pytest.fixture(scope="session")
def tokens(mint: Mint) -> dict[str, str]:
    minted = {name: mint(scopes, patient=patient, fhir_user=user) for name, (scopes, patient, user) in PEOPLE.items()}
    minted["admin"] = mint("system/*.cruds")
    return minted


@pytest.fixture
def world(secure: Callable[..., httpx.Client], tokens: dict[str, str]) -> Iterator[World]:
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    admin = secure(tokens["admin"])
    for resource in RESOURCES:
        reply = admin.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert reply.status_code == 201, reply.text
    yield World(admin, {name: secure(tokens[name]) for name in PEOPLE}, started)


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Polls `check` until it returns something truthy (audit events are stored in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
