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
TICKET = "changes.ticket"  # RequestContext.attributes: the request's ticket
# The event's type, id and version only; inserts only (matched marks and purges are updates
# and deletes of events already seen).
PIPELINE: list[Doc] = [
    {"$match": {"operationType": "insert"}},
    {"$project": {"fullDocument.t": 1, "fullDocument.r": 1, "fullDocument.v": 1}},
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
            self._reset()
            self._failed_at = None
        self.pulls += 1
        events: list[Doc] = []
        try:
            while (change := await self._stream.try_next()) is not None:
                events.append(change.get("fullDocument") or {})
            if not self._stream.alive:  # invalidated (the outbox dropped)
                raise RuntimeError("the outbox change stream was invalidated")
        except Exception as error:
            await self._fail(error)
            return False
        if events:
            for listener in self._on_events:
                listener(events)
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
