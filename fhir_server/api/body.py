"""Reading and parsing request bodies safely: size limit, JSON, depth, resource shape."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from fhir_server import fhirjson
from fhir_server.errors import BadRequest, NotFound, NotSupported, PayloadTooLarge
from fhir_server.resource_types import STORED, is_valid_id


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_depth(value: Any, max_depth: int) -> None:
    # Iterative: a recursive walk is exactly what a hostile document would overflow.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"JSON nesting deeper than {max_depth} levels is not accepted")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))


def parse_json(body: bytes, max_depth: int) -> Any:
    if not body.strip():
        raise BadRequest("The request body is empty")
    try:
        # Decimals stay exact (12.50 is not 12.5): fhir_server.fhirjson.
        value = fhirjson.loads(body)
    except fhirjson.DecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {str(exc)[:200]}") from None
    _check_depth(value, max_depth)
    return value


def parse_resource(body: bytes, max_depth: int, *, expected_type: str | None = None) -> dict[str, Any]:
    """Parses a resource body and checks its resourceType (and that we store that type)."""
    value = parse_json(body, max_depth)
    if not isinstance(value, dict):
        raise BadRequest("The request body is not a JSON object (a FHIR resource)")
    resource_type = value.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("The resource has no resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise BadRequest(
            f"resourceType '{resource_type[:64]}' does not match the URL's type '{expected_type}'"
        )
    if resource_type not in STORED:
        raise NotSupported(f"Resource type '{resource_type[:64]}' is not supported by this server")
    return value


def parameter_list(parameters: dict[str, Any]) -> list[Any]:
    """Parameters.parameter of an operation's input: absent is none, not an array is a 400."""
    value = parameters.get("parameter", [])
    if not isinstance(value, list):
        raise BadRequest("Parameters.parameter must be an array")
    return value


def check_id(resource_id: str) -> str:
    if not is_valid_id(resource_id):
        raise BadRequest(
            f"'{resource_id[:80]}' is not a valid FHIR id ([A-Za-z0-9-.]{{1,64}})", code="value"
        )
    return resource_id


def parse_version(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise NotFound(f"Version '{value[:40]}' is not known")
    return int(value)
