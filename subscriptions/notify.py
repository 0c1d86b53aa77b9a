"""What a notification carries, decided at delivery time, and how it is written.

Only events the owner could see when they were matched are numbered (`subscriptions.audience`).
At delivery every event's resource goes through the read pipeline again as a read by the
Subscription's owner (`subscriptions.owner`): SMART scopes (FILTER_QUERY, CAN_SEE) and Consent
decide, and WILL_SEE may mask. A resource the owner may no longer read is sent without its
focus or content: the event number still arrives (numbers stay gap-free), nothing about the
resource does. The senders (delivery, websocket) send nothing once the owner's grant lapsed.

Topic-based notifications are Backport IG (STU 1.1) `history` Bundles whose first entry is a
`Parameters` SubscriptionStatus (`backport-subscription-status-r4`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server import fhirjson
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.storage.documents import format_instant, now
from fhir_server.storage.repository import Repository
from subscriptions.audience import unrestricted
from subscriptions.model import BACKPORT, Spec
from subscriptions.owner import owner_context

Doc = dict[str, Any]
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = BACKPORT + "backport-subscription-notification-r4"
_METHOD = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE"}
_STATUS = {"create": "201", "update": "200", "patch": "200", "delete": "204"}


@dataclass
class EventView:
    number: int
    timestamp: datetime
    interaction: str
    resource_type: str
    focus: str | None  # "Type/id" when the reader may see it
    resource: Doc | None  # the version's content when visible (never for a delete)


class Renderer:
    def __init__(self, repository: Repository, base_url: str) -> None:
        self.repository = repository
        self.base_url = base_url.rstrip("/")

    async def view(self, note: Doc, owner: Doc | None, *, context: RequestContext | None = None,
                   content: bool = True) -> EventView:
        """The event as the owner (or `context`, for $events) may see it now. Without an owner
        nothing about the resource is visible (the dispatcher does not deliver to such a
        Subscription at all; this is the second line)."""
        rtype, rid = str(note["t"]), str(note["r"])
        deleted = note["i"] == "delete"
        if context is None and not content and self._unrestricted(owner):
            return EventView(int(note["n"]), note["ts"], str(note["i"]), rtype, f"{rtype}/{rid}", None)
        version = int(note["v"]) - 1 if deleted else int(note["v"])
        reader = context or owner_context(self.base_url, owner, rtype, rid)
        if reader is None:
            return EventView(int(note["n"]), note["ts"], str(note["i"]), rtype, None, None)
        resource: Doc | None = None
        visible = False
        if version >= 1:
            try:
                released = await self.repository.vread(reader, rtype, rid, version)
            except FhirError:
                released = None
            if released is not None:
                visible = True
                resource = None if deleted else released.resource
        return EventView(int(note["n"]), note["ts"], str(note["i"]), rtype,
                         f"{rtype}/{rid}" if visible else None, resource)

    def _unrestricted(self, owner: Doc | None) -> bool:
        return unrestricted(owner, self.repository.hooks)

    # ------------------------------------------------------------------ Backport bundles

    def status(self, spec: Spec, kind: str, total: int, events: list[EventView], *,
               status: str | None = None, error: str | None = None, content: str | None = None) -> Doc:
        content = content or spec.channel.content
        parameters: list[Doc] = [
            {"name": "subscription", "valueReference": {"reference": f"{self.base_url}/Subscription/{spec.id}"}},
        ]
        if spec.topic_url:
            parameters.append({"name": "topic", "valueCanonical": spec.topic_url})
        parameters += [
            {"name": "status", "valueCode": status or spec.status},
            {"name": "type", "valueCode": kind},
            {"name": "events-since-subscription-start", "valueString": str(total)},
        ]
        for event in events:
            parts: list[Doc] = [
                {"name": "event-number", "valueString": str(event.number)},
                {"name": "timestamp", "valueInstant": format_instant(event.timestamp)},
            ]
            if event.focus and content != "empty":
                parts.append({"name": "focus", "valueReference": {"reference": f"{self.base_url}/{event.focus}"}})
            parameters.append({"name": "notification-event", "part": parts})
        if error:
            parameters.append({"name": "error", "valueCodeableConcept": {"text": error}})
        return {"resourceType": "Parameters", "id": str(uuid.uuid4()),
                "meta": {"profile": [STATUS_PROFILE]}, "parameter": parameters}

    def bundle(self, spec: Spec, kind: str, total: int, events: list[EventView], *,
               status: str | None = None, error: str | None = None, content: str | None = None) -> Doc:
        content = content or spec.channel.content
        parameters = self.status(spec, kind, total, events, status=status, error=error, content=content)
        entries: list[Doc] = [{
            "fullUrl": f"urn:uuid:{parameters['id']}",
            "resource": parameters,
            "request": {"method": "GET", "url": f"{self.base_url}/Subscription/{spec.id}/$status"},
            "response": {"status": "200"},
        }]
        if content != "empty":
            for event in events:
                if event.focus is None:
                    continue
                entry: Doc = {"fullUrl": f"{self.base_url}/{event.focus}"}
                if content == "full-resource" and event.resource is not None:
                    entry["resource"] = event.resource
                entry["request"] = {"method": _METHOD.get(event.interaction, "PUT"),
                                    "url": event.resource_type if event.interaction == "create" else event.focus}
                entry["response"] = {"status": _STATUS.get(event.interaction, "200")}
                entries.append(entry)
        return {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                "meta": {"profile": [NOTIFICATION_PROFILE]}, "type": "history",
                "timestamp": format_instant(now()), "entry": entries}

    # ------------------------------------------------------------------ R4 criteria

    @staticmethod
    def r4_body(spec: Spec, event: EventView) -> bytes:
        """R4 rest-hook: the resource itself when a payload is asked for, else nothing."""
        if spec.channel.payload is None or event.resource is None:
            return b""
        return fhirjson.dumps(event.resource)
