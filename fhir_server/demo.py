"""`fhir-server demo seed`: a demo coordinator, patient and family member with their care, so
that a person can open the apps after `make run` (README, "Open the dashboard").

Never run by default: only this command writes it, and only when asked. The resources go in
through `fhir-server load`'s path (the one write pipeline, as the server itself), with fixed
ids, so seeding twice updates the same resources instead of adding more; the dates are laid
around "now" (an overdue Task, a visit today), so seeding again also moves them to the new
today. The three users sign in on the login page with a password and a TOTP code: their
secrets are printed once, when they are created; a user who exists already is left as is.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

Doc = dict[str, Any]

PREFIX = "demo"
COORDINATOR = f"Practitioner/{PREFIX}-coordinator"
GP = f"Practitioner/{PREFIX}-gp"
ROLE = f"PractitionerRole/{PREFIX}-coordinator-role"
PATIENT = f"Patient/{PREFIX}-patient"
FAMILY = f"RelatedPerson/{PREFIX}-daughter"
TEAM = f"CareTeam/{PREFIX}-team"
PLAN = f"CarePlan/{PREFIX}-plan"
THREAD = f"Communication/{PREFIX}-thread"

TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"
THREAD_TAG = {"system": "http://fhir.care-coord.example/CodeSystem/messaging", "code": "thread"}
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
ACT_CODE = f"{TERMINOLOGY}/v3-ActCode"
SNOMED = "http://snomed.info/sct"


@dataclass(frozen=True)
class DemoUser:
    username: str
    fhir_user: str
    patients: tuple[str, ...]
    opens: str  # the app this user opens


USERS = (
    DemoUser(f"{PREFIX}-coordinator", COORDINATOR, (), "/apps/coordinator/"),
    DemoUser(f"{PREFIX}-patient", PATIENT, (PATIENT.split("/")[1],), "/apps/portal/"),
    DemoUser(f"{PREFIX}-family", FAMILY, (PATIENT.split("/")[1],), "/apps/portal/"),
)


def _ref(reference: str, display: str | None = None) -> Doc:
    return {"reference": reference, **({"display": display} if display else {})}


def _id(reference: str) -> str:
    return reference.split("/", 1)[1]


def _at(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period(start: datetime, minutes: int) -> Doc:
    return {"start": _at(start), "end": _at(start + timedelta(minutes=minutes))}


def _task(tid: str, what: str, *, owner: str | None, authored: datetime, due: datetime | None,
          status: str = "requested", priority: str = "routine", **more: Any) -> Doc:
    task: Doc = {"resourceType": "Task", "id": f"{PREFIX}-{tid}", "status": status, "intent": "order",
                 "priority": priority, "description": what, "for": _ref(PATIENT, "Anna Demo"),
                 "authoredOn": _at(authored), "requester": _ref(GP, "Dr. Grace Gray"), **more}
    if owner:
        task["owner"] = _ref(owner)
    if due:
        task["restriction"] = {"period": {"end": _at(due)}}
    return task


def resources(now: datetime) -> list[Doc]:
    """The demo's resources, dated around `now`."""
    day = timedelta(days=1)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    visit = max(now + timedelta(minutes=30), today + timedelta(hours=15))
    people: list[Doc] = [
        {"resourceType": "Practitioner", "id": _id(COORDINATOR),
         "name": [{"given": ["Casey"], "family": "Coordinator"}]},
        {"resourceType": "Practitioner", "id": _id(GP),
         "name": [{"prefix": ["Dr."], "given": ["Grace"], "family": "Gray"}]},
        {"resourceType": "PractitionerRole", "id": _id(ROLE), "active": True, "practitioner": _ref(COORDINATOR),
         "code": [{"coding": [{"system": SNOMED, "code": "768820003", "display": "Care coordinator"}]}]},
        {"resourceType": "Patient", "id": _id(PATIENT), "name": [{"given": ["Anna"], "family": "Demo"}],
         "birthDate": "1948-04-02", "gender": "female"},
        {"resourceType": "RelatedPerson", "id": _id(FAMILY), "patient": _ref(PATIENT),
         "name": [{"given": ["Clara"], "family": "Demo"}],
         "relationship": [{"coding": [{"system": f"{TERMINOLOGY}/v3-RoleCode", "code": "DAU",
                                       "display": "daughter"}]}]},
        {"resourceType": "CareTeam", "id": _id(TEAM), "status": "active", "name": "Anna's care team",
         "subject": _ref(PATIENT),
         "participant": [
             {"member": _ref(COORDINATOR, "Casey Coordinator"),
              "role": [{"coding": [{"system": SNOMED, "code": "768820003", "display": "Care coordinator"}]}]},
             {"member": _ref(GP, "Dr. Grace Gray"),
              "role": [{"coding": [{"system": SNOMED, "code": "62247001", "display": "General practitioner"}]}]},
             {"member": _ref(FAMILY, "Clara Demo"),
              "role": [{"coding": [{"system": SNOMED, "code": "133932002", "display": "Caregiver"}]}]}]},
        # Anna's Consent: her care team, her daughter among them, sees her record.
        {"resourceType": "Consent", "id": f"{PREFIX}-consent", "status": "active",
         "scope": {"coding": [{"system": f"{TERMINOLOGY}/consentscope", "code": "patient-privacy"}]},
         "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
         "patient": _ref(PATIENT), "dateTime": _at(now - 60 * day),
         "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT"}]},
         "provision": {"type": "permit", "actor": [{
             "role": {"coding": [{"system": f"{TERMINOLOGY}/v3-ParticipationType", "code": "IRCP"}]},
             "reference": _ref(TEAM)}]}},
    ]
    plan: list[Doc] = [
        {"resourceType": "Goal", "id": f"{PREFIX}-goal-bp", "lifecycleStatus": "active", "subject": _ref(PATIENT),
         "description": {"text": "Blood pressure below 140/90"}},
        {"resourceType": "Goal", "id": f"{PREFIX}-goal-walk", "lifecycleStatus": "active", "subject": _ref(PATIENT),
         "description": {"text": "Walk 30 minutes a day"}},
        {"resourceType": "CarePlan", "id": _id(PLAN), "status": "active", "intent": "plan",
         "title": "Hypertension follow-up", "subject": _ref(PATIENT), "period": {"start": _at(now - 40 * day)},
         "careTeam": [_ref(TEAM)], "goal": [_ref(f"Goal/{PREFIX}-goal-bp"), _ref(f"Goal/{PREFIX}-goal-walk")],
         "activity": [
             {"detail": {"status": "completed", "description": "Blood pressure check",
                         "scheduledPeriod": _period(now - 20 * day, 60)}},
             {"detail": {"status": "scheduled", "description": "Blood pressure check",
                         "scheduledPeriod": _period(now + 10 * day, 60)}},
             {"detail": {"status": "in-progress", "description": "Daily walk",
                         "scheduledPeriod": {"start": _at(now - 30 * day), "end": _at(now + 60 * day)}}}]},
    ]
    referral = {"resourceType": "ServiceRequest", "id": f"{PREFIX}-referral", "status": "active", "intent": "order",
                "subject": _ref(PATIENT), "requester": _ref(GP), "authoredOn": _at(now - 12 * day),
                "code": {"text": "Cardiology consultation"}}
    tasks: list[Doc] = [
        _task("call", "Call Anna about her readings", owner=COORDINATOR, authored=now - 6 * day, due=now - 2 * day,
              priority="urgent"),
        _task("echo", "Book the echocardiogram", owner=COORDINATOR, authored=now - 3 * day, due=now + 5 * day),
        _task("pool", "Review the discharge letter", owner=None, authored=now - day, due=now + 2 * day,
              performerType=[{"coding": [{"system": SNOMED, "code": "768820003", "display": "Care coordinator"}]}]),
        _task("done", "Send the leaflet", owner=COORDINATOR, authored=now - 15 * day, due=now - 10 * day,
              status="completed"),
        _task("referral", "Cardiology consultation", owner=COORDINATOR, authored=now - 12 * day, due=now + 3 * day,
              status="accepted", focus=_ref(f"ServiceRequest/{PREFIX}-referral"),
              code={"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
              businessStatus={"coding": [{"system": BSER, "code": "3.0", "display": "Service Request Accepted"}],
                              "text": "Service Request Accepted"}),
    ]
    care: list[Doc] = [
        {"resourceType": "Appointment", "id": f"{PREFIX}-visit-today", "status": "booked",
         "description": "Video follow-up", **_period(visit, 20),
         "participant": [{"actor": _ref(PATIENT, "Anna Demo"), "status": "accepted"},
                         {"actor": _ref(GP, "Dr. Grace Gray"), "status": "accepted"}]},
        {"resourceType": "Appointment", "id": f"{PREFIX}-visit-past", "status": "fulfilled",
         "description": "First consultation", **_period(now - 20 * day, 30),
         "participant": [{"actor": _ref(PATIENT, "Anna Demo"), "status": "accepted"},
                         {"actor": _ref(GP, "Dr. Grace Gray"), "status": "accepted"}]},
        {"resourceType": "Encounter", "id": f"{PREFIX}-encounter", "status": "finished",
         "class": {"system": ACT_CODE, "code": "AMB", "display": "ambulatory"},
         "subject": _ref(PATIENT), "appointment": [_ref(f"Appointment/{PREFIX}-visit-past")],
         "period": _period(now - 20 * day, 30)},
        {"resourceType": "DocumentReference", "id": f"{PREFIX}-letter", "status": "current",
         "description": "Discharge letter", "subject": _ref(PATIENT), "date": _at(now - 19 * day),
         "content": [{"attachment": {"contentType": "text/plain", "title": "Discharge letter",
                                     "data": "RGlzY2hhcmdlZCBpbiBnb29kIGhlYWx0aC4="}}]},
        # A thread between the GP, the coordinator, Anna and her daughter, with one message.
        {"resourceType": "Communication", "id": _id(THREAD), "status": "in-progress", "meta": {"tag": [THREAD_TAG]},
         "subject": _ref(PATIENT), "topic": {"text": "Blood pressure readings"}, "sender": _ref(GP),
         "recipient": [_ref(COORDINATOR), _ref(PATIENT), _ref(FAMILY)], "sent": _at(now - 2 * day)},
        {"resourceType": "Communication", "id": f"{PREFIX}-message-1", "status": "completed",
         "partOf": [_ref(THREAD)], "subject": _ref(PATIENT), "sender": _ref(GP), "sent": _at(now - 2 * day),
         "payload": [{"contentString": "Anna, please send this week's readings."}]},
    ]
    return [*people, *plan, referral, *tasks, *care]


def bundle(now: datetime) -> Doc:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in resources(now)]}


async def seed_resources(settings: Any, now: datetime) -> Any:
    """Writes the demo's resources through the loader (the one write pipeline); its summary."""
    from fhir_server.loader import load_paths

    with tempfile.TemporaryDirectory(prefix="fhir-demo-") as folder:
        path = Path(folder) / "demo.json"
        path.write_text(json.dumps(bundle(now)))
        return await load_paths(settings, [path])


async def seed_users(db: Any, password: str | None) -> list[tuple[DemoUser, str, str] | tuple[DemoUser, None, None]]:
    """Adds the demo users who are missing: (user, password, TOTP secret), or (user, None, None)
    for one that exists already (left as it is)."""
    from pymongo.errors import DuplicateKeyError

    from fhir_server.auth.users import UserStore

    store = UserStore(db)
    out: list[tuple[DemoUser, str, str] | tuple[DemoUser, None, None]] = []
    for user in USERS:
        if await store.get(user.username) is not None:
            out.append((user, None, None))
            continue
        secret_password = password or secrets.token_urlsafe(12)
        try:
            totp = await store.add(user.username, secret_password, user.fhir_user, totp=True, patients=user.patients)
        except DuplicateKeyError:  # another seed added it since our look: theirs stands
            out.append((user, None, None))
            continue
        assert totp is not None  # asked for
        out.append((user, secret_password, totp))
    return out
