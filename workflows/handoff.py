"""Hand-off: transfer of responsibility for a Task, carried out by the engine.

A hand-off request is a Task with code `handoff` (fhir_server.handoffs; who may write which
status: interceptors/handoff_rules.py). The workflow follows it:

- requested: the answer is awaited on a durable timer (`handoff.timeout` of the organization,
  profiles/workflows.yaml). A proposed owner that is an inactive PractitionerRole gets nothing
  handed to them: the hand-off is escalated at once.
- accepted: in ONE transaction the focus Task's `owner` becomes the new owner, the hand-off is
  `completed` (its output names the new owner) and a Communication goes to the previous
  owner. Were the focus Task handed to someone else meanwhile (the requester no longer owns
  it), the hand-off `failed` instead, and the requester is told.
- rejected: the focus Task stays with its owner; a Communication tells the requester why.
- no answer in time (the timer), or an inactive owner: escalation. In one transaction the
  hand-off `failed`, the focus Task goes to the CareTeam's pool (`owner` removed,
  `performerType` = the team role of the proposed owner, else of the previous owner), and a
  Communication plus a Task (code `handoff-escalation`) go to the team's coordinator
  (`handoff.escalateTo` of the organization, else the CareTeam's coordinators).

Every write is the engine's (SYSTEM, Device/coordination-engine): created resources carry
effect identifiers (exactly once), updates are conditional on the version decided from, so a
redelivered event or a re-fired timer finds the work done and changes nothing.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, ClassVar

from fhir_server import handoffs
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.storage.documents import StoredResource
from fhir_server.storage.repository import Repository
from workflows.definitions import Definitions
from workflows.durations import parse_duration
from workflows.effects import Effects
from workflows.engine import Engine, Event, Workflow
from workflows.timers import Timer
from workflows.together import Create, Stale, Update, commit_together

Doc = dict[str, Any]
NAME = "handoff"
DEFAULT_TIMEOUT = parse_duration("PT4H")
# Attempts at a transaction whose read versions moved on meanwhile (a concurrent edit of the
# focus Task): each attempt reads again and decides again.
ATTEMPTS = 5


def _reference(reference: str) -> Doc:
    return {"reference": reference}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _committed(task: Doc) -> datetime:
    stamped = (task.get("meta") or {}).get("lastUpdated")
    try:
        return datetime.fromisoformat(str(stamped).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


class Handoff(Workflow):
    name: ClassVar[str] = NAME
    criteria: ClassVar[str | None] = f"Task?code={handoffs.TASK_CODES}|{handoffs.HANDOFF}"

    def __init__(self) -> None:
        self.repository: Repository | None = None
        self.definitions = Definitions()
        self.base_url = ""

    def bind(self, engine: Engine) -> None:
        self.repository = engine.repository
        self.definitions = engine.definitions
        self.base_url = engine.base_url

    # -- reading -------------------------------------------------------------------------
    @property
    def _db(self) -> Any:
        assert self.repository is not None, "the hand-off workflow is not bound to an engine"
        return self.repository.database.db

    async def _read(self, reference: str | None) -> StoredResource | None:
        """The current version of `reference`, read as the engine (None: gone)."""
        assert self.repository is not None
        if not reference:
            return None
        rtype, _, rid = reference.partition("/")
        try:
            return await self.repository.read(RequestContext.system(self.base_url, "read"), rtype, rid)
        except FhirError:
            return None

    async def _setting(self, key: str, task: Doc, focus: Doc | None) -> tuple[Any, list[Doc]]:
        teams = await handoffs.care_teams(self._db, focus or task)
        organization = await handoffs.organization_of(
            self._db, teams, handoffs.ref(task.get("requester")), handoffs.ref((focus or {}).get("owner")))
        return self.definitions.get(NAME, key, organization), teams

    # -- events --------------------------------------------------------------------------
    async def on_event(self, event: Event, effects: Effects) -> None:
        task = event.resource
        if task is None or not handoffs.is_handoff(task) or event.focus is None:
            return
        status = task.get("status")
        subject = f"{event.focus}/answer"
        if status == "requested":
            if await handoffs.inactive_owner(self._db, handoffs.ref(task.get("owner"))):
                await self._escalate(effects, event.focus, "the proposed owner's PractitionerRole is inactive")
                return
            focus = await self._read(handoffs.ref(task.get("focus")))
            value, _ = await self._setting("timeout", task, focus.resource if focus else None)
            timeout = parse_duration(value) if isinstance(value, str) else DEFAULT_TIMEOUT
            # Due from the request's own commit time: decided from the trigger, not from when
            # the event happened to be delivered.
            await effects.schedule(subject, _committed(task) + timeout,
                                   {"handoff": event.focus, "source": event.version, "timeout": value or "PT4H"})
        elif status == "accepted":
            await effects.cancel(subject)
            await self._transfer(effects, event)
        elif status == "rejected":
            await effects.cancel(subject)
            await self._tell_rejected(effects, event.focus, task)
        elif status in ("cancelled", "entered-in-error"):
            await effects.cancel(subject)

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        handoff = timer.payload.get("handoff")
        if isinstance(handoff, str):
            await self._escalate(effects, handoff, f"no answer within {timer.payload.get('timeout')}")

    # -- the three outcomes --------------------------------------------------------------
    async def _transfer(self, effects: Effects, event: Event) -> None:
        assert event.focus is not None and event.resource is not None
        accepted_version = str((event.resource.get("meta") or {}).get("versionId"))
        for _ in range(ATTEMPTS):
            stored = await self._read(event.focus)
            if stored is None or str(stored.version_id) != accepted_version:
                return  # done already (a redelivery), or moved on: nothing of ours to do
            task = stored.resource
            focus = await self._read(handoffs.ref(task.get("focus")))
            if focus is None:
                return
            previous = handoffs.ref(focus.resource.get("owner"))
            new_owner = task["owner"]
            requester = handoffs.ref(task.get("requester"))
            teams = await handoffs.care_teams(self._db, focus.resource)
            done = copy.deepcopy(task)
            writes: list[Create | Update]
            if requester != previous and requester not in handoffs.coordinators(teams):
                # Handed elsewhere meanwhile (another hand-off was accepted first).
                done["status"] = "failed"
                done["statusReason"] = {"text": "the focus Task changed owner after the hand-off was requested"}
                writes = [Update(done, accepted_version), Create(self._communication(
                    effects, task, [task["requester"]],
                    f"Hand-off not made: {handoffs.ref(task.get('focus'))} changed owner meanwhile"), "not-made")]
            else:
                moved = copy.deepcopy(focus.resource)
                moved["owner"] = new_owner
                moved.pop("performerType", None)
                done["status"] = "completed"
                done["lastModified"] = _now()
                done["output"] = [{"type": {"text": "new owner"}, "valueReference": new_owner}]
                recipients = [_reference(previous)] if previous else [task["requester"]]
                writes = [Update(moved, str(focus.version_id)), Update(done, accepted_version),
                          Create(self._communication(
                              effects, task, recipients,
                              f"Hand-off accepted: {handoffs.ref(task.get('focus'))} is now owned by "
                              f"{handoffs.ref(new_owner)}"), "accepted")]
            try:
                await commit_together(effects, writes)
                return
            except Stale:
                continue
        raise RuntimeError(f"{event.focus}: the transfer kept meeting concurrent changes")  # redelivered

    async def _tell_rejected(self, effects: Effects, handoff: str, task: Doc) -> None:
        reason = task.get("statusReason") or {}
        why = reason.get("text") or ", ".join(
            str(c.get("display") or c.get("code")) for c in reason.get("coding") or [] if isinstance(c, dict))
        await effects.create(self._communication(
            effects, task, [task["requester"]],
            f"Hand-off rejected by {handoffs.ref(task.get('owner'))}: {why}"), name="rejected")

    async def _escalate(self, effects: Effects, handoff: str, reason: str) -> None:
        for _ in range(ATTEMPTS):
            stored = await self._read(handoff)
            if stored is None or stored.resource.get("status") not in handoffs.OPEN:
                return  # answered, cancelled or escalated already
            task = stored.resource
            focus = await self._read(handoffs.ref(task.get("focus")))
            failed = copy.deepcopy(task)
            failed["status"] = "failed"
            failed["statusReason"] = {"text": reason}
            failed["lastModified"] = _now()
            writes: list[Create | Update] = [Update(failed, str(stored.version_id))]
            if focus is not None:
                targets, teams = await self._setting("escalateTo", task, focus.resource)
                if not targets:
                    targets = handoffs.coordinators(teams)
                role = handoffs.role_in(teams, handoffs.ref(task.get("owner")),
                                        handoffs.ref(focus.resource.get("owner")))
                pooled = copy.deepcopy(focus.resource)
                pooled.pop("owner", None)
                if role:
                    pooled["performerType"] = role
                writes.append(Update(pooled, str(focus.version_id)))
                if targets:
                    writes += self._to_coordinator(effects, task, list(targets), role, reason)
            try:
                await commit_together(effects, writes)
                return
            except Stale:
                continue
        raise RuntimeError(f"{handoff}: the escalation kept meeting concurrent changes")  # fired again

    # -- what the engine writes ----------------------------------------------------------
    def _communication(self, effects: Effects, task: Doc, recipients: list[Doc], text: str) -> Doc:
        communication: Doc = {
            "resourceType": "Communication",
            "status": "completed",
            "category": [{"coding": [{"system": handoffs.TASK_CODES, "code": handoffs.HANDOFF}]}],
            "basedOn": [_reference(f"Task/{task['id']}")],
            "about": [task["focus"]],
            "recipient": recipients,
            "sent": _now(),
            "payload": [{"contentString": text}],
        }
        if task.get("for"):
            communication["subject"] = task["for"]
        if effects.device:
            communication["sender"] = _reference(effects.device)
        return communication

    def _to_coordinator(self, effects: Effects, task: Doc, targets: list[str], role: list[Doc],
                        reason: str) -> list[Create | Update]:
        focus = handoffs.ref(task.get("focus"))
        text = f"Hand-off of {focus} escalated ({reason}): the Task is in the care team's pool"
        escalation: Doc = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": handoffs.TASK_CODES, "code": handoffs.ESCALATION,
                                 "display": "Hand-off escalation"}]},
            "description": text,
            "focus": task["focus"],
            "basedOn": [_reference(f"Task/{task['id']}")],
            "authoredOn": _now(),
            "owner": _reference(targets[0]),
        }
        if task.get("for"):
            escalation["for"] = task["for"]
        if effects.device:
            escalation["requester"] = _reference(effects.device)
        if role:
            escalation["performerType"] = role
        return [Create(self._communication(effects, task, [_reference(t) for t in targets], text), "escalated"),
                Create(escalation, "escalation-task")]


def handoff() -> Handoff:
    """For workflows.builtin (and FHIR_WORKFLOW_MODULES=workflows.handoff:handoff)."""
    return Handoff()

