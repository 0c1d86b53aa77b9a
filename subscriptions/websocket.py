"""Websocket channel sessions (`GET [base]/$subscription-ws`).

Messages from the client (text frames):
- `bind-with-token <token> [<last event number>]` (Backport IG): binds every Subscription the
  token (from `$get-ws-binding-token`) was issued for; the server answers each with a
  `handshake` Bundle, then sends `event-notification` Bundles (and `heartbeat` ones);
- `bind <id> [<last event number>]` (R4): the server answers `bound <id>`, then `ping <id>`
  whenever events arrive. With auth on, the upgrade request must carry the owner's token.
- `unbind <id>`.
One socket may bind several Subscriptions. A client that reconnects with the last event
number it processed first gets every event after it (events are stored, not just relayed).
Once the owner's grant lapsed (`subscriptions.grant`) a binding ends with `error <id> ...`,
and binding again is refused the same way until the owner renews it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from fhir_server import fhirjson
from fhir_server.config import SubscriptionSettings
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.storage import schema
from fhir_server.storage.repository import Repository
from fhir_server.tasks import stop_tasks
from subscriptions.grant import LAPSED, Grants
from subscriptions.hub import Hub
from subscriptions.leases import utcnow
from subscriptions.model import Spec, SpecParser
from subscriptions.notify import Renderer
from subscriptions.store import Store

log = logging.getLogger(__name__)

Doc = dict[str, Any]


@dataclass
class _Session:
    socket: WebSocket
    context: RequestContext | None
    auth_enabled: bool
    lock: asyncio.Lock
    bindings: dict[str, asyncio.Task[None]]

    async def send(self, text: str) -> None:
        async with self.lock:
            await self.socket.send_text(text)


class WebSocketSessions:
    def __init__(self, repository: Repository, store: Store, hub: Hub, renderer: Renderer,
                 grants: Grants, parser: SpecParser, settings: SubscriptionSettings, base_url: str) -> None:
        self.repository = repository
        self.grants = grants
        self.store = store
        self.hub = hub
        self.renderer = renderer
        self.parser = parser
        self.settings = settings
        self.base_url = base_url

    async def serve(self, socket: WebSocket, context: RequestContext | None, *, auth_enabled: bool) -> None:
        session = _Session(socket, context, auth_enabled, asyncio.Lock(), {})
        try:
            while True:
                await self._command(session, (await socket.receive_text()).split())
        except WebSocketDisconnect:
            pass
        finally:
            await stop_tasks(session.bindings.values())

    async def _command(self, session: _Session, words: list[str]) -> None:
        verb = words[0] if words else ""
        last = _number(words[2]) if len(words) > 2 else None
        if verb == "bind-with-token" and len(words) > 1:
            subs = await self.store.redeem_token(words[1], utcnow())
            if subs is None:
                await session.send("error invalid or expired binding token")
                return
            for sub in subs:
                await self._bind(session, sub, last)
        elif verb == "bind" and len(words) > 1:
            if session.auth_enabled and session.context is None:
                await session.send(f"error {words[1]} use bind-with-token or authenticate the upgrade")
                return
            context = session.context or RequestContext.system(self.base_url, "read")
            try:
                await self.repository.read(context, "Subscription", words[1])
            except FhirError:
                await session.send(f"error {words[1]} unknown Subscription")
                return
            await self._bind(session, words[1], last)
        elif verb == "unbind" and len(words) > 1:
            task = session.bindings.pop(words[1], None)
            if task is not None:
                task.cancel()
            await session.send(f"unbound {words[1]}")
        else:
            await session.send("error unknown command (bind-with-token, bind, unbind)")

    async def _load(self, sub: str) -> tuple[Spec, Doc | None] | None:
        doc = await self.repository.database.current("Subscription").find_one({"_id": sub, **schema.LIVE})
        resource = schema.resource_of(doc)
        if resource is None:
            return None
        try:
            spec = self.parser.parse(resource, internal=True)
        except FhirError:
            return None
        return spec, (await self.store.state(sub)).get("owner")

    async def _bind(self, session: _Session, sub: str, last: int | None) -> None:
        loaded = await self._load(sub)
        if loaded is None or loaded[0].channel.type != "websocket":
            await session.send(f"error {sub} is not a websocket Subscription")
            return
        spec, owner = loaded
        if not await self.grants.holds(owner):
            await session.send(f"error {sub} {LAPSED}")
            return
        old = session.bindings.pop(sub, None)
        if old is not None:
            old.cancel()
        total = int((await self.store.state(sub)).get("n", 0))
        if spec.kind == "topic":
            await session.send(fhirjson.dumps(self.renderer.bundle(spec, "handshake", total, [])).decode())
        else:
            await session.send(f"bound {sub}")
        start = total if last is None else max(0, min(last, total))
        session.bindings[sub] = asyncio.create_task(self._stream(session, spec, owner, start))

    async def _stream(self, session: _Session, spec: Spec, owner: Doc | None, last: int) -> None:
        heartbeat = spec.channel.heartbeat
        sent = time.monotonic()
        try:
            while True:
                notes = await self.store.pending(spec.id, last, spec.channel.max_count)
                if notes:
                    if not await self.grants.holds(owner):
                        break
                    if spec.kind == "topic":
                        views = [await self.renderer.view(n, owner, content=spec.channel.content == "full-resource")
                                 for n in notes]
                        bundle = self.renderer.bundle(spec, "event-notification", int(notes[-1]["n"]), views)
                        await session.send(fhirjson.dumps(bundle).decode())
                    else:
                        await session.send(f"ping {spec.id}")
                    last = int(notes[-1]["n"])
                    sent = time.monotonic()
                    continue
                wait = self.settings.idle_poll
                if heartbeat and spec.kind == "topic":
                    due = sent + heartbeat - time.monotonic()
                    if due <= 0:
                        if not await self.grants.holds(owner):
                            break
                        bundle = self.renderer.bundle(spec, "heartbeat", last, [])
                        await session.send(fhirjson.dumps(bundle).decode())
                        sent = time.monotonic()
                        continue
                    wait = min(wait, due)
                await self.hub.wait(spec.id, wait, after=last)
            await session.send(f"error {spec.id} {LAPSED}")  # the grant lapsed: nothing more is sent
        except (WebSocketDisconnect, RuntimeError):
            return


def _number(text: str) -> int | None:
    try:
        return max(0, int(text))
    except ValueError:
        return None
