"""The render state of one participant in one thread: a `Basic` resource of ours.

    Basic/<rs-…>  code messaging#render-state, subject = the thread header, author = the participant
      extension render-cursor (one per source): source, message, position, recordedAt

A cursor is the furthest message a consuming system (`source`, its client_id by default)
last attempted to render for the participant: rendered by a system, which says nothing about
whether a person read it. Cursors only move forward: `merge` keeps, per source, the cursor
with the higher position. Every change is a new version (FHIR history is its audit trail) with
a Provenance naming who set it, from which system and at which care location.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from fhir_server.messaging.threads import RENDER_STATE, TAG_SYSTEM, mark

Doc = dict[str, Any]
CURSOR_EXTENSION = "http://fhir.care-coord.example/StructureDefinition/render-cursor"
SOURCE_EXTENSION = "http://fhir.care-coord.example/StructureDefinition/render-source"
# Context attributes of $render-cursor's SYSTEM write: the cursor proposed (merged forward
# only with the version the write's transaction sees) and who proposed it (its Provenance).
PROPOSED = "messaging.proposed"
SET_BY = "messaging.set_by"


@dataclass(frozen=True)
class Cursor:
    source: str
    message: str  # "Communication/<id>"
    position: int  # the message's number in its thread
    recorded_at: str  # FHIR dateTime

    def extension(self) -> Doc:
        return {"url": CURSOR_EXTENSION, "extension": [
            {"url": "source", "valueString": self.source},
            {"url": "message", "valueReference": {"reference": self.message}},
            {"url": "position", "valueInteger": self.position},
            {"url": "recordedAt", "valueDateTime": self.recorded_at},
        ]}

    @classmethod
    def of(cls, extension: Doc) -> Cursor | None:
        parts = {e.get("url"): e for e in extension.get("extension") or [] if isinstance(e, dict)}
        try:
            return cls(str(parts["source"]["valueString"]),
                       str(parts["message"]["valueReference"]["reference"]),
                       int(parts["position"]["valueInteger"]),
                       str(parts["recordedAt"]["valueDateTime"]))
        except (KeyError, TypeError, ValueError):
            return None


def state_id(thread_id: str, participant: str) -> str:
    """A stable id per (thread, participant): a FHIR id of at most 64 characters."""
    return "rs-" + hashlib.sha256(f"{thread_id}|{participant}".encode()).hexdigest()[:40]


def cursors(resource: Doc | None) -> dict[str, Cursor]:
    out: dict[str, Cursor] = {}
    for ext in (resource or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == CURSOR_EXTENSION and (c := Cursor.of(ext)):
            out[c.source] = c
    return out


def furthest(resource: Doc | None) -> Cursor | None:
    found = list(cursors(resource).values())
    return max(found, key=lambda c: (c.position, c.recorded_at)) if found else None


def merge(previous: dict[str, Cursor], proposed: Cursor) -> dict[str, Cursor]:
    """Forward only: an older (or the same) message for a source changes nothing."""
    held = previous.get(proposed.source)
    if held is not None and held.position >= proposed.position:
        return previous
    return {**previous, proposed.source: proposed}


def render_state(thread_id: str, participant: str, by_source: dict[str, Cursor]) -> Doc:
    resource: Doc = {
        "resourceType": "Basic",
        "id": state_id(thread_id, participant),
        "code": {"coding": [{"system": TAG_SYSTEM, "code": RENDER_STATE,
                             "display": "render state (soft coordination state)"}]},
        "subject": {"reference": f"Communication/{thread_id}"},
        "author": {"reference": participant},
        "extension": [by_source[s].extension() for s in sorted(by_source)],
    }
    mark(resource, RENDER_STATE)
    return resource


def thread_and_participant(resource: Doc) -> tuple[str, str] | None:
    subject = ((resource.get("subject") or {}).get("reference") or "")
    author = ((resource.get("author") or {}).get("reference") or "")
    if subject.startswith("Communication/") and author:
        return subject.removeprefix("Communication/"), author
    return None
