"""GET [base]/Patient/{id}/$everything: the patient, every stored resource in their
compartment, and the directory resources those reference (Practitioner, Organization, ...).

It is a search across types (keyset-paged like any search, `_count`, `_since`, `_type`), run
through the repository's read pipeline: every query carries the access filter (SMART,
Consent) and every resource passes `release`. Directory resources come as `include` entries
of the page that references them. AuditEvents and Provenance (one per access and change: they
grow without bound, and name other people) are left out, unless a caller holding an audit
scope names them in `_type`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.access.decision import AUDIT_RECORDS, holds_audit_scope
from fhir_server.api import bundles
from fhir_server.api.body import check_id
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.batch.references import references
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest
from fhir_server.resource_types import DIRECTORY, STORED, STORED_TYPES
from fhir_server.search.query import Clause, SearchQuery
from fhir_server.storage.documents import StoredResource


def _directory_ids(entries: list[StoredResource]) -> dict[str, list[str]]:
    """Directory resources referenced by the page, by type (relative references only)."""
    present = {(e.resource_type, e.id) for e in entries}
    wanted: dict[str, list[str]] = {}
    for entry in entries:
        for reference in references(entry.resource):
            rtype, _, rid = reference.partition("/")
            if rtype in DIRECTORY and rid and "/" not in rid and (rtype, rid) not in present:
                wanted.setdefault(rtype, [])
                if rid not in wanted[rtype]:
                    wanted[rtype].append(rid)
    return wanted


async def everything(request: Request) -> Response:
    patient_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, "search-system", "Patient", patient_id)
    context.attributes["operation"] = "everything"
    svc = services(request)
    await svc.repository.read(context, "Patient", patient_id)  # 404, 410 or 403 first
    params = request.query_params
    count = svc.settings.default_page_size
    if "_count" in params:
        if not params["_count"].isdigit():
            raise BadRequest("_count must be a whole number", code="value")
        count = min(int(params["_count"]), svc.settings.max_page_size)
    clauses = [Clause({"compartments.Patient": patient_id})]
    if "_since" in params:
        try:
            clauses.append(Clause({"ts": {"$gte": parse_instant(params["_since"])}}))
        except DateFormatError as exc:
            raise BadRequest(str(exc), code="value") from None
    types = [t for t in STORED_TYPES if t == "Patient" or svc.search.compartment_param("Patient", t)]
    if "_type" in params:
        asked = [t.strip() for t in params["_type"].split(",") if t.strip()]
        unknown = [t for t in asked if t not in STORED]
        if unknown:
            raise BadRequest(f"_type names types this server does not store: {', '.join(unknown)[:200]}")
        principal = context.principal
        types = [t for t in types if t in asked and (
            t not in AUDIT_RECORDS or principal is None or principal.kind != "token"
            or holds_audit_scope(principal, t))]
    else:
        types = [t for t in types if t not in AUDIT_RECORDS]
    queries = [SearchQuery(t, clauses=list(clauses), count=count, cursor=params.get("_cursor"))
               for t in types]
    if not queries:
        page_entries: list[StoredResource] = []
        next_cursor = None
    else:
        page = await svc.repository.search_types(context, queries)
        page_entries, next_cursor = page.entries, page.next_cursor
    included: list[StoredResource] = []
    for rtype, ids in _directory_ids(page_entries).items():
        included.extend(await svc.repository.read_many(context, rtype, ids))
    base = f"{svc.settings.base_url}/Patient/{patient_id}/$everything"
    every = list(params.multi_items())
    shown = [(k, v) for k, v in every if k != "_cursor"]
    links = {"self": bundles.page_url(base, every), "first": bundles.page_url(base, shown)}
    if next_cursor:
        links["next"] = bundles.page_url(base, shown, next_cursor)
    body = bundles.searchset(svc.structure, svc.settings.base_url, links, page_entries, None, [], included)
    return json_response(body, fmt)
