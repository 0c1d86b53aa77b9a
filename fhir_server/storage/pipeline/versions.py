"""What a planned write is, and the documents of a new version (no I/O).

`Planned` is one resource's next step in a unit of work, decided by `plan` and written by
`commit`. Its `compartments` are the new version's patient compartments, computed before the
BEFORE_* hooks run (an access decision on the write reads them: the same field reads filter
on). `Versions` builds the stored documents every writer stores: current, history, the
`Change` the hooks see and the `StoredResource` the caller answers with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server import fhirjson
from fhir_server.hooks import Change
from fhir_server.search import SearchEngine
from fhir_server.storage.documents import StoredResource, now, stamp_meta
from fhir_server.storage.schema import APPEND_ONLY

Doc = dict[str, Any]
_METHOD = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}


@dataclass
class NewVersion:
    """A version about to be written: its two documents and what it means."""

    current: Doc
    history: Doc | None  # None for an append-only type (its current document stands for it)
    change: Change
    stored: StoredResource


@dataclass
class Planned:
    """One resource's next step: what is written (`version`), or why nothing is (`outcome`)."""

    resource_type: str
    id: str
    interaction: str  # create | update | patch | delete
    # created | updated | deleted: a version to write; unchanged | matched | absent: none
    # (an update that says nothing new, a conditional create's match, a delete of nothing).
    outcome: str
    previous: Doc | None = None  # the current document replaced, or the match
    resource: dict[str, Any] | None = None  # the new version; None for a delete
    index: Doc | None = None  # {"sp": ..., "compartments": ...} of the new version
    version: NewVersion | None = None

    @property
    def compartments(self) -> Doc:
        """{"Patient": [ids]} of the new version (of the tombstone's previous for a delete)."""
        compartments: Doc = (self.index or {}).get("compartments") or {}
        return compartments

    @property
    def created(self) -> bool:
        return self.outcome == "created"

    @property
    def changed(self) -> bool:
        return self.version is not None


class Versions:
    def __init__(self, search: SearchEngine) -> None:
        self.search = search

    def index(self, resource_type: str, resource: dict[str, Any]) -> Doc:
        sp = self.search.index_fields(resource_type, resource)
        compartments = self.search.compartments(resource_type, resource, sp)
        return {"sp": sp, "compartments": compartments} if compartments else {"sp": sp}

    @staticmethod
    def stamp(resource: dict[str, Any], resource_id: str, previous: Doc | None) -> datetime:
        """Sets id, versionId and lastUpdated (before indexing: `_lastUpdated` is searched)."""
        at = now()
        stamp_meta(resource, resource_id, previous["v"] + 1 if previous else 1, at)
        return at

    def build(self, resource_type: str, resource_id: str, resource: dict[str, Any] | None,
              previous: Doc | None, interaction: str, *,
              stamped: tuple[datetime, Doc, bytes] | None = None) -> NewVersion:
        """The documents of the next version of `resource_id` after `previous`. A resource is
        stamped and indexed here unless the planner has done so (`stamped`: its time, index
        and JSON text)."""
        number = previous["v"] + 1 if previous else 1
        raw: bytes | None = None
        if resource is not None:
            if stamped is None:
                at = self.stamp(resource, resource_id, previous)
                stamped = at, self.index(resource_type, resource), fhirjson.dumps(resource)
            at, index, raw = stamped
        else:
            at = now()
            # A tombstone keeps its compartments so that access rules still apply to it.
            index = {"compartments": previous.get("compartments")} if previous else {}
        deleted = resource is None
        method = _METHOD[interaction]
        current = {"_id": resource_id, "v": number, "ts": at, "del": deleted, "res": raw, **index}
        history: Doc | None = None
        if resource_type in APPEND_ONLY:
            current.update({"id": resource_id, "m": method})  # read as its own history too
        else:
            history = {"_id": f"{resource_id}/{number}", "id": resource_id, "v": number, "ts": at,
                       "del": deleted, "res": raw, "m": method, **index}
        prior = fhirjson.loads(previous["res"]) if previous and previous.get("res") else None
        stored_index = {k: v for k, v in current.items() if k != "res"}
        change = Change(resource_type, resource_id, number, interaction, at, resource, prior, stored_index)
        stored = StoredResource(resource_type, resource_id, number, at, deleted, raw, method)
        return NewVersion(current, history, change, stored)

