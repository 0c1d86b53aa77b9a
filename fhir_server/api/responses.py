"""Responses that carry resources: headers (ETag, Last-Modified, Location), Prefer, _pretty,
`_summary` / `_elements`, and conditional reads (304)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server import fhirjson
from fhir_server.api.negotiation import Format
from fhir_server.context import RequestContext
from fhir_server.elements import StructureInfo, apply_elements, apply_summary, check_summary
from fhir_server.errors import BadRequest, Issue, operation_outcome
from fhir_server.storage.documents import StoredResource, http_date


def dumps(value: Any, fmt: Format) -> bytes:
    return fhirjson.dumps(value, option=orjson.OPT_INDENT_2 if fmt.pretty else 0)


def json_response(value: Any, fmt: Format, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(value, fmt), status_code=status, media_type=fmt.content_type, headers=headers)


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated)}


def shaped(request: Request, stored: StoredResource, info: StructureInfo) -> dict[str, Any] | None:
    """The resource after `_summary`/`_elements`, or None when neither was asked for."""
    params = request.query_params
    summary = check_summary(params.get("_summary"))
    elements = params.get("_elements")
    if summary not in (None, "false"):
        if summary == "count":
            raise BadRequest("_summary=count applies to searches only", code="value")
        return apply_summary(stored.resource, summary, info)
    if elements:
        return apply_elements(stored.resource, elements.split(","), info)
    return None


def resource_response(
    request: Request, stored: StoredResource, fmt: Format, info: StructureInfo,
    status: int = 200, headers: dict[str, str] | None = None,
) -> Response:
    all_headers = {**version_headers(stored), **(headers or {})}
    subset = shaped(request, stored, info)
    if subset is not None:
        body = dumps(subset, fmt)
    elif fmt.pretty:
        body = dumps(stored.resource, fmt)
    else:
        assert stored.raw is not None
        body = stored.raw  # as stored: no decode/encode on the hot read path
    return Response(body, status_code=status, media_type=fmt.content_type, headers=all_headers)


def not_modified(request: Request, stored: StoredResource) -> bool:
    """If-None-Match / If-Modified-Since on a read: True when the client's copy is current."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip() for t in if_none_match.split(",")}
        return "*" in tags or stored.etag in tags or f'"{stored.version_id}"' in tags
    if_modified_since = request.headers.get("if-modified-since")
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        # HTTP dates have whole seconds: compare at that precision.
        last = stored.last_updated.astimezone(UTC).replace(microsecond=0)
        return bool(last <= since)
    return False


def write_response(
    request: Request,
    context: RequestContext,
    stored: StoredResource,
    fmt: Format,
    info: StructureInfo,
    *,
    status: int,
    location: bool,
    message: str,
    warnings: list[Issue] | None = None,
) -> Response:
    """Answer to create/update/patch: honours Prefer: return=minimal|representation|OperationOutcome."""
    headers = version_headers(stored)
    if location:
        headers["Location"] = f"{context.base_url}/{stored.location}"
    if context.prefer_return == "minimal":
        return Response(b"", status_code=status, headers=headers)
    if context.prefer_return == "OperationOutcome":
        issues = [Issue("information", "informational", message), *(warnings or [])]
        return json_response(operation_outcome(issues), fmt, status, headers)
    return resource_response(request, stored, fmt, info, status, headers)


def parse_if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit() or len(value) > 18:
        raise BadRequest(f"If-Match must be a version ETag like W/\"3\", not {raw[:40]!r}")
    return int(value)


def now_http() -> str:
    return http_date(datetime.now(UTC))
