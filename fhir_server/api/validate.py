"""$validate: validates a resource and answers an OperationOutcome; stores nothing."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.body import check_id, parameter_list, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, require_json_body, response_format
from fhir_server.api.resources import check_type
from fhir_server.api.responses import json_response
from fhir_server.errors import BadRequest, Issue, operation_outcome


def _unwrap(value: dict[str, Any]) -> dict[str, Any]:
    """$validate takes the resource itself or Parameters with a `resource` parameter."""
    if value.get("resourceType") != "Parameters":
        return value
    for parameter in parameter_list(value):
        if isinstance(parameter, dict) and parameter.get("name") == "resource":
            resource = parameter.get("resource")
            if isinstance(resource, dict):
                return resource
    raise BadRequest("Parameters for $validate need a 'resource' parameter")


async def validate(request: Request) -> Response:
    resource_type = check_type(request.path_params["type"])
    if "id" in request.path_params:
        check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    await request_context(request, resource_type=resource_type)
    svc = services(request)
    require_json_body(request)
    body = await read_body(request, svc.settings.max_body_bytes)
    value = parse_json(body, svc.settings.max_json_depth)
    if not isinstance(value, dict):
        raise BadRequest("$validate takes a resource (a JSON object)")
    resource = _unwrap(value)
    if resource.get("resourceType") != resource_type:
        raise BadRequest(f"$validate on {resource_type} needs a {resource_type} resource")
    result = svc.validator.validate(resource, resource_type=resource_type)
    issues: list[Issue] = list(result.issues)
    if not any(i.is_error for i in issues):
        issues.insert(0, Issue("information", "informational", "Validation successful"))
    # $validate answers 200 with the outcome whether or not the resource is valid.
    return json_response(operation_outcome(issues), fmt, 200)
