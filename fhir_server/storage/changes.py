"""The outbox's change events in commit order, followed on demand by a change stream.

A per-process cache of stored documents is correct across processes only if every read
learns of the writes committed, in any process, before it started. Every committed change
leaves one outbox event in its own transaction (interceptors/outbox.py), and a change
stream on the outbox hands those events over in commit order, with no window of
out-of-order ids to re-read (what a query by `_id` would need).

`sync()` answers True once every event committed before the call has been given to the
listeners: it waits for the first pull (getMore until empty) that starts after the call,
never one already in flight, so concurrent requests share one round trip. Pulls are
numbered; `sync(ticket)` waits for a pull numbered above `ticket` (`ticket()`: the pulls
started so far), so every change committed before the ticket was taken has reached the
listeners. A request takes one ticket (`request_ticket`) for all its caches: the read
cache and the Consent cache then share one pull per request, not one each. Nothing is pulled
while no one asks: the events wait in the stream. When the stream cannot be opened, or
fails, the listeners are reset (they forget everything) and `sync()` answers False: callers
then go to the database, as if there were no cache (fail closed). A failed stream is opened
again at the first request RETRY_SECONDS later (a standalone MongoDB has no change streams:
one failed attempt per RETRY_SECONDS, not one per request).

A write answers only once this process's feed has delivered its own events (`expect` while
the transaction runs, `delivered` after it committed). Why: a change stream shows the oplog
only up to its visible tail, the entry before the oldest commit still in flight (SecantusDB's
`oplog_visible_tail_seq`; MongoDB's oplog holes likewise), and a transaction can be
acknowledged while one that began committing before it is still in flight. Its event is then
invisible to every stream for a moment, and another process's next read, pulling in that
moment, would answer the version before it from its cache. Once any stream has shown the
event, the tail has passed it, so every pull that starts later shows it too. The same pull
keeps the stream's backlog to what one write stretch adds: a read after thousands of writes
pays no catch-up. Concurrent writes share their pulls; with no listener (caches off), or with
the stream failed (callers go to the database), nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.storage.outbox import OUTBOX

log = logging.getLogger(__name__)

Doc = dict[str, Any]
RETRY_SECONDS = 5.0
# How long a write waits for its events to show in the stream (a commit in flight before it
# holds the visible tail back for its WiredTiger commit and fsync: milliseconds); past it the
# write answers anyway (logged).
DELIVERY_PATIENCE = 2.0
Key = tuple[Any, Any, Any]  # an outbox event's (t, r, v)
TICKET = "changes.ticket"  # RequestContext.attributes: the request's ticket
# The event's type, id and version only. Every change of the outbox comes back, and the
# inserts are picked here: matched marks and purges are updates and deletes of events already
# seen, but a `$match` on the server would let a getMore answer an empty batch with more
# behind it (SecantusDB reads at most 200 of the collection's oplog entries per getMore, so a
# run of the matcher's marks filtered away would read as "drained"). Unfiltered, an empty
# batch means the stream is at the visible tail.
PIPELINE: list[Doc] = [
    {"$project": {"operationType": 1, "fullDocument.t": 1, "fullDocument.r": 1, "fullDocument.v": 1}},
]


class ChangeFeed:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.db = db
        self._on_events: list[Callable[[list[Doc]], None]] = []
        self._on_reset: list[Callable[[], None]] = []
        self._stream: AsyncChangeStream[Doc] | None = None
        self._failed_at: float | None = None
        self._running: asyncio.Task[bool] | None = None  # the pull in flight
        self._next: asyncio.Task[bool] | None = None  # the pull that starts after it
        self.pulls = 0  # pulls sent (for tests and the bench)
        self._started = 0  # pulls started, numbered 1, 2, ...
        self._running_number = 0  # the number of the pull in flight
        self._ok = 0  # the number of the latest pull that succeeded; -1 after a failure
        # Per transaction (session id): the keys of its events not yet delivered. Kept from
        # before its commit, so a pull that delivers them while the commit returns counts.
        self._expected: dict[int, set[Key]] = {}

    def subscribe(self, on_events: Callable[[list[Doc]], None], on_reset: Callable[[], None]) -> None:
        """`on_events(events)`: events `{t, r, v}` in commit order; `on_reset()`: forget all."""
        self._on_events.append(on_events)
        self._on_reset.append(on_reset)

    def ticket(self) -> int:
        """The pulls started so far: a pull numbered above it starts after this call."""
        return self._started

    @staticmethod
    def request_ticket(attributes: dict[str, Any]) -> int | None:
        """The ticket an HTTP request took when it started (its `RequestContext.attributes`,
        fhir_server.api.context); None for the server's own work: a pull after the call."""
        ticket = attributes.get(TICKET)
        return ticket if isinstance(ticket, int) else None

    @property
    def synced(self) -> int:
        """The number of the latest pull that succeeded (listeners have its events)."""
        return self._ok

    async def sync(self, ticket: int | None = None) -> bool:
        """True when every change committed before this call (or before `ticket` was taken)
        has reached the listeners."""
        if ticket is not None:
            if self._ok > ticket:
                return True
            running = self._running
            if running is not None and self._running_number > ticket:
                return await asyncio.shield(running)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._after(self._running))
        return await asyncio.shield(self._next)

    def expect(self, session: object, events: list[Doc]) -> None:
        """Outbox events `session`'s transaction inserts. A transaction's events show in the
        stream together (its oplog entries are one block), so the last call's stand for all."""
        if self._on_events and events:
            self._expected[id(session)] = {_key(e) for e in events}

    def forget(self, session: object) -> None:
        """`session`'s transaction did not commit: nothing of it is awaited."""
        self._expected.pop(id(session), None)

    async def delivered(self, session: object) -> None:
        """Returns once `session`'s committed transaction's events reached the listeners (or
        the stream failed, or DELIVERY_PATIENCE passed)."""
        waiting = self._expected.get(id(session))
        try:
            if waiting:
                async with asyncio.timeout(DELIVERY_PATIENCE):
                    while waiting and await self.sync():
                        pass
        except TimeoutError:
            log.warning("a write's change events did not show in the change stream within %s s: "
                        "another process may read the version before it for a moment", DELIVERY_PATIENCE)
        finally:
            self._expected.pop(id(session), None)

    async def _after(self, running: asyncio.Task[bool] | None) -> bool:
        if running is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(running)
        # From here the pull starts: whoever joined it asked before it did.
        self._running, self._next = asyncio.current_task(), None
        self._started += 1
        number = self._running_number = self._started
        ok = False
        try:
            ok = await self._pull()
            return ok
        finally:
            # A failed pull reset the listeners: no earlier pull vouches for them any more.
            self._ok = number if ok else -1
            if self._running is asyncio.current_task():
                self._running = None

    async def _pull(self) -> bool:
        if self._stream is None:
            if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_SECONDS:
                return False
            try:
                self._stream = await self.db[OUTBOX].watch(PIPELINE, max_await_time_ms=0)
            except Exception as error:  # no change streams here (standalone), or no database
                await self._fail(error)
                return False
            # Whatever listeners knew predates the stream: forget it. Everything committed
            # before this point is in the collections, and what follows is in the stream.
            # No write waits for events that may have committed before it opened: they would
            # never come. (A write committing just after the opening then does not wait out
            # a hole either: only at the stream's first opening and after a failure.)
            self._reset()
            for waiting in self._expected.values():
                waiting.clear()
            self._failed_at = None
        self.pulls += 1
        events: list[Doc] = []
        try:
            while (change := await self._stream.try_next()) is not None:
                if change.get("operationType") == "insert":
                    events.append(change.get("fullDocument") or {})
            if not self._stream.alive:  # invalidated (the outbox dropped)
                raise RuntimeError("the outbox change stream was invalidated")
        except Exception as error:
            await self._fail(error)
            return False
        if events:
            for listener in self._on_events:
                listener(events)
            if self._expected:
                shown = {_key(e) for e in events}
                for waiting in self._expected.values():
                    waiting -= shown
        return True

    async def _fail(self, error: Exception) -> None:
        if self._failed_at is None:
            log.warning("outbox change stream unavailable (%s): read cache bypassed", error)
        self._failed_at = time.monotonic()
        stream, self._stream = self._stream, None
        self._reset()
        if stream is not None:
            with contextlib.suppress(Exception):
                await stream.close()

    def _reset(self) -> None:
        for listener in self._on_reset:
            listener()


def _key(event: Doc) -> Key:
    """An outbox event's (type, id, version), as the commit inserted it and the stream shows it."""
    return (event.get("t"), event.get("r"), event.get("v"))
