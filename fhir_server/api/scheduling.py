"""The scheduling operations over HTTP: parse, build the context, run the operation
(`fhir_server.operations.scheduling`), answer. `$find` answers a searchset Bundle of proposed
Appointments; `$hold`, `$book`, `$cancel` and `$reschedule` a Bundle of the Appointments they
wrote (IHE ITI Scheduling answers a Bundle); `$bulk-publish` the SMART Scheduling Links
manifest and its NDJSON files."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from fhir_server.api.body import check_id, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest, Forbidden, NotFound
from fhir_server.operations.scheduling import publish
from fhir_server.operations.scheduling.booking import OVERRIDE_SCOPE, Booker
from fhir_server.operations.scheduling.find import Finder, parse_find
from fhir_server.operations.scheduling.parameters import (
    as_pairs,
    bundle_of,
    resource_parameter,
    text_parameter,
)
from fhir_server.services import Services
from fhir_server.storage.documents import now

IHE = "https://profiles.ihe.net/ITI/Scheduling/OperationDefinition/"
OURS = "http://fhir.care-coord.example/OperationDefinition/"
# The definitions of the operations (IHE's for find, hold and book; ours in profiles/).
SCHEDULING_OPERATIONS = {
    "find": f"{IHE}appointment-find",
    "hold": f"{IHE}appointment-hold",
    "book": f"{IHE}appointment-book",
    "cancel": f"{OURS}appointment-cancel",
    "reschedule": f"{OURS}appointment-reschedule",
    "bulk-publish": f"{OURS}bulk-publish",
}
WORKFLOW = "scheduling"  # its key in the workflow definitions (profiles/workflows.yaml)
DEFAULT_HOLD = timedelta(minutes=10)


def _setting(svc: Services, key: str) -> Any:
    engine = svc.workflows
    return engine.definitions.get(WORKFLOW, key) if engine is not None else None


def hold_timeout(svc: Services) -> timedelta:
    engine = svc.workflows
    found = engine.definitions.duration(WORKFLOW, "holdTimeout") if engine is not None else None
    return found or DEFAULT_HOLD


async def _body(request: Request, svc: Services) -> Any:
    raw = await read_body(request, svc.settings.max_body_bytes)
    return parse_json(raw, svc.settings.max_json_depth) if raw.strip() else None


def _override(context: RequestContext, body: Any) -> bool:
    """`override=true` books Slots that are not free: only with the dedicated scope."""
    asked = text_parameter(body, "override")
    if asked not in (None, "true", "false"):
        raise BadRequest("override is true or false", code="value")
    if asked != "true":
        return False
    principal = context.principal
    if principal is not None and principal.kind == "token" and OVERRIDE_SCOPE not in principal.scopes:
        raise Forbidden(f"booking over a Slot's status needs the {OVERRIDE_SCOPE} scope")
    return True


async def _operation(request: Request, instance: bool = False) -> tuple[RequestContext, Services, Any, str]:
    """What every booking operation starts with: FHIR JSON answered, the request's context
    (on the Appointment named in the path when `instance`), the services, the parsed body
    (None when empty) and the Appointment's id ("" for a type-level operation)."""
    require_fhir(response_format(request))
    appointment_id = check_id(request.path_params["id"]) if instance else ""
    context = await request_context(request, resource_type="Appointment", resource_id=appointment_id or None)
    svc = services(request)
    return context, svc, await _body(request, svc), appointment_id


def _booker(svc: Services) -> Booker:
    return Booker(svc.repository, svc.settings.base_url)


def _answer(request: Request, svc: Services, resources: list[dict[str, Any]]) -> Response:
    fmt = response_format(request)
    return json_response(bundle_of(svc.settings.base_url, resources), fmt)


async def find(request: Request) -> Response:
    """GET|POST [base]/Appointment/$find."""
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request, resource_type="Appointment")
    svc = services(request)
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        pairs += as_pairs(await _body(request, svc))
    proposals = await Finder(svc.repository, svc.search).find(context, parse_find(pairs))
    return json_response(bundle_of(svc.settings.base_url, proposals, "searchset"), fmt)


async def hold(request: Request) -> Response:
    """POST [base]/Appointment/$hold with `appointment-resource` (a proposed Appointment)."""
    context, svc, body, _ = await _operation(request)
    appointment = resource_parameter(body, "appointment-resource", "Appointment")
    if appointment is None:
        raise BadRequest("$hold needs appointment-resource (a proposed Appointment from $find)", code="required")
    stored = await _booker(svc).hold(context, appointment, hold_timeout(svc))
    return _answer(request, svc, [stored.resource])


async def book(request: Request) -> Response:
    """POST [base]/Appointment/$book with `appointment-resource` or `appointment-reference`."""
    context, svc, body, _ = await _operation(request)
    appointment = resource_parameter(body, "appointment-resource", "Appointment")
    reference = text_parameter(body, "appointment-reference")
    if (appointment is None) == (reference is None):
        raise BadRequest("$book needs one of appointment-resource and appointment-reference", code="required")
    stored = await _booker(svc).book(context, appointment=appointment, reference=reference,
                                     override=_override(context, body))
    return _answer(request, svc, [stored.resource])


async def cancel(request: Request) -> Response:
    """POST [base]/Appointment/{id}/$cancel (optional `reason`)."""
    context, svc, body, appointment_id = await _operation(request, instance=True)
    stored = await _booker(svc).cancel(context, appointment_id, text_parameter(body, "reason"))
    return _answer(request, svc, [stored.resource])


async def reschedule(request: Request) -> Response:
    """POST [base]/Appointment/{id}/$reschedule with `appointment-resource` (the new time)."""
    context, svc, body, appointment_id = await _operation(request, instance=True)
    replacement = resource_parameter(body, "appointment-resource", "Appointment")
    if replacement is None:
        raise BadRequest("$reschedule needs appointment-resource (a proposed Appointment from $find)",
                         code="required")
    old, new = await _booker(svc).reschedule(context, appointment_id, replacement,
                                             override=_override(context, body))
    return _answer(request, svc, [new.resource, old.resource])


def _since(request: Request) -> str | None:
    since = request.query_params.get("_since")
    if since is None:
        return None
    try:
        parse_instant(since)
    except DateFormatError as exc:
        raise BadRequest(f"_since: {exc}", code="value") from None
    return since


async def bulk_publish(request: Request) -> Response:
    """GET [base]/$bulk-publish: the SMART Scheduling Links manifest."""
    fmt = response_format(request)
    await request_context(request)
    svc = services(request)
    body = publish.manifest(svc.settings.base_url, str(request.url), now(), _since(request))
    return json_response(body, fmt)


async def bulk_publish_file(request: Request) -> Response:
    """GET [base]/$bulk-publish/{Type}.ndjson: one published type, one resource per line."""
    name = request.path_params["file"]
    resource_type = name.removesuffix(".ndjson")
    if not name.endswith(".ndjson") or resource_type not in publish.PUBLISHED:
        raise NotFound(f"$bulk-publish has no file {name[:60]}")
    context = await request_context(request, resource_type=resource_type)
    svc = services(request)
    template = _setting(svc, "bookingLink")
    lines = publish.ndjson(svc.repository, svc.search, context, resource_type, _since(request),
                           template if isinstance(template, str) else publish.DEFAULT_LINK,
                           svc.settings.base_url)
    first = await anext(lines, b"")  # errors (access, bad input) before the 200 is sent

    async def stream() -> Any:
        yield first
        async for chunk in lines:
            yield chunk

    return StreamingResponse(stream(), media_type="application/fhir+ndjson")
