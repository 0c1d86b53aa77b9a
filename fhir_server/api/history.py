"""The history interaction: instance, type and system level."""

from __future__ import annotations

from typing import Any

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

# What history understands (history.html, plus _offset, _summary, _elements); R4's history
# Bundle has no place for a warning, so anything else is refused rather than ignored.
HISTORY_PARAMS = frozenset({"_count", "_since", "_at", "_offset", "_sort", "_cursor", "_summary",
                            "_elements", "_format", "_pretty"})
# _offset skips versions the database still reads: beyond this, page with the next link.
MAX_OFFSET = 10_000


def _whole_number(params: Any, name: str) -> int | None:
    if name not in params:
        return None
    raw = params[name]
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a whole number, not '{raw[:40]}'", code="value")
    return int(raw)


def _query(request: Request, resource_type: str | None, resource_id: str | None) -> HistoryQuery:
    settings = services(request).settings
    params = request.query_params
    unknown = sorted({name for name in params if name not in HISTORY_PARAMS})
    if unknown:
        raise BadRequest(
            f"history does not support the parameter(s) {', '.join(u[:40] for u in unknown[:5])}; "
            f"it takes {', '.join(sorted(HISTORY_PARAMS - {'_cursor'}))}", code="not-supported",
        )
    if params.get("_sort", "-_lastUpdated") != "-_lastUpdated":
        raise BadRequest("history is sorted newest first only (_sort=-_lastUpdated)",
                         code="not-supported")
    query = HistoryQuery(resource_type, resource_id, count=settings.default_page_size)
    count = _whole_number(params, "_count")
    if count is not None:
        query.count = min(count, settings.max_page_size)
    # _count=0 is _summary=count here as in search: the number of versions, no entries.
    query.total_only = count == 0 or params.get("_summary") == "count"
    offset = _whole_number(params, "_offset")
    if offset is not None:
        if offset > MAX_OFFSET:
            raise BadRequest(f"_offset is limited to {MAX_OFFSET}: follow the Bundle's next link "
                             "to page further", code="too-costly")
        query.offset = offset
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
    # The cursor already stands past the skipped versions: the next page drops _offset.
    next_params = [(k, v) for k, v in params if k != "_offset"]
    next_url = bundles.page_url(base, next_params, page.next_cursor) if page.next_cursor else None
    body = bundles.history(
        request, svc.structure, svc.settings.base_url, bundles.page_url(base, params),
        next_url, page.entries, page.total,
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
