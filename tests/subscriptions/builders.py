"""Valid R4 resources for the topics' resource types, tied to one test's unique `u`."""

from __future__ import annotations

from typing import Any

Doc = dict[str, Any]
TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"


def task(u: str, *, status: str = "requested", owner: str | None = None, code: str = "fulfill",
         patient: str | None = None) -> Doc:
    return {"resourceType": "Task", "status": status, "intent": "order",
            "for": {"reference": patient or f"Patient/{u}"},
            "owner": {"reference": owner or f"Practitioner/{u}"},
            "code": {"coding": [{"system": TASK_CODES, "code": code}]}}


def appointment(u: str, *, status: str = "booked", actor: str | None = None, patient: str | None = None) -> Doc:
    return {"resourceType": "Appointment", "status": status, "participant": [
        {"actor": {"reference": patient or f"Patient/{u}"}, "status": "accepted"},
        {"actor": {"reference": actor or f"Practitioner/{u}"}, "status": "accepted"}]}


def careplan(u: str, *, activities: int = 1, team: str | None = None, patient: str | None = None) -> Doc:
    plan: Doc = {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                 "subject": {"reference": patient or f"Patient/{u}"},
                 "careTeam": [{"reference": team or f"CareTeam/{u}"}]}
    if activities:
        plan["activity"] = [{"detail": {"status": "scheduled", "description": f"call {i}"}}
                            for i in range(activities)]
    return plan


def careteam(u: str, members: list[str] | None = None, *, patient: str | None = None) -> Doc:
    team: Doc = {"resourceType": "CareTeam", "status": "active", "name": "team",
                 "subject": {"reference": patient or f"Patient/{u}"}}
    members = [f"Practitioner/{u}"] if members is None else members
    if members:
        team["participant"] = [{"member": {"reference": m}} for m in members]
    return team


def communication(u: str, *, recipient: str | None = None, thread: str | None = None,
                  patient: str | None = None) -> Doc:
    return {"resourceType": "Communication", "status": "completed",
            "subject": {"reference": patient or f"Patient/{u}"},
            "recipient": [{"reference": recipient or f"Practitioner/{u}"}],
            "partOf": [{"reference": thread or f"Communication/{u}"}],
            "payload": [{"contentString": "Please call the patient back"}]}


def document(u: str, *, loinc: str = "11488-4", patient: str | None = None) -> Doc:
    return {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": patient or f"Patient/{u}"},
            "type": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8="}}]}


def consent(u: str, *, patient: str | None = None, status: str = "active") -> Doc:
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": patient or f"Patient/{u}"},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                       "code": "OPTIN"}]}}
