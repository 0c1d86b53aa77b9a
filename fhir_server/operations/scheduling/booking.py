"""`$hold`, `$book`, `$cancel`, `$reschedule`: an Appointment and its Slots change together, in
one unit of the write pipeline, or not at all.

Never double-booking rests on the pipeline's optimistic lock: each Slot is planned from the
version read inside the unit's transaction, and its replace is conditional on that version.
Of 16 concurrent `$book`s of one free Slot, one commits; the others lose the race
(`StaleVersion`, or the database's write conflict), are planned again by the retry helper,
find the Slot busy and answer 409 with an OperationOutcome; their Appointments were never
written. An override (booking a Slot that is not free) needs the caller to hold the
`OVERRIDE_SCOPE` and is recorded by an AuditEvent in the same transaction.

The Appointment is written as the caller (the access decision decides whether they may book
for that patient); the Slots, the server's own bookkeeping of availability, as SYSTEM, after
the caller was shown to see them.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession

from fhir_server import fhirjson
from fhir_server.audit.events import interaction_event
from fhir_server.context import Automation, RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest, Conflict, Gone, InvalidResource, NotFound
from fhir_server.hooks import Change
from fhir_server.operations.scheduling.statuses import (
    BUSY,
    FREE,
    HOLDING,
    RULE_FINAL,
    TAKING_SLOTS,
    TENTATIVE,
    local_slot_id,
    refused_transition,
    slot_references,
)
from fhir_server.operations.scheduling.statuses import FINAL as FINAL_STATUSES
from fhir_server.storage.documents import StoredResource, format_instant, now
from fhir_server.storage.pipeline import Planned, run_unit
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]

OVERRIDE_SCOPE = "scheduling/override"
HOLD_EXTENSION = "http://fhir.care-coord.example/StructureDefinition/appointment-hold-expires"
PREVIOUS_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.previousAppointment"
# Slots one Appointment may name (one per practitioner, room, device of one visit).
MAX_SLOTS = 50
AUDIT_CODES = "http://fhir.care-coord.example/CodeSystem/scheduling-audit"


def slot_ids(appointment: Doc) -> list[str]:
    """The ids of the Slots an Appointment names (`Slot/<id>` references), in order, once
    each; strict (400) for what an operation takes: anything else in `Appointment.slot`."""
    given = appointment.get("slot") or []
    if not isinstance(given, list) or len(given) > MAX_SLOTS:
        raise BadRequest(f"Appointment.slot must be a list of at most {MAX_SLOTS} references", code="value",
                         expression=("Appointment.slot",))
    if not all(isinstance(ref, dict) and isinstance(ref.get("reference"), str) for ref in given):
        raise BadRequest("Appointment.slot must hold references Slot/<id>", code="value",
                         expression=("Appointment.slot",))
    ids = [local_slot_id(reference) for reference in slot_references(appointment)]
    if None in ids:
        raise BadRequest("Appointment.slot must hold references Slot/<id>", code="value",
                         expression=("Appointment.slot",))
    return [i for i in ids if i is not None]


def named_slot_ids(appointment: Doc) -> list[str]:
    """Leniently, the ids of the `Slot/<id>` references an Appointment names (what a stored
    Appointment holds here; other entries are not ours to give back)."""
    ids = (local_slot_id(reference) for reference in slot_references(appointment))
    return [i for i in ids if i is not None]


def hold_expires(appointment: Doc) -> datetime | None:
    for ext in appointment.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == HOLD_EXTENSION:
            try:
                return parse_instant(str(ext.get("valueInstant")))
            except DateFormatError:
                return None
    return None


def _without(appointment: Doc, url: str) -> None:
    kept = [e for e in appointment.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == url)]
    if kept:
        appointment["extension"] = kept
    else:
        appointment.pop("extension", None)


@dataclass
class _Unit:
    """What one attempt of a unit plans: per context, the planned changes."""

    groups: list[tuple[RequestContext, list[Planned]]] = field(default_factory=list)

    def add(self, context: RequestContext, planned: Planned) -> None:
        for ctx, plans in self.groups:
            if ctx is context:
                plans.append(planned)
                return
        self.groups.append((context, [planned]))


# The server's own change to a live Appointment: (session, unit, the server's context, the
# Appointment's current document, its resource) -> whether it changed anything.
ServerChange = Callable[[AsyncClientSession, _Unit, RequestContext, Doc, Doc], Awaitable[bool]]


@dataclass
class Booker:
    repository: Repository
    base_url: str
    # Set when a workflow acts (hold expiry, answers): Provenance names it and its trigger.
    automation: Automation | None = None

    def _system(self, interaction: str = "update") -> RequestContext:
        return RequestContext.system(self.base_url, interaction, self.automation)

    # ------------------------------------------------------------------ the unit

    async def _run(self, what: str, build: Any) -> list[Planned]:
        """Runs `build(session, unit)` and commits what it planned, in one transaction,
        planned afresh on a lost race; then the AFTER_COMMIT hooks of every change."""
        committer = self.repository.committer

        async def work(session: AsyncClientSession) -> tuple[list[Planned], list[tuple[RequestContext, list[Change]]]]:
            unit = _Unit()
            await build(session, unit)
            done = [(ctx, await committer.commit(session, ctx, plans)) for ctx, plans in unit.groups]
            return [p for _, plans in unit.groups for p in plans], done

        planned, done = await run_unit(self.repository.database, work, what)
        for ctx, changes in done:
            await committer.after_commit(ctx, changes)
        return planned

    async def _slots(self, session: AsyncClientSession, context: RequestContext,
                     ids: list[str]) -> dict[str, tuple[Doc, Doc]]:
        """The Slots' current documents and contents, read in the unit, as the caller sees them."""
        found = await self.repository.planner.current_many(session, context, [("Slot", i) for i in ids])
        slots: dict[str, tuple[Doc, Doc]] = {}
        for slot_id in ids:
            doc = found.get(("Slot", slot_id))
            if doc is None or doc.get("res") is None:
                raise NotFound(f"Slot/{slot_id} is not known", expression=("Appointment.slot",))
            slots[slot_id] = (doc, fhirjson.loads(doc["res"]))
        return slots

    async def _holders(self, session: AsyncClientSession, slot_id: str, other_than: str | None) -> list[str]:
        """Appointments (other than `other_than`) that hold `slot_id` now."""
        docs = await self.repository.find_matches(
            self._system("search-type"), "Appointment",
            [("slot", f"Slot/{slot_id}"), ("status", ",".join(sorted(HOLDING)))], session=session, limit=3)
        return [d["_id"] for d in docs if d["_id"] != other_than]

    async def _plan_slot(self, unit: _Unit, system: RequestContext, doc: Doc, slot: Doc, status: str) -> None:
        if slot.get("status") != status:
            changed = {**slot, "status": status}
            unit.add(system, await self.repository.planner.update_from(system, "Slot", doc["_id"], changed, doc))

    def _override_event(self, context: RequestContext, appointment: str, taken: list[tuple[str, str]]) -> Doc:
        event = interaction_event(context, self.base_url, 200, now(), seen=[], patients=[], consents=[])
        # A POST has no query string: the query entity keeps its name (the path) only.
        for entity in event["entity"]:
            if entity.get("query") == "":
                del entity["query"]
        event["subtype"].append({"system": AUDIT_CODES, "code": "override",
                                 "display": "Slot booked over its status (scheduling override)"})
        event["entity"] += [{"what": {"reference": f"Slot/{sid}"}, "description": f"status was {status}"}
                            for sid, status in taken]
        event["entity"].append({"what": {"reference": appointment}})
        return event

    async def _take(self, session: AsyncClientSession, unit: _Unit, context: RequestContext,
                    appointment_id: str, ids: list[str], status: str, *, mine: frozenset[str],
                    override: bool, then: Callable[[str, str], Awaitable[None]] | None = None) -> tuple[str, str]:
        """Plans `ids` (Slots) to `status`; answers the Appointment's start and end (from the
        Slots). `mine`: Slots this Appointment holds already (busy-tentative from its hold).
        `then(start, end)` plans the Appointment before the Slots are judged, so that a
        malformed Appointment is refused as such (400/422) rather than as a conflict."""
        slots = await self._slots(session, context, ids)
        starts = [str(s.get("start")) for _, s in slots.values()]
        ends = [str(s.get("end")) for _, s in slots.values()]
        start, end = min(starts, key=_instant), max(ends, key=_instant)
        if then is not None:
            await then(start, end)
        system = self._system()
        taken: list[tuple[str, str]] = []
        for slot_id, (doc, slot) in slots.items():
            current = slot.get("status")
            if current == FREE or (slot_id in mine and current in (TENTATIVE, BUSY)):
                pass
            elif override and current != "entered-in-error":
                taken.append((slot_id, str(current)))
            else:
                raise Conflict(f"Slot/{slot_id} is not free (it is {current}): another booking has it",
                               code="conflict", expression=("Appointment.slot",))
            await self._plan_slot(unit, system, doc, slot, status)
        if taken:
            unit.add(system, await self.repository.planner.create(
                None, self._system("create"), self._override_event(context, f"Appointment/{appointment_id}", taken)))
        return start, end

    async def _release(self, session: AsyncClientSession, unit: _Unit, appointment_id: str,
                       ids: list[str], keep: frozenset[str] = frozenset()) -> None:
        """Plans the Appointment's Slots free again, but those another Appointment still
        holds (an override shares a Slot) and those in `keep`."""
        system = self._system()
        found = await self.repository.planner.current_many(session, system, [("Slot", i) for i in ids])
        for slot_id in ids:
            doc = found.get(("Slot", slot_id))
            if doc is None or doc.get("res") is None or slot_id in keep:
                continue
            slot = fhirjson.loads(doc["res"])
            if slot.get("status") not in (BUSY, TENTATIVE):
                continue
            if await self._holders(session, slot_id, appointment_id):
                continue
            await self._plan_slot(unit, system, doc, slot, FREE)

    async def _appointment(self, session: AsyncClientSession, context: RequestContext,
                           appointment_id: str) -> tuple[Doc, Doc]:
        doc = await self.repository.planner.current(session, context, "Appointment", appointment_id)
        if doc is None:
            raise NotFound(f"Appointment/{appointment_id} is not known")
        if doc.get("res") is None:
            raise Gone(f"Appointment/{appointment_id} was deleted")
        return doc, fhirjson.loads(doc["res"])

    async def _live(self, session: AsyncClientSession | None, context: RequestContext,
                    appointment_id: str) -> tuple[Doc, Doc] | None:
        """The Appointment's current document and resource, or None when it is gone: for the
        server's own work (a hold's expiry, an answer), where there is nothing to refuse."""
        doc = await self.repository.planner.current(session, context, "Appointment", appointment_id)
        if doc is None or doc.get("res") is None:
            return None
        return doc, fhirjson.loads(doc["res"])

    @staticmethod
    def _check(before: str | None, after: str) -> None:
        reason = refused_transition(before, after)
        if reason is not None:
            raise InvalidResource(reason, code="business-rule", expression=("Appointment.status",))

    async def _stored(self, context: RequestContext, planned: list[Planned], appointment_id: str) -> StoredResource:
        for p in planned:
            if p.resource_type == "Appointment" and p.id == appointment_id and p.version is not None:
                return p.version.stored
        return await self.repository.read(context, "Appointment", appointment_id)

    # ------------------------------------------------------------------ the operations

    @staticmethod
    def _proposed(appointment: Doc) -> Doc:
        """A proposed Appointment handed in (from `$find`): a new resource of the caller's."""
        if appointment.get("status") not in ("proposed", "pending"):
            raise InvalidResource("the appointment-resource must be a proposed (or pending) Appointment",
                                  code="business-rule", expression=("Appointment.status",))
        if not slot_ids(appointment):
            raise InvalidResource("the Appointment names no Slot to book", code="required",
                                  expression=("Appointment.slot",))
        new = copy.deepcopy(appointment)
        new.pop("id", None)
        new.pop("meta", None)
        return new

    async def hold(self, context: RequestContext, appointment: Doc, hold_for: timedelta) -> StoredResource:
        """`$hold`: a new Appointment `pending`, its Slots `busy-tentative`, until now + `hold_for`
        (the scheduling workflow's timer frees them then, if not booked meanwhile)."""
        new = self._proposed(appointment)
        appointment_id = str(uuid.uuid4())
        ids = slot_ids(new)
        _taking_slots(context)

        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            async def plan(start: str, end: str) -> None:
                held = {**new, "status": "pending", "start": start, "end": end}
                _without(held, HOLD_EXTENSION)
                held["extension"] = [*held.get("extension", []), {
                    "url": HOLD_EXTENSION, "valueInstant": format_instant(now() + hold_for)}]
                unit.add(context, await self.repository.planner.create(None, context, held,
                                                                       resource_id=appointment_id))

            await self._take(session, unit, context, appointment_id, ids, TENTATIVE, mine=frozenset(),
                             override=False, then=plan)

        planned = await self._run("the Slot", build)
        return await self._stored(context, planned, appointment_id)

    async def book(self, context: RequestContext, *, appointment: Doc | None = None,
                   reference: str | None = None, override: bool = False) -> StoredResource:
        """`$book`: a proposed Appointment (`appointment-resource`) or a held one
        (`appointment-reference`) becomes `booked`, its Slots `busy`, `Appointment.slot` kept."""
        _taking_slots(context)
        if reference is not None:
            appointment_id = _appointment_id(reference)
            new: Doc | None = None
        else:
            assert appointment is not None
            new = self._proposed(appointment)
            appointment_id = str(uuid.uuid4())

        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            if new is not None:
                proposed = new

                async def plan(start: str, end: str) -> None:
                    booked = {**proposed, "status": "booked", "start": start, "end": end}
                    _without(booked, HOLD_EXTENSION)
                    unit.add(context, await self.repository.planner.create(None, context, booked,
                                                                           resource_id=appointment_id))

                await self._take(session, unit, context, appointment_id, slot_ids(new), BUSY,
                                 mine=frozenset(), override=override, then=plan)
                return
            doc, held = await self._appointment(session, context, appointment_id)
            if held.get("status") == "booked":
                return  # booked already (a repeated $book): nothing changes
            self._check(held.get("status"), "booked")
            expires = hold_expires(held)
            if expires is not None and expires <= now():
                raise Conflict(f"the hold on Appointment/{appointment_id} expired at {format_instant(expires)}",
                               code="conflict")
            ids = slot_ids(held)
            if not ids:
                raise InvalidResource("the Appointment names no Slot to book", code="required",
                                      expression=("Appointment.slot",))
            mine = frozenset(ids) if held.get("status") == "pending" else frozenset()
            start, end = await self._take(session, unit, context, appointment_id, ids, BUSY, mine=mine,
                                          override=override)
            booked = {**held, "status": "booked", "start": start, "end": end}
            _without(booked, HOLD_EXTENSION)
            unit.add(context, await self.repository.planner.update_from(
                context, "Appointment", appointment_id, booked, doc))

        planned = await self._run("the Slot", build)
        return await self._stored(context, planned, appointment_id)

    async def cancel(self, context: RequestContext, appointment_id: str, reason: str | None) -> StoredResource:
        """`$cancel`: the Appointment `cancelled` (with its reason), its Slots free again."""
        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            doc, current = await self._appointment(session, context, appointment_id)
            if current.get("status") == "cancelled":
                return
            self._check(current.get("status"), "cancelled")
            cancelled = {**current, "status": "cancelled"}
            if reason:
                cancelled["cancelationReason"] = {"text": reason}
            _without(cancelled, HOLD_EXTENSION)
            unit.add(context, await self.repository.planner.update_from(
                context, "Appointment", appointment_id, cancelled, doc))
            await self._release(session, unit, appointment_id, named_slot_ids(current))

        planned = await self._run(f"Appointment/{appointment_id}", build)
        return await self._stored(context, planned, appointment_id)

    async def reschedule(self, context: RequestContext, appointment_id: str, replacement: Doc, *,
                         override: bool = False) -> tuple[StoredResource, StoredResource]:
        """`$reschedule`: in one unit the Appointment is cancelled (reason: rescheduled) and
        its Slots freed, and a new Appointment booked on the replacement's Slots (Slots both
        name stay busy), pointing back at the old one (R5 `previousAppointment`)."""
        new = self._proposed(replacement)
        new_id = str(uuid.uuid4())
        _taking_slots(context)

        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            doc, current = await self._appointment(session, context, appointment_id)
            if current.get("status") in FINAL_STATUSES:
                raise InvalidResource(f"{RULE_FINAL}: a {current.get('status')} Appointment is final; "
                                      "it cannot be rescheduled", code="business-rule",
                                      expression=("Appointment.status",))
            self._check(current.get("status"), "cancelled")
            old_ids, new_ids = named_slot_ids(current), slot_ids(new)
            mine = frozenset(old_ids) & frozenset(new_ids) if current.get("status") in HOLDING else frozenset()
            async def plan(start: str, end: str) -> None:
                booked = {**new, "status": "booked", "start": start, "end": end}
                _without(booked, HOLD_EXTENSION)
                _without(booked, PREVIOUS_EXTENSION)
                booked["extension"] = [*booked.get("extension", []), {
                    "url": PREVIOUS_EXTENSION, "valueReference": {"reference": f"Appointment/{appointment_id}"}}]
                cancelled = {**current, "status": "cancelled", "cancelationReason": {"text": "rescheduled"}}
                _without(cancelled, HOLD_EXTENSION)
                unit.add(context, await self.repository.planner.update_from(
                    context, "Appointment", appointment_id, cancelled, doc))
                unit.add(context, await self.repository.planner.create(None, context, booked, resource_id=new_id))

            await self._take(session, unit, context, new_id, new_ids, BUSY, mine=mine, override=override, then=plan)
            await self._release(session, unit, appointment_id, old_ids, keep=frozenset(new_ids))

        planned = await self._run(f"Appointment/{appointment_id}", build)
        return (await self._stored(context, planned, appointment_id), await self._stored(context, planned, new_id))

    async def _on_live(self, appointment_id: str, change: ServerChange) -> bool:
        """Runs `change(session, unit, system, doc, current)` on the live Appointment as the
        server, in one transaction (planned afresh on a lost race); answers what the last run
        of it answered: whether it changed anything (False when the Appointment is gone)."""
        system = self._system()
        changed = False

        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            nonlocal changed
            found = await self._live(session, system, appointment_id)
            changed = found is not None and await change(session, unit, system, *found)

        await self._run(f"Appointment/{appointment_id}", build)
        return changed

    async def expire_hold(self, appointment_id: str) -> bool:
        """The hold's time is up: a still-pending, still-held Appointment is cancelled (reason:
        hold expired) and its Slots freed. Answers whether it changed anything (a booked or
        cancelled Appointment is left alone, so a late or repeated firing is harmless)."""

        async def change(session: AsyncClientSession, unit: _Unit, system: RequestContext,
                         doc: Doc, current: Doc) -> bool:
            expires = hold_expires(current)
            if current.get("status") != "pending" or expires is None or expires > now():
                return False
            expired = {**current, "status": "cancelled", "cancelationReason": {"text": "hold expired"}}
            _without(expired, HOLD_EXTENSION)
            unit.add(system, await self.repository.planner.update_from(
                system, "Appointment", appointment_id, expired, doc))
            await self._release(session, unit, appointment_id, named_slot_ids(current))
            return True

        return await self._on_live(appointment_id, change)

    async def release_cancelled(self, appointment_id: str) -> bool:
        """A cancelled Appointment's Slots free again, but those another Appointment holds: for
        an Appointment cancelled by a plain write rather than `$cancel` (the scheduling
        workflow calls this on every cancelled version). Answers whether a Slot was freed; a
        second call, or one after `$cancel`, finds nothing to do."""
        system = self._system()
        changed = False
        # First without a transaction: after `$cancel` (or a second call) every Slot is free
        # already and there is nothing to plan. A Slot taken meanwhile is another Appointment's.
        if not await self._taken(system, appointment_id):
            return False

        async def build(session: AsyncClientSession, unit: _Unit) -> None:
            nonlocal changed
            found = await self._live(session, system, appointment_id)
            if found is None or found[1].get("status") != "cancelled":
                changed = False
                return
            await self._release(session, unit, appointment_id, named_slot_ids(found[1]))
            changed = bool(unit.groups)

        await self._run(f"Appointment/{appointment_id}", build)
        return changed

    async def _taken(self, system: RequestContext, appointment_id: str) -> bool:
        """Whether the cancelled Appointment names a Slot that is still busy or held."""
        found = await self._live(None, system, appointment_id)
        if found is None or found[1].get("status") != "cancelled":
            return False
        ids = named_slot_ids(found[1])
        slots = await self.repository.planner.current_many(None, system, [("Slot", i) for i in ids])
        return any(doc.get("res") is not None and fhirjson.loads(doc["res"]).get("status") in (BUSY, TENTATIVE)
                   for doc in slots.values())

    async def respond(self, appointment_id: str, actor: str, answer: str) -> bool:
        """A participant answered (AppointmentResponse): their `participant.status` becomes the
        answer; a pending Appointment whose required participants have all accepted becomes
        booked, its Slots busy. Answers whether anything changed (idempotent)."""

        async def change(session: AsyncClientSession, unit: _Unit, system: RequestContext,
                         doc: Doc, current: Doc) -> bool:
            if current.get("status") in FINAL_STATUSES:
                return False
            participants = copy.deepcopy(current.get("participant") or [])
            named = [p for p in participants if (p.get("actor") or {}).get("reference") == actor]
            if not named or all(p.get("status") == answer for p in named):
                return False
            for p in named:
                p["status"] = answer
            updated = {**current, "participant": participants}
            required = [p for p in participants if p.get("required", "required") == "required"]
            if current.get("status") == "pending" and all(p.get("status") == "accepted" for p in required):
                ids = slot_ids(current)
                start, end = await self._take(session, unit, system, appointment_id, ids, BUSY,
                                              mine=frozenset(ids), override=False)
                updated.update(status="booked", start=start, end=end)
                _without(updated, HOLD_EXTENSION)
            unit.add(system, await self.repository.planner.update_from(
                system, "Appointment", appointment_id, updated, doc))
            return True

        return await self._on_live(appointment_id, change)


def _taking_slots(context: RequestContext) -> None:
    """Marks the caller's context as this operation's: the Appointment it writes takes its
    Slots in the same unit (interceptors.scheduling_rules refuses that to a plain write)."""
    context.attributes[TAKING_SLOTS] = True


def _appointment_id(reference: str) -> str:
    ref = reference.strip().rstrip("/")
    if "/Appointment/" in ref:
        ref = "Appointment/" + ref.rsplit("/Appointment/", 1)[1]
    if not ref.startswith("Appointment/") or not ref[12:] or "/" in ref[12:]:
        raise BadRequest("appointment-reference must be Appointment/<id>", code="value")
    return ref[12:]


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text)
    except DateFormatError:
        raise InvalidResource(f"a Slot has no valid start/end ({text[:40]})", code="value") from None
