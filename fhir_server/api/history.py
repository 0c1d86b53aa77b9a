"""The history interaction: instance, type and system level."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import bundles
from fhir_server.api.body import check_id
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.resources import check_type
from fhir_server.api.responses import json_response
from fhir_server.datetimes import DateFormatError, parse_instant, parse_range
from fhir_server.errors import BadRequest
from fhir_server.storage.history import HistoryQuery, history


def _query(request: Request, resource_type: str | None, resource_id: str | None) -> HistoryQuery:
    settings = services(request).settings
    params = request.query_params
    query = HistoryQuery(resource_type, resource_id, count=settings.default_page_size)
    if "_count" in params:
        raw = params["_count"]
        if not raw.isdigit():
            raise BadRequest(f"_count must be a whole number, not '{raw[:40]}'", code="value")
        query.count = min(int(raw), settings.max_page_size)
    try:
        if "_since" in params:
            query.since = parse_instant(params["_since"])
        if "_at" in params:
            query.at = parse_range(params["_at"])
    except DateFormatError as exc:
        raise BadRequest(str(exc), code="value") from None
    query.cursor = params.get("_cursor")
    return query


async def _answer(request: Request, query: HistoryQuery, path: str) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type=query.resource_type,
                                    resource_id=query.resource_id)
    svc = services(request)
    page = await history(svc.repository, context, query)
    base = f"{svc.settings.base_url}/{path}".rstrip("/")
    params = list(request.query_params.multi_items())
    next_url = bundles.page_url(base, params, page.next_cursor) if page.next_cursor else None
    body = bundles.history(
        request, svc.structure, svc.settings.base_url, bundles.page_url(base, params),
        next_url, page.entries,
    )
    return json_response(body, fmt)


async def instance_history(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    query = _query(request, resource_type, resource_id)
    return await _answer(request, query, f"{resource_type}/{resource_id}/_history")


async def type_history(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    return await _answer(request, _query(request, resource_type, None), f"{resource_type}/_history")


async def system_history(request: Request) -> Response:
    return await _answer(request, _query(request, None, None), "_history")
