"""The search interaction: GET [base]/Type?... and POST [base]/Type/_search."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import bundles
from fhir_server.api.body import read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import FORM, body_media_type, require_fhir, response_format
from fhir_server.api.resources import check_type
from fhir_server.api.responses import json_response
from fhir_server.errors import UnsupportedMediaType


async def _search(request: Request, resource_type: str, params: list[tuple[str, str]]) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, "search-type", resource_type)
    svc = services(request)
    query = svc.search.parse(resource_type, params, strict=context.prefer_handling == "strict")
    page = await svc.repository.search(context, query)
    base = f"{svc.settings.base_url}/{resource_type}"
    shown = [(k, v) for k, v in params if k != "_cursor"]
    next_url = bundles.page_url(base, shown, page.next_cursor) if page.next_cursor else None
    body = bundles.searchset(
        request, svc.structure, svc.settings.base_url, bundles.page_url(base, shown), next_url,
        page.entries, page.total, query.warnings,
    )
    return json_response(body, fmt)


async def search_type(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    return await _search(request, resource_type, list(request.query_params.multi_items()))


async def search_type_post(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    media = body_media_type(request)
    if media not in (None, FORM):
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
    body = await read_body(request, services(request).settings.max_body_bytes)
    params = list(request.query_params.multi_items())
    params += parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return await _search(request, resource_type, params)
