"""The stored form of a resource version, and the server-owned parts of `meta`.

A resource is stored as its JSON text (bytes) beside the fields the server queries on. Why
text and not a BSON tree: the read path hands those bytes to the client without a decode /
encode round trip, FHIR content never meets MongoDB's rules for field names (`$`, `.`) or its
nesting limit, and search never looks inside it (it uses the extracted values beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhir_server import fhirjson

Doc = dict[str, Any]


def now() -> datetime:
    # MongoDB keeps milliseconds; truncate here so that what we return equals what we stored.
    t = datetime.now(UTC)
    return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def format_instant(t: datetime) -> str:
    """FHIR instant with millisecond precision in UTC, e.g. 2026-11-21T19:26:34.979Z."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def http_date(t: datetime) -> str:
    """RFC 7231 IMF-fixdate, for Last-Modified."""
    return t.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def stamp_meta(resource: dict[str, Any], resource_id: str, version_id: int, at: datetime) -> None:
    """Sets the parts of a resource the server owns: id, meta.versionId, meta.lastUpdated.

    Rebuilds the dict in place so resourceType, id and meta lead (order has no meaning in
    FHIR JSON, but people read stored resources top-down).
    """
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = format_instant(at)
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}
    resource_type = resource.get("resourceType")
    resource.clear()
    resource["resourceType"] = resource_type
    resource["id"] = resource_id
    resource["meta"] = meta
    resource.update(rest)


@dataclass
class StoredResource:
    """One version of a resource as read from storage."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    raw: bytes | None  # JSON text of the resource; None for a delete
    method: str = ""  # for history entries: POST, PUT, PATCH, DELETE

    _parsed: dict[str, Any] | None = None

    @property
    def resource(self) -> dict[str, Any]:
        if self._parsed is None:
            if self.raw is None:
                raise ValueError("a deleted version has no content")
            self._parsed = fhirjson.loads(self.raw)
        return self._parsed

    def replace(self, resource: dict[str, Any]) -> None:
        """Swaps in a changed resource (masking by an interceptor)."""
        self._parsed = resource
        self.raw = fhirjson.dumps(resource)

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.id}/_history/{self.version_id}"

    @classmethod
    def from_current(cls, resource_type: str, doc: Doc) -> StoredResource:
        return cls(resource_type, doc["_id"], doc["v"], doc["ts"], doc.get("del", False), doc.get("res"))

    @classmethod
    def from_history(cls, resource_type: str, doc: Doc) -> StoredResource:
        # An append-only type's current document stands for its (only) version.
        return cls(
            resource_type, str(doc.get("id", doc["_id"])), doc["v"], doc["ts"], doc.get("del", False),
            doc.get("res"), doc.get("m", "POST"),
        )
