"""Parsed Consents per patient, kept per process and invalidated by the Consents' own change
events in the outbox (interceptors/outbox.py).

Every request first `sync`s: one indexed query (`t`, `_id`) for the Consent events made
since GRACE_SECONDS before the previous sync. Each event not yet applied drops the cached
Consents of the patient the Consent named before and of the one it names now. So a Consent
created, changed, revoked or deleted in any process governs every request, in every
process, that starts after the change committed.

Outbox event ids are ObjectIds made inside the transaction, before its commit; the event is
the transaction's last write (outbox ORDER 500), so it becomes visible one commit round trip
after its id was made. The window reaches GRACE_SECONDS behind the previous sync to catch
events that commit out of id order; applied ids are remembered for the window. A commit
slower than that, or a Consent changed behind the server's back (straight in the database,
no event), is still picked up: a cached entry is read again once it is ENTRY_SECONDS old.
A process idle for longer than RESET_SECONDS (well within the outbox's retention of matched
events) starts from an empty cache rather than trust events that may have been removed.

A lookup racing with an invalidation keeps its answer for its own request but does not
store it (the epoch check), so a cache entry never predates the last event applied.

Concurrent requests share a sync: a request waits for the first sync whose query starts
after it asked (never one already in flight), and every request that asked before that
query started is served by it. So the guarantee above holds, and under load one query
serves many requests instead of each paying its own round trip.

Where the database has change streams, the sync is the process's change feed instead
(storage/changes.py, shared with the read cache): Consent events arrive in commit order, so
no window is read again, and the one pull per batch of requests serves both caches. The
query above is the fallback when the feed is unavailable (a standalone MongoDB).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime

from bson import ObjectId
from pymongo import ASCENDING, IndexModel

from fhir_server.consent.model import Consent
from fhir_server.consent.store import ConsentStore
from fhir_server.storage.database import Database
from fhir_server.storage.outbox import OUTBOX

GRACE_SECONDS = 5.0
ENTRY_SECONDS = 60.0
RESET_SECONDS = 600.0
MAX_PATIENTS = 100_000  # cached patients (with or without Consents), least recently used out


def cache_indexes() -> dict[str, list[IndexModel]]:
    # The per-request sync: Consent events in id (≈ time) order.
    return {OUTBOX: [IndexModel([("t", ASCENDING), ("_id", ASCENDING)], name="t_id")]}


def _floor(at: float) -> ObjectId:
    return ObjectId.from_datetime(datetime.fromtimestamp(max(at, 0.0), UTC))


class ConsentCache:
    def __init__(self, database: Database, store: ConsentStore, max_patients: int = MAX_PATIENTS) -> None:
        self.db = database.db
        self.store = store
        self.max_patients = max_patients
        # patient id -> (its active Consents, monotonic time they were read)
        self._by_patient: OrderedDict[str, tuple[tuple[Consent, ...], float]] = OrderedDict()
        self._applied: dict[ObjectId, float] = {}  # event id -> when it was applied
        self._synced: float | None = None  # wall time the latest sync started
        self._epoch = 0  # bumped by every invalidation
        self.lookups = 0  # database lookups (for tests and the bench)
        self.syncs = 0  # sync queries sent (for tests and the bench)
        self._running: asyncio.Task[None] | None = None  # the sync whose query is in flight
        self._next: asyncio.Task[None] | None = None  # the sync that starts after it
        self.feed = database.changes
        self._pending: set[str] = set()  # Consent ids changed per the feed, not yet applied
        # The feed's pulls whose events are applied (all up to this number), and the ticket
        # the next sync must pull past (the highest of those who joined it).
        self._covered = 0
        self._want = -1
        self.feed.subscribe(self._note, self._forget)

    def clear(self) -> None:
        self._by_patient.clear()
        self._applied.clear()
        self._epoch += 1

    async def sync(self, ticket: int | None = None) -> None:
        """Applies the Consent change events committed before this call (or before the
        feed's `ticket` was taken: a request's, whose read cache pull then serves both), by
        a query that starts after it: shared with the requests that ask meanwhile."""
        want = self.feed.ticket() if ticket is None else ticket
        if self._covered > want:
            return
        self._want = max(self._want, want)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._after(self._running))
        await asyncio.shield(self._next)

    async def _after(self, running: asyncio.Task[None] | None) -> None:
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        # From here the query starts: whoever joined this sync asked before it did.
        self._running, self._next = asyncio.current_task(), None
        try:
            await self._sync_once()
        finally:
            if self._running is asyncio.current_task():
                self._running = None

    def _note(self, events: list[dict[str, object]]) -> None:
        self._pending.update(str(e.get("r")) for e in events if e.get("t") == "Consent")

    def _forget(self) -> None:
        # The feed (re)opened or failed: what it told us may be incomplete; start afresh.
        self._covered = 0
        self.clear()
        self._pending.clear()
        self._synced = None

    async def _sync_once(self) -> None:
        want, self._want = self._want, -1
        if await self.feed.sync(want if want >= 0 else None):
            # Every event of the pulls up to `covered` is in `_pending` now.
            covered, (changed, self._pending) = self.feed.synced, (self._pending, set())
            if changed:
                try:
                    await self._invalidate(changed)
                except BaseException:
                    self.clear()  # which patients they named is unknown: forget them all
                    raise
            self._covered = max(self._covered, covered)
            return
        started = time.time()
        if self._synced is None or started - self._synced > RESET_SECONDS:
            self.clear()
            self._synced = started
            return
        floor = min(self._synced, started) - GRACE_SECONDS
        self.syncs += 1
        events = await self.db[OUTBOX].find(
            {"t": "Consent", "_id": {"$gte": _floor(floor)}}, {"r": 1}).to_list()
        changed = {str(e["r"]) for e in events if e["_id"] not in self._applied}
        if changed:
            await self._invalidate(changed)
        for event in events:
            self._applied.setdefault(event["_id"], started)
        horizon = _floor(floor)
        for event_id in [e for e in self._applied if e < horizon]:
            del self._applied[event_id]
        self._synced = max(self._synced, started)

    async def _invalidate(self, changed: set[str]) -> None:
        """Drops the cached Consents of the patients the changed Consents named before and
        name now."""
        self._epoch += 1
        stale = {c.patient for consents, _ in self._by_patient.values() for c in consents
                 if c.id in changed}
        stale |= await self.store.patients_of(changed)
        for patient in stale:
            self._by_patient.pop(patient, None)
        self._epoch += 1

    async def of(self, patients: Iterable[str]) -> dict[str, tuple[Consent, ...]]:
        """Patient id -> active Consents, from the cache or (for the others) one lookup."""
        out: dict[str, tuple[Consent, ...]] = {}
        missing = []
        now = time.monotonic()
        for patient in set(patients):
            found = self._by_patient.get(patient)
            if found is None or now - found[1] > ENTRY_SECONDS:
                missing.append(patient)
            else:
                self._by_patient.move_to_end(patient)
                out[patient] = found[0]
        if missing:
            epoch = self._epoch
            loaded = await self.store.active_of(missing)
            self.lookups += 1
            out.update(loaded)
            if epoch == self._epoch:
                self._by_patient.update((p, (c, now)) for p, c in loaded.items())
                while len(self._by_patient) > self.max_patients:
                    self._by_patient.popitem(last=False)
        return out
