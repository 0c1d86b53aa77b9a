"""The scheduling workflows: what happens to an Appointment without a client.

`scheduling` (Appointments pending, booked or cancelled):
- a hold (`$hold`: pending, with the hold-expires extension) gets a durable timer due when
  the hold expires; when it fires, a hold still pending is cancelled and its Slots freed
  (`Booker.expire_hold`: a booked or cancelled one is left alone);
- a cancelled Appointment: its Slots free again unless another Appointment holds them
  (`Booker.release_cancelled`: for one cancelled by a plain write; after `$cancel` there is
  nothing left to free), and a Communication to every participant who is a person (Patient,
  Practitioner, PractitionerRole, RelatedPerson), once per Appointment; one cancelled because
  it was rescheduled is announced by its replacement instead;
- a booked Appointment that replaces another (`$reschedule`): a Communication to each person,
  "moved", once per new Appointment.

`appointment-responses` (AppointmentResponse): the participant's answer is written on the
Appointment (`participant.status`); a pending Appointment all of whose required participants
accepted becomes booked (`Booker.respond`).

Once per Appointment, not per version: the notifications' effects are keyed on the
Appointment (`Appointment/<id>/cancelled`), so a later version of a cancelled Appointment
(still cancelled) announces nothing again.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fhir_server.operations.scheduling.booking import PREVIOUS_EXTENSION, Booker, hold_expires, named_slot_ids
from workflows.effects import Effects
from workflows.engine import Event, Workflow
from workflows.timers import Timer

Doc = dict[str, Any]
PEOPLE = ("Patient/", "Practitioner/", "PractitionerRole/", "RelatedPerson/")


def _people(appointment: Doc) -> list[str]:
    found: list[str] = []
    for participant in appointment.get("participant") or []:
        reference = (participant.get("actor") or {}).get("reference")
        if isinstance(reference, str) and reference.startswith(PEOPLE) and reference not in found:
            found.append(reference)
    return found


def _patient(appointment: Doc) -> str | None:
    return next((p for p in _people(appointment) if p.startswith("Patient/")), None)


def _previous(appointment: Doc) -> str | None:
    for ext in appointment.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PREVIOUS_EXTENSION:
            reference = (ext.get("valueReference") or {}).get("reference")
            return reference if isinstance(reference, str) else None
    return None


def _keyed(effects: Effects, trigger: str) -> Effects:
    """Effects keyed on `trigger` instead of the event's version (once per Appointment)."""
    return Effects(effects.repository, effects.base_url, effects.workflow, trigger,
                   source=effects.automation.trigger, device=effects.device, timers=effects.timers)


def _notice(appointment: Doc, focus: str, recipient: str, text: str) -> Doc:
    notice: Doc = {
        "resourceType": "Communication", "status": "completed",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                  "code": "notification"}]}],
        "recipient": [{"reference": recipient}], "about": [{"reference": focus}],
        "payload": [{"contentString": text}],
    }
    patient = _patient(appointment)
    if patient:
        notice["subject"] = {"reference": patient}
    return notice


class Scheduling(Workflow):
    name: ClassVar[str] = "scheduling"
    criteria: ClassVar[str | None] = "Appointment?status=pending,booked,cancelled"

    async def on_event(self, event: Event, effects: Effects) -> None:
        appointment = event.resource
        if appointment is None or event.focus is None:
            return
        status = appointment.get("status")
        hold = f"{event.focus}/hold"
        if status == "pending":
            expires = hold_expires(appointment)
            if expires is not None:
                await effects.schedule(hold, expires, {"appointment": event.focus})
            return
        await effects.cancel(hold)  # booked or cancelled: the hold has nothing left to do
        if status == "cancelled":
            # Cancelled by a plain write (not `$cancel`): its Slots are given back here.
            if named_slot_ids(appointment):
                await Booker(effects.repository, effects.base_url, effects.automation).release_cancelled(
                    event.focus.removeprefix("Appointment/"))
            if (appointment.get("cancelationReason") or {}).get("text") == "rescheduled":
                return
            keyed = _keyed(effects, f"{event.focus}/cancelled")
            for person in _people(appointment):
                await keyed.create(_notice(appointment, event.focus, person,
                                           f"Your visit at {appointment.get('start', '')} was cancelled"),
                                   name=person)
        elif status == "booked" and _previous(appointment):
            keyed = _keyed(effects, f"{event.focus}/rescheduled")
            for person in _people(appointment):
                await keyed.create(_notice(appointment, event.focus, person,
                                           f"Your visit was moved to {appointment.get('start', '')}"),
                                   name=person)

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        reference = str(timer.payload.get("appointment", ""))
        if reference.startswith("Appointment/"):
            booker = Booker(effects.repository, effects.base_url, effects.automation)
            await booker.expire_hold(reference.removeprefix("Appointment/"))


class AppointmentResponses(Workflow):
    name: ClassVar[str] = "appointment-responses"
    criteria: ClassVar[str | None] = "AppointmentResponse?part-status=accepted,declined,tentative,needs-action"

    async def on_event(self, event: Event, effects: Effects) -> None:
        response = event.resource
        if response is None or event.is_effect:
            return
        appointment = (response.get("appointment") or {}).get("reference")
        actor = (response.get("actor") or {}).get("reference")
        answer = response.get("participantStatus")
        if not (isinstance(appointment, str) and appointment.startswith("Appointment/")
                and isinstance(actor, str) and isinstance(answer, str)):
            return
        booker = Booker(effects.repository, effects.base_url, effects.automation)
        await booker.respond(appointment.removeprefix("Appointment/"), actor, answer)


def scheduling() -> list[Workflow]:
    """For workflows.builtin: both scheduling workflows."""
    return [Scheduling(), AppointmentResponses()]
