"""Derived alerts of secure messaging threads: the `communication-unrendered` topic's source.

When a message arrives, each participant (but its sender) is alerted only if, after the grace
period (`FHIR_MESSAGING_GRACE_PERIOD`, 30 s by default) in which a system showing the thread
can render it, the message still lies beyond the participant's furthest render cursor over
all sources. The decision is taken when the message's durable timer fires (one process fires
it; a crash fires it again), and:
- a participant who may not see the message (the access decision, asked as the participant:
  their Consent-denied family member, say) is never alerted;
- a claim keyed on (message, participant) is taken before the alert is written, so one person
  is alerted once however many systems and server processes there are;
- the alert is a `Basic` of code `unrendered` (subject: the message, author: the participant)
  written as a conditional create on an identifier derived from the timer: exactly once.
The alert is the notification's focus; systems subscribe to `communication-unrendered`
filtered by `participant`. Alerts are derived from render state, never the truth of it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fhir_server.context import Principal, RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import FhirError
from fhir_server.messaging import grants, store
from fhir_server.messaging.preferences import DISPLAY, IN_APP, MEDIUM, preferred_channel
from fhir_server.messaging.settings import MessagingSettings
from fhir_server.messaging.threads import (
    MESSAGE,
    PERSON_TYPES,
    TAG_SYSTEM,
    THREAD,
    UNRENDERED,
    kind_of,
    mark,
    thread_of,
)
from fhir_server.storage import schema
from workflows.effects import Effects
from workflows.engine import Event, Workflow
from workflows.timers import Timer

Doc = dict[str, Any]
THREAD_EXTENSION = "http://fhir.care-coord.example/StructureDefinition/unrendered-thread"
CHANNEL_EXTENSION = "http://fhir.care-coord.example/StructureDefinition/alert-channel"


def alert(message_id: str, thread_id: str, participant: str, position: int, channel: str = IN_APP) -> Doc:
    resource: Doc = {
        "resourceType": "Basic",
        "code": {"coding": [{"system": TAG_SYSTEM, "code": UNRENDERED,
                             "display": "message not rendered for the participant by any system"}]},
        "subject": {"reference": f"Communication/{message_id}"},
        "author": {"reference": participant},
        "created": datetime.now(UTC).date().isoformat(),
        "extension": [{"url": THREAD_EXTENSION, "valueReference": {"reference": f"Communication/{thread_id}"},
                       "extension": [{"url": "position", "valueInteger": position}]},
                      {"url": CHANNEL_EXTENSION, "valueCoding": {
                          "system": MEDIUM, "code": channel, "display": DISPLAY.get(channel, channel)}}],
    }
    mark(resource, UNRENDERED)
    return resource


def as_participant(base_url: str, grant: Principal, message_id: str) -> RequestContext:
    """A read of the message under a grant the participant really holds (their recorded,
    verified authorization), so that the one access decision (scopes, Consent,
    participation) says whether they may be alerted about it."""
    return RequestContext(base_url=base_url, interaction="read", resource_type="Communication",
                          resource_id=message_id, principal=grant)


def committed_at(resource: Doc) -> datetime:
    """When the version was committed (its `meta.lastUpdated`), or now if it does not say."""
    stamp = (resource.get("meta") or {}).get("lastUpdated")
    try:
        return parse_instant(stamp) if isinstance(stamp, str) else datetime.now(UTC)
    except DateFormatError:
        return datetime.now(UTC)


class UnrenderedAlerts(Workflow):
    name = "messaging-alerts"
    criteria = f"Communication?_tag={TAG_SYSTEM}|{MESSAGE}"

    def __init__(self, settings: MessagingSettings | None = None) -> None:
        self.settings = settings

    def _settings(self) -> MessagingSettings:
        return self.settings or MessagingSettings.from_env()

    async def on_event(self, event: Event, effects: Effects) -> None:
        if event.interaction != "create" or event.resource is None or not event.focus:
            return
        thread_id = thread_of(event.resource, effects.base_url)
        if thread_id is None:
            return
        message_id = event.focus.removeprefix("Communication/")
        # Due a grace period after the message's commit, not after this event reached the
        # workflow: the event's delivery (and any backlog) is not added to the wait.
        await effects.schedule(f"unrendered/{message_id}", committed_at(event.resource) + self._settings().grace_period,
                               {"message": message_id, "thread": thread_id})

    async def on_timer(self, timer: Timer, effects: Effects) -> None:
        db = effects.repository.database.db
        message_id = str(timer.payload.get("message"))
        message = await store.message(db, message_id)
        if message is None:
            return  # the message was never committed with its number (nothing to alert)
        thread_id, position = str(message["thread"]), int(message["seq"])
        people = [p for p in message.get("participants") or []
                  if p != message.get("sender") and p.split("/", 1)[0] in PERSON_TYPES]
        # Each participant's decision stands alone (its own claim, its own named effect), so
        # they are taken side by side: a thread of ten waits for the slowest, not the sum.
        await asyncio.gather(*(self._decide(effects, timer, message_id, thread_id, position, p)
                               for p in people))

    async def _decide(self, effects: Effects, timer: Timer, message_id: str, thread_id: str,
                      position: int, participant: str) -> None:
        db = effects.repository.database.db
        furthest = (await store.furthest(db, participant, [thread_id])).get(thread_id, 0)
        if furthest >= position:
            return  # a system rendered it (or a later one) for them in time
        if not await self._may_see(effects, participant, message_id):
            return
        if not await store.claim(db, message_id, participant, timer.key):
            return
        await effects.create(alert(message_id, thread_id, participant, position,
                                   await self._channel(effects, participant)),
                             name=f"alert/{participant}")
        await store.claimed(db, message_id, participant)

    @staticmethod
    async def _channel(effects: Effects, participant: str) -> str:
        """The participant's communication preferences decide the alert's channel (read as
        the server's own work: the preferences are not released to anyone by this)."""
        kind, _, rid = participant.partition("/")
        try:
            person = (await effects.repository.read(effects.context("read"), kind, rid)).resource
        except FhirError:
            return IN_APP
        return preferred_channel(person)

    @staticmethod
    async def _may_see(effects: Effects, participant: str, message_id: str) -> bool:
        """Whether a grant the server holds for the participant lets them read the message;
        with none, no (fail closed: the server never makes a grant up)."""
        for grant in await grants.held(effects.repository.database.db, participant):
            try:
                await effects.repository.read(as_participant(effects.base_url, grant, message_id),
                                              "Communication", message_id)
            except FhirError:
                continue
            return True
        return False


class ThreadTeams(Workflow):
    """A CareTeam changed: the threads that name it work out their participant lists again
    (the messaging rules expand the team's current members on the header's update), so a new
    member finds the thread and a member who left no longer does. A header whose list did not
    change gets no new version."""

    name = "messaging-care-teams"
    criteria = "CareTeam?"

    async def on_event(self, event: Event, effects: Effects) -> None:
        if not event.focus:
            return
        repository = effects.repository
        found = repository.database.current("Communication").find(
            {schema.index_field("participant"): event.focus, schema.DELETED: False}, schema.RESOURCE_ONLY)
        async for doc in found:
            header = schema.resource_of(doc)
            if header is None or kind_of(header) != THREAD:
                continue
            await repository.update(effects.context("update"), "Communication", str(doc["_id"]), header)


def workflows() -> list[Workflow]:
    return [UnrenderedAlerts(), ThreadTeams()]
