"""Subscription operations ($status, $events, $get-ws-binding-token) and the websocket channel.

Thin handlers: parse, build the context, call `subscriptions.operations`, answer.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from fhir_server.api.body import check_id, parameter_list, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest, FhirError
from fhir_server.hooks import Pointcut

log = logging.getLogger(__name__)


async def _parameters(request: Request) -> list[tuple[str, str]]:
    """Operation parameters from the query string, and from a Parameters body on POST."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]
    if request.method == "POST":
        body = await read_body(request, services(request).settings.max_body_bytes)
        if body.strip():
            value = parse_json(body, services(request).settings.max_json_depth)
            if not isinstance(value, dict) or value.get("resourceType") != "Parameters":
                raise BadRequest("the operation takes a Parameters resource")
            for p in parameter_list(value):
                if isinstance(p, dict) and isinstance(p.get("name"), str):
                    v = next((x for k, x in p.items() if k.startswith("value")), None)
                    if v is not None:
                        params.append((p["name"], str(v)))
    return params


def _number(params: list[tuple[str, str]], name: str) -> int | None:
    raw = next((v for k, v in params if k == name), None)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number", code="value") from None


def _ids(request: Request, params: list[tuple[str, str]]) -> list[str]:
    if "id" in request.path_params:
        return [check_id(request.path_params["id"])]
    return [check_id(v) for k, v in params if k == "id"]


async def status(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Subscription",
                                    resource_id=request.path_params.get("id"))
    ids = _ids(request, await _parameters(request))
    body = await services(request).subscriptions.operations.status(context, ids)
    return json_response(body, fmt)


async def events(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    sub_id = check_id(request.path_params["id"])
    context = await request_context(request, resource_type="Subscription", resource_id=sub_id)
    params = await _parameters(request)
    content = next((v for k, v in params if k == "content"), None)
    body = await services(request).subscriptions.operations.events(
        context, sub_id, _number(params, "eventsSinceNumber"), _number(params, "eventsUntilNumber"), content)
    return json_response(body, fmt)


async def ws_binding_token(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Subscription",
                                    resource_id=request.path_params.get("id"))
    ids = _ids(request, await _parameters(request))
    body = await services(request).subscriptions.operations.binding_token(context, ids)
    return json_response(body, fmt)


async def websocket(socket: WebSocket) -> None:
    """`GET [base]/$subscription-ws`: the websocket channel (see subscriptions.websocket)."""
    svc: Any = socket.app.state.services
    await socket.accept()
    context: RequestContext | None = None
    header = socket.headers.get("authorization")
    if header:
        context = RequestContext(base_url=svc.settings.base_url, interaction="read",
                                 resource_type="Subscription", method="GET", url=str(socket.url))
        context.attributes["authorization"] = header
        try:
            await svc.hooks.call(Pointcut.INCOMING_REQUEST, context=context)
        except FhirError as exc:
            log.info("websocket upgrade with a refused token: %s", exc.diagnostics)
            context = None
    await svc.subscriptions.websockets.serve(socket, context, auth_enabled=svc.auth.enabled)
