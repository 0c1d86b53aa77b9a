"""The resource types this server stores, grouped as the product describes them."""

from __future__ import annotations

import re

COORDINATION = ("CarePlan", "CareTeam", "Communication", "Appointment", "Task", "DocumentReference")
MACHINERY = ("Subscription", "Consent", "AuditEvent", "Provenance", "Binary", "Basic")
# The clinical facts the workflows read and write (referrals, care gaps, visit documentation).
CLINICAL = (
    "ServiceRequest", "DetectedIssue", "Goal", "Condition", "Observation", "CommunicationRequest",
)
# Booking a visit (IHE ITI Scheduling) and what surrounds it (the pre-visit questionnaire).
SCHEDULING = (
    "Schedule", "Slot", "Encounter", "AppointmentResponse", "Questionnaire", "QuestionnaireResponse",
)
DIRECTORY = (
    "Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Organization", "Endpoint",
    "Device", "HealthcareService", "Location",
)

STORED_TYPES: tuple[str, ...] = tuple(
    sorted(COORDINATION + CLINICAL + SCHEDULING + MACHINERY + DIRECTORY)
)
STORED: frozenset[str] = frozenset(STORED_TYPES)
# Types whose records are never changed once written (update, patch, delete answer 405): the
# CapabilityStatement leaves those interactions out for them.
APPEND_ONLY: frozenset[str] = frozenset({"AuditEvent"})
CHANGING_INTERACTIONS = frozenset({"update", "patch", "delete"})

# FHIR R4 id: [A-Za-z0-9\-\.]{1,64}
ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def is_valid_id(value: str) -> bool:
    return ID_RE.fullmatch(value) is not None
