"""SMART Scheduling Links: `GET [base]/$bulk-publish` answers the manifest, whose `output`
lists one NDJSON file per type (Location, Schedule, Slot), each served at
`[base]/$bulk-publish/<Type>.ndjson`. `_since` (an instant) narrows each file to resources
changed since then and is carried into the file URLs. Every Slot carries the
`booking-deep-link` extension: the booking page for that Slot (`scheduling.bookingLink` in the
workflow definitions, a template with `{slot}`: the Slot's id, and `{base}`).

The files are searches of the repository's read pipeline as the caller, paged on the
server: the access decision applies to every line (a caller sees what it may read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fhir_server import fhirjson
from fhir_server.context import RequestContext
from fhir_server.search import SearchEngine
from fhir_server.storage.documents import format_instant
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]
PUBLISHED = ("Location", "Schedule", "Slot")
DEEP_LINK = "http://fhir-registry.smarthealthit.org/StructureDefinition/booking-deep-link"
DEFAULT_LINK = "{base}/Slot/{slot}"
PAGE = 1000


def manifest(base_url: str, request_url: str, transaction_time: datetime, since: str | None) -> Doc:
    suffix = f"?_since={quote(since)}" if since else ""
    return {
        "transactionTime": format_instant(transaction_time),
        "request": request_url,
        "output": [{"type": t, "url": f"{base_url}/$bulk-publish/{t}.ndjson{suffix}"} for t in PUBLISHED],
        "error": [],
    }


def with_deep_link(slot: Doc, template: str, base_url: str) -> Doc:
    link = template.replace("{base}", base_url).replace("{slot}", quote(str(slot.get("id", ""))))
    kept = [e for e in slot.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == DEEP_LINK)]
    return {**slot, "extension": [*kept, {"url": DEEP_LINK, "valueUrl": link}]}


async def ndjson(repository: Repository, search: SearchEngine, context: RequestContext, resource_type: str,
                 since: str | None, link_template: str, base_url: str) -> AsyncIterator[bytes]:
    """The file of one published type, one resource per line."""
    params = [("_count", str(PAGE)), ("_sort", "_id")]
    if since:
        params.append(("_lastUpdated", f"ge{since}"))
    query = search.parse(resource_type, params, strict=True)
    query.total = "none"
    while True:
        page = await repository.search(context, query, with_total=False)
        lines = []
        for entry in page.entries:
            resource = entry.resource
            if resource_type == "Slot":
                resource = with_deep_link(resource, link_template, base_url)
            lines.append(fhirjson.dumps(resource))
        if lines:
            yield b"\n".join(lines) + b"\n"
        if not page.next_cursor:
            return
        query.cursor = page.next_cursor
