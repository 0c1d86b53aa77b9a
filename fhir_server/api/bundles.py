"""Bundles the server answers with: searchset and history.

Entries embed the stored JSON bytes as they are (orjson.Fragment) unless `_summary` or
`_elements` reshapes them, so a page of 50 resources costs no decode/encode of their content.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request

from fhir_server.api.responses import shaped
from fhir_server.elements import StructureInfo, apply_elements, apply_summary
from fhir_server.errors import Issue, operation_outcome
from fhir_server.storage.documents import StoredResource, format_instant, now

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


def _content(request: Request, stored: StoredResource, info: StructureInfo) -> Any:
    subset = shaped(request, stored, info)
    if subset is not None:
        return subset
    assert stored.raw is not None
    return orjson.Fragment(stored.raw)


def page_url(base: str, params: list[tuple[str, str]], cursor: str | None = None) -> str:
    items = [(k, v) for k, v in params if k != "_cursor"]
    if cursor:
        items.append(("_cursor", cursor))
    return f"{base}?{urlencode(items)}" if items else base


def bundle(bundle_type: str, entries: list[Any], links: list[dict[str, str]], total: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now())},
        "type": bundle_type,
    }
    if total is not None:
        out["total"] = total
    if links:
        out["link"] = links
    if entries:
        out["entry"] = entries
    return out


def searchset(
    info: StructureInfo,
    base_url: str,
    links: dict[str, str],
    matches: list[StoredResource],
    total: int | None,
    warnings: list[Issue],
    includes: list[StoredResource] | None = None,
    *,
    summary: str | None = None,
    elements: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A searchset Bundle: matches, then included resources (search.mode=include), then an
    OperationOutcome (search.mode=outcome) with the warnings, e.g. ignored parameters."""
    entries: list[Any] = []
    if summary != "count":
        for stored, mode in [*((m, "match") for m in matches),
                             *((i, "include") for i in includes or ())]:
            entries.append({
                "fullUrl": f"{base_url}/{stored.resource_type}/{stored.id}",
                "resource": _searched(stored, info, summary, elements),
                "search": {"mode": mode},
            })
    if warnings:
        entries.append({"resource": operation_outcome(warnings), "search": {"mode": "outcome"}})
    relations = ("self", "first", "previous", "next") if summary != "count" else ("self",)
    out_links = [{"relation": r, "url": links[r]} for r in relations if r in links]
    return bundle("searchset", entries, out_links, total)


def _searched(
    stored: StoredResource, info: StructureInfo, summary: str | None, elements: tuple[str, ...]
) -> Any:
    if summary not in (None, "false"):
        return apply_summary(stored.resource, summary, info)
    if elements:
        return apply_elements(stored.resource, list(elements), info)
    assert stored.raw is not None
    return orjson.Fragment(stored.raw)


def history(
    request: Request,
    info: StructureInfo,
    base_url: str,
    self_url: str,
    next_url: str | None,
    versions: list[StoredResource],
    total: int | None = None,
) -> dict[str, Any]:
    entries: list[Any] = []
    for stored in versions:
        url = stored.resource_type if stored.method == "POST" else f"{stored.resource_type}/{stored.id}"
        entry: dict[str, Any] = {"fullUrl": f"{base_url}/{stored.resource_type}/{stored.id}"}
        if not stored.deleted:
            entry["resource"] = _content(request, stored, info)
        entry["request"] = {"method": stored.method or "PUT", "url": url}
        entry["response"] = {
            "status": _STATUS.get(stored.method, "200 OK"),
            "etag": stored.etag,
            "lastModified": format_instant(stored.last_updated),
        }
        entries.append(entry)
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return bundle("history", entries, links, total)
