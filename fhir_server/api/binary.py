"""Binary: raw content in and out with its own Content-Type (FHIR R4 binary.html#rest)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.negotiation import _JSON_NAMES, _XML_NAMES, FORM, JSON_PATCH, body_media_type
from fhir_server.api.responses import version_headers
from fhir_server.errors import InternalError
from fhir_server.storage.documents import StoredResource


def is_raw_upload(request: Request) -> bool:
    """A Binary body is raw content unless it is sent as a FHIR (JSON) resource."""
    media = body_media_type(request)
    return media is not None and media not in _JSON_NAMES and media not in _XML_NAMES and media not in (
        JSON_PATCH, FORM,
    )


def resource_from_raw(request: Request, body: bytes, resource_id: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Binary"}
    if resource_id:
        resource["id"] = resource_id
    resource["contentType"] = request.headers.get("content-type", "application/octet-stream")
    security_context = request.headers.get("x-security-context")
    if security_context:
        resource["securityContext"] = {"reference": security_context}
    if body:
        resource["data"] = base64.b64encode(body).decode("ascii")
    return resource


def raw_response(stored: StoredResource, status: int = 200) -> Response:
    resource = stored.resource
    try:
        content = base64.b64decode(resource.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        raise InternalError(f"Binary/{stored.id} holds data that is not base64") from None
    headers = version_headers(stored)
    context = resource.get("securityContext", {}).get("reference")
    if context:
        headers["X-Security-Context"] = context
    return Response(content, status_code=status, media_type=resource.get("contentType"), headers=headers)
