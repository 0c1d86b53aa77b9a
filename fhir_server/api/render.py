"""The render state operations of messaging threads (`fhir_server.operations.render`):
parse, build the context, call the operation, answer its Parameters."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.body import check_id, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.errors import BadRequest
from fhir_server.messaging import inbox
from fhir_server.operations.render import RenderState, parse_cursor_parameters


def _operation(request: Request) -> RenderState:
    svc = services(request)
    return RenderState(svc.repository, svc.database, svc.settings.base_url)


async def render_cursor(request: Request) -> Response:
    thread_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Communication", resource_id=thread_id)
    settings = services(request).settings
    asked = parse_cursor_parameters(
        parse_json(await read_body(request, settings.max_body_bytes), settings.max_json_depth))
    return json_response(await _operation(request).set_cursor(context, thread_id, asked), fmt)


async def thread_render_state(request: Request) -> Response:
    thread_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Communication", resource_id=thread_id)
    rebuild = request.query_params.get("rebuild", "false")
    if rebuild not in ("true", "false"):
        raise BadRequest("rebuild is true or false", code="value")
    return json_response(await _operation(request).state(context, thread_id, rebuild=rebuild == "true"), fmt)


async def inbox_render_state(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Communication")
    participant = request.query_params.get("participant", "")
    if participant.count("/") != 1 or not all(participant.split("/")):
        raise BadRequest("$render-state needs participant=Type/id (or the thread's id in the path)",
                         code="required")
    count = _count(request.query_params.get("_count"))
    cursor = request.query_params.get("_cursor") or None
    total = request.query_params.get("_total", "none")
    if total not in ("none", "accurate", "estimate"):
        raise BadRequest("_total is none, estimate or accurate", code="value")
    unknown = set(request.query_params) - {"participant", "_count", "_cursor", "_total", "_format", "_pretty"}
    if unknown:
        raise BadRequest(f"$render-state has no parameter {sorted(unknown)[0]!r}", code="not-supported")
    return json_response(await _operation(request).inbox(
        context, participant, count=count, cursor=cursor, total=total != "none"), fmt)


def _count(value: str | None) -> int:
    if value is None:
        return inbox.DEFAULT_COUNT
    if not value.isdigit() or not 1 <= int(value) <= inbox.MAX_COUNT:
        raise BadRequest(f"_count is a whole number from 1 to {inbox.MAX_COUNT}", code="value")
    return int(value)
