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


class Hub:
    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}
        self._any: set[asyncio.Event] = set()

    def notify(self, sub: str) -> None:
        for event in self._events.get(sub, ()):
            event.set()

    def kick(self) -> None:
        """Something about the set of Subscriptions changed: rescan now."""
        for event in self._any:
            event.set()

    async def wait(self, sub: str, timeout: float) -> None:
        event = asyncio.Event()
        self._events.setdefault(sub, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            self._any.discard(event)

    async def follow(self, db: AsyncDatabase[dict[str, Any]], retry: float) -> None:
        """Relays notifications stored by any process to this process's waiters (runs forever)."""
        pipeline = [{"$match": {"operationType": "insert"}},
                    {"$project": {"fullDocument.s": 1}}]
        while True:
            try:
                async with await db[NOTIFICATIONS].watch(pipeline, max_await_time_ms=1000) as stream:
                    while True:
                        change = await stream.try_next()
                        if change is not None:
                            self.notify(str(change["fullDocument"]["s"]))
            except PyMongoError as exc:
                log.debug("notification feed interrupted (%s); waiters fall back to polling", exc)
                await asyncio.sleep(retry)
