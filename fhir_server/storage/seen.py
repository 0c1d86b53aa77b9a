"""The stored documents a request has read, by (type, id, version), with their index fields.

A decision taken when a resource leaves (Consent on a read's own target) judges the document
the read pipeline found, rather than reading the same version again: the current document
and the history document of one version carry the same `ts`, `sp` and `compartments`.
"""

from __future__ import annotations

from typing import Any

from fhir_server.context import RequestContext

Doc = dict[str, Any]
_KEY = "storage.seen"


def remember(context: RequestContext, resource_type: str, doc: Doc) -> None:
    """Notes `doc` (a current or history document read whole) for this request."""
    resource_id = doc.get("id", doc["_id"])  # history documents: `_id` is "id/version"
    seen: dict[tuple[str, str, int], Doc] = context.attributes.setdefault(_KEY, {})
    seen[(resource_type, str(resource_id), int(doc["v"]))] = doc


def recall(context: RequestContext, resource_type: str, resource_id: str, version: int) -> Doc | None:
    """The document of that version this request read, if it read one whole."""
    seen: dict[tuple[str, str, int], Doc] = context.attributes.get(_KEY) or {}
    return seen.get((resource_type, resource_id, version))
