"""The Subscription operations of the Backport IG: `$status`, `$events`, `$get-ws-binding-token`.

Each reads the Subscription through the repository with the caller's context, so only its
owner (or a `system/` scope on Subscription) gets anything; `$events` releases every event's
resource through the read pipeline as a read by the caller.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from datetime import timedelta
from typing import Any

from fhir_server.config import SubscriptionSettings
from fhir_server.context import RequestContext
from fhir_server.errors import BadRequest, InvalidResource
from fhir_server.storage.documents import format_instant, now
from fhir_server.storage.repository import Repository
from subscriptions.model import CONTENTS, Spec, SpecParser
from subscriptions.notify import Renderer
from subscriptions.store import Store

Doc = dict[str, Any]
MAX_EVENTS = 100
MAX_STATUS = 100


def websocket_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/$subscription-ws"


def _searchset(resources: list[Doc]) -> Doc:
    return {
        "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset",
        "meta": {"lastUpdated": format_instant(now())}, "total": len(resources),
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }


class Operations:
    def __init__(self, repository: Repository, store: Store, renderer: Renderer, parser: SpecParser,
                 settings: SubscriptionSettings, base_url: str) -> None:
        self.repository = repository
        self.store = store
        self.renderer = renderer
        self.parser = parser
        self.settings = settings
        self.base_url = base_url

    async def _read(self, context: RequestContext, sub_id: str) -> tuple[Spec, Doc]:
        reader = dataclasses.replace(context, interaction="read", resource_type="Subscription",
                                     resource_id=sub_id)
        stored = await self.repository.read(reader, "Subscription", sub_id)
        return self.parser.parse(stored.resource, internal=True), stored.resource

    async def _owned_ids(self, context: RequestContext) -> list[str]:
        reader = dataclasses.replace(context, interaction="search-type", resource_type="Subscription")
        query = self.repository.search_engine.parse("Subscription", [("_count", str(MAX_STATUS))])
        page = await self.repository.search(reader, query, with_total=False)
        return [entry.id for entry in page.entries]

    async def status(self, context: RequestContext, ids: list[str]) -> Doc:
        """`$status`: one `query-status` SubscriptionStatus per Subscription."""
        if not ids:
            ids = await self._owned_ids(context)
        out: list[Doc] = []
        for sub_id in ids[:MAX_STATUS]:
            spec, resource = await self._read(context, sub_id)
            total = int((await self.store.state(sub_id)).get("n", 0))
            delivery = await self.store.delivery(sub_id)
            error = resource.get("error")
            if not error and delivery.get("attempts"):
                error = f"{delivery['attempts']} failed attempts; last: {delivery.get('last_error')}"
            out.append(self.renderer.status(spec, "query-status", total, [], error=error))
        return _searchset(out)

    async def events(self, context: RequestContext, sub_id: str, since: int | None,
                     until: int | None, content: str | None) -> Doc:
        """`$events`: the stored events in [since, until] (at most MAX_EVENTS), replayed."""
        if content is not None and content not in CONTENTS:
            raise BadRequest(f"content must be one of {', '.join(CONTENTS)}", code="value")
        spec, _ = await self._read(context, sub_id)
        total = int((await self.store.state(sub_id)).get("n", 0))
        first = max(1, since if since is not None else 1)
        last = min(total, until if until is not None else total)
        notes = await self.store.events(sub_id, first, last, MAX_EVENTS) if first <= last else []
        views = []
        for note in notes:
            reader = dataclasses.replace(context, interaction="vread", resource_type=str(note["t"]),
                                         resource_id=str(note["r"]))
            views.append(await self.renderer.view(note, None, context=reader))
        return self.renderer.bundle(spec, "query-event", total, views, content=content or spec.channel.content)

    async def binding_token(self, context: RequestContext, ids: list[str]) -> Doc:
        """`$get-ws-binding-token`: a token that binds these websocket Subscriptions."""
        if not ids:
            raise BadRequest("$get-ws-binding-token needs a Subscription id", code="required")
        for sub_id in ids:
            spec, _ = await self._read(context, sub_id)
            if spec.channel.type != "websocket":
                raise InvalidResource(f"Subscription/{sub_id} does not use a websocket channel",
                                      code="not-supported")
        token = secrets.token_urlsafe(32)
        expires = now() + timedelta(seconds=self.settings.ws_token_ttl)
        await self.store.save_token(token, ids, expires)
        return {"resourceType": "Parameters", "parameter": [
            {"name": "token", "valueString": token},
            {"name": "expiration", "valueDateTime": format_instant(expires)},
            *({"name": "subscription", "valueString": sub_id} for sub_id in ids),
            {"name": "websocket-url", "valueUrl": websocket_url(self.base_url)},
        ]}
