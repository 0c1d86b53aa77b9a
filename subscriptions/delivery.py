"""Delivery: one worker per Subscription whose lease this process holds.

A worker sends the notifications after the last acknowledged number, in order, a batch of
at most `max count` at a time; nothing later is sent while an earlier one is undelivered, and
only that Subscription waits. A failure is retried with exponential back-off and jitter for
the retry window (persisted, so a take-over continues the same window), then the Subscription
is set to `error` with the reason (shown by `$status`); its events keep being collected and
go out, in order, once its owner sets it back to `requested`.

Activation: a `requested` rest-hook Subscription gets a handshake (Backport: a `handshake`
Bundle; R4 criteria: an empty POST), then becomes `active`. Heartbeats go out when nothing
else was sent for the heartbeat period.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from typing import Any

from fhir_server import fhirjson
from fhir_server.config import SubscriptionSettings
from fhir_server.errors import FhirError
from fhir_server.storage.repository import Repository
from subscriptions.channels import DeliveryFailed, InProcessHandlers, RestHook
from subscriptions.grant import LAPSED, Grants, expired
from subscriptions.guard import server_context
from subscriptions.hub import Hub
from subscriptions.leases import utcnow
from subscriptions.model import IN_PROCESS, Spec
from subscriptions.notify import EventView, Renderer
from subscriptions.store import Store

log = logging.getLogger(__name__)
ACK_EVERY = 0.05  # seconds

Doc = dict[str, Any]


@dataclasses.dataclass
class Delivery:
    """What a worker needs, shared by all workers of the process."""

    repository: Repository
    store: Store
    hub: Hub
    renderer: Renderer
    rest_hook: RestHook
    handlers: InProcessHandlers
    grants: Grants
    settings: SubscriptionSettings
    base_url: str
    delivered: int = 0
    # Acknowledged numbers, written in one bulk write every ACK_EVERY (a crash may repeat
    # what was delivered in the last moments: at least once).
    acks: dict[str, int] = dataclasses.field(default_factory=dict)
    _unsaved: dict[str, int] = dataclasses.field(default_factory=dict)
    _flusher: asyncio.Task[None] | None = None

    def ack(self, sub: str, n: int) -> None:
        self.acks[sub] = max(n, self.acks.get(sub, 0))
        self._unsaved[sub] = self.acks[sub]
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(ACK_EVERY)
        await self.flush()

    async def flush(self) -> None:
        unsaved, self._unsaved = self._unsaved, {}
        if unsaved:
            await self.store.ack_many(unsaved, utcnow())

    async def set_status(self, spec: Spec, status: str, error: str | None = None) -> Spec | None:
        """Writes the Subscription's new status (as the server), unless it changed meanwhile."""
        context = server_context(self.base_url)
        try:
            stored = await self.repository.read(context, "Subscription", spec.id)
        except FhirError:
            return None
        if stored.version_id != spec.version:
            return None
        resource = dict(stored.resource)
        resource["status"] = status
        if error:
            resource["error"] = error[:1000]
        else:
            resource.pop("error", None)
        try:
            outcome = await self.repository.update(context, "Subscription", spec.id, resource,
                                                   if_match=spec.version)
        except FhirError as exc:
            log.info("Subscription/%s status not set to %s: %s", spec.id, status, exc.diagnostics)
            return None
        return dataclasses.replace(spec, status=status, version=outcome.stored.version_id)


class Worker:
    def __init__(self, delivery: Delivery, spec: Spec, owner: Doc | None) -> None:
        self.d = delivery
        self.spec = spec
        self.owner = owner
        self.last_sent = time.monotonic()

    async def run(self) -> None:
        local = self.d.hub.local
        local[self.spec.id] = local.get(self.spec.id, 0) + 1
        try:
            if self.spec.status == "requested" and not await self._activate():
                return
            if self.spec.status == "active" and self.spec.channel.type != "websocket":
                await self._deliver()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery worker of Subscription/%s failed", self.spec.id)
        finally:
            local[self.spec.id] -= 1
            if not local[self.spec.id]:
                del local[self.spec.id]

    # ------------------------------------------------------------------ activation

    async def _activate(self) -> bool:
        await self.d.store.reset(self.spec.id)
        if self.spec.channel.type == "rest-hook":
            while True:
                try:
                    await self._post_status("handshake")
                    break
                except DeliveryFailed as exc:
                    if not await self._failed(f"handshake failed: {exc}"):
                        return False
        updated = await self.d.set_status(self.spec, "active")
        if updated is None:
            return False
        self.spec = updated
        return True

    # ------------------------------------------------------------------ events

    async def _deliver(self) -> None:
        sub = self.spec.id
        acked = max(int((await self.d.store.delivery(sub)).get("acked", 0)), self.d.acks.get(sub, 0))
        batch = 1 if self.spec.kind == "criteria" or self.spec.channel.type == IN_PROCESS \
            else self.spec.channel.max_count
        while True:
            notes = self.d.hub.take(sub, acked, batch)
            handed = bool(notes)  # by this process's matcher, which signals every later one
            if not notes:
                notes = await self.d.store.pending(sub, acked, batch)
            if not notes:
                if not await self._idle(acked):
                    return
                continue
            if not await self._granted():
                return
            try:
                await self._send(notes)
            except DeliveryFailed as exc:
                if not await self._failed(str(exc)):
                    return
                continue
            acked = int(notes[-1]["n"])
            self.d.delivered += len(notes)
            self.last_sent = time.monotonic()
            self.d.ack(sub, acked)
            # Caught up: a short batch, or the last handed over with none later known (a
            # query would find nothing; a later event wakes `_idle` at once).
            caught_up = len(notes) < batch or (handed and not self.d.hub.known_after(sub, acked))
            if caught_up and not await self._idle(acked):  # at once if a later event is known
                return

    async def _granted(self) -> bool:
        """Whether the owner's grant is still held; if not, the Subscription is set to `error`
        (its owner renews it by an update with a current token) and nothing more is sent."""
        if await self.d.grants.holds(self.owner):
            return True
        await self.d.set_status(self.spec, "error", LAPSED)
        return False

    async def _idle(self, acked: int) -> bool:
        """Waits for a later event (a heartbeat is due meanwhile); False once the grant lapsed."""
        heartbeat = self.spec.channel.heartbeat
        wait = self.d.settings.idle_poll
        if heartbeat and self.spec.kind == "topic" and self.spec.channel.type == "rest-hook":
            due = self.last_sent + heartbeat - time.monotonic()
            if due <= 0:
                if not await self._granted():
                    return False
                try:
                    await self._post_status("heartbeat")
                    await self.d.store.touch(self.spec.id, utcnow())
                except DeliveryFailed as exc:
                    log.info("heartbeat of Subscription/%s failed: %s", self.spec.id, exc)
                self.last_sent = time.monotonic()
                return True
            wait = min(wait, due)
        await self.d.hub.wait(self.spec.id, wait, after=acked)
        # Expired while idle: say so now (a revocation is seen before the next send).
        return not expired(self.owner) or await self._granted()

    async def _views(self, notes: list[Doc]) -> list[EventView]:
        content = self.spec.channel.content == "full-resource" or (
            self.spec.kind == "criteria" and self.spec.channel.payload is not None)
        return [await self.d.renderer.view(note, self.owner, content=content) for note in notes]

    async def _send(self, notes: list[Doc]) -> None:
        views = await self._views(notes)
        spec = self.spec
        if spec.channel.type == IN_PROCESS:
            await self.d.handlers.deliver(spec, views)
        elif spec.kind == "criteria":
            await self.d.rest_hook.post(spec, self.d.renderer.r4_body(spec, views[0]))
        else:
            total = int(notes[-1]["n"])
            bundle = self.d.renderer.bundle(spec, "event-notification", total, views)
            await self.d.rest_hook.post(spec, fhirjson.dumps(bundle))

    async def _post_status(self, kind: str) -> None:
        spec = self.spec
        if spec.kind == "criteria":
            await self.d.rest_hook.post(spec, b"")
            return
        total = int((await self.d.store.state(spec.id)).get("n", 0))
        bundle = self.d.renderer.bundle(spec, kind, total, [])
        await self.d.rest_hook.post(spec, fhirjson.dumps(bundle))
        self.last_sent = time.monotonic()

    # ------------------------------------------------------------------ failures

    async def _failed(self, error: str) -> bool:
        """Records a failure; sleeps the back-off and answers True, or sets `error` and False."""
        settings = self.d.settings
        state = await self.d.store.failure(self.spec.id, error, utcnow())
        failing = (utcnow() - state["failing_since"]).total_seconds()
        if failing >= settings.retry_window:
            reason = f"delivery failed for {failing:.0f} s ({state['attempts']} attempts): {error}"
            await self.d.set_status(self.spec, "error", reason)
            return False
        attempts = int(state["attempts"])
        cap = min(settings.retry_max, settings.retry_initial * 2 ** min(attempts - 1, 30))
        delay = cap / 2 + random.uniform(0, cap / 2)
        log.info("Subscription/%s: %s; retry %d in %.2f s", self.spec.id, error, attempts, delay)
        await asyncio.sleep(min(delay, settings.retry_window - failing))
        return True
