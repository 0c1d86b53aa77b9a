"""What the repository's pipelines pass around: outcomes, pages, and the
small pure helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fhir_server import fhirjson
from fhir_server.search import keyset
from fhir_server.storage.documents import StoredResource

Doc = dict[str, Any]
# Fields of a stored document a client never sees.
INDEX_PROJECTION = {"sp": 0, "compartments": 0}
# Search bounds: ids a chain / _has may resolve to, resources _include/_revinclude may add to
# a page, and rounds of :iterate.
MAX_JOIN_MATCHES = 10_000
MAX_INCLUDED = 1_000
MAX_INCLUDE_ROUNDS = 3


@dataclass
class WriteOutcome:
    stored: StoredResource
    created: bool  # 201 rather than 200
    changed: bool = True  # False: nothing written (conditional create match, no-op update)
    warnings: list[Any] = field(default_factory=list)


@dataclass
class SearchPage:
    entries: list[StoredResource]
    total: int | None
    next_cursor: str | None
    includes: list[StoredResource] = field(default_factory=list)
    prev_cursor: str | None = None


def _and(*filters: Doc | None) -> Doc:
    """ANDs MongoDB filters, as one flat document where their fields do not collide.

    Flat matters for the planner: SecantusDB scans the whole collection for a filter holding
    `$and` even when it pins `_id`, while `{"_id": x, "compartments.Patient": p}` is an index
    lookup. Operators (`$or`, ...) and repeated fields go under one `$and`.
    """
    out: Doc = {}
    for item in filters:
        if item:
            out = keyset.merge(out, item)
    return out


def unchanged(previous: Doc | None, resource: dict[str, Any]) -> bool:
    """True when `resource` says nothing new over the live `previous` version: an update that
    writes no new version and fires no event (as HAPI does)."""
    if previous is None or previous.get("del") or not previous.get("res"):
        return False
    return same_content(fhirjson.loads(previous["res"]), resource)


def same_content(previous: dict[str, Any], resource: dict[str, Any]) -> bool:
    """The two versions say the same, the server's own meta (versionId, lastUpdated) aside."""
    before, after = without_server_meta(previous), without_server_meta(resource)
    # 12.5 == 12.50 in Python, but FHIR counts the precision: a changed one is a change.
    return before == after and _decimal_texts(before) == _decimal_texts(after)


def without_server_meta(resource: dict[str, Any]) -> dict[str, Any]:
    out = dict(resource)
    meta = out.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
        if meta:
            out["meta"] = meta
        else:
            out.pop("meta")
    return out



def _decimal_texts(value: Any) -> list[str]:
    """The text of every decimal in `value`, in order (only walked when all else is equal)."""
    out: list[str] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, Decimal):
            out.append(str(node))
    return out
