"""The entries of a batch or transaction Bundle, parsed and checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import BadRequest, NotSupported
from fhir_server.resource_types import STORED, is_valid_id

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# FHIR's processing order for a transaction: deletes, creates, updates, reads.
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    url: str  # as given, relative to the base
    resource_type: str | None
    resource_id: str | None
    version: str | None  # _history/{vid}, for GET
    params: list[tuple[str, str]]
    full_url: str | None
    resource: dict[str, Any] | None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_none_exist: str | None = None
    # Filled while a transaction is processed.
    target_id: str | None = None
    skip_write: bool = False
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


def _relative(url: str, base_url: str) -> str:
    if url.startswith(base_url + "/"):
        return url[len(base_url) + 1:]
    return url.lstrip("/")


def parse_url(url: str, base_url: str, where: str) -> tuple[str | None, str | None, str | None,
                                                            list[tuple[str, str]]]:
    """Splits an entry's request.url into (type, id, version, params)."""
    parts = urlsplit(_relative(url, base_url))
    params = parse_qsl(parts.query, keep_blank_values=True)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return None, None, None, params
    resource_type = segments[0]
    if resource_type not in STORED and not resource_type.startswith(("_", "$", "metadata")):
        raise NotSupported(f"{where}: resource type '{resource_type[:64]}' is not supported",
                           expression=(f"{where}.request.url",))
    resource_id = segments[1] if len(segments) > 1 else None
    version = segments[3] if len(segments) > 3 and segments[2] == "_history" else None
    if resource_id is not None and not resource_id.startswith(("_", "$")) and not is_valid_id(resource_id):
        raise BadRequest(f"{where}: '{resource_id[:80]}' is not a valid id", expression=(f"{where}.request.url",))
    return resource_type, resource_id, version, params


def parse_entries(bundle: dict[str, Any], base_url: str, max_entries: int) -> list[Entry]:
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array")
    if len(raw_entries) > max_entries:
        from fhir_server.errors import PayloadTooLarge

        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; the limit is {max_entries}")
    entries: list[Entry] = []
    for i, raw in enumerate(raw_entries):
        where = f"Bundle.entry[{i}]"
        if not isinstance(raw, dict):
            raise BadRequest(f"{where} is not an object")
        request = raw.get("request")
        if not isinstance(request, dict):
            raise BadRequest(f"{where} has no request", code="required", expression=(f"{where}.request",))
        method = request.get("method")
        url = request.get("url")
        if method not in METHODS or not isinstance(url, str) or not url:
            raise BadRequest(f"{where}.request needs a method ({', '.join(METHODS)}) and a url",
                             expression=(f"{where}.request",))
        resource = raw.get("resource")
        if resource is not None and not isinstance(resource, dict):
            raise BadRequest(f"{where}.resource is not a resource")
        resource_type, resource_id, version, params = parse_url(url, base_url, where)
        if method in ("POST", "PUT") and resource is None:
            raise BadRequest(f"{where}: {method} needs a resource", code="required")
        if resource is not None and method in ("POST", "PUT") and resource.get("resourceType") != resource_type:
            raise BadRequest(f"{where}: the resource's type does not match request.url",
                             expression=(f"{where}.resource.resourceType",))
        full_url = raw.get("fullUrl")
        entries.append(Entry(
            index=i, method=method, url=url, resource_type=resource_type, resource_id=resource_id,
            version=version, params=params,
            full_url=full_url if isinstance(full_url, str) else None, resource=resource,
            if_match=request.get("ifMatch"), if_none_match=request.get("ifNoneMatch"),
            if_modified_since=request.get("ifModifiedSince"), if_none_exist=request.get("ifNoneExist"),
        ))
    return entries
