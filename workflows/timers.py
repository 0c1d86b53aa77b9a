"""Durable timers in MongoDB: scheduled by key, leased so one process fires each, fired once
in effect, kept across restarts.

A timer is one document of the `timers` collection, `_id` = its key (derived from workflow and
subject, e.g. `referral-sla/Task/123/received`), so scheduling the same key again never
duplicates it: the first `schedule` wins and a key fires at most once (wait again with a new
key). `ready` is when a runner may take it: its due time, then, once claimed, the end of the
claim's lease. A runner claims with one find-one-and-update (`ready <= now` → `ready = now +
lease`), so two processes never both hold it; a runner that dies holding it (SIGKILL between
the handler's effects and `done`) loses it when the lease ends and another fires it again.
That second firing doubles nothing because a handler's effects are conditional creates on
identifiers derived from the timer's key (workflows.effects). Index: (status, ready).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.tasks import stop_tasks

log = logging.getLogger(__name__)
Doc = dict[str, Any]
COLLECTION = "timers"
PENDING, DONE, CANCELLED = "pending", "done", "cancelled"


@dataclass(frozen=True)
class Timer:
    key: str
    workflow: str
    due: datetime
    payload: Doc
    attempt: int  # 1 on the first firing, more after a lease ran out

    @classmethod
    def of(cls, doc: Doc) -> Timer:
        return cls(doc["_id"], doc["workflow"], doc["due"], doc.get("payload") or {}, int(doc.get("attempts", 1)))


TimerHandler = Callable[[Timer], Awaitable[None]]


def timer_indexes() -> dict[str, list[IndexModel]]:
    return {COLLECTION: [IndexModel([("status", ASCENDING), ("ready", ASCENDING)], name="timers_ready")]}


def now() -> datetime:
    return datetime.now(UTC)


class Timers:
    """The `timers` collection: schedule, cancel, claim, mark done."""

    def __init__(self, db: AsyncDatabase[Doc], lease: timedelta = timedelta(seconds=30)) -> None:
        self.collection = db[COLLECTION]
        self.lease = lease
        self.scheduled = asyncio.Event()  # wakes this process's runner early

    async def schedule(self, key: str, due: datetime, payload: Doc | None = None, *,
                       workflow: str = "") -> bool:
        """Schedules `key` once; answers whether this call created it (False: it existed)."""
        result = await self.collection.update_one(
            {"_id": key},
            {"$setOnInsert": {"workflow": workflow or key.split("/", 1)[0], "due": due, "ready": due,
                              "payload": payload or {}, "status": PENDING, "attempts": 0,
                              "scheduled": now()}},
            upsert=True)
        self.scheduled.set()
        return result.upserted_id is not None

    async def cancel(self, key: str) -> bool:
        """Cancels a pending timer (the condition it waited for was met); answers whether it did.
        A firing already under way finishes; it cannot be marked done afterwards."""
        result = await self.collection.update_one({"_id": key, "status": PENDING},
                                                  {"$set": {"status": CANCELLED, "ended": now()}})
        return result.modified_count == 1

    async def get(self, key: str) -> Doc | None:
        return await self.collection.find_one({"_id": key})

    async def claim(self, owner: str, at: datetime | None = None) -> Doc | None:
        """Takes the earliest ready timer for one lease, or None."""
        at = at or now()
        ready = {"status": PENDING, "ready": {"$lte": at}}
        # Find, then take by _id with a conditional update: the embedded database runs any
        # find-one-and-update on this collection in 120-250 ms at 10,000 pending timers, a
        # find on the index and an update by _id in 1-2 ms each (bench/workflows.py). The
        # update re-checks `ready`, so of two runners only one takes it; the other looks again.
        for _ in range(10):
            candidate = await self.collection.find_one(ready, {"_id": 1}, sort=[("ready", ASCENDING)])
            if candidate is None:
                return None
            taken = await self.collection.update_one(
                {"_id": candidate["_id"], **ready},
                {"$set": {"ready": at + self.lease, "owner": owner}, "$inc": {"attempts": 1}})
            if taken.modified_count == 1:
                return await self.collection.find_one({"_id": candidate["_id"]})
        return None  # lost ten races in a row: the others are busy with them

    async def done(self, key: str, owner: str) -> bool:
        """Marks a fired timer done, only while `owner` still holds it."""
        result = await self.collection.update_one(
            {"_id": key, "status": PENDING, "owner": owner},
            {"$set": {"status": DONE, "ended": now()}})
        return result.modified_count == 1

    async def next_ready(self, within: timedelta) -> datetime | None:
        """The earliest `ready` before now + `within`, or None. Bounded on purpose: the
        embedded database sorts an unbounded range in memory (300 ms at 10,000 pending
        timers), a bounded one only the few timers in it (bench/workflows.py)."""
        doc = await self.collection.find_one({"status": PENDING, "ready": {"$lte": now() + within}},
                                             {"ready": 1}, sort=[("ready", ASCENDING)])
        ready: datetime | None = doc["ready"] if doc else None
        return ready


# How long a stop waits for the timer in hand before it cancels the runner.
STOP_PATIENCE = 5.0


class TimerRunner:
    """Fires due timers in this process: claim, call the workflow's handler, mark done. A
    handler that raises keeps the timer; it fires again when the lease runs out."""

    def __init__(self, timers: Timers, handlers: Callable[[str], TimerHandler | None],
                 poll: float = 0.25) -> None:
        self.timers = timers
        self.handlers = handlers
        self.poll = poll
        self.owner = uuid.uuid4().hex
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()  # a stop wakes the runner out of its wait

    async def fire_due(self) -> int:
        """Fires every timer ready now; answers how many fired."""
        fired = 0
        while not self._stopping and (doc := await self.timers.claim(self.owner)) is not None:
            handler = self.handlers(doc["workflow"])
            if handler is None:
                log.warning("no handler for timer %s of workflow %s in this process", doc["_id"], doc["workflow"])
                continue  # another process may have it; the lease runs out and it is ready again
            try:
                await handler(Timer.of(doc))
            except Exception:
                log.exception("timer %s failed (attempt %s); it fires again after its lease",
                              doc["_id"], doc.get("attempts"))
                continue
            await self.timers.done(doc["_id"], self.owner)
            fired += 1
        return fired

    async def run(self) -> None:
        while not self._stopping:
            self.timers.scheduled.clear()  # before looking: a timer scheduled meanwhile wakes us
            try:
                await self.fire_due()
                ready = await self.timers.next_ready(timedelta(seconds=self.poll))
            except Exception:
                log.exception("timer runner")
                ready = None
            if self._stopping:
                return
            wait = self.poll if ready is None else min(self.poll, max(0.0, (ready - now()).total_seconds()))
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.timers.scheduled.wait())]
            try:
                await asyncio.wait(waits, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._wake.clear()
            self._task = asyncio.create_task(self.run())

    async def stop(self, patience: float = STOP_PATIENCE) -> None:
        """Lets the timer in hand finish (its handler and `done`), then ends; cancels the
        runner only after `patience` seconds. Cancelled between a handler's effects and `done`,
        the timer would fire again after its lease (its effects doubling nothing, but every one
        of them tried again)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(task), patience)
        except BaseException:  # the stopper itself cancelled: the runner goes too
            task.cancel()
            raise
        if not task.done():
            await stop_tasks([task])
        self._stopping = False
