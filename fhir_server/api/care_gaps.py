"""GET|POST [base]/Measure/$care-gaps: parameters from the query or a Parameters body, the
operation (`fhir_server.operations.care_gaps`), a Parameters answer. And GET
[base]/OperationDefinition/{id} for the operations this server defines (profiles/)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.body import check_id, parameter_list, parse_json, read_body
from fhir_server.api.context import request_context, services
from fhir_server.api.negotiation import require_fhir, require_json_body, response_format
from fhir_server.api.responses import json_response
from fhir_server.errors import BadRequest, NotFound
from fhir_server.operations.care_gaps import care_gaps, parse_request


def _body_pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, dict) or value.get("resourceType") != "Parameters":
        raise BadRequest("POST $care-gaps takes a Parameters resource")
    pairs: list[tuple[str, str]] = []
    for parameter in parameter_list(value):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if not isinstance(name, str):
            raise BadRequest("each Parameters.parameter needs a name")
        values = [v for k, v in parameter.items() if k.startswith("value")]
        if len(values) != 1 or not isinstance(values[0], str):
            raise BadRequest(f"parameter '{name[:60]}' needs one value (valueDate, valueString or valueCode)",
                             code="value")
        pairs.append((name, values[0]))
    return pairs


async def measure_care_gaps(request: Request) -> Response:
    fmt = response_format(request)
    require_fhir(fmt)
    context = await request_context(request)
    svc = services(request)
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        require_json_body(request)
        pairs += _body_pairs(parse_json(await read_body(request, svc.settings.max_body_bytes),
                                        svc.settings.max_json_depth))
    asked = parse_request(pairs)
    asked.author = svc.settings.workflows.device or None
    return json_response(await care_gaps(svc.repository, context, asked), fmt)


async def operation_definition(request: Request) -> Response:
    """An OperationDefinition this server publishes (profiles/OperationDefinition-<id>.json)."""
    resource_id = check_id(request.path_params["id"])
    fmt = response_format(request)
    require_fhir(fmt)
    await request_context(request, resource_type="OperationDefinition", resource_id=resource_id)
    path = services(request).settings.profiles_dir / f"OperationDefinition-{resource_id}.json"
    try:
        definition = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise NotFound(f"OperationDefinition/{resource_id} is not known") from None
    return json_response(definition, fmt)
