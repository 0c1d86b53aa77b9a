"""GET [base]/Patient/{id}/$everything: parse, build the context, run the operation
(`fhir_server.operations.everything`), answer a searchset Bundle."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import bundles
from fhir_server.api.body import check_id
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest
from fhir_server.operations.everything import EverythingRequest, everything


def _asked(request: Request, patient_id: str) -> EverythingRequest:
    params = request.query_params
    settings = services(request).settings
    asked = EverythingRequest(patient_id, settings.default_page_size, cursor=params.get("_cursor"))
    if "_count" in params:
        if not params["_count"].isdigit():
            raise BadRequest("_count must be a whole number", code="value")
        asked.count = min(int(params["_count"]), settings.max_page_size)
    if "_since" in params:
        try:
            asked.since = parse_instant(params["_since"])
        except DateFormatError as exc:
            raise BadRequest(str(exc), code="value") from None
    if "_type" in params:
        asked.types = [t.strip() for t in params["_type"].split(",") if t.strip()]
    return asked


async def patient_everything(request: Request) -> Response:
    patient_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Patient", resource_id=patient_id)
    svc = services(request)
    page = await everything(svc.repository, svc.search, context, _asked(request, patient_id))
    base = f"{svc.settings.base_url}/Patient/{patient_id}/$everything"
    every = list(request.query_params.multi_items())
    shown = [(k, v) for k, v in every if k != "_cursor"]
    links = {"self": bundles.page_url(base, every), "first": bundles.page_url(base, shown)}
    if page.next_cursor:
        links["next"] = bundles.page_url(base, shown, page.next_cursor)
    body = bundles.searchset(svc.structure, svc.settings.base_url, links, page.entries, None, [],
                             page.included)
    return json_response(body, fmt)
