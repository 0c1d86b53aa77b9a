"""The built-in rooms across server processes: who is in which room, and messages between
processes, through the shared database.

With `serve --workers N`, or several servers on one database, the participants of one visit
may reach different processes. Each process keeps its own sockets; the database holds the
rest:

- `visit_peers`: one document per admitted socket — `_id` (the peer id), `room`,
  `participant`, `display`, `role`, `process` (which process holds the socket), `joined`,
  `seen`. A room's members, in the order they joined, are a query away from any process. The
  holding process refreshes `seen` every HEARTBEAT seconds; a member not seen for STALE
  seconds (its process died) is removed by whichever process notices first, and that process
  tells the room it left.
- `visit_signals`: one document per message that must cross processes — `room`, `to` (a peer
  id, or none for the whole room), `but` (a peer the room message skips), `origin` (the
  sending process), `message`. Every process follows the collection's change stream and
  delivers what is for its own sockets; messages between sockets of one process never touch
  the database. Documents older than KEEP seconds are removed by the heartbeat.

A change stream works on MongoDB's replica sets (which transactions need anyway) and on the
embedded database alike. The feed resumes after its last event when interrupted, so nothing
sent meanwhile is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from fhir_server.tasks import stop_tasks

log = logging.getLogger(__name__)
Doc = dict[str, Any]
PEERS = "visit_peers"
SIGNALS = "visit_signals"
HEARTBEAT = 5.0
STALE = 20.0
KEEP = 60.0
RETRY = 0.5

Deliver = Callable[[Doc], Awaitable[None]]
Local = Callable[[], list[str]]
Gone = Callable[[str, str], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


class Relay:
    def __init__(self, db: AsyncDatabase[Doc]) -> None:
        self.peers = db[PEERS]
        self.signals = db[SIGNALS]
        self.process = uuid.uuid4().hex
        self._deliver: Deliver | None = None
        self._local: Local = list
        self._gone: Gone | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._resume: Any = None

    def attach(self, deliver: Deliver, local: Local, gone: Gone) -> None:
        """`deliver`: a message from another process; `local`: the peer ids this process holds;
        `gone`: (room, peer) of a member whose process died."""
        self._deliver, self._local, self._gone = deliver, local, gone

    async def start(self) -> None:
        """Opens the feed before returning (idempotent): a message sent after this is seen."""
        async with self._lock:
            if self._tasks:
                return
            stream = await self._open()
            self._tasks = [asyncio.create_task(self._feed(stream), name="visit-relay-feed"),
                           asyncio.create_task(self._heartbeat(), name="visit-relay-heartbeat")]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await stop_tasks(tasks, ignore=(PyMongoError,))

    async def _open(self) -> Any:
        pipeline: list[Doc] = [{"$match": {"operationType": "insert"}}]
        options: Doc = {"resume_after": self._resume} if self._resume is not None else {}
        return await self.signals.watch(pipeline, max_await_time_ms=500, **options)

    async def _feed(self, stream: Any) -> None:
        while True:
            try:
                async with stream:
                    while True:
                        change = await stream.try_next()
                        if change is None:
                            continue
                        self._resume = stream.resume_token
                        doc = change.get("fullDocument") or {}
                        if doc.get("origin") != self.process and self._deliver is not None:
                            await self._safely(self._deliver(doc))
            except PyMongoError as exc:
                log.info("visit relay feed interrupted (%s); resuming", exc)
            await asyncio.sleep(RETRY)
            with contextlib.suppress(PyMongoError):
                stream = await self._open()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self._safely(self.beat())

    @staticmethod
    async def _safely(work: Awaitable[None]) -> None:
        """Nothing one message or one heartbeat raises ends the feed or the heartbeat."""
        try:
            await work
        except PyMongoError as exc:
            log.info("visit relay: database unavailable (%s)", exc)
        except Exception:
            log.exception("visit relay: a message or heartbeat failed")

    async def beat(self) -> None:
        """This process's members are alive; members of a dead process leave their rooms."""
        now = _now()
        ids = self._local()
        if ids:
            await self.peers.update_many({"_id": {"$in": ids}}, {"$set": {"seen": now}})
        await self.signals.delete_many({"at": {"$lt": now - timedelta(seconds=KEEP)}})
        async for doc in self.peers.find({"seen": {"$lt": now - timedelta(seconds=STALE)}}):
            # One process wins the delete, and it alone tells the room.
            if (await self.peers.delete_one({"_id": doc["_id"], "seen": doc["seen"]})).deleted_count \
                    and self._gone is not None:
                await self._gone(str(doc["room"]), str(doc["_id"]))

    async def enter(self, peer: str, room: str, info: Doc) -> list[Doc]:
        """Records `peer` in `room`; answers the room's live members in the order they joined
        (`peer` among them)."""
        now = _now()
        await self.peers.insert_one({"_id": peer, "room": room, **info, "process": self.process,
                                     "joined": now, "seen": now})
        return await self.members(room)

    async def members(self, room: str) -> list[Doc]:
        cutoff = _now() - timedelta(seconds=STALE)
        cursor = self.peers.find({"room": room, "seen": {"$gte": cutoff}}).sort([("joined", 1), ("_id", 1)])
        return [doc async for doc in cursor]

    async def leave(self, peer: str) -> bool:
        return bool((await self.peers.delete_one({"_id": peer})).deleted_count)

    async def publish(self, room: str, message: Doc, *, to: str | None = None, but: str | None = None,
                      kind: str = "message") -> None:
        """`message` to peer `to` (or the whole room but `but`) on the other processes."""
        await self.signals.insert_one({"room": room, "to": to, "but": but, "kind": kind, "origin": self.process,
                                       "message": message, "at": _now()})
