"""The matcher: reads the outbox in commit order and stores numbered notifications.

One process at a time runs it (the `matcher` lease). Events arrive from a change stream on the
outbox (low latency; its resume token is saved after every batch, so a restarted matcher
carries on in commit order) and, as a fallback, from polling for events still unmatched a
little while after they were written (a broken stream, a lost token). Each batch is one
transaction: the events still unmatched are marked matched, each matching Subscription's
counter `n` is incremented by its number of events, and one notification per (Subscription,
event) is stored under the next numbers. A crash before the commit leaves everything to be
done again; after it, nothing is done twice. So numbers per Subscription are gap-free and in
commit order. Only events the Subscription's owner may see are numbered (`subscriptions.audience`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from typing import Any

from bson import Binary, ObjectId
from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from fhir_server.config import SubscriptionSettings
from fhir_server.storage.database import Database
from fhir_server.storage.outbox import OUTBOX
from fhir_server.storage.schema import history_key, version_key
from fhir_server.tasks import stop_tasks
from subscriptions.active import ActiveSubscriptions
from subscriptions.audience import Audience
from subscriptions.hub import Hub
from subscriptions.leases import Leases, utcnow
from subscriptions.store import NOTIFICATIONS, STATE, Store

log = logging.getLogger(__name__)

Doc = dict[str, Any]
LEASE = "matcher"
BATCH = 200
RELOAD_EVERY = timedelta(minutes=5)
HOUSEKEEPING_EVERY = timedelta(minutes=10)
RESUME_SAVE_EVERY = 1.0  # seconds
# Matched events are kept this long (for diagnosis), then removed.
OUTBOX_RETENTION = timedelta(hours=1)


class Matcher:
    def __init__(self, database: Database, active: ActiveSubscriptions, audience: Audience, store: Store,
                 leases: Leases, hub: Hub, settings: SubscriptionSettings) -> None:
        self.database = database
        self.db = database.db
        self.active = active
        self.audience = audience
        self.store = store
        self.leases = leases
        self.hub = hub
        self.settings = settings
        self.queue: asyncio.Queue[tuple[Doc, Any]] = asyncio.Queue()
        self._idle = asyncio.Event()  # set while the processor waits for events
        # Every matching transaction runs in this one session, whose id the lease records.
        self.session: AsyncClientSession | None = None
        self.matched_events = 0
        # Each Subscription's counter `n` as this matcher last committed it (see `_reserve`).
        self._counts: dict[str, int] = {}

    async def run(self) -> None:
        """Runs while this process holds the matcher lease (the caller cancels it when lost)."""
        lease = await self.leases.get(LEASE) or {}
        await self._abort_predecessor(lease.get("lsid"))
        self._counts.clear()  # another process may have numbered events since
        await self.active.load()
        self.audience.forget()
        token = lease.get("resume")
        async with self.database.client.start_session() as session:
            self.session = session
            self.hub.matcher_here = True
            await self.leases.save(LEASE, lsid=session.session_id)
            tasks = [asyncio.create_task(self._stream(token)),
                     asyncio.create_task(self._poll(catch_up=token is None)),
                     asyncio.create_task(self._process())]
            try:
                await asyncio.gather(*tasks)
            finally:
                await stop_tasks(tasks)
                self.session = None
                self.hub.matcher_here = False

    async def _abort_predecessor(self, lsid: Doc | None) -> None:
        """A matcher that died mid-transaction left it open, holding its writes until the
        server times it out (a minute): end its session, so that we need not wait."""
        if not lsid:
            return
        session_id = lsid.get("id")
        if isinstance(session_id, uuid.UUID):  # decoded as a UUID; `command` encodes no UUIDs
            session_id = Binary.from_uuid(session_id)
        try:
            await self.db.client.admin.command("killSessions", [{"id": session_id}])
        except PyMongoError as exc:
            log.warning("could not end the previous matcher's session: %s", exc)

    # ------------------------------------------------------------------ sources

    async def _stream(self, token: Any) -> None:
        pipeline = [{"$match": {"operationType": "insert"}}]
        while True:
            try:
                options: Doc = {"resume_after": token} if token else {}
                async with await self.db[OUTBOX].watch(pipeline, max_await_time_ms=500, **options) as stream:
                    while True:
                        # Pulled while the processor waits for work: a pull while it is busy
                        # would fetch a getMore per event, which its next batch takes at once
                        # anyway. (Events a pull returned are handed over without a wait: no
                        # suspension between them.)
                        await self._idle.wait()
                        change = await stream.try_next()
                        if change is not None:
                            token = change["_id"]
                            await self.queue.put((change["fullDocument"], token))
            except PyMongoError as exc:
                # A resume token the server no longer knows: start afresh; polling catches up.
                log.warning("outbox change stream interrupted (%s); polling meanwhile", exc)
                token = None
                await asyncio.sleep(self.settings.poll_interval)

    async def _poll(self, *, catch_up: bool) -> None:
        grace = timedelta(0) if catch_up else timedelta(seconds=2 * self.settings.poll_interval)
        while True:
            try:
                before = ObjectId.from_datetime(utcnow() - grace)
                docs = await self.db[OUTBOX].find({"m": False, "_id": {"$lt": before}}).sort(
                    "_id", ASCENDING).limit(BATCH * 5).to_list()
                for doc in docs:
                    await self.queue.put((doc, None))
            except PyMongoError as exc:
                log.warning("outbox polling failed: %s", exc)
            grace = timedelta(seconds=2 * self.settings.poll_interval)
            await asyncio.sleep(self.settings.poll_interval)

    # ------------------------------------------------------------------ processing

    async def _process(self) -> None:
        loaded_at = housekept_at = utcnow()
        saved = 0.0
        while True:
            if self.queue.empty():
                self._idle.set()
            batch = [await self.queue.get()]
            self._idle.clear()
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            events: dict[Any, Doc] = {}
            token = None
            for doc, resume in batch:
                events.setdefault(doc["_id"], doc)
                token = resume or token
            try:
                await self.handle(list(events.values()))
                if token is not None and time.monotonic() - saved > RESUME_SAVE_EVERY:
                    # An older token only means re-reading events already marked matched.
                    await self.leases.save(LEASE, resume=token)
                    saved = time.monotonic()
            except PyMongoError as exc:
                # Left unmatched: the poller hands the events back.
                log.warning("matching %d events failed: %s", len(events), exc)
                await asyncio.sleep(self.settings.poll_interval)
            now = utcnow()
            if now - loaded_at > RELOAD_EVERY:
                loaded_at = now
                await self.active.load()
            if now - housekept_at > HOUSEKEEPING_EVERY:
                housekept_at = now
                await self.housekeeping()

    async def _versions(self, events: list[Doc]) -> dict[tuple[str, str], Doc]:
        """The history documents of each event's version and of the version before it: those
        this process committed from memory (storage/recent.py), the others in one read per
        type."""
        recent = self.database.recent
        out: dict[tuple[str, str], Doc] = {}
        wanted: dict[str, list[str]] = defaultdict(list)
        for e in events:
            rtype, rid, v = str(e["t"]), str(e["r"]), int(e["v"])
            for number in (v, v - 1) if v > 1 else (v,):
                doc = await recent.committed(rtype, rid, number)
                # The event's own version is the one committed at its time (a copy from
                # before a clean-up of the database would not be).
                if doc is not None and (number != v or doc["ts"] == e["ts"]):
                    out[(rtype, history_key(rid, number))] = doc
                else:
                    wanted[rtype].append(version_key(rtype, rid, number))
        for rtype, ids in wanted.items():
            async for doc in self.database.history(rtype).find({"_id": {"$in": ids}}):
                out[(rtype, history_key(str(doc.get("id", doc["_id"])), doc["v"]))] = doc
        return out

    async def handle(self, events: list[Doc]) -> None:
        # Versions (one history read per type) only for what a subscription could match.
        versions = await self._versions(
            [e for e in events if e["t"] == "Subscription" or self.active.watches(e["t"])])
        matched: list[tuple[Doc, list[str]]] = []
        for event in events:
            rtype, rid, v = event["t"], event["r"], event["v"]
            current = versions.get((rtype, f"{rid}/{v}"))
            previous = versions.get((rtype, f"{rid}/{v - 1}"))
            if rtype == "Subscription":
                # In commit order: events before this change were matched with the old version.
                self.active.put(rid, current)
                self.audience.forget(rid)  # its owner's grant may have been renewed
                self.hub.kick()
            subs = await self.active.match(event, current, previous) if current is not None else []
            matched.append((event, subs))
        # An event its owner may not see is no event of that Subscription: it is not numbered.
        matched = await self.audience.admit(matched)

        self.matched_events += len(events)
        if not any(subs for _, subs in matched):
            # Nothing to number: marking the events matched needs no transaction.
            await self.db[OUTBOX].update_many({"_id": {"$in": [e["_id"] for e in events]}, "m": False},
                                              {"$set": {"m": True}})
            return
        notes = await self._numbered(matched)
        by_sub: dict[str, list[Doc]] = defaultdict(list)
        for note in notes:
            by_sub[note["s"]].append(note)
        for sub, mine in by_sub.items():
            self.hub.offer(sub, mine)
            self.hub.notify(sub, int(mine[-1]["n"]))

    async def _numbered(self, matched: list[tuple[Doc, list[str]]]) -> list[Doc]:
        """Numbers and stores the notifications in one transaction, again if a predecessor
        matched some event meanwhile (`_Rematched`) or a counter moved (`_Recount`)."""
        check = False
        for _ in range(3):
            try:
                notes = await self._transaction(matched, check=check)
            except _Rematched:
                check = True
                continue
            except _Recount:
                self._counts.clear()
                continue
            for note in notes:  # committed: these are the counters now
                self._counts[note["s"]] = int(note["n"])
            return notes
        raise PyMongoError("the events could not be numbered in three attempts")  # polled again

    async def _transaction(self, matched: list[tuple[Doc, list[str]]], *, check: bool) -> list[Doc]:
        async def store(session: AsyncClientSession) -> list[Doc]:
            return await self._store(session, matched, check=check)

        if self.session is None:
            return await self.database.in_transaction(store)
        result: list[Doc] = await self.session.with_transaction(
            store, read_concern=ReadConcern("snapshot"), write_concern=WriteConcern("majority"))
        return result

    async def _store(self, session: AsyncClientSession, matched: list[tuple[Doc, list[str]]], *,
                     check: bool) -> list[Doc]:
        """Marks the events matched and stores their notifications (answered, in order).
        Usually every event is still unmatched: one update says so; if not (a predecessor's
        batch committed meanwhile), `_Rematched`, and again with `check`."""
        ids = [event["_id"] for event, _ in matched]
        if check:
            fresh = {d["_id"] for d in await self.db[OUTBOX].find(
                {"_id": {"$in": ids}, "m": False}, {"_id": 1}, session=session).to_list()}
        else:
            fresh = set(ids)
        if fresh:
            marked = await self.db[OUTBOX].update_many(
                {"_id": {"$in": sorted(fresh)}, "m": False}, {"$set": {"m": True}}, session=session)
            if marked.modified_count != len(fresh):
                raise _Rematched()
        counts: dict[str, int] = defaultdict(int)
        for event, subs in matched:
            if event["_id"] in fresh:
                for sub in subs:
                    counts[sub] += 1
        numbers = await self._reserve(session, counts)
        now = utcnow()
        notes: list[Doc] = []
        for event, subs in matched:
            if event["_id"] not in fresh:
                continue
            for sub in subs:
                numbers[sub] += 1
                n = numbers[sub]
                notes.append({"_id": f"{sub}:{n}", "s": sub, "n": n, "e": event["_id"],
                              "t": event["t"], "r": event["r"], "v": event["v"], "i": event["i"],
                              "ts": event["ts"], "at": now})
        if notes:
            await self.db[NOTIFICATIONS].insert_many(notes, session=session)
        return notes

    async def _reserve(self, session: AsyncClientSession, counts: dict[str, int]) -> dict[str, int]:
        """Raises each Subscription's counter `n` by its number of events in this batch, in
        one bulk write; answers each one's `n` before. The counters this matcher committed
        last are known (only the matcher lease's holder writes them), so each update is
        conditional on the known value: a counter moved by anyone else (a predecessor, a
        clean-up) is `_Recount`, read again in the transaction's snapshot."""
        unknown = sorted(sub for sub in counts if sub not in self._counts)
        stored: dict[str, int] = {}
        if unknown:
            stored = {d["_id"]: int(d.get("n", 0)) for d in await self.db[STATE].find(
                {"_id": {"$in": unknown}}, {"n": 1}, session=session).to_list()}
        before: dict[str, int] = {}
        ops: list[UpdateOne] = []
        for sub, k in counts.items():
            known = self._counts.get(sub, stored.get(sub))
            # No state yet (it is created with the Subscription): created here, from 0.
            ops.append(UpdateOne({"_id": sub} if known is None else {"_id": sub, "n": known},
                                 {"$inc": {"n": k}}, upsert=known is None))
            before[sub] = known or 0
        result = await self.db[STATE].bulk_write(ops, ordered=False, session=session)
        if result.matched_count + result.upserted_count != len(ops):
            raise _Recount()
        return before

    async def housekeeping(self) -> None:
        now = utcnow()
        try:
            await self.db[OUTBOX].delete_many({"m": True, "ts": {"$lt": now - OUTBOX_RETENTION}})
            await self.store.purge(now - timedelta(days=self.settings.retention_days))
            await self.store.purge_tokens(now)
        except PyMongoError as exc:
            log.warning("subscription housekeeping failed: %s", exc)


class _Rematched(Exception):
    """Some event of the batch was matched meanwhile (by a predecessor): check one by one."""


class _Recount(Exception):
    """A counter was not the value this matcher last committed: read the counters again."""
