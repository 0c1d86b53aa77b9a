"""Wake-ups: who waits for new notifications of a Subscription, in this process.

The matcher signals after each commit (same process: no database round trip). A change
stream on the notification collection carries the signal from a matcher in another process;
every waiter also wakes on a timeout, so a lost signal delays a notification, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from subscriptions.store import NOTIFICATIONS

log = logging.getLogger(__name__)
RECENT_PER_SUBSCRIPTION = 200


class Hub:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._any: set[asyncio.Event] = set()
        # The highest event number known stored per Subscription (saves idle queries).
        self.latest: dict[str, int] = {}
        # Notifications just stored by this process's matcher, handed to its workers without
        # a query (a few per Subscription; anything else is read from the database).
        self._recent: dict[str, dict[int, dict[str, Any]]] = {}
        self.local: dict[str, int] = {}  # Subscriptions with workers in this process (count)
        # True while this process runs the matcher: every notification is signalled here
        # directly, and the database feed is not needed.
        self.matcher_here = False

    def offer(self, sub: str, notes: list[dict[str, Any]]) -> None:
        if sub not in self.local:
            self._recent.pop(sub, None)
            return
        recent = self._recent.setdefault(sub, {})
        for note in notes:
            recent[int(note["n"])] = note
        while len(recent) > RECENT_PER_SUBSCRIPTION:
            del recent[min(recent)]

    def take(self, sub: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Notifications after `after`, in order, if this process has them all at hand."""
        recent = self._recent.get(sub)
        if not recent:
            return []
        for n in [n for n in recent if n <= after]:
            del recent[n]
        out: list[dict[str, Any]] = []
        while len(out) < limit and (after + len(out) + 1) in recent:
            out.append(recent[after + len(out) + 1])
        return out

    def notify(self, sub: str, number: int | None = None) -> None:
        if number is not None and number > self.latest.get(sub, 0):
            self.latest[sub] = number
        for event in self._events.get(sub, ()):
            event.set()

    def known_after(self, sub: str, number: int) -> bool:
        """Whether a notification of `sub` numbered above `number` is known stored."""
        return self.latest.get(sub, 0) > number

    def kick(self) -> None:
        """Something about the set of Subscriptions changed: rescan now."""
        for event in self._any:
            event.set()

    async def wait(self, sub: str, timeout: float, *, after: int | None = None) -> None:
        """Until `sub` gets a notification (at once if one numbered above `after` is known)."""
        if after is not None and self.latest.get(sub, 0) > after:
            return
        event = asyncio.Event()
        self._events.setdefault(sub, set()).add(event)
        try:
            await _wait(event, timeout)
        finally:
            waiters = self._events.get(sub)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    self._events.pop(sub, None)

    async def wait_any(self, timeout: float) -> None:
        event = asyncio.Event()
        self._any.add(event)
        try:
            await _wait(event, timeout)
        finally:
            self._any.discard(event)

    async def follow(self, db: AsyncDatabase[dict[str, Any]], retry: float) -> None:
        """Relays notifications stored by any process to this process's waiters (runs forever)."""
        pipeline: list[dict[str, Any]] = [{"$match": {"operationType": "insert"}},
                                          {"$project": {"fullDocument.s": 1, "fullDocument.n": 1}}]
        while True:
            if self.matcher_here:
                await asyncio.sleep(retry)
                continue
            try:
                async with await db[NOTIFICATIONS].watch(pipeline, max_await_time_ms=1000) as stream:
                    while not self.matcher_here:
                        change = await stream.try_next()
                        if change is not None:
                            note = change["fullDocument"]
                            self.notify(str(note["s"]), int(note.get("n", 0)))
            except PyMongoError as exc:
                log.debug("notification feed interrupted (%s); waiters fall back to polling", exc)
                await asyncio.sleep(retry)


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Until `event` is set or `timeout` passes. Not `wait_for` + suppress(TimeoutError): on
    Python 3.11 a cancellation that lands as the timeout fires comes out of `wait_for` as a
    TimeoutError, which would swallow the cancel and leave a stopping task looping forever
    (seen: the dispatcher outliving `SubscriptionService.stop`). `asyncio.timeout` keeps the
    cancellation."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
