"""The dispatcher loop of one process: leases, the matcher, and the delivery workers.

Every scan (and at once when a Subscription changes here) it renews its leases, takes the
matcher lease if free, reads the Subscriptions that need a deliverer (rest-hook and in-process
ones `requested` or `active`; websocket ones while `requested`, to activate them), takes
leases up to its fair share, hands back those beyond it, and keeps one worker running per
lease held, restarted when its Subscription changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import pymongo
from pymongo.errors import PyMongoError

from fhir_server.errors import FhirError
from fhir_server.storage import schema
from fhir_server.tasks import stop_tasks
from subscriptions.delivery import Delivery, Worker
from subscriptions.leases import Leases
from subscriptions.matcher import LEASE as MATCHER_LEASE
from subscriptions.matcher import Matcher
from subscriptions.model import IN_PROCESS, Spec, SpecParser
from subscriptions.store import STATE

log = logging.getLogger(__name__)

Doc = dict[str, Any]
PREFIX = "sub:"


def _background(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A long-running task started from a scan, in a fresh context: a task copies its
    creator's context, and the scan's (pymongo's deadline) must not bound the task's life."""
    return asyncio.create_task(work, context=contextvars.Context())


class Dispatcher:
    def __init__(self, delivery: Delivery, matcher: Matcher, leases: Leases, parser: SpecParser) -> None:
        self.delivery = delivery
        self.matcher = matcher
        self.leases = leases
        self.parser = parser
        self.workers: dict[str, tuple[asyncio.Task[None], Worker]] = {}
        self.matcher_task: asyncio.Task[None] | None = None
        self._parsed: dict[str, tuple[int, Spec | None]] = {}
        # True while run() loops; `scanned` (monotonic) when a scan last finished: the ready
        # check asks both, so a dispatcher that stalls is seen. _stopping ends the loop even
        # if a cancellation were lost.
        self.running = False
        self.scanned: float | None = None
        self._stopping = False

    @property
    def scan_bound(self) -> float:
        """How long one scan may take before it is abandoned (and the next one starts)."""
        return max(5.0, 10 * self.delivery.settings.scan_interval)

    def stalled(self) -> bool:
        """No scan finished within twice the bound: the loop is stuck or dead."""
        last = self.scanned
        return not self.running or last is None or time.monotonic() - last > 2 * self.scan_bound

    async def run(self) -> None:
        settings = self.delivery.settings
        self.running = True
        self.scanned = time.monotonic()
        try:
            while not self._stopping:
                await self._scan_once()
                await self.delivery.hub.wait_any(settings.scan_interval)
        finally:
            self.running = False

    async def _scan_once(self) -> None:
        """One scan, bounded: every database command of it shares one deadline (pymongo's
        client-side timeout), so a command that never answers (a lock held by an abandoned
        transaction) costs one scan, not the dispatcher. Nothing a scan raises ends the loop:
        a dead loop would leave every Subscription undelivered without a word."""
        bound = self.scan_bound
        try:
            with pymongo.timeout(bound):
                async with asyncio.timeout(bound + 1.0):
                    await self.scan()
            self.scanned = time.monotonic()
        except (PyMongoError, FhirError) as exc:
            log.warning("subscription dispatcher scan failed: %s", exc)
        except TimeoutError:
            log.error("subscription dispatcher scan did not finish in %.1f s; abandoned", bound + 1.0)
        except Exception:
            log.exception("subscription dispatcher scan failed")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [t for t, _ in self.workers.values()]
        if self.matcher_task is not None:
            tasks.append(self.matcher_task)
        await stop_tasks(tasks)
        self.workers.clear()
        self.matcher_task = None
        with contextlib.suppress(PyMongoError):
            await self.delivery.flush()
        with contextlib.suppress(PyMongoError):
            await self.leases.release_all()

    # ------------------------------------------------------------------ one scan

    async def scan(self) -> None:
        processes = await self.leases.heartbeat()
        held = await self.leases.renew()
        await self._matcher(held)
        wanted = await self._deliverable()
        share = Leases.share(len(wanted), processes)
        mine = {k[len(PREFIX):] for k in held if k.startswith(PREFIX)}
        # Gone, off or not deliverable here any more: stop and hand back.
        for sub in sorted(mine - set(wanted)):
            await self._stop(sub)
            await self.leases.release(PREFIX + sub)
            mine.discard(sub)
        # Each process prefers a different order, so that they do not all race for the same.
        order = sorted(wanted, key=lambda s: hashlib.sha1(f"{self.leases.holder}{s}".encode()).digest())
        for sub in order:
            if len(mine) >= share:
                break
            if sub not in mine and await self.leases.acquire(PREFIX + sub):
                mine.add(sub)
        for sub in sorted(mine, key=order.index)[share:] if len(mine) > share else []:
            await self._stop(sub)
            await self.leases.release(PREFIX + sub)
            mine.discard(sub)
        for sub in sorted(set(self.workers) - mine):
            await self._stop(sub)
        for sub in mine:
            self._ensure(*wanted[sub])

    async def _matcher(self, held: set[str]) -> None:
        running = self.matcher_task is not None and not self.matcher_task.done()
        if MATCHER_LEASE in held or await self.leases.acquire(MATCHER_LEASE):
            if not running:
                self.matcher_task = _background(self.matcher.run())
        elif running and self.matcher_task is not None:
            self.matcher_task.cancel()
            self.matcher_task = None

    async def _specs(self) -> list[Spec]:
        """The Subscriptions `requested` or `active` (parsed once per version)."""
        current = self.delivery.repository.database.current("Subscription")
        collecting = {**schema.LIVE, schema.index_field("status"): {"$in": ["requested", "active"]}}
        versions = {d["_id"]: d[schema.VERSION] for d in await current.find(
            collecting, {schema.VERSION: 1}).to_list()}
        stale = [i for i, v in versions.items() if i not in self._parsed or self._parsed[i][0] != v]
        if stale:
            async for doc in current.find({"_id": {"$in": stale}}, {schema.RESOURCE: 1, schema.VERSION: 1}):
                resource = schema.resource_of(doc)
                try:
                    spec: Spec | None = self.parser.parse(resource, internal=True) if resource else None
                except FhirError:
                    spec = None
                self._parsed[doc["_id"]] = (doc[schema.VERSION], spec)
        for gone in set(self._parsed) - set(versions):
            del self._parsed[gone]
        return [spec for _, spec in self._parsed.values() if spec is not None]

    async def _deliverable(self) -> dict[str, tuple[Spec, Doc | None]]:
        db = self.delivery.repository.database
        specs: dict[str, Spec] = {}
        for spec in await self._specs():
            if spec.channel.type == "websocket" and spec.status != "requested":
                continue
            if spec.channel.type == IN_PROCESS and not self.delivery.handlers.has(spec.handler):
                continue
            specs[spec.id] = spec
        owners = {d["_id"]: d.get("owner") for d in await db.db[STATE].find(
            {"_id": {"$in": sorted(specs)}}, {"owner": 1}).to_list()}
        unowned = sorted(sub for sub in specs if not owners.get(sub))
        if unowned:
            # Fail closed: with no owner there is no one to read the events as.
            log.warning("Subscriptions without a recorded owner deliver nothing: %s", ", ".join(unowned)[:300])
        return {sub: (spec, owners[sub]) for sub, spec in specs.items() if owners.get(sub)}

    def _ensure(self, spec: Spec, owner: Doc | None) -> None:
        current = self.workers.get(spec.id)
        if current is not None:
            task, worker = current
            if worker.spec.version >= spec.version and not task.done():
                return
            # Changed, or ended although still wanted (a lost status write, a crash): again.
            task.cancel()
        worker = Worker(self.delivery, spec, owner)
        self.workers[spec.id] = (_background(worker.run()), worker)

    async def _stop(self, sub: str) -> None:
        current = self.workers.pop(sub, None)
        if current is None:
            return
        await stop_tasks([current[0]])
