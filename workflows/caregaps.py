"""Care gaps: a CarePlan activity whose scheduled time has passed with nothing showing it
done gets a DetectedIssue (code CAREGAP, `implicated` = the plan) and a care-gap Task for the
plan's CareTeam, one of each per activity occurrence; both are closed when it is done.

What a gap is lives in fhir_server.operations.gaps (Measure/$care-gaps answers from the same
assessment). This module keeps the stored records in step with it, for one plan at a time:

- on every CarePlan change (workflow `care-gaps`, criteria `CarePlan`);
- on every change that may show an activity done: a Task, Observation, Encounter, Appointment
  or QuestionnaireResponse in a done status, `basedOn` the plan (workflows `care-gaps-<type>`);
- when the plan's next occurrence falls due (a durable timer per plan and due time);
- and by the scheduled scan of every active plan (a durable timer every `scanEvery`), the net
  that catches whatever the others missed.

Exactly once: the records' identifier is `urn:fhir-server:care-gap|<plan>/activity/<key>/<due>`
— the occurrence, not the trigger — and each is written by conditional create on it, so any
number of events, scans and processes make one DetectedIssue and one Task per occurrence.
Closing is an update to a fixed content, so doing it twice writes nothing the second time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from fhir_server.errors import FhirError
from fhir_server.operations.gaps import (
    CARE_GAP_SYSTEM,
    CAREGAP,
    CLOSED,
    DONE,
    GAP_STATUS_URL,
    LINKED_TYPES,
    NOT_APPLICABLE,
    OPEN,
    Gap,
    assess,
    detected_issue,
    gap_status,
    gather_evidence,
    instant,
    next_due,
)
from fhir_server.storage.documents import StoredResource
from workflows.effects import Effects
from workflows.engine import Event, Workflow
from workflows.timers import Timer, now

Doc = dict[str, Any]
NAME = "care-gaps"
DEFAULT_SCAN = timedelta(days=1)
SCAN_PAGE = 100
TERMINAL_TASK = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def next_slot(at: datetime, every: timedelta) -> datetime:
    """The first multiple of `every` (counted from 2000-01-01) after `at`: every process and
    every event computes the same next scan, so its timer key is one."""
    slots = (at - EPOCH) // every + 1
    return EPOCH + every * slots


def _state(issue: Doc) -> str | None:
    for extension in issue.get("modifierExtension") or []:
        if isinstance(extension, dict) and extension.get("url") == GAP_STATUS_URL:
            codings = (extension.get("valueCodeableConcept") or {}).get("coding") or [{}]
            code = codings[0].get("code")
            return code if isinstance(code, str) else None
    return None


def _own_value(resource: Doc) -> str | None:
    return next((i["value"] for i in resource.get("identifier") or []
                 if isinstance(i, dict) and i.get("system") == CARE_GAP_SYSTEM and isinstance(i.get("value"), str)),
                None)


def _organization(plan: Doc) -> str | None:
    """The plan's organization for the definitions file: its author, when an Organization."""
    author = plan.get("author")
    reference = author.get("reference") if isinstance(author, dict) else None
    return reference if isinstance(reference, str) and reference.startswith("Organization/") else None


class Reconciler:
    """Brings one plan's DetectedIssues and Tasks in step with its assessment."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow

    async def _all(self, effects: Effects, rtype: str, params: list[tuple[str, str]]) -> list[StoredResource]:
        engine = effects.repository.search_engine
        found: list[StoredResource] = []
        cursor: str | None = None
        while True:
            query = engine.parse(rtype, [*params, ("_count", "200"), *([("_cursor", cursor)] if cursor else [])])
            page = await effects.repository.search(effects.context("search-type"), query, with_total=False)
            found.extend(page.entries)
            cursor = page.next_cursor
            if not cursor:
                return found

    async def plan(self, effects: Effects, plan_id: str, plan: Doc | None = None) -> None:
        """Reconciles `plan` (its current version when not given)."""
        reference = f"CarePlan/{plan_id}"
        if plan is None:
            try:
                plan = (await effects.repository.read(effects.context("read"), "CarePlan", plan_id)).resource
            except FhirError:
                plan = None  # deleted: its open gaps no longer apply
        at = now()
        # Evidence matters only once something is due: a plan whose activities all lie ahead
        # (most of them, most of the time) costs no evidence searches.
        due_now = plan is not None and any(g.occurrence.due <= at for g in assess(plan, [], at))
        existing = self._all(effects, "DetectedIssue", [("implicated", reference),
                                                        ("identifier", f"{CARE_GAP_SYSTEM}|")])
        if plan is not None and due_now:
            found, evidence = await asyncio.gather(
                existing, gather_evidence(effects.repository, effects.context("search-type"), plan))
            gaps = assess(plan, evidence, at)
        else:
            found, gaps = await existing, (assess(plan, [], at) if plan is not None else [])
        issues = {v: s for s in found if (v := _own_value(s.resource))}
        # No DetectedIssue, no Task: the Task is written after its DetectedIssue (a Task left
        # without one is still found by its conditional create).
        tasks = {v: s for s in await self._all(effects, "Task", [
            ("based-on", reference), ("identifier", f"{CARE_GAP_SYSTEM}|")]) if (v := _own_value(s.resource))
        } if issues else {}
        seen: set[str] = set()
        for gap in gaps:
            value = gap.identifier["value"]
            seen.add(value)
            if gap.status == OPEN:
                await self.open(effects, plan or {}, gap, issues.get(value), tasks.get(value))
            elif gap.status in (CLOSED, NOT_APPLICABLE) and value in issues:
                await self.close(effects, plan or {}, gap, issues[value], tasks.get(value))
        for value, issue in issues.items():
            if value not in seen and _state(issue.resource) == OPEN:
                # The occurrence is gone from the plan (activity removed, rescheduled, plan deleted).
                await self._close_records(effects, issue, tasks.get(value), NOT_APPLICABLE, "no longer in the plan")
        due = next_due(gaps)
        if due is not None and plan is not None:
            await effects.schedule(f"due/{reference}/{instant(due)}", due, {"kind": "plan", "plan": plan_id})

    async def open(self, effects: Effects, plan: Doc, gap: Gap, issue: StoredResource | None,
                   task: StoredResource | None) -> None:
        value = gap.identifier["value"]
        criteria = [("identifier", f"{CARE_GAP_SYSTEM}|{value}")]
        if issue is None:
            issue = (await effects.repository.create(effects.context("create"), detected_issue(plan, gap),
                                                     if_none_exist=criteria)).stored
        if task is None:
            await effects.repository.create(effects.context("create"), self.task(effects, plan, gap, issue.id),
                                            if_none_exist=criteria)

    def task(self, effects: Effects, plan: Doc, gap: Gap, issue_id: str) -> Doc:
        """The care-gap Task: for the plan's CareTeam, about the DetectedIssue, based on the plan."""
        task: Doc = {
            "resourceType": "Task",
            "identifier": [gap.identifier],
            "status": "requested",
            "intent": "order",
            "priority": "routine",
            "code": {"coding": [CAREGAP], "text": "Care gap"},
            "description": f"Care gap: {gap.description}",
            "focus": {"reference": f"DetectedIssue/{issue_id}"},
            "basedOn": [{"reference": gap.plan}],
            "reasonReference": {"reference": f"DetectedIssue/{issue_id}"},
            "restriction": {"period": {"start": instant(gap.occurrence.due)}},
        }
        subject = plan.get("subject")
        if isinstance(subject, dict) and subject.get("reference"):
            task["for"] = {"reference": subject["reference"]}
        teams = [t for t in plan.get("careTeam") or [] if isinstance(t, dict) and t.get("reference")]
        if teams:
            task["owner"] = {"reference": teams[0]["reference"]}
        elif fallback := self.workflow.definitions.get(NAME, "assignTo", _organization(plan)):
            task["owner"] = {"reference": fallback[0]}  # no CareTeam on the plan: whom the file names
        if effects.device:
            task["requester"] = {"reference": effects.device}
        return task

    async def close(self, effects: Effects, plan: Doc, gap: Gap, issue: StoredResource,
                    task: StoredResource | None) -> None:
        if _state(issue.resource) != OPEN:
            return  # closed already (or never open): nothing to do
        reason = f"done: {gap.closed_by}" if gap.status == CLOSED else "no longer applies"
        await self._close_records(effects, issue, task, gap.status, reason, detected_issue(plan, gap))

    async def _close_records(self, effects: Effects, issue: StoredResource, task: StoredResource | None,
                             status: str, reason: str, content: Doc | None = None) -> None:
        closed = dict(content or issue.resource)
        closed.pop("meta", None)
        closed["id"] = issue.id
        closed["identifier"] = issue.resource.get("identifier")
        closed["modifierExtension"] = [gap_status(status)]
        if status == NOT_APPLICABLE:
            closed["status"] = "cancelled"
        await effects.repository.update(effects.context("update"), "DetectedIssue", issue.id, closed)
        if task is not None and task.resource.get("status") not in TERMINAL_TASK:
            updated = {k: v for k, v in task.resource.items() if k != "meta"}
            updated["status"] = "completed" if status == CLOSED else "cancelled"
            updated["statusReason"] = {"text": reason}
            await effects.repository.update(effects.context("update"), "Task", task.id, updated)


class CareGaps(Workflow):
    """CarePlan changes, the per-plan due timers and the scheduled scan."""

    name: ClassVar[str] = NAME
    criteria: ClassVar[str | None] = "CarePlan"

    def __init__(self) -> None:
        self.reconciler = Reconciler(self)
        self.scans = 0
        self._scheduled: str | None = None  # the last scan key this process scheduled

    def every(self) -> timedelta:
        every = self.definitions.duration(NAME, "scanEvery", default=DEFAULT_SCAN) or DEFAULT_SCAN
        return max(every, timedelta(seconds=1))

    async def schedule_scan(self, effects: Effects) -> None:
        due = next_slot(now(), self.every())
        subject = f"scan/{due.isoformat()}"
        if subject != self._scheduled:  # scheduled already by this process: idempotent, skip the write
            await effects.schedule(subject, due, {"kind": "scan"})
            self._scheduled = subject

    async def on_event(self, event: Event, effects: Effects) -> None:
        if event.focus is None:
            return
        # The event's own version: events come in order, so the last one reconciles the plan
        # as it now stands (a delete carries none: the current state is read).
        await self.reconciler.plan(effects, event.focus.partition("/")[2], event.resource)
        await self.schedule_scan(effects)  # once a plan exists, the scan runs (idempotent by key)

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        kind = timer.payload.get("kind")
        if kind == "plan":
            await self.reconciler.plan(effects, str(timer.payload["plan"]))
        elif kind == "scan":
            await self.scan(effects)
            await self.schedule_scan(effects)

    async def scan(self, effects: Effects) -> int:
        """Every active plan, a page at a time; answers how many were looked at."""
        engine = effects.repository.search_engine
        cursor: str | None = None
        seen = 0
        while True:
            query = engine.parse("CarePlan", [("status", "active"), ("_count", str(SCAN_PAGE)),
                                              *([("_cursor", cursor)] if cursor else [])])
            page = await effects.repository.search(effects.context("search-type"), query, with_total=False)
            for entry in page.entries:
                await self.reconciler.plan(effects, entry.id, entry.resource)
            seen += len(page.entries)
            cursor = page.next_cursor
            if not cursor:
                self.scans += 1
                return seen


class CareGapEvidence(Workflow):
    """Something done `basedOn` a plan (a Task completed, an Observation final, ...): that
    plan is looked at again, so its gap closes at once rather than at the next scan."""

    resource_type: ClassVar[str] = ""

    def __init__(self) -> None:
        self.reconciler = Reconciler(self)

    async def on_event(self, event: Event, effects: Effects) -> None:
        resource = event.resource or {}
        if _own_value(resource) is not None:
            return  # the engine's own care-gap Task
        plans = {ref["reference"].partition("/")[2] for ref in resource.get("basedOn") or []
                 if isinstance(ref, dict) and str(ref.get("reference", "")).startswith("CarePlan/")}
        for plan_id in sorted(plans):
            await self.reconciler.plan(effects, plan_id)


def _evidence_workflow(rtype: str) -> CareGapEvidence:
    statuses = ",".join(sorted(DONE[rtype]))
    kind = type(f"CareGapEvidence{rtype}", (CareGapEvidence,), {
        "name": f"{NAME}-{rtype.lower()}", "criteria": f"{rtype}?status={statuses}", "resource_type": rtype})
    made: CareGapEvidence = kind()
    return made


def care_gaps() -> list[Workflow]:
    """The care-gaps workflows (workflows/builtin.py; FHIR_WORKFLOW_MODULES=workflows.caregaps:care_gaps)."""
    return [CareGaps(), *(_evidence_workflow(t) for t in LINKED_TYPES)]
