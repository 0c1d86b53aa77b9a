"""Before and after the visit: the built-in `visit` workflows.

`visit` (Appointments booked, fulfilled, noshow, cancelled):
- **booked**: a parent Task "visit preparation" (`focus` the Appointment, `for` the patient)
  with three subtasks (`partOf` the parent, owned by the patient): the pre-visit questionnaire
  (`input` = the Questionnaire's canonical, `visit.questionnaire`; the patient answers with a
  QuestionnaireResponse and sets it as `output`), the telehealth Consent, a device check.
  And a reminder per offset of `visit.remindBefore` (e.g. P1D, PT15M): a CommunicationRequest
  `active`, `occurrenceDateTime` = start − offset, with a durable timer due then; when it
  fires and the visit is still booked at that start, a Communication (basedOn the request)
  sent by the patient's preferred medium (the lowest-`rank` `Patient.telecom`), in the
  patient's preferred language (`Patient.communication.preferred`), and the request
  `completed`.
- **cancelled** (or moved: `$reschedule` cancels the old one): its reminder timers are
  cancelled and its CommunicationRequests `revoked`.
- **fulfilled**: a documentation Task for the practitioner and a CarePlan-update Task.
- **noshow**: the referral the visit serves gets BSeR's `businessStatus` 5.1.2 "Scheduled
  Service Request Event Unattended" (the referral Task: code fulfill, `focus` a ServiceRequest
  the Appointment is `basedOn`; still open), and a Task for the coordinator (`visit.coordinator`,
  when configured; `basedOn` those ServiceRequests).

`visit-preparation` (Tasks completed or cancelled): when every subtask of a visit-preparation
Task is done, the parent becomes `completed` — `GET [base]/Task?focus=Appointment/<id>&code=
<VISIT_CODES>|visit-preparation` shows whether a visit is prepared.

Effects are keyed on the Appointment and its start (`Appointment/<id>/<start>/prepare`), not on
the version: a later version of a booked Appointment prepares and reminds nothing twice.
"""

from __future__ import annotations

import copy
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import FhirError, PreconditionFailed
from fhir_server.referral import BSER_CODES, BSER_SYSTEM, bser_code, is_referral
from fhir_server.referral import reference as relative
from fhir_server.storage.documents import format_instant
from workflows.definitions import Definitions
from workflows.durations import parse_duration
from workflows.effects import Effects
from workflows.engine import Event, Workflow
from workflows.timers import Timer

Doc = dict[str, Any]
VISIT_CODES = "http://fhir.care-coord.example/CodeSystem/visit-task"
DEFAULT_QUESTIONNAIRE = "http://fhir.care-coord.example/Questionnaire/pre-visit"
MEDIUM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
UNATTENDED = "5.1.2"  # BSeR: Scheduled Service Request Event Unattended
# A referral that has ended keeps its last business status.
CLOSED_REFERRAL = frozenset({"completed", "failed", "cancelled", "rejected", "entered-in-error"})
_MEDIA = {"sms": "SMSWRIT", "email": "EMAILWRIT", "phone": "PHONE", "fax": "FAXWRIT"}


def _code(code: str, display: str) -> Doc:
    return {"coding": [{"system": VISIT_CODES, "code": code, "display": display}], "text": display}


def _actor(appointment: Doc, prefix: str) -> str | None:
    for participant in appointment.get("participant") or []:
        reference = (participant.get("actor") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith(prefix):
            return reference
    return None


def _keyed(effects: Effects, trigger: str) -> Effects:
    return Effects(effects.repository, effects.base_url, effects.workflow, trigger,
                   source=effects.automation.trigger, device=effects.device, timers=effects.timers)


def _offsets(value: Any) -> list[tuple[str, timedelta]]:
    texts = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return [(str(t), parse_duration(str(t))) for t in texts]


def _task(code: str, display: str, appointment: str, patient: str | None, owner: str | None, **more: Any) -> Doc:
    task: Doc = {"resourceType": "Task", "status": "requested", "intent": "order", "code": _code(code, display),
                 "description": display, "focus": {"reference": appointment}}
    if patient:
        task["for"] = {"reference": patient}
    if owner:
        task["owner"] = {"reference": owner}
    task.update(more)
    return task


class Visit(Workflow):
    name: ClassVar[str] = "visit"
    criteria: ClassVar[str | None] = "Appointment?status=booked,fulfilled,noshow,cancelled"

    def __init__(self, settings: Doc | None = None) -> None:
        # The `visit` settings of the workflow definitions (`visit()` reads them).
        self.settings = settings or {}

    def _setting(self, effects: Effects, key: str, default: Any) -> Any:
        return self.settings.get(key, default)

    async def on_event(self, event: Event, effects: Effects) -> None:
        appointment = event.resource
        if appointment is None or event.focus is None:
            return
        status, start = appointment.get("status"), str(appointment.get("start", ""))
        patient = _actor(appointment, "Patient/")
        if status == "booked":
            await self._prepare(_keyed(effects, f"{event.focus}/{start}/prepare"), event.focus, patient)
            await self._reminders(_keyed(effects, f"{event.focus}/{start}/remind"), event.focus, appointment, patient)
        elif status == "cancelled":
            await self._call_off(effects, event.focus, appointment)
        elif status == "fulfilled":
            keyed = _keyed(effects, f"{event.focus}/after")
            practitioner = _actor(appointment, "Practitioner/") or _actor(appointment, "PractitionerRole/")
            await keyed.create(_task("visit-documentation", "Document the visit", event.focus, patient,
                                     practitioner), name="documentation")
            await keyed.create(_task("careplan-update", "Update the care plan after the visit", event.focus,
                                     patient, practitioner), name="careplan")
        elif status == "noshow":
            requests = _based_on(appointment, effects.base_url)
            await _unattended(effects, requests)
            coordinator = self._setting(effects, "coordinator", None)
            more: Doc = {"basedOn": [{"reference": r} for r in requests]} if requests else {}
            await _keyed(effects, f"{event.focus}/noshow").create(_task(
                "noshow-follow-up", "The patient did not attend: follow up", event.focus, patient,
                coordinator if isinstance(coordinator, str) else None, **more), name="coordinator")

    async def _prepare(self, effects: Effects, focus: str, patient: str | None) -> None:
        parent = await effects.create(_task("visit-preparation", "Prepare for the visit", focus, patient, patient),
                                      name="parent")
        part_of = [{"reference": f"Task/{parent.stored.id}"}]
        questionnaire = str(self._setting(effects, "questionnaire", DEFAULT_QUESTIONNAIRE))
        await effects.create(_task("pre-visit-questionnaire", "Answer the pre-visit questionnaire", focus, patient,
                                   patient, partOf=part_of, input=[{"type": {"text": "questionnaire"},
                                                                    "valueCanonical": questionnaire}]),
                             name="questionnaire")
        await effects.create(_task("telehealth-consent", "Consent to the telehealth visit", focus, patient, patient,
                                   partOf=part_of), name="consent")
        await effects.create(_task("device-check", "Check camera, microphone and connection", focus, patient,
                                   patient, partOf=part_of), name="device-check")

    async def _reminders(self, effects: Effects, focus: str, appointment: Doc, patient: str | None) -> None:
        if patient is None:
            return
        try:
            start = parse_instant(str(appointment.get("start")))
        except DateFormatError:
            return
        for text, offset in _offsets(self._setting(effects, "remindBefore", [])):
            when = start - offset
            request = await effects.create({
                "resourceType": "CommunicationRequest", "status": "active", "subject": {"reference": patient},
                "recipient": [{"reference": patient}], "about": [{"reference": focus}],
                "occurrenceDateTime": format_instant(when),
                "payload": [{"contentString": f"Reminder: your visit at {appointment.get('start')}"}]},
                name=f"request-{text}")
            await effects.schedule(f"{focus}/remind/{text}", when,
                                   {"appointment": focus, "start": appointment.get("start"),
                                    "request": f"CommunicationRequest/{request.stored.id}"})

    async def _call_off(self, effects: Effects, focus: str, appointment: Doc) -> None:
        context = RequestContext.system(effects.base_url, "update", effects.automation)
        for text, _ in _offsets(self._setting(effects, "remindBefore", [])):
            await effects.cancel(f"{focus}/remind/{text}")
        page = await effects.repository.find_matches(context, "CommunicationRequest",
                                                     [("status", "active"), ("subject", _actor(appointment, "Patient/")
                                                       or "Patient/none")], limit=200)
        for stored in await effects.repository.read_many(context, "CommunicationRequest", [d["_id"] for d in page]):
            request = stored.resource
            if {"reference": focus} in request.get("about", []):
                await _set_status(effects, context, "CommunicationRequest", request, "revoked")

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        focus, request_ref = str(timer.payload.get("appointment")), str(timer.payload.get("request"))
        context = RequestContext.system(effects.base_url, "read", effects.automation)
        try:
            appointment = (await effects.repository.read(context, "Appointment", focus.partition("/")[2])).resource
            request = (await effects.repository.read(context, "CommunicationRequest",
                                                     request_ref.partition("/")[2])).resource
        except FhirError:
            return
        if appointment.get("status") != "booked" or appointment.get("start") != timer.payload.get("start") \
                or request.get("status") != "active":
            return
        patient = _actor(appointment, "Patient/")
        sent: Doc = {"resourceType": "Communication", "status": "completed", "basedOn": [{"reference": request_ref}],
                     "about": [{"reference": focus}], "payload": request.get("payload", [])}
        if patient:
            sent.update(subject={"reference": patient}, recipient=[{"reference": patient}])
            medium, language = await _preferences(effects, context, patient)
            if medium:
                sent["medium"] = [{"coding": [{"system": MEDIUM, "code": medium}]}]
            if language:
                sent["language"] = language
        await effects.create(sent, name="sent")
        await _set_status(effects, context, "CommunicationRequest", request, "completed")


def _based_on(appointment: Doc, base_url: str) -> list[str]:
    """The ServiceRequests the Appointment is `basedOn` (relative references, in order, once)."""
    found: list[str] = []
    for value in appointment.get("basedOn") or []:
        ref = relative(value, base_url)
        if ref is not None and ref.startswith("ServiceRequest/") and ref not in found:
            found.append(ref)
    return found


async def _unattended(effects: Effects, requests: list[str]) -> None:
    """Each open referral Task of `requests` gets businessStatus 5.1.2. Idempotent (a Task that
    has it already is left alone) and safe against a client's write meanwhile: the update
    carries If-Match, and a lost race reads the Task again and decides again."""
    context = RequestContext.system(effects.base_url, "update", effects.automation)
    unattended = {"coding": [{"system": BSER_SYSTEM, "code": UNATTENDED, "display": BSER_CODES[UNATTENDED]}],
                  "text": BSER_CODES[UNATTENDED]}
    for request in requests:
        matches = await effects.repository.find_matches(context, "Task", [("focus", request)], limit=20)
        for task_id in [str(d["_id"]) for d in matches]:
            for _ in range(5):
                try:
                    task = (await effects.repository.read(context, "Task", task_id)).resource
                except FhirError:
                    break
                if not is_referral(task, effects.base_url) or task.get("status") in CLOSED_REFERRAL \
                        or bser_code(task) == UNATTENDED:
                    break
                changed = {**copy.deepcopy(task), "businessStatus": unattended}
                changed.pop("meta", None)
                try:
                    await effects.repository.update(context, "Task", task_id, changed,
                                                    if_match=int(task["meta"]["versionId"]))
                    break
                except PreconditionFailed:
                    continue


async def _preferences(effects: Effects, context: RequestContext, patient: str) -> tuple[str | None, str | None]:
    """The patient's preferred medium (lowest-rank telecom) and language (preferred communication)."""
    try:
        resource = (await effects.repository.read(context, "Patient", patient.partition("/")[2])).resource
    except FhirError:
        return None, None
    telecoms = sorted((t for t in resource.get("telecom") or [] if t.get("system") in _MEDIA),
                      key=lambda t: t.get("rank", 1_000_000))
    medium = _MEDIA[telecoms[0]["system"]] if telecoms else None
    languages = resource.get("communication") or []
    chosen = next((c for c in languages if c.get("preferred")), languages[0] if languages else None)
    coding = ((chosen or {}).get("language") or {}).get("coding") or []
    return medium, (coding[0].get("code") if coding else None)


async def _set_status(effects: Effects, context: RequestContext, resource_type: str, resource: Doc,
                      status: str) -> None:
    """Idempotent: writes nothing when the status is already so."""
    if resource.get("status") == status:
        return
    changed = copy.deepcopy(resource)
    changed["status"] = status
    changed.pop("meta", None)
    await effects.repository.update(context, resource_type, str(resource["id"]), changed)


class VisitPreparation(Workflow):
    name: ClassVar[str] = "visit-preparation"
    criteria: ClassVar[str | None] = "Task?status=completed,cancelled,failed"

    async def on_event(self, event: Event, effects: Effects) -> None:
        task = event.resource
        if task is None:
            return
        parents = [p.get("reference") for p in task.get("partOf") or [] if isinstance(p, dict)]
        context = RequestContext.system(effects.base_url, "update", effects.automation)
        for reference in parents:
            if not isinstance(reference, str) or not reference.startswith("Task/"):
                continue
            try:
                parent = (await effects.repository.read(context, "Task", reference[5:])).resource
            except FhirError:
                continue
            codes = [(c.get("system"), c.get("code")) for c in (parent.get("code") or {}).get("coding") or []]
            if (VISIT_CODES, "visit-preparation") not in codes or parent.get("status") in ("completed", "cancelled"):
                continue
            subtasks = await effects.repository.find_matches(context, "Task", [("part-of", reference)], limit=50)
            statuses = [t.resource.get("status") for t in await effects.repository.read_many(
                context, "Task", [d["_id"] for d in subtasks])]
            if statuses and all(s in ("completed", "cancelled", "failed") for s in statuses):
                await _set_status(effects, context, "Task", parent, "completed")


def visit() -> list[Workflow]:
    """For workflows.builtin: the visit workflows, with the `visit` defaults of the definitions
    file the server reads (FHIR_WORKFLOW_DEFINITIONS, else profiles/workflows.yaml)."""
    named = os.environ.get("FHIR_WORKFLOW_DEFINITIONS")
    path = Path(named) if named else Path(__file__).resolve().parent.parent / "profiles" / "workflows.yaml"
    settings = ((Definitions.load(path).data.get("defaults") or {}).get("visit") or {}) if path.exists() else {}
    return [Visit(dict(settings)), VisitPreparation()]
