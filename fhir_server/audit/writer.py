"""The durable, batched AuditEvent writer: off the response path, and nothing lost on a crash.

`record(event)` names the event after its batch (`<batch>.<chunk>.<n>`), appends it to the
write-ahead log (one write(2): it survives the process dying from then on) and to an
in-memory batch, then returns: the request goes on without waiting for MongoDB. A background
task fsyncs the log every `sync_interval` (it survives the machine from then on) and stores
batches every `flush_interval`, or as soon as `batch_size` are waiting: it seals the log
segment, fsyncs it, stores the batch's AuditEvents (versions built by the write pipeline) as
a few documents of many events each (fhir_server.storage.audit_batches: one insert, about a
tenth of the database CPU of a document per event) with majority write concern, and deletes
the segment. A crash at any point leaves the segment on disk; the next start replays it.
Inserts are idempotent (the batch document's id follows from its events' ids), so a batch
stored twice is stored once. When `max_pending` events wait, `record` waits too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import orjson
from pymongo.write_concern import WriteConcern

from fhir_server.audit.settings import AuditSettings
from fhir_server.audit.wal import Segment, WriteAheadLog
from fhir_server.storage import audit_batches
from fhir_server.storage.audit_batches import CHUNK_BYTES, CHUNK_EVENTS
from fhir_server.storage.database import Database
from fhir_server.storage.pipeline import Versions, store_new
from fhir_server.tasks import stop_tasks

log = logging.getLogger(__name__)
Doc = dict[str, Any]
AUDIT_EVENT = "AuditEvent"
MAJORITY = WriteConcern("majority")


class AuditWriter:
    def __init__(self, database: Database, versions: Versions, settings: AuditSettings) -> None:
        self.database = database
        self.versions = versions
        self.settings = settings
        self.wal = WriteAheadLog(settings.directory, database.db.name)
        self._pending: list[Doc] = []
        self._unstored: list[tuple[Segment, list[Doc]]] = []
        self._has_events = asyncio.Event()
        self._batch_full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._unsynced = False

    async def start(self) -> None:
        """Replays what a crashed writer left, then starts the background task."""
        self.wal.open()
        for segment in self.wal.orphans():
            events = list(segment.read())
            await self._store(events)
            segment.remove()
            log.warning("replayed %d audit events from %s", len(events), segment.path.name)
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def record(self, event: Doc) -> None:
        if self.waiting() >= self.settings.max_pending:
            self._room.clear()
            self._batch_full.set()
            await self._room.wait()
        # No await between the log and the batch: a sealed segment holds exactly its batch.
        self.wal.append(self._named(event))
        self._unsynced = True
        self._pending.append(event)
        self._has_events.set()
        if len(self._pending) >= self.settings.batch_size:
            self._batch_full.set()

    def _named(self, event: Doc) -> bytes:
        """The log line of `event`, given its id in the open segment's batch."""
        segment = self.wal.current
        assert segment is not None, "the write-ahead log is not open"
        if segment.count >= CHUNK_EVENTS:
            segment.chunk, segment.count, segment.size = segment.chunk + 1, 0, 0
        event["id"] = f"{segment.batch}.{segment.chunk}.{segment.count}"
        line = orjson.dumps(event) + b"\n"
        if segment.count and segment.size + len(line) > CHUNK_BYTES:
            segment.chunk, segment.count, segment.size = segment.chunk + 1, 0, 0
            event["id"] = f"{segment.batch}.{segment.chunk}.{segment.count}"
            line = orjson.dumps(event) + b"\n"
        segment.count += 1
        segment.size += len(line)
        return line

    def waiting(self) -> int:
        return len(self._pending) + sum(len(batch) for _, batch in self._unstored)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._has_events.wait()
            # Gather a batch for up to flush_interval, fsyncing the log every sync_interval.
            deadline = loop.time() + self.settings.flush_interval
            while not self._batch_full.is_set() and (left := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), min(left, self.settings.sync_interval))
                await self._sync()
            try:
                await self.flush()
            except Exception:
                log.exception("storing audit events failed; they stay in the write-ahead log")
                await asyncio.sleep(1.0)
                self._has_events.set()  # try again

    async def _sync(self) -> None:
        """fsyncs what was appended to the open segment since the last time."""
        async with self._lock:
            if self._unsynced and self.wal.current is not None:
                self._unsynced = False
                await asyncio.to_thread(self.wal.current.sync)

    async def flush(self) -> None:
        """Stores every event recorded so far."""
        async with self._lock:
            if self._pending:
                batch, self._pending = self._pending, []
                self._unstored.append((self.wal.seal(), batch))
            self._has_events.clear()
            self._batch_full.clear()
            while self._unstored:
                segment, batch = self._unstored[0]
                await asyncio.to_thread(segment.sync)
                await self._store(batch)
                segment.remove()
                self._unstored.pop(0)
            self._room.set()

    async def _store(self, events: list[Doc]) -> None:
        # Inserts are idempotent: a replayed batch stores only what is not there yet.
        versions = [self.versions.build(AUDIT_EVENT, event["id"], event, None, "create") for event in events]
        batched = [v.current for v in versions if audit_batches.document_of(v.current["_id"])]
        if batched:
            await audit_batches.store(self.database.audit_batches, batched, MAJORITY)
        # Events logged before batches (ids of their own) are stored as lone ones.
        await store_new(self.database, AUDIT_EVENT,
                        [v for v in versions if not audit_batches.document_of(v.current["_id"])], MAJORITY)

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task], ignore=())
            self._task = None
        try:
            await self.flush()
        except Exception:
            log.exception("audit events kept in the write-ahead log for the next start")
            for segment, _ in self._unstored:
                os.close(segment.fd)  # the file stays: the next start replays it
            self._unstored.clear()
        self.wal.close()
