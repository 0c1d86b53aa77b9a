"""`Appointment/$find` (IHE ITI-115 Find Potential Appointments): proposed Appointments built
from free Slots, none of them stored.

Parameters: `start` and `end` (required: the Slots' start lies in [start, end)), and optional
`practitioner`, `specialty`, `service-type`, `location`, `patient`, `visit-type` (`virtual`:
the Schedule names a Location whose physicalType is `vi`; `in-person`: it names none),
`_count` (proposals, default 20, at most 100). `practitioner` follows FHIR search: a comma
list is any of them; the parameter repeated asks for all of them together, one Appointment
over one Slot of each at the same start and end.

Schedules and Slots are found by the repository's read pipeline as the caller (the access
decision applies to them as to any search). Free Slots are read in *windows* of `start`, in
order, each window one bounded query on a compound index (the embedded database materializes
every match of an index lookup before it sorts and cuts to a page, so an open range over a
month would cost the month): per Schedule (`schedule` equal, `status` free, `start` in the
window) when a few Schedules are asked, else one query over every Schedule's free Slots in the
window, kept to the asked Schedules here. The first window is sized to hold about a page,
each later one GROWTH times wider, until enough Slots are found or `end` is reached. The answer
is a searchset Bundle of Appointments with `status` proposed, each naming its Slots, to hand to `$hold` or `$book` as
`appointment-resource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest
from fhir_server.search import SearchEngine
from fhir_server.storage.documents import StoredResource, format_instant
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]
DEFAULT_COUNT = 20
MAX_COUNT = 100
# Slots looked at per practitioner when several must be found free together.
MAX_TOGETHER = 2000
# Up to this many Schedules, one query per Schedule per window (each on its own index range);
# more, one query per window over all free Slots (a `$in` of many values bounds no lookup).
PER_SCHEDULE = 8
# The first window: a day for one Schedule (a working day of 15-minute Slots is ~32), shared
# out among the Schedules asked; later windows grow (nights, weekends and busy days are empty).
FIRST_WINDOW = timedelta(days=1)
MIN_WINDOW = timedelta(minutes=30)
GROWTH = 4
MILLISECOND = timedelta(milliseconds=1)
VISIT_TYPES = ("virtual", "in-person")
PHYSICAL_TYPE = "http://terminology.hl7.org/CodeSystem/location-physical-type"
KNOWN = frozenset({"start", "end", "practitioner", "specialty", "service-type", "location", "patient",
                   "visit-type", "_count"})


@dataclass
class FindRequest:
    start: str
    end: str
    practitioners: list[list[str]] = field(default_factory=list)  # AND of ORs
    specialty: str | None = None
    service_type: str | None = None
    location: str | None = None
    patient: str | None = None
    visit_type: str | None = None
    count: int = DEFAULT_COUNT


def _reference(value: str, default_type: str) -> str:
    value = value.strip()
    if not value:
        raise BadRequest(f"an empty {default_type} reference", code="value")
    return value if "/" in value else f"{default_type}/{value}"


def parse_find(pairs: list[tuple[str, str]]) -> FindRequest:
    """The $find request from query or Parameters pairs (400 naming what is wrong)."""
    unknown = sorted({k for k, _ in pairs} - KNOWN)
    if unknown:
        raise BadRequest(f"$find does not take {', '.join(unknown)[:200]}", code="not-supported")
    one: dict[str, str] = {}
    practitioners: list[list[str]] = []
    for key, value in pairs:
        if key == "practitioner":
            practitioners.append([_reference(v, "Practitioner") for v in value.split(",")])
        elif key in one:
            raise BadRequest(f"$find takes {key} once", code="value")
        else:
            one[key] = value
    for required in ("start", "end"):
        if required not in one:
            raise BadRequest(f"$find needs {required}", code="required")
    try:
        if parse_instant(one["start"]) >= parse_instant(one["end"]):
            raise BadRequest("$find: start must come before end", code="value")
    except DateFormatError as exc:
        raise BadRequest(f"$find: {exc}", code="value") from None
    count = one.get("_count", str(DEFAULT_COUNT))
    if not count.isdigit() or int(count) < 1:
        raise BadRequest("_count must be a positive whole number", code="value")
    visit = one.get("visit-type")
    if visit is not None and visit not in VISIT_TYPES:
        raise BadRequest(f"visit-type is one of {', '.join(VISIT_TYPES)}", code="value")
    return FindRequest(
        one["start"], one["end"], practitioners, one.get("specialty"), one.get("service-type"),
        _reference(one["location"], "Location") if "location" in one else None,
        _reference(one["patient"], "Patient") if "patient" in one else None, visit,
        min(int(count), MAX_COUNT))


def _is_virtual(location: Doc) -> bool:
    codings = (location.get("physicalType") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("code") == "vi" for c in codings)


def _actors(schedule: Doc) -> list[str]:
    return [a["reference"] for a in schedule.get("actor") or []
            if isinstance(a, dict) and isinstance(a.get("reference"), str)]


class Finder:
    def __init__(self, repository: Repository, search: SearchEngine) -> None:
        self.repository = repository
        self.search = search

    async def _all(self, context: RequestContext, resource_type: str, params: list[tuple[str, str]],
                   limit: int) -> list[StoredResource]:
        query = self.search.parse(resource_type, [*params, ("_count", str(min(limit, 1000)))], strict=True)
        query.total = "none"
        found: list[StoredResource] = []
        while True:
            page = await self.repository.search(context, query, with_total=False)
            found += page.entries
            if not page.next_cursor or len(found) >= limit:
                return found[:limit]
            query.cursor = page.next_cursor

    async def _schedules(self, context: RequestContext, asked: FindRequest, group: list[str] | None) -> list[Doc]:
        params: list[tuple[str, str]] = [("active:not", "false")]
        if group:
            params.append(("actor", ",".join(group)))
        if asked.location:
            params.append(("actor", asked.location))
        if asked.specialty:
            params.append(("specialty", asked.specialty))
        if asked.service_type:
            params.append(("service-type", asked.service_type))
        schedules = [s.resource for s in await self._all(context, "Schedule", params, 1000)]
        if asked.visit_type is None:
            return schedules
        location_ids = sorted({a[9:] for s in schedules for a in _actors(s) if a.startswith("Location/")})
        virtual = {f"Location/{loc.id}" for loc in await self.repository.read_many(context, "Location", location_ids)
                   if _is_virtual(loc.resource)}
        want_virtual = asked.visit_type == "virtual"
        return [s for s in schedules if any(a in virtual for a in _actors(s)) == want_virtual]

    async def _free(self, context: RequestContext, asked: FindRequest, schedules: list[Doc],
                    limit: int) -> list[Doc]:
        """Up to `limit` free Slots of `schedules` starting in [start, end), in start order."""
        if not schedules:
            return []
        refs = [f"Schedule/{s['id']}" for s in schedules]
        low, end = parse_instant(asked.start), parse_instant(asked.end)
        width = max(MIN_WINDOW, FIRST_WINDOW / len(refs))
        found: list[Doc] = []
        while low < end and len(found) < limit:
            high = min(end, low + width)
            got = await self._window(context, refs, low, high, limit - len(found))
            found += got
            low = high
            # An empty window (a night, a weekend) grows the next one; one that held Slots sizes
            # the next from the density it showed, so a busy morning is not read whole.
            needed = limit - len(found)
            width = width * GROWTH if not got else min(width * GROWTH, max(MIN_WINDOW, width * needed / len(got)))
        return found[:limit]

    async def _window(self, context: RequestContext, refs: list[str], low: datetime, high: datetime,
                      limit: int) -> list[Doc]:
        # `sa` one millisecond before: start ≥ low on the Slot's own start (`ge` would match on
        # the end of the start's precision, a second field no index range covers).
        window = [("status", "free"), ("start", f"sa{format_instant(low - MILLISECOND)}"),
                  ("start", f"lt{format_instant(high)}"), ("_sort", "start")]
        if len(refs) <= PER_SCHEDULE:
            slots = [s.resource for ref in refs
                     for s in await self._all(context, "Slot", [("schedule", ref), *window], limit)]
        else:
            slots = await self._wanted(context, window, frozenset(refs), limit)
        slots.sort(key=lambda s: (str(s.get("start")), str(s.get("id"))))
        return slots[:limit]

    async def _wanted(self, context: RequestContext, window: list[tuple[str, str]], wanted: frozenset[str],
                      limit: int) -> list[Doc]:
        """The first `limit` free Slots of the `wanted` Schedules in the window, page by page in
        start order: the pages stop once enough are found, not at the window's end."""
        query = self.search.parse("Slot", [*window, ("_count", str(min(max(2 * limit, 50), 1000)))], strict=True)
        query.total = "none"
        slots: list[Doc] = []
        while True:
            page = await self.repository.search(context, query, with_total=False)
            slots += [s.resource for s in page.entries
                      if (s.resource.get("schedule") or {}).get("reference") in wanted]
            if not page.next_cursor or len(slots) >= limit:
                return slots
            query.cursor = page.next_cursor

    async def find(self, context: RequestContext, asked: FindRequest) -> list[Doc]:
        if asked.patient:
            kind, _, pid = asked.patient.partition("/")
            await self.repository.read(context, kind, pid)  # 404 / 403 before anything is proposed
        groups: list[list[str] | None] = list(asked.practitioners) or [None]
        per_group: list[tuple[dict[str, Doc], list[Doc]]] = []
        for group in groups:
            schedules = await self._schedules(context, asked, group)
            by_id = {s["id"]: s for s in schedules}
            limit = asked.count if len(groups) == 1 else MAX_TOGETHER
            per_group.append((by_id, await self._free(context, asked, schedules, limit)))
        proposals: list[Doc] = []
        first_schedules, first_slots = per_group[0]
        for slot in first_slots:
            chosen: list[tuple[Doc, dict[str, Doc]]] = [(slot, first_schedules)]
            for known, candidates in per_group[1:]:
                match = next((s for s in candidates if s.get("start") == slot.get("start")
                              and s.get("end") == slot.get("end")
                              and s["id"] not in {c["id"] for c, _ in chosen}), None)
                if match is None:
                    break
                chosen.append((match, known))
            else:
                proposals.append(self._proposal(asked, chosen))
                if len(proposals) >= asked.count:
                    break
        return proposals

    @staticmethod
    def _proposal(asked: FindRequest, chosen: list[tuple[Doc, dict[str, Doc]]]) -> Doc:
        actors: list[str] = []
        appointment: Doc = {"resourceType": "Appointment", "status": "proposed"}
        for slot, schedules in chosen:
            schedule_ref = (slot.get("schedule") or {}).get("reference", "")
            schedule = schedules.get(schedule_ref.rpartition("/")[2], {})
            for key in ("serviceCategory", "serviceType", "specialty"):
                if schedule.get(key) and key not in appointment:
                    appointment[key] = schedule[key]
            if slot.get("appointmentType") and "appointmentType" not in appointment:
                appointment["appointmentType"] = slot["appointmentType"]
            actors += [a for a in _actors(schedule) if a not in actors]
        first = chosen[0][0]
        appointment["start"], appointment["end"] = first["start"], first["end"]
        appointment["slot"] = [{"reference": f"Slot/{slot['id']}"} for slot, _ in chosen]
        participants = [{"actor": {"reference": a}, "required": "required", "status": "needs-action"}
                        for a in actors]
        if asked.patient:
            participants.insert(0, {"actor": {"reference": asked.patient}, "required": "required",
                                    "status": "needs-action"})
        appointment["participant"] = participants
        return appointment
