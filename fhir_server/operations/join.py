"""`POST [base]/Appointment/[id]/$join`: a per-participant, expiring join into a virtual visit.

Who may join (anyone else: 403, before anything about the visit is said):
- a participant of the Appointment (not `declined`) that the caller is: their `fhirUser`, a
  Practitioner's active PractitionerRoles, or — for a token without a `fhirUser`, or whose
  `fhirUser` is that Patient — the patient in context;
- a RelatedPerson (`fhirUser`) of the Appointment's patient whom an active Consent of that
  patient permits (a `permit` provision naming her as actor, within its period);
- with auth off (dev mode) or for the server's own work, the participant the `participant`
  parameter names.
The Appointment itself is read with the caller's access decision (scopes, Consent), so a
caller who may not see it learns nothing more here.

When (else 409): the Appointment is booked (or arrived / checked-in), carries the session the
engine recorded (telehealth: virtual service extension), and now lies inside the window
around `start` (TelehealthSettings.join_before / join_after). The token expires after
join_ttl, never past the window's end. The first join (check-in) creates the Encounter
(class `VR` virtual, `appointment` = the visit), once however many join at the same time.
The request is audited as every operation is (AuditEvent, also when refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server.consent.model import period_of, relative_reference
from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.directory import active_roles
from fhir_server.errors import BadRequest, Conflict, FhirError, Forbidden, NotFound
from fhir_server.search import SearchEngine
from fhir_server.storage.documents import StoredResource, format_instant, now
from fhir_server.storage.repository import Repository
from telehealth import virtual_service
from telehealth.provider import JoinLink, Participant
from telehealth.service import Telehealth

Doc = dict[str, Any]
JOINABLE = ("booked", "arrived", "checked-in")
VISIT_SYSTEM = "urn:fhir-server:virtual-visit"
VIRTUAL_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"}
HOSTS = ("Practitioner/", "PractitionerRole/")


@dataclass
class JoinAnswer:
    link: JoinLink
    participant: Participant
    encounter: str  # "Encounter/<id>"


def _actors(appointment: Doc, base_url: str) -> list[tuple[str, Doc]]:
    """(relative reference, participant entry) of everyone taking part (not declined)."""
    out = []
    for entry in appointment.get("participant") or []:
        if not isinstance(entry, dict) or entry.get("status") == "declined":
            continue
        actor = entry.get("actor")
        if isinstance(actor, dict) and isinstance(actor.get("reference"), str):
            out.append((relative_reference(actor["reference"], base_url), entry))
    return out


def _participant(reference: str, entry: Doc) -> Participant:
    display = (entry.get("actor") or {}).get("display")
    return Participant(reference, display if isinstance(display, str) else None,
                       "host" if reference.startswith(HOSTS) else "guest")


def _permits(provision: Any, actor: str, at: datetime, base_url: str) -> bool:
    """Whether this provision, or one nested in it, permits `actor` (within its period)."""
    if not isinstance(provision, dict):
        return False
    period = period_of(provision.get("period"))
    if period is not None and not period.covers(at):
        return False
    if provision.get("type") == "permit" and any(
            isinstance(a, dict) and isinstance(a.get("reference"), dict)
            and relative_reference(str(a["reference"].get("reference")), base_url) == actor
            for a in provision.get("actor") or []):
        return True
    return any(_permits(p, actor, at, base_url) for p in provision.get("provision") or [])


class Join:
    def __init__(self, repository: Repository, search: SearchEngine, telehealth: Telehealth) -> None:
        self.repository = repository
        self.search = search
        self.telehealth = telehealth

    async def _consented(self, related: str, patients: list[str], base_url: str, at: datetime) -> bool:
        """Whether RelatedPerson `related` is of one of `patients` and that patient's active
        Consent permits her."""
        system = RequestContext.system(base_url, "read")
        try:
            person = (await self.repository.read(system, "RelatedPerson", related.partition("/")[2])).resource
        except FhirError:
            return False
        patient = relative_reference(str((person.get("patient") or {}).get("reference")), base_url)
        if person.get("active") is False or patient not in patients:
            return False
        query = self.search.parse("Consent", [("patient", patient), ("status", "active")])
        page = await self.repository.search(system, query, with_total=False)
        return any(_permits(c.resource.get("provision"), related, at, base_url) for c in page.entries)

    async def _who(self, context: RequestContext, appointment: Doc, asked: str | None) -> Participant:
        base_url = context.base_url
        actors = _actors(appointment, base_url)
        principal = context.principal
        if principal is None:
            raise Forbidden("no caller")
        if principal.kind != "token":
            # The server's own work or dev mode: there is no caller to match; name one.
            if asked is None:
                raise BadRequest("name the participant who joins (parameter `participant`)", code="required")
            found = next(((r, e) for r, e in actors if r == asked), None)
            if found is None:
                raise Forbidden(f"{asked[:80]} does not take part in this Appointment")
            return _participant(*found)
        fhir_user = relative_reference(principal.fhir_user, base_url) if principal.fhir_user else None
        identities: list[str] = [fhir_user] if fhir_user else []
        if principal.patient and (fhir_user is None or fhir_user == f"Patient/{principal.patient}"):
            identities.append(f"Patient/{principal.patient}")
        if fhir_user and fhir_user.startswith(HOSTS) and any(r.startswith("PractitionerRole/") for r, _ in actors):
            identities += [f"PractitionerRole/{rid}" for rid, _ in
                           await active_roles(self.repository.database.db, fhir_user)]
        for identity in identities:
            if asked is not None and identity != asked:
                continue
            found = next(((r, e) for r, e in actors if r == identity), None)
            if found is not None:
                return _participant(*found)
        if fhir_user and fhir_user.startswith("RelatedPerson/") and asked in (None, fhir_user):
            patients = [r for r, _ in actors if r.startswith("Patient/")]
            if await self._consented(fhir_user, patients, base_url, now()):
                return Participant(fhir_user, None, "guest")
        raise Forbidden("only a participant of this Appointment may join it")

    def _window(self, appointment: Doc, at: datetime) -> datetime:
        """The end of the join window; 409 outside it."""
        settings = self.telehealth.settings
        try:
            start = parse_instant(appointment["start"]) if isinstance(appointment.get("start"), str) else None
        except DateFormatError:
            start = None
        if start is None:
            raise Conflict("the Appointment has no start: there is no window to join in", code="business-rule")
        opens, closes = start - timedelta(seconds=settings.join_before), start + timedelta(seconds=settings.join_after)
        if not opens <= at <= closes:
            raise Conflict(f"the visit can be joined from {format_instant(opens)} to {format_instant(closes)}",
                           code="business-rule")
        return closes

    async def _encounter(self, base_url: str, appointment_id: str, appointment: Doc, at: datetime) -> str:
        """The visit's Encounter, created by the first join only. Concurrent first joins in
        this process share one create (telehealth/inflight.py); the create is conditional on
        the visit's identifier, so first joins in several processes still make one."""
        criteria = [("identifier", f"{VISIT_SYSTEM}|Appointment/{appointment_id}")]
        system = RequestContext.system(base_url, "create")
        # Every join but the first finds it: a plain read, no conditional lock or transaction.
        found = await self.repository.search(system, self.search.parse("Encounter", criteria), with_total=False)
        if found.entries:
            return f"Encounter/{found.entries[0].id}"
        return await self.telehealth.first_joins.run(
            appointment_id, lambda: self._create_encounter(system, criteria, appointment_id, appointment, at))

    async def _create_encounter(self, system: RequestContext, criteria: list[tuple[str, str]],
                                appointment_id: str, appointment: Doc, at: datetime) -> str:
        base_url = system.base_url
        actors = _actors(appointment, base_url)
        patient = next((r for r, _ in actors if r.startswith("Patient/")), None)
        encounter: Doc = {
            "resourceType": "Encounter",
            "identifier": [{"system": VISIT_SYSTEM, "value": f"Appointment/{appointment_id}"}],
            "status": "in-progress",
            "class": VIRTUAL_CLASS,
            "appointment": [{"reference": f"Appointment/{appointment_id}"}],
            "period": {"start": format_instant(at)},
        }
        if patient:
            encounter["subject"] = {"reference": patient}
        individuals = [{"individual": {"reference": r}} for r, _ in actors
                       if r.startswith((*HOSTS, "RelatedPerson/"))]
        if individuals:
            encounter["participant"] = individuals
        outcome = await self.repository.create(system, encounter, if_none_exist=criteria)
        return f"Encounter/{outcome.stored.id}"

    async def _read(self, context: RequestContext, appointment_id: str) -> StoredResource:
        """The Appointment as the caller may see it. One the caller may not see is no visit of
        theirs: 403, as for any non-participant (404 only when there is no such Appointment)."""
        try:
            return await self.repository.read(context, "Appointment", appointment_id)
        except NotFound:
            await self.repository.read(RequestContext.system(context.base_url, "read"), "Appointment",
                                       appointment_id)
            raise Forbidden("only a participant of this Appointment may join it") from None

    async def __call__(self, context: RequestContext, appointment_id: str, asked: str | None) -> JoinAnswer:
        appointment = (await self._read(context, appointment_id)).resource
        participant = await self._who(context, appointment, asked)
        if appointment.get("status") not in JOINABLE:
            raise Conflict(f"the Appointment is {str(appointment.get('status'))[:20]}, not booked",
                           code="business-rule")
        service = virtual_service.read(appointment)
        if service is None:
            raise Conflict("the Appointment is not a virtual visit (no virtualService extension)",
                           code="business-rule")
        at = now()
        closes = self._window(appointment, at)
        provider = self.telehealth.provider
        session = provider.create_session(appointment_id, service.max_participants)
        if service.address != session.address:
            raise Conflict("the visit's video session is not ready (it is created when the Appointment is "
                           "booked), or was made by another video provider", code="business-rule")
        expires = min(at + timedelta(seconds=self.telehealth.settings.join_ttl), closes)
        link = await provider.join(session, participant, expires)
        encounter = await self._encounter(context.base_url, appointment_id, appointment, at)
        return JoinAnswer(link, participant, encounter)


def answer(joined: JoinAnswer) -> Doc:
    """The operation's output Parameters."""
    return {"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUrl": joined.link.url},
        {"name": "token", "valueString": joined.link.token},
        {"name": "expires", "valueInstant": format_instant(joined.link.expires)},
        {"name": "participant", "valueReference": {"reference": joined.participant.reference}},
        {"name": "encounter", "valueReference": {"reference": joined.encounter}},
    ]}
