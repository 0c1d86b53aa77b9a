"""The virtual visit over HTTP: `POST [base]/Appointment/{id}/$join` (the operation is
`fhir_server.operations.join`), and the built-in rooms' call page, its files and its
signaling websocket (`telehealth`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from fhir_server.api.body import check_id, parameter_list, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.errors import BadRequest, NotFound
from fhir_server.operations.join import Join, answer
from telehealth import page
from telehealth.service import Telehealth


def _telehealth(request: Request) -> Telehealth:
    telehealth = services(request).telehealth
    if telehealth is None:
        raise NotFound("virtual visits are not served here")
    return telehealth


async def _asked_participant(request: Request) -> str | None:
    """The `participant` input (valueReference), if any."""
    body = await read_body(request, services(request).settings.max_body_bytes)
    if not body.strip():
        return None
    value = parse_json(body, services(request).settings.max_json_depth)
    if not isinstance(value, dict) or value.get("resourceType") != "Parameters":
        raise BadRequest("$join takes a Parameters resource (or no body)")
    asked = None
    for p in parameter_list(value):
        if not isinstance(p, dict) or p.get("name") != "participant":
            continue
        value = p.get("valueReference")
        reference = value.get("reference") if isinstance(value, dict) else None
        if not isinstance(reference, str) or reference.count("/") != 1:
            raise BadRequest("participant must be a valueReference to Type/id", code="value")
        asked = reference
    return asked


async def appointment_join(request: Request) -> Response:
    appointment_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Appointment", resource_id=appointment_id)
    svc = services(request)
    join = Join(svc.repository, svc.search, _telehealth(request))
    joined = await join(context, appointment_id, await _asked_participant(request))
    # A join token is a key: never kept by a cache.
    return json_response(answer(joined), fmt, headers={"Cache-Control": "no-store"})


async def call_page(request: Request) -> Response:
    """GET [base]/$visit/{room}: the call page (the same for every room; the token in the
    fragment picks the room's participant)."""
    check_id(request.path_params["room"])
    if _telehealth(request).provider.name != "builtin":
        raise NotFound("the built-in video rooms are not in use here")
    return Response(page.page(), media_type="text/html; charset=utf-8", headers=page.HEADERS)


async def call_asset(request: Request) -> Response:
    found = page.asset(request.path_params["name"])
    if found is None:
        raise NotFound("no such file")
    body, media_type = found
    return Response(body, media_type=media_type, headers=page.HEADERS)


async def websocket(socket: WebSocket) -> None:
    """`[base]/$visit-ws`: signaling for the built-in rooms, authenticated by the join token
    (telehealth.signaling)."""
    telehealth: Telehealth | None = socket.app.state.services.telehealth
    if telehealth is None or telehealth.provider.name != "builtin":
        await socket.close(4404)
        return
    await telehealth.rooms.serve(socket)
