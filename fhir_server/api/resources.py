"""Instance and type interactions: read, vread, create, update, patch, delete (+ conditional).

Each handler: parse, build the context, call one repository method, shape the response.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import binary
from fhir_server.api.body import check_id, parse_json, parse_resource, parse_version, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import JSON_PATCH, Format, require_fhir, require_json_body, response_format
from fhir_server.api.responses import (
    json_response,
    not_modified,
    parse_if_match,
    resource_response,
    version_headers,
    write_response,
)
from fhir_server.errors import (
    BadRequest,
    Issue,
    MethodNotAllowed,
    NotSupported,
    UnsupportedMediaType,
    operation_outcome,
)
from fhir_server.resource_types import STORED
from fhir_server.storage.documents import StoredResource

# Literal first path segments that are not types: any other method on them is a 405.
SYSTEM_PATHS = frozenset({"metadata", "_history", "_search"})


def check_type(resource_type: str) -> str:
    if resource_type in SYSTEM_PATHS:
        raise MethodNotAllowed(f"this method is not allowed on [base]/{resource_type}")
    if resource_type not in STORED:
        raise NotSupported(f"Resource type '{resource_type[:64]}' is not supported by this server")
    return resource_type


def criteria(request: Request) -> list[tuple[str, str]]:
    """Search criteria of a conditional interaction: the query string minus result params."""
    return [(k, v) for k, v in request.query_params.multi_items() if k not in ("_format", "_pretty")]


async def _body_resource(request: Request, resource_type: str, resource_id: str | None = None) -> dict[str, Any]:
    limit = services(request).settings.max_body_bytes
    body = await read_body(request, limit)
    if resource_type == "Binary" and binary.is_raw_upload(request):
        return binary.resource_from_raw(request, body, resource_id)
    require_json_body(request)
    return parse_resource(body, services(request).settings.max_json_depth, expected_type=resource_type)


async def read(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type, resource_id=resource_id)
    svc = services(request)
    stored = await svc.repository.read(context, resource_type, resource_id)
    return _read_response(request, stored, fmt)


def _read_response(request: Request, stored: StoredResource, fmt: Format) -> Response:
    """A read or vread's answer: 304 when the client's copy is current, Binary as raw bytes
    when a non-FHIR type was asked for, else the resource (with _summary/_elements)."""
    if not_modified(request, stored):
        return Response(status_code=304, headers=version_headers(stored))
    if stored.resource_type == "Binary" and fmt.raw_accept:
        return binary.raw_response(stored)
    require_fhir(fmt)
    return resource_response(request, stored, fmt, services(request).structure)


async def vread(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    version = parse_version(request.path_params["vid"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type, resource_id=resource_id)
    svc = services(request)
    stored = await svc.repository.vread(context, resource_type, resource_id, version)
    return _read_response(request, stored, fmt)


async def create(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type)
    resource = await _body_resource(request, resource_type)
    if_none_exist = _create_condition(request)
    svc = services(request)
    outcome = await svc.repository.create(context, resource, if_none_exist=if_none_exist)
    return _written(request, context, outcome.stored, fmt, created=outcome.created,
                    changed=outcome.changed)


def _create_condition(request: Request) -> list[tuple[str, str]] | None:
    """The criteria of a conditional create: the If-None-Exist header, or the query string
    of `POST [type]?identifier=...` (how fhirpy sends it), read with the same semantics
    rather than ignored, which would create a duplicate."""
    in_query = criteria(request)
    condition = request.headers.get("if-none-exist")
    if condition is None:
        return in_query or None
    in_header = parse_qsl(condition.split("?", 1)[-1], keep_blank_values=True)
    if not in_header:
        raise BadRequest("If-None-Exist needs search criteria, e.g. identifier=sys|123")
    if in_query and sorted(in_query) != sorted(in_header):
        raise BadRequest("The query string and If-None-Exist give different criteria for this "
                         "conditional create: send one of them")
    return in_header


def _written(request: Request, context: Any, stored: StoredResource, fmt: Any, *, created: bool,
             changed: bool) -> Response:
    if created:
        message = f"Created {stored.resource_type}/{stored.id} version {stored.version_id}"
    elif changed:
        message = f"Updated {stored.resource_type}/{stored.id} to version {stored.version_id}"
    else:
        message = f"{stored.resource_type}/{stored.id} is unchanged (version {stored.version_id})"
    warnings: list[Issue] = context.attributes.get("validation_warnings", [])
    return write_response(
        request, context, stored, fmt, services(request).structure,
        status=201 if created else 200, location=True, message=message, warnings=warnings,
    )


async def update(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type, resource_id=resource_id)
    resource = await _body_resource(request, resource_type, resource_id)
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("An update must carry the resource's id in the body", code="required")
    if body_id != resource_id:
        raise BadRequest(f"The body's id '{str(body_id)[:64]}' differs from the URL's '{resource_id}'")
    if_match = parse_if_match(request)
    outcome = await services(request).repository.update(
        context, resource_type, resource_id, resource, if_match=if_match
    )
    return _written(request, context, outcome.stored, fmt, created=outcome.created,
                    changed=outcome.changed)


async def conditional_update(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type)
    resource = await _body_resource(request, resource_type)
    outcome = await services(request).repository.conditional_update(
        context, resource_type, criteria(request), resource, if_match=parse_if_match(request)
    )
    return _written(request, context, outcome.stored, fmt, created=outcome.created,
                    changed=outcome.changed)


async def patch(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type, resource_id=resource_id)
    svc = services(request)
    if require_json_body(request, allow=(JSON_PATCH,)) != JSON_PATCH:
        raise UnsupportedMediaType(
            "patch takes JSON Patch (Content-Type: application/json-patch+json); "
            "FHIRPath Patch is not supported"
        )
    operations = parse_json(await read_body(request, svc.settings.max_body_bytes),
                            svc.settings.max_json_depth)
    outcome = await svc.repository.patch(
        context, resource_type, resource_id, operations, if_match=parse_if_match(request)
    )
    return _written(request, context, outcome.stored, fmt, created=False, changed=True)


def _deleted(fmt: Any, context: Any, stored: StoredResource | None, message: str) -> Response:
    headers = version_headers(stored) if stored is not None else {}
    if context.prefer_return == "minimal":
        return Response(status_code=204, headers=headers)
    body = operation_outcome([Issue("information", "informational", message)])
    return json_response(body, fmt, 200, headers)


async def delete(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    resource_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type, resource_id=resource_id)
    stored = await services(request).repository.delete(
        context, resource_type, resource_id, if_match=parse_if_match(request)
    )
    message = (f"Deleted {resource_type}/{resource_id}" if stored
               else f"{resource_type}/{resource_id} does not exist (or no longer); nothing was deleted")
    return _deleted(fmt, context, stored, message)


async def conditional_delete(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    fmt = response_format(request)
    context = await request_context(request, resource_type=resource_type)
    stored = await services(request).repository.conditional_delete(
        context, resource_type, criteria(request)
    )
    message = (f"Deleted {resource_type}/{stored.id}" if stored
               else "No resource matched the criteria; nothing was deleted")
    return _deleted(fmt, context, stored, message)
