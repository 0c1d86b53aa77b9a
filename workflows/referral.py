"""The closed-loop referral (Gravity SDOHCC / HL7 COW): what the engine does as a referral
Task moves, and when it does not move in time.

A referral is a ServiceRequest plus a Task (code fulfill, focus the ServiceRequest,
requester, owner); its rules on writes are interceptors.referral_rules. For each new version
of a referral Task whose status changed (the previous version read from history, so a
redelivery decides the same), the workflow

- on `requested`: schedules the SLA timers, due from that version's time: `receivedWithin`
  and `acceptedWithin` (a reminder Communication to the performer), `escalateAfter` (an
  escalation Task for the requester's coordinator, `escalateTo`);
- on `received`: cancels the first; on any answer (accepted, rejected, cancelled, ...)
  cancels all three;
- on `accepted`, `rejected`, `completed`: a Communication to the requester (`notifyRequester`);
- on an end (completed, rejected, failed, cancelled, entered-in-error): the ServiceRequest
  follows (completed, revoked, entered-in-error).

Both sides learn of every transition through their own Subscriptions to the Gravity Task
topic (filtered by requester or owner). Settings are read for the requester's Organization
(profiles/workflows.yaml, `referral`). Effects are exactly once: Communications and Tasks by
identifier (workflows.effects), the ServiceRequest's status by an update that changes nothing
the second time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError, PreconditionFailed
from fhir_server.referral import (
    FULFILL,
    SERVICE_REQUEST_FOLLOWS,
    TASK_CODE_SYSTEM,
    UNANSWERED,
    is_referral,
    reference,
)
from workflows.effects import Effects
from workflows.engine import Event, Workflow
from workflows.timers import Timer

if TYPE_CHECKING:
    from fhir_server.storage.repository import Repository
    from workflows.engine import Engine

Doc = dict[str, Any]
NAME = "referral"
CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
# (timer subject suffix, duration key): the SLA clocks started when a referral is requested.
SLA = (("received", "receivedWithin"), ("accepted", "acceptedWithin"), ("escalate", "escalateAfter"))
DEFAULTS = {"receivedWithin": timedelta(days=1), "acceptedWithin": timedelta(days=3),
            "escalateAfter": timedelta(days=5)}
# The requester hears of these answers by a Communication (beside its Subscriptions).
TOLD = {"accepted": "accepted", "rejected": "rejected", "completed": "completed"}
# A ServiceRequest still open may follow its Task; one already ended stays as it is.
OPEN_REQUEST = {"draft", "active", "on-hold"}


def _when(resource: Doc) -> datetime:
    """The version's own time: timers and message times derive from the trigger, not the clock."""
    return datetime.fromisoformat(str((resource.get("meta") or {}).get("lastUpdated")).replace("Z", "+00:00"))


class Referral(Workflow):
    name: ClassVar[str] = NAME
    criteria: ClassVar[str | None] = f"Task?code={TASK_CODE_SYSTEM}|{FULFILL}"

    def __init__(self) -> None:
        self.repository: Repository | None = None
        self.base_url = ""

    def bind(self, engine: Engine) -> None:
        self.repository = engine.repository
        self.definitions = engine.definitions
        self.base_url = engine.base_url

    # ------------------------------------------------------------------ reading (as the server)

    def _system(self, interaction: str = "read") -> RequestContext:
        return RequestContext.system(self.base_url, interaction)

    async def _read(self, ref: str | None, version: int | None = None) -> Doc | None:
        """A resource (or one version of it) as the server reads it for its own decisions."""
        if self.repository is None or not ref or "/" not in ref:
            return None
        rtype, _, rid = ref.partition("/")
        try:
            if version is None:
                stored = await self.repository.read(self._system(), rtype, rid)
            else:
                stored = await self.repository.vread(self._system("vread"), rtype, rid, version)
        except FhirError:
            return None  # not there, or a deletion
        return stored.resource

    async def _organization(self, task: Doc) -> str | None:
        """The requester's Organization, whose settings apply (a PractitionerRole's own)."""
        requester = reference(task.get("requester"), self.base_url)
        if requester is None:
            return None
        if requester.startswith("Organization/"):
            return requester
        if requester.startswith("PractitionerRole/"):
            return reference((await self._read(requester) or {}).get("organization"), self.base_url)
        return None

    def _setting(self, key: str, organization: str | None, default: Any = None) -> Any:
        return self.definitions.get(NAME, key, organization, default) if self.definitions else default

    def _duration(self, key: str, organization: str | None) -> timedelta:
        found = self.definitions.duration(NAME, key, organization) if self.definitions else None
        return found if found is not None else DEFAULTS[key]

    # ------------------------------------------------------------------ events

    async def on_event(self, event: Event, effects: Effects) -> None:
        task = event.resource
        if task is None or event.is_effect or not is_referral(task, self.base_url) or event.focus is None:
            return
        version = int((task.get("meta") or {}).get("versionId") or 1)
        previous = await self._read(event.focus, version - 1) if version > 1 else None
        old, new = (previous or {}).get("status"), str(task.get("status"))
        if old == new:
            return  # not a transition: the Subscriptions tell of the other changes
        organization = await self._organization(task)
        if new == "requested":
            requested_at = _when(task)
            for subject, key in SLA:
                await effects.schedule(f"{event.focus}/{subject}", requested_at + self._duration(key, organization),
                                       {"task": event.focus, "source": event.version, "organization": organization})
        if new != "requested":
            await effects.cancel(f"{event.focus}/received")
        if new not in UNANSWERED:
            await effects.cancel(f"{event.focus}/accepted")
            await effects.cancel(f"{event.focus}/escalate")
        if new in TOLD and self._setting("notifyRequester", organization, True) is not False:
            await self._tell_requester(task, event.focus, new, effects)
        if new in SERVICE_REQUEST_FOLLOWS:
            await self._follow(task, SERVICE_REQUEST_FOLLOWS[new], effects)

    async def _tell_requester(self, task: Doc, focus: str, status: str, effects: Effects) -> None:
        requester = task.get("requester")
        if not isinstance(requester, dict):
            return
        owner = (task.get("owner") or {}).get("reference", "the performer")
        text = f"Referral {focus} was {TOLD[status]} by {owner}."
        if status == "rejected" and (reason := (task.get("statusReason") or {}).get("text")):
            text += f" Reason: {reason}"
        await effects.create(self._communication(task, focus, requester, "notification", text, _when(task), effects),
                             name=f"notify-requester-{status}")

    def _communication(self, task: Doc, focus: str, recipient: Doc, category: str, text: str,
                       sent: datetime, effects: Effects) -> Doc:
        communication: Doc = {
            "resourceType": "Communication",
            "status": "completed",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "basedOn": [{"reference": focus}],
            "recipient": [{"reference": recipient["reference"]}] if recipient.get("reference") else [recipient],
            "sent": sent.isoformat(),
            "payload": [{"contentString": text}],
        }
        if isinstance(task.get("focus"), dict):
            communication["about"] = [task["focus"]]
        if isinstance(task.get("for"), dict):
            communication["subject"] = task["for"]
        if effects.device:
            communication["sender"] = {"reference": effects.device}
        return communication

    async def _follow(self, task: Doc, status: str, effects: Effects) -> None:
        """The ServiceRequest follows its Task's end: one update, none if it already has."""
        ref = reference(task.get("focus"), self.base_url)
        if self.repository is None or ref is None:
            return
        rtype, _, rid = ref.partition("/")
        for _ in range(5):  # a client changing it meanwhile: read again and decide again
            current = await self._read(ref)
            if current is None or current.get("status") not in OPEN_REQUEST:
                return
            version = int((current.get("meta") or {}).get("versionId") or 0)
            try:
                await self.repository.update(effects.context("update"), rtype, rid,
                                             {**current, "status": status}, if_match=version)
                return
            except PreconditionFailed:
                continue

    # ------------------------------------------------------------------ SLA timers

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        focus = timer.payload.get("task")
        task = await self._read(focus if isinstance(focus, str) else None)
        if task is None or not isinstance(focus, str) or task.get("status") not in UNANSWERED:
            return  # answered meanwhile (its cancel lost the race with the firing)
        kind = timer.key.rsplit("/", 1)[-1]
        organization = timer.payload.get("organization")
        organization = organization if isinstance(organization, str) else None
        if kind == "received" and task.get("status") != "requested":
            return
        if kind in ("received", "accepted"):
            owner = task.get("owner")
            if isinstance(owner, dict):
                waited = "received" if kind == "received" else "accepted"
                text = f"Reminder: referral {focus} has not been {waited} yet."
                await effects.create(self._communication(task, focus, owner, "reminder", text, timer.due, effects),
                                     name=f"reminder-{kind}")
        elif kind == "escalate":
            await self._escalate(task, focus, organization, timer, effects)

    async def _escalate(self, task: Doc, focus: str, organization: str | None, timer: Timer,
                        effects: Effects) -> None:
        targets = list(self._setting("escalateTo", organization, None) or [])
        if not targets:  # no coordinator configured: the requesting organization itself
            fallback = organization or reference(task.get("requester"), self.base_url)
            targets = [fallback] if fallback else []
        for n, target in enumerate(targets):
            escalation: Doc = {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "priority": "urgent",
                "code": {"text": "Referral not accepted in time"},
                "description": f"Referral {focus} was not accepted within the agreed time; follow it up "
                               f"with {(task.get('owner') or {}).get('reference', 'the performer')}.",
                "focus": {"reference": focus},
                "partOf": [{"reference": focus}],
                "authoredOn": timer.due.isoformat(),
                "owner": {"reference": target},
                "reasonCode": {"text": "referral SLA escalation"},
            }
            if isinstance(task.get("for"), dict):
                escalation["for"] = task["for"]
            if effects.device:
                escalation["requester"] = {"reference": effects.device}
            await effects.create(escalation, name=f"escalation-{n}")


def referral() -> Referral:
    return Referral()
