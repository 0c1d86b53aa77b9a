"""The rules of secure messaging threads (order "messaging-rules"; docs/messaging.md).

On writes (BEFORE_*):
- a header Communication (no payload, no partOf, some recipient) is marked `thread`; its
  `sender` is the caller (a client cannot send as someone else) and its participant list is
  kept by the server (recipients, sender, the current members of its CareTeams);
- a message (`partOf` a header) may be posted only by a participant; it is marked `message`,
  its `sender` is the caller and it carries the thread's participant list;
- messages are immutable once sent: the one change allowed is the sender marking it
  `entered-in-error` (409 otherwise; a correction is a new message); no message or header is
  deleted by a client;
- render state and alerts (`Basic` of ours) are written only by the server.
Inside the transaction: each new message gets the next number of its thread; a render state
change updates the inbox index and gets its Provenance (who set the cursor, from which
system, at which care location). After the commit: the participants' new inbox activity is
noted, a hint for the inbox's windows (fhir_server.messaging.activity). On reads
(FILTER_QUERY, CAN_SEE): threads and messages leave only to their participants
(fhir_server.messaging.access).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from fhir_server.access.decision import AccessDecision
from fhir_server.audit.events import new_id
from fhir_server.audit.provenance import PARTICIPANT, care_location
from fhir_server.context import RequestContext
from fhir_server.errors import Conflict, Forbidden, InvalidResource
from fhir_server.hooks import AccessQuery, Change, Pointcut, hook
from fhir_server.messaging import activity, grants, render_state, store
from fhir_server.messaging.access import document_allowed, is_system_client, may_see, restricted
from fhir_server.messaging.threads import (
    MESSAGE,
    RENDER_STATE,
    THREAD,
    UNRENDERED,
    caller_identities,
    caller_reference,
    expand,
    header,
    kind_of,
    looks_like_header,
    mark,
    named_participants,
    participants,
    reference_of,
    set_participants,
    thread_of,
)
from fhir_server.storage.database import Database
from fhir_server.storage.documents import format_instant
from fhir_server.storage.pipeline import SessionWriter

Doc = dict[str, Any]
PROPOSED, SET_BY = render_state.PROPOSED, render_state.SET_BY
# Where the access interceptor keeps this request's one AccessDecision (AccessPolicy.decision).
DECISION = "access.decision"
# The headers this request (one transaction) creates, by id: its later entries' messages.
PENDING_THREADS = "messaging.pending_threads"
# The inbox activity of this request's committed changes, not yet noted (note_activity).
ACTIVITY_NOTED = "messaging.activity_noted"
log = logging.getLogger(__name__)


def _client_acts(context: RequestContext) -> bool:
    principal = context.principal
    return principal is not None and principal.kind == "token"


def _stripped(resource: Doc) -> Doc:
    """A message without what may change: meta and status."""
    return {k: v for k, v in resource.items() if k not in ("meta", "status", "text")}


class MessagingRules:
    def __init__(self, database: Database, base_url: str) -> None:
        self.database = database
        self.base_url = base_url

    # ------------------------------------------------------------------ writes

    @hook(Pointcut.BEFORE_CREATE)
    async def before_create(self, context: RequestContext, resource: Doc) -> None:
        rtype = resource.get("resourceType")
        if rtype == "Communication":
            await self._communication(context, resource, None)
        elif rtype == "Basic":
            self._server_only(context, resource)

    @hook(Pointcut.BEFORE_UPDATE)
    async def before_update(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        rtype = resource.get("resourceType")
        if rtype == "Communication":
            await self._communication(context, resource, previous)
        elif rtype == "Basic":
            self._server_only(context, resource, previous)
            if kind_of(previous) == RENDER_STATE or kind_of(resource) == RENDER_STATE:
                self._merge_cursor(context, resource, previous)

    @hook(Pointcut.BEFORE_DELETE)
    def before_delete(self, context: RequestContext, previous: Doc | None) -> None:
        kind = kind_of(previous)
        if _client_acts(context) and kind in (THREAD, MESSAGE):
            raise Conflict(f"messaging rule: a {kind} is not deleted once sent; a message is "
                           "corrected by a new one or marked entered-in-error by its sender",
                           code="business-rule")

    def _server_only(self, context: RequestContext, resource: Doc, previous: Doc | None = None) -> None:
        if _client_acts(context) and RENDER_STATE_OR_ALERT & {kind_of(resource), kind_of(previous)}:
            raise Forbidden("messaging rule: render state is written by the server, through "
                            "Communication/[thread]/$render-cursor; alerts only by the server",
                            code="business-rule")

    def _merge_cursor(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        """Forward only, against the version this transaction sees: concurrent cursor updates
        are planned again on the new version when they lose the race, so the furthest wins."""
        proposed = context.attributes.get(PROPOSED)
        if not isinstance(proposed, render_state.Cursor):
            return
        held = render_state.cursors(previous)
        merged = render_state.merge(held, proposed)
        if merged is held and previous is not None:
            resource.clear()
            resource.update(previous)  # nothing moved: the unchanged check writes no version
            return
        ext = [e for e in resource.get("extension") or []
               if not (isinstance(e, dict) and e.get("url") == render_state.CURSOR_EXTENSION)]
        resource["extension"] = ext + [merged[s].extension() for s in sorted(merged)]

    async def _communication(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        was = kind_of(previous)
        if was == MESSAGE:
            self._immutable(context, resource, previous or {})
            return
        principal = context.principal
        if was == THREAD:
            await self._header(context, resource, previous)  # a header stays a header (422)
            return
        thread_id = thread_of(resource, self.base_url)
        thread = await header(self.database, thread_id) if thread_id else None
        if thread is None and thread_id:
            # A header written earlier in this same transaction (a Bundle posting a thread
            # with its first message): the entries of one transaction share their attributes.
            thread = context.attributes.get(PENDING_THREADS, {}).get(thread_id)
        if thread is not None:
            await self._message(context, resource, thread)
        elif looks_like_header(resource) and resource.get("recipient") and not (
                principal is not None and principal.is_server and context.automation is not None):
            await self._header(context, resource, previous)
        else:
            # Not messaging: the server's marks are never taken from a client.
            mark(resource, None)
            set_participants(resource, [])

    async def _header(self, context: RequestContext, resource: Doc, previous: Doc | None) -> None:
        principal = context.principal
        if resource.get("payload") or resource.get("partOf"):
            raise InvalidResource("messaging rule: a thread header has no payload and no partOf; "
                                  "messages are Communications whose partOf is the header",
                                  code="business-rule")
        if previous is not None:
            identities = restricted(principal)
            if identities is not None and not identities & set(participants(previous)):
                raise Forbidden("messaging rule: only a participant changes a thread", code="forbidden")
            if "sender" in previous:
                resource["sender"] = previous["sender"]
        elif _client_acts(context) and principal is not None and (who := caller_reference(principal)):
            resource["sender"] = {"reference": who}
        mark(resource, THREAD)
        set_participants(resource, await expand(self.database, named_participants(resource, self.base_url),
                                                self.base_url))
        if previous is None and isinstance(resource.get("id"), str):
            context.attributes.setdefault(PENDING_THREADS, {})[resource["id"]] = resource

    async def _message(self, context: RequestContext, resource: Doc, thread: Doc) -> None:
        principal = context.principal
        members = participants(thread)
        identities = restricted(principal)
        if identities is not None and not identities & set(members):
            raise Forbidden("messaging rule: only a participant of the thread posts to it", code="forbidden")
        decision = context.attributes.get(DECISION)
        if isinstance(decision, AccessDecision) and not await decision.may_release(thread):
            # Posting to a thread needs seeing it: the access decision of this request (the
            # access interceptor ran before this one) judges the header, Consent included.
            raise Forbidden("messaging rule: the thread is not available to the caller", code="forbidden")
        subject = thread.get("subject")
        if subject is not None:
            # A message is about what its thread is about (and so lies in the same patient's
            # compartment, under the same Consent).
            given = reference_of(resource.get("subject"), self.base_url)
            if given is None:
                resource["subject"] = subject
            elif given != reference_of(subject, self.base_url):
                raise InvalidResource("messaging rule: a message's subject is its thread's subject",
                                      code="business-rule")
        if _client_acts(context) and principal is not None and (who := caller_reference(principal)):
            resource["sender"] = {"reference": who}
        resource.setdefault("sent", format_instant(datetime.now(UTC)))
        mark(resource, MESSAGE)
        set_participants(resource, members)

    def _immutable(self, context: RequestContext, resource: Doc, previous: Doc) -> None:
        principal = context.principal
        if principal is None or not _client_acts(context):
            return  # the server's own work (a rebuild, a load) may
        sender = (previous.get("sender") or {}).get("reference")
        allowed = (resource.get("status") == "entered-in-error"
                   and _stripped(resource) == _stripped(previous)
                   and sender in caller_identities(principal) | (
                       {caller_reference(principal)} if is_system_client(principal) else set()))
        if not allowed:
            raise Conflict("messaging rule: a message is immutable once sent; a correction is a "
                           "new message, and only its sender may mark it entered-in-error",
                           code="business-rule")
        mark(resource, MESSAGE)

    # ------------------------------------------------------------------ inside the transaction

    @hook(Pointcut.IN_TRANSACTION)
    async def record(self, context: RequestContext, changes: list[Change], session: AsyncClientSession,
                     db: AsyncDatabase[Doc], writer: SessionWriter) -> None:
        self._no_message_before_its_header(changes)
        # The inbox activity this transaction gives each participant, by change: noted after
        # the commit (a transaction the driver runs again sets its changes' entries again).
        noted: dict[str, dict[str, tuple[str, datetime]]] = context.attributes.setdefault(ACTIVITY_NOTED, {})
        for change in changes:
            kind = kind_of(change.resource if change.resource is not None else change.previous)
            if change.resource_type == "Communication" and kind == MESSAGE and change.previous is None \
                    and change.resource is not None:
                thread_id = thread_of(change.resource, self.base_url)
                if thread_id:
                    sender = (change.resource.get("sender") or {}).get("reference")
                    principal = context.principal
                    _, at = await store.number_message(db, session, thread_id, change.id, sender,
                                                       participants(change.resource),
                                                       principal.client_id if principal else None)
                    noted[change.id] = {p: (thread_id, at) for p in participants(change.resource)}
                    await grants.record(db, principal, participants(change.resource), session)
            elif change.resource_type == "Communication" and kind == THREAD and change.resource is not None:
                at = await store.open_rows(db, session, change.id, participants(change.resource))
                # Every participant's: a header written again moves the last activity of a
                # thread without messages (a time noted twice only makes a window smaller).
                noted[change.id] = {p: (change.id, at) for p in participants(change.resource)}
                if change.previous is not None:
                    # Someone taken off the thread: their row goes in the same transaction
                    # (the access decision refuses the thread to them anyway; the row would
                    # only be read and refused on every inbox page).
                    gone = set(participants(change.previous)) - set(participants(change.resource))
                    await store.close_rows(db, session, change.id, sorted(gone))
                await grants.record(db, context.principal, participants(change.resource), session)
            elif change.resource_type == "Basic" and kind == RENDER_STATE:
                await self._render_change(context, change, session, db, writer)

    # ------------------------------------------------------------------ after the commit

    @hook(Pointcut.AFTER_COMMIT)
    async def note_activity(self, context: RequestContext, change: Change) -> None:
        """The participants' new inbox activity, as the hint the inbox places its windows by
        (fhir_server.messaging.activity): the first change after a commit notes what the
        request's transactions gave so far, in one round trip."""
        noted: dict[str, dict[str, tuple[str, datetime]]] = context.attributes.get(ACTIVITY_NOTED) or {}
        if not noted:
            return
        times: dict[str, dict[str, datetime]] = {}  # participant -> thread -> its newest activity
        for by_participant in noted.values():
            for participant, (thread, at) in by_participant.items():
                threads = times.setdefault(participant, {})
                threads[thread] = max(at, threads.get(thread, at))
        noted.clear()
        try:
            await activity.note(self.database.db, times)
        except PyMongoError as exc:
            # A hint lost costs the next inbox pages a few rows, never a thread: the write stands.
            log.warning("inbox activity of %s participants not noted: %s", len(times), exc)

    def _no_message_before_its_header(self, changes: list[Change]) -> None:
        """A Communication `partOf` a header this same transaction creates, planned before
        the header (its entry came first), could not be recognised as a message: refused,
        never stored as a plain Communication that participation would not guard."""
        created = {c.id for c in changes if c.resource_type == "Communication" and c.previous is None
                   and kind_of(c.resource) == THREAD}
        for change in changes:
            if (change.resource_type == "Communication" and change.resource is not None
                    and kind_of(change.resource) != MESSAGE
                    and thread_of(change.resource, self.base_url) in created):
                raise InvalidResource("messaging rule: a message's thread header must come before "
                                      "it in the transaction Bundle", code="business-rule")

    async def _render_change(self, context: RequestContext, change: Change, session: AsyncClientSession,
                             db: AsyncDatabase[Doc], writer: SessionWriter) -> None:
        if change.resource is None:
            await store.drop_render(db, session, change.id)
            return
        pair = render_state.thread_and_participant(change.resource)
        best = render_state.furthest(change.resource)
        if pair is not None:
            await store.put_render(db, session, pair[0], pair[1], best.position if best else 0, change.id)
        by = context.attributes.get(SET_BY)
        if isinstance(by, dict):
            writer.create("Provenance", await self._provenance(change, by, db, session))

    async def _provenance(self, change: Change, by: Doc, db: AsyncDatabase[Doc],
                          session: AsyncClientSession) -> Doc:
        """Who set the cursor (`author`), through which system (`enterer`, the source)."""
        agents: list[Doc] = []
        who = by.get("who")
        if who:
            agents.append({"type": {"coding": [{"system": PARTICIPANT, "code": "author"}]},
                           "who": {"reference": who}})
        agents.append({"type": {"coding": [{"system": PARTICIPANT, "code": "enterer"}]},
                       "who": {"identifier": {"value": by.get("client_id") or "fhir-server"}},
                       **({"onBehalfOf": {"reference": who}} if who else {})})
        provenance: Doc = {
            "resourceType": "Provenance", "id": new_id(),
            "target": [{"reference": f"Basic/{change.id}/_history/{change.version_id}"}],
            "recorded": format_instant(change.last_updated),
            "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                     "code": "UPDATE" if change.version_id > 1 else "CREATE"}]},
            "agent": agents,
            "extension": [{"url": render_state.SOURCE_EXTENSION, "valueString": str(by.get("source"))}],
        }
        location = await care_location(db, who, self.base_url, session) if who else None
        if location:
            provenance["location"] = {"reference": location}
        return provenance

    # ------------------------------------------------------------------ reads

    @hook(Pointcut.FILTER_QUERY)
    def filter_query(self, context: RequestContext, resource_type: str, query: AccessQuery) -> None:
        if resource_type != "Communication":
            return
        identities = restricted(context.principal)
        if identities is None:
            return

        async def check(docs: list[Doc]) -> list[bool]:
            return [document_allowed(d, identities) for d in docs]

        query.add_check(check)

    @hook(Pointcut.CAN_SEE)
    def can_see(self, context: RequestContext, resource: Doc) -> bool:
        if resource.get("resourceType") != "Communication":
            return True
        identities = restricted(context.principal)
        return identities is None or may_see(resource, identities)


RENDER_STATE_OR_ALERT = frozenset({RENDER_STATE, UNRENDERED})
