"""Care gaps from CarePlan activities: which scheduled occurrences have passed without
anything showing them done. No CQL: the plan's own activities are the measure.

    occurrences(activity)   the scheduled occurrences of one activity, as windows [start, due)
    evidence_of(resource)   what a linked resource shows: done, when, for which codes
    assess(plan, evidence)  every occurrence of the plan with its gap status at a moment
    gather_evidence(...)    the evidence the caller may see: outcomeReference and resources
                            `basedOn` the plan (Task, Observation, Encounter, Appointment,
                            QuestionnaireResponse), through the read pipeline

An occurrence is a gap (`open-gap`) when its due time has passed, the plan is active, the
activity's `detail.status` is not completed, and no evidence falls in its window; it is
`closed-gap` once evidence does (or the status is completed); `not-applicable` when the plan
is no longer active or the activity was cancelled, stopped or entered in error;
`prospective-gap` when it is due later and nothing shows it done yet (DEQM's codes).

The care-gaps workflow (workflows/caregaps.py) records a DetectedIssue and a Task per open
gap and `Measure/$care-gaps` (operations/care_gaps.py) answers from the same assessment, so
both always agree on what a gap is.
"""

from __future__ import annotations

import asyncio
import calendar
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_range
from fhir_server.errors import FhirError
from fhir_server.resource_types import STORED
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]

# The identifiers of the engine's care-gap records: one per activity occurrence, the same on
# every scan, so a conditional create on it never makes a second one.
CARE_GAP_SYSTEM = "urn:fhir-server:care-gap"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CAREGAP = {"system": ACT_CODE, "code": "CAREGAP", "display": "Care Gaps"}
GAP_STATUS_URL = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/extension-gapStatus"
GAP_STATUS_SYSTEM = "http://hl7.org/fhir/us/davinci-deqm/CodeSystem/gaps-status"
OPEN, CLOSED, NOT_APPLICABLE, PROSPECTIVE = "open-gap", "closed-gap", "not-applicable", "prospective-gap"
GAP_STATUSES = (OPEN, CLOSED, PROSPECTIVE)  # the `status` values $care-gaps accepts

# The statuses in which a linked resource shows the activity done.
DONE: dict[str, frozenset[str]] = {
    "Task": frozenset({"completed"}),
    "Observation": frozenset({"final", "amended", "corrected"}),
    "Encounter": frozenset({"finished"}),
    "Appointment": frozenset({"fulfilled"}),
    "QuestionnaireResponse": frozenset({"completed", "amended"}),
    "Procedure": frozenset({"completed"}),
    "DocumentReference": frozenset({"current"}),
}
LINKED_TYPES = ("Task", "Observation", "Encounter", "Appointment", "QuestionnaireResponse")
NOT_DOING = frozenset({"cancelled", "stopped", "entered-in-error"})
# Per activity: a Timing repeating every minute for years is a mistake, not 500,000 gaps;
# a repeat shorter than an hour (medication times) is one window over its bounds.
MAX_OCCURRENCES = 100
MIN_PERIOD = timedelta(hours=1)
MAX_LINKED = 200  # linked resources read per type and plan


@dataclass(frozen=True)
class Occurrence:
    activity: int  # index in CarePlan.activity
    key: str  # the activity's element id, else its index
    start: datetime | None  # evidence from this moment on counts (None: any time before)
    due: datetime  # passed with no evidence in the window: a gap
    until: datetime | None  # evidence from here on belongs to the next occurrence


@dataclass(frozen=True)
class Evidence:
    reference: str  # "Observation/12"
    date: datetime | None  # None: counts for every occurrence
    codes: frozenset[tuple[str, str]]  # (system, code); empty: matches any activity
    activity: int | None = None  # an outcomeReference belongs to its own activity


@dataclass(frozen=True)
class Gap:
    plan: str  # "CarePlan/id"
    occurrence: Occurrence
    status: str  # open-gap, closed-gap, not-applicable, prospective-gap
    closed_by: str | None  # the evidence's reference, or "CarePlan.activity.detail.status"
    description: str

    @property
    def identifier(self) -> Doc:
        return {"system": CARE_GAP_SYSTEM, "value": gap_key(self.plan, self.occurrence)}


def gap_key(plan: str, occurrence: Occurrence) -> str:
    return f"{plan}/activity/{occurrence.key}/{instant(occurrence.due)}"


def instant(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dict(value: Any) -> Doc:
    return value if isinstance(value, dict) else {}


def _start(value: Any) -> datetime | None:
    try:
        return parse_range(value)[0] if isinstance(value, str) else None
    except DateFormatError:
        return None


def _end(value: Any) -> datetime | None:
    """The exclusive end of a date or dateTime ("2026-01-01" ends at the next midnight)."""
    try:
        return parse_range(value)[1] if isinstance(value, str) else None
    except DateFormatError:
        return None


def _add_months(t: datetime, months: int) -> datetime:
    month = t.month - 1 + months
    year, month = t.year + month // 12, month % 12 + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


_UNITS = {"s": timedelta(seconds=1), "min": timedelta(minutes=1), "h": timedelta(hours=1),
          "d": timedelta(days=1), "wk": timedelta(weeks=1)}


def _step(t: datetime, period: float, unit: str, k: int) -> datetime | None:
    """`t` + k periods (months and years by the calendar)."""
    try:
        if unit in _UNITS:
            return t + _UNITS[unit] * (period * k)
        if unit in ("mo", "a") and period == int(period):
            return _add_months(t, int(period) * k * (12 if unit == "a" else 1))
    except (OverflowError, ValueError):
        return None
    return None


def occurrences(activity: Doc, index: int) -> Iterator[Occurrence]:
    """The activity's scheduled occurrences, earliest first. `detail.scheduledTiming`: each
    `event`, else each period of `repeat` (from `boundsPeriod.start`, up to its end or
    `repeat.count`, 100 at most; one occurrence per period, however many times a period asks
    for; a period under an hour is one window over the bounds) or the
    bounds as one window; `scheduledPeriod`: one, due at its end (else its start).
    `scheduledString` and activities without `detail` have no computable schedule."""
    detail = activity.get("detail")
    if not isinstance(detail, dict):
        return
    own = activity.get("id")
    key = own if isinstance(own, str) else str(index)
    period = detail.get("scheduledPeriod")
    if isinstance(period, dict):
        start, due = _start(period.get("start")), _end(period.get("end")) or _end(period.get("start"))
        if due is not None:
            yield Occurrence(index, key, start, due, None)
        return
    timing = detail.get("scheduledTiming")
    if not isinstance(timing, dict):
        return
    events = sorted(d for d in (_end(e) for e in timing.get("event") or []) if d is not None)
    if events:
        for i, due in enumerate(events[:MAX_OCCURRENCES]):
            yield Occurrence(index, key, events[i - 1] if i else None, due, None if i == len(events) - 1 else due)
        return
    repeat = _dict(timing.get("repeat"))
    bounds = _dict(repeat.get("boundsPeriod"))
    first, last = _start(bounds.get("start")), _end(bounds.get("end"))
    every, unit = repeat.get("period"), repeat.get("periodUnit")
    if first is None:
        if last is not None:
            yield Occurrence(index, key, None, last, None)
        return
    if not isinstance(every, int | float) or isinstance(every, bool) or every <= 0 or not isinstance(unit, str):
        if last is not None:
            yield Occurrence(index, key, first, last, None)
        return
    second = _step(first, every, unit, 1)
    if second is None or second - first < MIN_PERIOD:
        if last is not None:
            yield Occurrence(index, key, first, last, None)
        return
    count: int = repeat["count"] if isinstance(repeat.get("count"), int) else MAX_OCCURRENCES
    for k in range(min(count, MAX_OCCURRENCES)):
        start, due = _step(first, every, unit, k), _step(first, every, unit, k + 1)
        if start is None or due is None or (last is not None and start >= last):
            return
        if last is not None and due > last:
            due = last
        final = k + 1 == count or (last is not None and due >= last)
        yield Occurrence(index, key, start, due, None if final else due)
        if final:
            return


def _codes(concept: Any) -> frozenset[tuple[str, str]]:
    concepts = concept if isinstance(concept, list) else [concept]
    return frozenset((str(c.get("system", "")), str(c.get("code"))) for cc in concepts if isinstance(cc, dict)
                     for c in cc.get("coding") or [] if isinstance(c, dict) and c.get("code"))


def _when(resource: Doc) -> datetime | None:
    """When the resource says the thing was done (else when it was last changed)."""
    for path in (("executionPeriod", "end"), ("effectivePeriod", "end"), ("period", "end"),
                 ("effectiveDateTime",), ("issued",), ("end",), ("authored",), ("lastModified",),
                 ("executionPeriod", "start"), ("period", "start"), ("start",), ("meta", "lastUpdated")):
        value: Any = resource
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if (found := _start(value)) is not None:
            return found
    return None


def _is_own(resource: Doc) -> bool:
    return any(isinstance(i, dict) and i.get("system") == CARE_GAP_SYSTEM for i in resource.get("identifier") or [])


def evidence_of(resource: Doc, activity: int | None = None) -> Evidence | None:
    """What `resource` shows, when it shows the activity done (its type's done statuses; a
    type without a status counts as done); None otherwise. The engine's own care-gap Tasks are
    never evidence: closing the reminder is not doing the activity."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or _is_own(resource):
        return None
    if rtype in DONE and resource.get("status") not in DONE[rtype]:
        return None
    if "status" in resource and resource.get("status") in ("entered-in-error", "cancelled"):
        return None
    codes = _codes(resource.get("code")) | _codes(resource.get("type")) | _codes(resource.get("serviceType"))
    return Evidence(f"{rtype}/{resource.get('id')}", _when(resource), codes, activity)


def _covers(evidence: Evidence, occurrence: Occurrence, codes: frozenset[tuple[str, str]]) -> bool:
    if evidence.activity is not None:
        if evidence.activity != occurrence.activity:
            return False
    elif evidence.codes and codes and not evidence.codes & codes:
        return False
    if evidence.date is None:
        return True
    return ((occurrence.start is None or evidence.date >= occurrence.start)
            and (occurrence.until is None or evidence.date < occurrence.until))


def _describe(activity: Doc, occurrence: Occurrence) -> str:
    detail = activity.get("detail") or {}
    what = detail.get("description") or (detail.get("code") or {}).get("text") or next(
        (c.get("display") or c.get("code") for c in (detail.get("code") or {}).get("coding") or []
         if isinstance(c, dict)), None) or f"activity {occurrence.key}"
    return f"{what}: due {instant(occurrence.due)}, not shown done"


def assess(plan: Doc, evidence: list[Evidence], at: datetime, until: datetime | None = None) -> list[Gap]:
    """Every occurrence of the plan's activities due by `at`, with its gap status, and those
    due later (`prospective-gap` unless shown done already): the first of each activity, or
    all due before `until` when given."""
    reference = f"CarePlan/{plan.get('id')}"
    active = plan.get("status") == "active"
    gaps: list[Gap] = []
    for index, activity in enumerate(plan.get("activity") or []):
        if not isinstance(activity, dict):
            continue
        detail = _dict(activity.get("detail"))
        status = detail.get("status")
        codes = _codes(detail.get("code"))
        for occurrence in occurrences(activity, index):
            description = _describe(activity, occurrence)
            closer = next((e.reference for e in evidence if _covers(e, occurrence, codes)), None)
            if status == "completed":
                closer = closer or "CarePlan.activity.detail.status"
            if closer is not None:
                gap = Gap(reference, occurrence, CLOSED, closer, description)
            elif not active or status in NOT_DOING:
                gap = Gap(reference, occurrence, NOT_APPLICABLE, None, description)
            else:
                gap = Gap(reference, occurrence, OPEN if occurrence.due <= at else PROSPECTIVE, None, description)
            gaps.append(gap)
            if occurrence.due > at and (until is None or occurrence.due >= until):
                break  # later ones are not yet in sight
    return gaps


def next_due(gaps: list[Gap]) -> datetime | None:
    """When the earliest prospective gap falls due (for a timer to look again then)."""
    return min((g.occurrence.due for g in gaps if g.status == PROSPECTIVE), default=None)


async def _read(repository: Repository, context: RequestContext, reference: str) -> Doc | None:
    rtype, _, rid = reference.partition("/")
    if rtype not in STORED or not rid or "/" in rid:
        return None
    try:
        return (await repository.read(context, rtype, rid)).resource
    except FhirError:
        return None  # gone, or not the caller's to see: it shows nothing


async def gather_evidence(repository: Repository, context: RequestContext, plan: Doc) -> list[Evidence]:
    """The evidence for `plan` that `context` may see, through the one read pipeline: each
    activity's `outcomeReference` (that activity's own) and the resources `basedOn` the plan."""
    found: list[Evidence] = []
    for index, activity in enumerate(plan.get("activity") or []):
        for ref in (activity.get("outcomeReference") or []) if isinstance(activity, dict) else []:
            reference = ref.get("reference") if isinstance(ref, dict) else None
            resource = await _read(repository, context, reference) if isinstance(reference, str) else None
            if resource is not None and (e := evidence_of(resource, index)) is not None:
                found.append(e)
    engine = repository.search_engine
    queries = [engine.parse(rtype, [("based-on", f"CarePlan/{plan.get('id')}"), ("_count", str(MAX_LINKED))])
               for rtype in LINKED_TYPES if rtype in STORED]
    # One search per type, at once: each is a round trip to the database.
    for page in await asyncio.gather(*(repository.search(context, q, with_total=False) for q in queries)):
        found.extend(e for entry in page.entries if (e := evidence_of(entry.resource)) is not None)
    return found


def gap_status(code: str) -> Doc:
    return {"url": GAP_STATUS_URL, "valueCodeableConcept": {"coding": [{"system": GAP_STATUS_SYSTEM, "code": code}]}}


def detected_issue(plan: Doc, gap: Gap) -> Doc:
    """The DetectedIssue of one gap (DEQM's Gaps In Care DetectedIssue, with the CarePlan as
    `implicated` and as evidence where DEQM names a MeasureReport)."""
    issue: Doc = {
        "resourceType": "DetectedIssue",
        "modifierExtension": [gap_status(gap.status if gap.status != NOT_APPLICABLE else NOT_APPLICABLE)],
        "identifier": [gap.identifier],
        "status": "cancelled" if gap.status == NOT_APPLICABLE else "final",
        "code": {"coding": [CAREGAP], "text": "Care gap"},
        "identifiedDateTime": instant(gap.occurrence.due),
        "implicated": [{"reference": gap.plan}],
        "evidence": [{"detail": [{"reference": gap.plan}]}],
        "detail": gap.description,
    }
    if isinstance(plan.get("subject"), dict) and plan["subject"].get("reference"):
        issue["patient"] = {"reference": plan["subject"]["reference"]}
    if gap.closed_by is not None:
        closer = ([{"reference": gap.closed_by}] if "/" in gap.closed_by and "." not in gap.closed_by.split("/")[0]
                  else [])
        issue["mitigation"] = [{"action": {"text": f"closed: {gap.closed_by}"}}]
        if closer:
            issue["evidence"].append({"detail": closer})
    return issue


def fullurl(gap: Gap) -> str:
    """A stable urn:uuid for a gap's DetectedIssue in a document (the same gap, the same uuid)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, CARE_GAP_SYSTEM + '|' + gap.identifier['value'])}"
