"""`$render-cursor` and `$render-state`: the render state of messaging threads.

    POST [base]/Communication/[thread]/$render-cursor   participant, message, source?, recordedAt?
    GET  [base]/Communication/[thread]/$render-state     per participant: cursors, furthest, beyond
    GET  [base]/Communication/[thread]/$render-state?rebuild=true
    GET  [base]/Communication/$render-state?participant=Patient/x   the participant's inbox

A render cursor is the furthest message a consuming system last attempted to *render* for a
participant; nothing here says a person read anything. The thread is read through the read
pipeline first (the access decision: scopes, Consent, participation), so a caller who may
not see the thread learns nothing about it. Cursors are written as the server's own work
(`Basic` render state, docs/messaging.md) with a Provenance naming who set them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fhir_server.context import RequestContext
from fhir_server.datetimes import DateFormatError, parse_instant
from fhir_server.errors import BadRequest, Conflict, Forbidden, InvalidResource
from fhir_server.messaging import grants, inbox, render_state, store
from fhir_server.messaging.access import is_system_client
from fhir_server.messaging.render_state import Cursor
from fhir_server.messaging.settings import MessagingSettings
from fhir_server.messaging.threads import (
    PERSON_TYPES,
    TAG_SYSTEM,
    THREAD,
    caller_identities,
    caller_reference,
    kind_of,
    participants,
)
from fhir_server.storage import schema
from fhir_server.storage.database import Database
from fhir_server.storage.documents import format_instant
from fhir_server.storage.repository import Repository

Doc = dict[str, Any]


def _param(name: str, **value: Any) -> Doc:
    return {"name": name, **value}


def parse_cursor_parameters(body: Any) -> Doc:
    """The Parameters of `$render-cursor`, by name (400 for anything malformed)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("$render-cursor takes a Parameters resource", code="invalid")
    out: Doc = {}
    for p in body.get("parameter") or []:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise BadRequest("every parameter needs a name", code="invalid")
        name = p["name"]
        if name in out:
            raise BadRequest(f"parameter '{name}' is given twice", code="invalid")
        if name in ("participant", "message"):
            ref = (p.get("valueReference") or {}).get("reference")
            if not isinstance(ref, str) or "/" not in ref:
                raise BadRequest(f"'{name}' must be a valueReference to Type/id", code="value")
            out[name] = ref
        elif name == "source":
            value = p.get("valueString", p.get("valueUri"))
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                raise BadRequest("'source' must be a valueString or valueUri", code="value")
            out[name] = value
        elif name == "recordedAt":
            value = p.get("valueDateTime", p.get("valueInstant"))
            try:
                out[name] = parse_instant(value) if isinstance(value, str) else None
            except DateFormatError as exc:
                raise BadRequest(f"'recordedAt': {exc}", code="value") from None
            if out[name] is None:
                raise BadRequest("'recordedAt' must be a valueDateTime or valueInstant", code="value")
        else:
            raise BadRequest(f"$render-cursor has no parameter '{name}'", code="not-supported")
    for needed in ("participant", "message"):
        if needed not in out:
            raise BadRequest(f"$render-cursor needs '{needed}'", code="required")
    return out


class RenderState:
    def __init__(self, repository: Repository, database: Database, base_url: str,
                 settings: MessagingSettings | None = None) -> None:
        self.repository = repository
        self.database = database
        self.base_url = base_url
        self.settings = settings or MessagingSettings.from_env()

    async def thread(self, context: RequestContext, thread_id: str) -> Doc:
        """The header, read as the caller (404 / 403 / 410 as any read), or 422."""
        stored = await self.repository.read(context, "Communication", thread_id)
        if kind_of(stored.resource) != THREAD:
            raise InvalidResource(f"Communication/{thread_id} is not a thread header", code="business-rule")
        return stored.resource

    @staticmethod
    def _may_act_for(context: RequestContext, participant: str) -> None:
        principal = context.principal
        if principal is None or principal.kind != "token" or is_system_client(principal):
            return
        if participant not in caller_identities(principal):
            raise Forbidden(f"render state of {participant} is set by {participant} through any "
                            "system, or by a system/ client naming them", code="forbidden")

    # ------------------------------------------------------------------ $render-cursor

    async def set_cursor(self, context: RequestContext, thread_id: str, asked: Doc) -> Doc:
        thread = await self.thread(context, thread_id)
        participant = asked["participant"]
        if participant not in participants(thread):
            raise InvalidResource(f"{participant} does not take part in Communication/{thread_id}",
                                  code="business-rule")
        self._may_act_for(context, participant)
        kind, _, message_id = asked["message"].partition("/")
        found = await store.message(self.database.db, message_id) if kind == "Communication" else None
        if found is None or found.get("thread") != thread_id:
            raise InvalidResource(f"{asked['message']} is not a message of Communication/{thread_id}",
                                  code="business-rule")
        principal = context.principal
        source = asked.get("source") or (principal.client_id if principal and principal.client_id
                                          else "fhir-server")
        recorded: datetime = asked.get("recordedAt") or datetime.now(UTC)
        cursor = Cursor(source, f"Communication/{message_id}", int(found["seq"]), format_instant(recorded))
        who = caller_reference(principal) if principal is not None and principal.kind == "token" else None
        await self.write(thread_id, participant, cursor,
                         {"who": who, "client_id": principal.client_id if principal else None,
                          "source": source})
        await grants.record(self.database.db, principal, [participant])
        return await self.state(context, thread_id, thread, only=participant)

    async def write(self, thread_id: str, participant: str, cursor: Cursor, by: Doc) -> bool:
        """Moves the cursor forward (the write merges with the version it sees); answers
        whether a version was written."""
        resource_id = render_state.state_id(thread_id, participant)
        for _ in range(8):
            context = RequestContext.system(self.base_url, "update")
            context.attributes[render_state.PROPOSED] = cursor
            context.attributes[render_state.SET_BY] = by
            try:
                outcome = await self.repository.update(
                    context, "Basic", resource_id, render_state.render_state(thread_id, participant,
                                                                             {cursor.source: cursor}))
            except Conflict:
                continue  # lost eight races in a row: plan again on the newest version
            if outcome.changed:
                await self.prune(resource_id)
            return outcome.changed
        raise Conflict("the render state is being changed too often; try again")

    async def prune(self, resource_id: str) -> None:
        """Drops superseded versions older than the retention period (the current one stays)."""
        cutoff = datetime.now(UTC) - self.settings.render_retention
        current = await self.database.current("Basic").find_one({"_id": resource_id}, {schema.VERSION: 1})
        if current is None:
            return
        await self.database.history("Basic").delete_many({
            schema.RESOURCE_ID: resource_id, schema.VERSION: {"$lt": current[schema.VERSION]},
            schema.LAST_UPDATED: {"$lt": cutoff}})

    # ------------------------------------------------------------------ $render-state

    async def _states(self, thread_id: str, people: list[str]) -> dict[str, Doc]:
        ids = {render_state.state_id(thread_id, p): p for p in people}
        out: dict[str, Doc] = {}
        async for doc in self.database.current("Basic").find(
                {"_id": {"$in": list(ids)}, schema.DELETED: False}, schema.RESOURCE_ONLY):
            resource = schema.resource_of(doc)
            if resource is not None:
                out[ids[doc["_id"]]] = resource
        return out

    async def state(self, context: RequestContext, thread_id: str, thread: Doc | None = None, *,
                    rebuild: bool = False, only: str | None = None) -> Doc:
        thread = thread or await self.thread(context, thread_id)
        if rebuild:
            await self.rebuild(context, thread_id, thread)
        people = [p for p in participants(thread) if p.split("/", 1)[0] in (*PERSON_TYPES, "Device")]
        if only is not None:
            people = [only]
        latest = (await store.latest(self.database.db, [thread_id])).get(thread_id, 0)
        states = await self._states(thread_id, people)
        parts: list[Doc] = [_param("thread", valueReference={"reference": f"Communication/{thread_id}"}),
                            _param("messages", valueInteger=latest)]
        for person in people:
            held = render_state.cursors(states.get(person))
            best = render_state.furthest(states.get(person))
            part: list[Doc] = [_param("participant", valueReference={"reference": person})]
            for source in sorted(held):
                c = held[source]
                part.append(_param("cursor", part=[
                    _param("source", valueString=c.source),
                    _param("message", valueReference={"reference": c.message}),
                    _param("position", valueInteger=c.position),
                    _param("recordedAt", valueDateTime=c.recorded_at)]))
            if best is not None:
                part.append(_param("furthest", valueReference={"reference": best.message}))
            part.append(_param("beyond", valueInteger=max(0, latest - (best.position if best else 0))))
            parts.append(_param("participant", part=part))
        return {"resourceType": "Parameters", "parameter": parts}


    async def rebuild(self, context: RequestContext, thread_id: str, thread: Doc) -> None:
        """Cursors from the message history: a participant has at least rendered, through
        the system they posted from, their own latest message."""
        self._may_rebuild(context, thread)
        latest_by: dict[tuple[str, str], Doc] = {}
        for message in await store.messages_of(self.database.db, thread_id):
            sender = message.get("sender")
            if sender in participants(thread):
                latest_by[(sender, message.get("client") or "fhir-server")] = message
        principal = context.principal
        for (sender, source), message in latest_by.items():
            cursor = Cursor(source, f"Communication/{message['_id']}", int(message["seq"]),
                            format_instant(message["at"]))
            await self.write(thread_id, sender, cursor, {
                "who": caller_reference(principal) if principal and principal.kind == "token" else None,
                "client_id": principal.client_id if principal else None, "source": f"rebuild ({source})"})

    @staticmethod
    def _may_rebuild(context: RequestContext, thread: Doc) -> None:
        principal = context.principal
        if principal is None or principal.kind != "token" or is_system_client(principal):
            return
        if not caller_identities(principal) & set(participants(thread)):
            raise Forbidden("only a participant or a system/ client rebuilds render state", code="forbidden")

    async def inbox(self, context: RequestContext, participant: str, *, count: int = inbox.DEFAULT_COUNT,
                    cursor: str | None = None, total: bool = False) -> Doc:
        """A page of the threads of `participant` the caller may see, newest activity first,
        each with how many messages lie beyond the participant's furthest cursor; a `next`
        link while more remain; with `total`, the threads and messages beyond over every
        thread the caller may see (fhir_server.messaging.inbox)."""
        self._may_act_for(context, participant)
        db = self.database.db
        criteria = [("participant", participant), ("_tag", f"{TAG_SYSTEM}|{THREAD}")]

        async def judge(ids: list[str]) -> set[str]:
            # The one access decision (scopes, the patient's Consent, participation) on the
            # headers themselves: a row is only a number.
            return set(await self.repository.judged_ids(context, "Communication", ids, criteria))

        if (id(db), participant) not in _READY and not store.kept_from_the_start(db):
            if not await store.rows_ready(db, participant):
                await store.make_rows_ready(db, participant, f"{TAG_SYSTEM}|{THREAD}")
            _READY.add((id(db), participant))
        found, totals, _ = await asyncio.gather(
            inbox.page(db, participant, count, cursor, judge),
            inbox.beyond_total(db, participant, judge) if total else _nothing(),
            grants.record(db, context.principal, [participant]))
        parts: list[Doc] = [_param("participant", valueReference={"reference": participant})]
        for row in found.rows:
            parts.append(_param("thread", part=[
                _param("thread", valueReference={"reference": f"Communication/{row.thread}"}),
                _param("messages", valueInteger=row.seq),
                _param("beyond", valueInteger=row.beyond),
                *([_param("lastActivity", valueInstant=format_instant(row.at))] if row.at > store.EPOCH else [])]))
        if totals is not None:
            parts.append(_param("threadsBeyond", valueInteger=totals[0]))
            parts.append(_param("beyond", valueInteger=totals[1]))
        if found.next_cursor is not None:
            query = urlencode({"participant": participant, "_count": str(count), "_cursor": found.next_cursor,
                               **({"_total": "accurate"} if total else {})})
            parts.append(_param("next", valueUri=f"{self.base_url}/Communication/$render-state?{query}"))
        return {"resourceType": "Parameters", "parameter": parts}


async def _nothing() -> None:
    return None


# The participants whose rows this process knows are complete (store.make_rows_ready).
_READY: set[tuple[int, str]] = set()
