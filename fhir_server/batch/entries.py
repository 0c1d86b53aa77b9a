"""The entries of a batch or transaction Bundle, parsed and checked before anything runs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from fhir_server.errors import BadRequest, FhirError, NotSupported, PayloadTooLarge
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
    # A batch entry that could not be parsed: it is answered with this error and never run.
    error: FhirError | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.index}]"


# A URI scheme ("https:", "urn:", "file:"): the entry names an absolute URL.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Characters no entry URL carries (controls, backslashes), and none its path does once
# percent-decoded (those and spaces); a query may well hold an encoded space.
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
_FORBIDDEN_IN_PATH = re.compile(r"[\x00-\x20\x7f\\]")


def _outside(where: str, url: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: request.url '{url[:120]}' {why}; entry URLs are resolved "
                      "strictly inside this server's base", code="invalid",
                      expression=(f"{where}.request.url",))


def relative_url(url: str, base_url: str, where: str) -> str:
    """The entry URL as a path (with query) relative to [base], or BadRequest when it would
    leave [base]: another host or base, a network-path `//host`, dot segments (also as
    `%2e`), encoded slashes or backslashes, control characters."""
    if _FORBIDDEN.search(url) or _FORBIDDEN_IN_PATH.search(unquote(url.split("?", 1)[0])):
        raise _outside(where, url, "contains a backslash, space or control character")
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1:]
    elif url == base_url:
        url = ""
    elif _SCHEME.match(url.split("?", 1)[0]):
        raise _outside(where, url, f"is an absolute URL outside {base_url}")
    elif url.startswith("//"):
        raise _outside(where, url, "is a network-path reference")
    path = url.removeprefix("/").split("?", 1)[0]
    segments = path.split("/")
    for n, segment in enumerate(segments):
        decoded = unquote(segment)
        if decoded in (".", ".."):
            raise _outside(where, url, "has a dot segment")
        if "/" in decoded:
            raise _outside(where, url, "has an encoded slash")
        if not segment and 0 < n < len(segments) - 1:
            raise _outside(where, url, "has an empty path segment")
    return url.removeprefix("/")


def parse_url(url: str, base_url: str, where: str) -> tuple[str | None, str | None, str | None,
                                                            list[tuple[str, str]]]:
    """Splits an entry's request.url into (type, id, version, params)."""
    parts = urlsplit(relative_url(url, base_url, where))
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


def check_unique_full_urls(raw_entries: list[Any]) -> None:
    """bdl-7: fullUrl must be unique in a Bundle, or else entries with the same fullUrl must
    have different meta.versionId (history Bundles, which are never POSTed, are exempt)."""
    seen: dict[tuple[str, Any], int] = {}
    duplicates: list[str] = []
    for i, raw in enumerate(raw_entries):
        if not isinstance(raw, dict) or not isinstance(raw.get("fullUrl"), str):
            continue
        resource = raw.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        version = meta.get("versionId") if isinstance(meta, dict) else None
        key = (raw["fullUrl"], version if isinstance(version, str) else None)
        if key in seen:
            duplicates.append(f"Bundle.entry[{seen[key]}] and Bundle.entry[{i}] both have fullUrl "
                              f"'{key[0][:120]}'")
        else:
            seen[key] = i
    if duplicates:
        raise BadRequest("; ".join(duplicates[:10]) + " (bdl-7: fullUrl must be unique in a Bundle, "
                         "or else entries with the same fullUrl must have different meta.versionId)",
                         code="invariant", expression=("Bundle.entry.fullUrl",))


def parse_entries(bundle: dict[str, Any], base_url: str, max_entries: int, *,
                  per_entry_errors: bool = False) -> list[Entry]:
    """The Bundle's entries, checked. A problem with one entry fails the whole Bundle (a
    transaction), or with `per_entry_errors` (a batch) only that entry, which carries it."""
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array")
    if len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"The Bundle has {len(raw_entries)} entries; the limit is {max_entries}")
    check_unique_full_urls(raw_entries)
    entries: list[Entry] = []
    for i, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(i, raw, base_url))
        except FhirError as error:
            if not per_entry_errors:
                raise
            request = raw.get("request") if isinstance(raw, dict) else None
            request = request if isinstance(request, dict) else {}
            method, url = request.get("method"), request.get("url")
            entries.append(Entry(
                index=i, method=method if isinstance(method, str) else "", url=url if isinstance(url, str) else "",
                resource_type=None, resource_id=None, version=None, params=[], full_url=None,
                resource=None, error=error,
            ))
    return entries


def _parse_entry(i: int, raw: Any, base_url: str) -> Entry:
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
    return Entry(
        index=i, method=method, url=url, resource_type=resource_type, resource_id=resource_id,
        version=version, params=params,
        full_url=full_url if isinstance(full_url, str) else None, resource=resource,
        if_match=request.get("ifMatch"), if_none_match=request.get("ifNoneMatch"),
        if_modified_since=request.get("ifModifiedSince"), if_none_exist=request.get("ifNoneExist"),
    )
