"""Runs one Bundle entry as an HTTP request against this same app, in process.

Batch entries, and the reads of a transaction, go through the very routes a direct request
would (same parsing, same access decision, same errors), with the caller's credentials and
purpose of use. The reply becomes the entry's `response` (and `resource`).
"""

from __future__ import annotations

import base64
import http
import logging
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server import fhirjson
from fhir_server.batch.entries import Entry, relative_url
from fhir_server.datetimes import DateFormatError, parse_range
from fhir_server.errors import BadRequest, FhirError
from fhir_server.storage.documents import format_instant, http_date

PASSED_THROUGH = ("authorization", "x-purpose-of-use", "prefer")

# httpx logs every request at INFO: for in-process batch entries that is a line per entry,
# noise beside the server's own request log. Its warnings still show.
logging.getLogger("httpx").setLevel(logging.WARNING)


def status_line(code: int) -> str:
    try:
        return f"{code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def entry_response(code: int, headers: httpx.Headers | dict[str, str], body: bytes | None) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status_line(code)}
    get = headers.get
    if get("location"):
        response["location"] = get("location")
    if get("etag"):
        response["etag"] = get("etag")
    last_modified = get("last-modified")
    if last_modified:
        response["lastModified"] = format_instant(parsedate_to_datetime(last_modified))
    out: dict[str, Any] = {}
    resource = None
    if body and (get("content-type") or "").startswith(("application/fhir+json", "application/json")):
        resource = fhirjson.loads(body)
    if resource is not None and code >= 400:
        response["outcome"] = resource
    elif resource is not None:
        out["resource"] = resource
    out["response"] = response
    return out


def error_response(error: FhirError) -> dict[str, Any]:
    """The entry answer of an error raised before or instead of running the entry."""
    headers = {"content-type": "application/fhir+json", **{k.lower(): v for k, v in error.headers.items()}}
    return entry_response(error.status, headers, fhirjson.dumps(error.to_outcome()))


def _patch_body(entry: Entry) -> bytes:
    """A PATCH entry carries its JSON Patch as a Binary resource (FHIR R4 http.html#patch)."""
    resource = entry.resource or {}
    if resource.get("resourceType") == "Binary" and isinstance(resource.get("data"), str):
        return base64.b64decode(resource["data"])
    raise BadRequest(f"{entry.where}: a PATCH entry needs a Binary resource holding a JSON Patch")


def _http_date(instant: str | None) -> str | None:
    """Bundle.entry.request.ifModifiedSince is a FHIR instant; the header wants an HTTP date."""
    if not instant:
        return None
    try:
        return http_date(parse_range(instant)[0])
    except DateFormatError:
        return instant


def _in_scope(app: ASGIApp, extra: dict[str, Any]) -> ASGIApp:
    """`app`, with `extra` in the ASGI scope of every request: only in-process requests made
    here carry it, so no client can claim it."""
    async def scoped(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, **extra}, receive, send)

    return scoped


class Dispatcher:
    """`scope`: what every entry's request carries in its ASGI scope (a batch's commit group)."""

    def __init__(self, app: ASGIApp, request: Request, base_url: str,
                 scope: dict[str, Any] | None = None) -> None:
        self.base_url = base_url
        self.prefix = httpx.URL(base_url).path.rstrip("/")
        self.headers = {k: v for k, v in request.headers.items() if k in PASSED_THROUGH}
        self.headers["accept"] = "application/fhir+json"
        target = _in_scope(app, scope) if scope else app
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=target), base_url=base_url)

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self, entry: Entry) -> dict[str, Any]:
        try:
            return await self._run(entry)
        except FhirError as error:
            return error_response(error)

    async def _run(self, entry: Entry) -> dict[str, Any]:
        if entry.error is not None:
            raise entry.error
        headers = dict(self.headers)
        for header, value in (("if-match", entry.if_match), ("if-none-match", entry.if_none_match),
                              ("if-modified-since", _http_date(entry.if_modified_since)),
                              ("if-none-exist", entry.if_none_exist)):
            if value:
                headers[header] = value
        content: bytes | None = None
        if entry.method == "PATCH":
            content = _patch_body(entry)
            headers["content-type"] = "application/json-patch+json"
        elif entry.resource is not None:
            content = fhirjson.dumps(entry.resource)
            headers["content-type"] = "application/fhir+json"
        path = "/" + relative_url(entry.url, self.base_url, entry.where)
        request = self.client.build_request(entry.method, path, content=content, headers=headers)
        if not (request.url.path + "/").startswith(self.prefix + "/"):
            # relative_url refused every way out already; this guards the URL join itself.
            raise BadRequest(f"{entry.where}: request.url resolves outside this server's base",
                             expression=(f"{entry.where}.request.url",))
        reply = await self.client.send(request)
        return entry_response(reply.status_code, reply.headers, reply.content)
