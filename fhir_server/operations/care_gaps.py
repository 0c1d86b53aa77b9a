"""`Measure/$care-gaps` in DEQM's shape, computed from CarePlan activities (not CQL measures).

The answer is a Parameters resource with one `return` per patient: a document Bundle whose
first entry is a Composition (LOINC 96315-7, "Gaps in care report") with one section per gap
and whose other entries are the gaps' DetectedIssues (DEQM's gap status as their modifier
extension). A gap is an activity occurrence due within [periodStart, periodEnd], assessed by
fhir_server.operations.gaps, the same assessment the care-gaps workflow records.

The patients: `subject=Patient/x`, or those whose `generalPractitioner` is `practitioner`
and/or whose `managingOrganization` is `organization` (DEQM's attribution). Every CarePlan,
Patient and piece of evidence is read through the one read pipeline with the caller's context:
what the caller may not see is neither reported nor counted as evidence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_range
from fhir_server.errors import BadRequest
from fhir_server.operations.gaps import (
    GAP_STATUSES,
    Gap,
    assess,
    detected_issue,
    fullurl,
    gather_evidence,
    instant,
)
from fhir_server.storage.documents import StoredResource, now
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]
DEFINITION = "http://fhir.care-coord.example/OperationDefinition/care-gaps"
GAPS_REPORT = {"system": "http://loinc.org", "code": "96315-7", "display": "Gaps in care report"}
MAX_PATIENTS = 1000  # one answer; a larger population is asked for by organization or practitioner
MAX_PLANS = 200  # CarePlans per patient
# DEQM parameters this server does not take: it has no Measures (gaps come from CarePlans).
MEASURE_PARAMETERS = ("measureId", "measureIdentifier", "measureUrl", "topic", "program")
PARAMETERS = ("periodStart", "periodEnd", "subject", "practitioner", "organization", "status")


@dataclass
class CareGapsRequest:
    period_start: datetime
    period_end: datetime  # exclusive: the end of the periodEnd date
    statuses: tuple[str, ...]
    subject: str | None = None  # Patient id
    practitioner: str | None = None  # "Practitioner/x" or "PractitionerRole/x"
    organization: str | None = None  # "Organization/x"
    period: tuple[str, str] = ("", "")  # as given, for the report
    author: str | None = None  # the report's author reference (the engine's Device)
    extra: dict[str, str] = field(default_factory=dict)


def _reference(name: str, value: str, types: tuple[str, ...]) -> str:
    rtype, _, rid = value.partition("/")
    if rtype not in types or not rid or "/" in rid:
        raise BadRequest(f"{name} must be a reference such as {types[0]}/123, not '{value[:80]}'", code="value")
    return value


def parse_request(pairs: list[tuple[str, str]]) -> CareGapsRequest:
    """The operation's parameters (from the query, or a Parameters body as name/value pairs);
    a missing, repeated, unknown or malformed one is 400 with an OperationOutcome naming it."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.startswith("_"):
            continue  # _format, _pretty: the HTTP layer's
        if name in MEASURE_PARAMETERS:
            raise BadRequest(f"{name}: this server computes care gaps from CarePlan activities and has no "
                             f"Measures ({DEFINITION})", code="not-supported")
        if name not in PARAMETERS:
            raise BadRequest(f"$care-gaps has no parameter '{name[:60]}' (it takes {', '.join(PARAMETERS)})")
        values.setdefault(name, []).append(value)
    for name in PARAMETERS:
        if name != "status" and len(values.get(name, [])) > 1:
            raise BadRequest(f"{name} may be given once")
    for name in ("periodStart", "periodEnd", "status"):
        if not values.get(name):
            raise BadRequest(f"$care-gaps needs {name}", code="required")
    try:
        start = parse_range(values["periodStart"][0])[0]
        end = parse_range(values["periodEnd"][0])[1]
    except DateFormatError as exc:
        raise BadRequest(f"periodStart/periodEnd: {exc}", code="value") from None
    if end <= start:
        raise BadRequest("periodEnd is before periodStart", code="value")
    statuses = tuple(dict.fromkeys(s.strip() for v in values["status"] for s in v.split(",")))
    wrong = [s for s in statuses if s not in GAP_STATUSES]
    if wrong:
        raise BadRequest(f"status must be {', '.join(GAP_STATUSES)}; not '{wrong[0][:40]}'", code="value")
    asked = CareGapsRequest(start, end, statuses, period=(values["periodStart"][0], values["periodEnd"][0]))
    if "subject" in values:
        if "practitioner" in values or "organization" in values:
            raise BadRequest("give subject, or practitioner and/or organization, not both", code="value")
        value = values["subject"][0]
        if value.startswith("Group/"):
            raise BadRequest("subject: Group is not supported; ask for one Patient, or by practitioner or "
                             "organization", code="not-supported")
        asked.subject = _reference("subject", value, ("Patient",)).partition("/")[2]
    if "practitioner" in values:
        asked.practitioner = _reference("practitioner", values["practitioner"][0], ("Practitioner", "PractitionerRole"))
    if "organization" in values:
        asked.organization = _reference("organization", values["organization"][0], ("Organization",))
    if asked.subject is None and asked.practitioner is None and asked.organization is None:
        raise BadRequest("$care-gaps needs subject, practitioner or organization", code="required")
    return asked


async def _search(repository: Repository, context: RequestContext, rtype: str, params: list[tuple[str, str]],
                  limit: int) -> list[StoredResource]:
    engine = repository.search_engine
    found: list[StoredResource] = []
    cursor: str | None = None
    while len(found) < limit:
        query = engine.parse(rtype, [*params, ("_count", str(min(200, limit))),
                                     *([("_cursor", cursor)] if cursor else [])])
        page = await repository.search(context, query, with_total=False)
        found.extend(page.entries)
        cursor = page.next_cursor
        if not cursor:
            break
    return found[:limit]


async def _patients(repository: Repository, context: RequestContext, asked: CareGapsRequest) -> list[str]:
    if asked.subject is not None:
        await repository.read(context, "Patient", asked.subject)  # 404, 410 or 403 first
        return [asked.subject]
    params: list[tuple[str, str]] = []
    if asked.practitioner:
        params.append(("general-practitioner", asked.practitioner))
    if asked.organization:
        params.append(("organization", asked.organization))
    return [p.id for p in await _search(repository, context, "Patient", params, MAX_PATIENTS)]


def _report(patient: str, gaps: list[tuple[Doc, Gap]], asked: CareGapsRequest, at: datetime) -> Doc:
    composition: Doc = {
        "resourceType": "Composition",
        "status": "final",
        "type": {"coding": [GAPS_REPORT]},
        "subject": {"reference": f"Patient/{patient}"},
        "date": instant(at),
        "author": [{"reference": asked.author} if asked.author else {"display": "fhir-server care gaps"}],
        "title": "Care gaps report",
        "event": [{"period": {"start": asked.period[0], "end": asked.period[1]}}],
    }
    sections = [{"title": gap.description, "focus": {"reference": gap.plan},
                 "entry": [{"reference": fullurl(gap)}]} for _, gap in gaps]
    if sections:
        composition["section"] = sections
    return {
        "resourceType": "Bundle",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "document",
        "timestamp": instant(at),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": composition},
                  *({"fullUrl": fullurl(gap), "resource": detected_issue(plan, gap)} for plan, gap in gaps)],
    }


async def care_gaps(repository: Repository, context: RequestContext, asked: CareGapsRequest) -> Doc:
    at = now()
    returns: list[Doc] = []
    for patient in await _patients(repository, context, asked):
        found: list[tuple[Doc, Gap]] = []
        for stored in await _search(repository, context, "CarePlan",
                                    [("subject", f"Patient/{patient}")], MAX_PLANS):
            plan = stored.resource
            evidence = await gather_evidence(repository, context, plan)
            found.extend((plan, gap) for gap in assess(plan, evidence, at, asked.period_end)
                         if gap.status in asked.statuses
                         and asked.period_start <= gap.occurrence.due < asked.period_end)
        if found or asked.subject is not None:
            returns.append({"name": "return", "resource": _report(patient, found, asked, at)})
    parameters: Doc = {"resourceType": "Parameters"}
    if returns:
        parameters["parameter"] = returns
    return parameters
