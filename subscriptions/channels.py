"""Channels that push notifications out of the process: rest-hook and in-process handlers.

(Websocket channels are pulled by connected clients: `subscriptions.websocket`.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from subscriptions.endpoints import EndpointPolicy, EndpointRefused
from subscriptions.model import Spec
from subscriptions.notify import EventView

log = logging.getLogger(__name__)
MAX_ANSWER = 64 * 1024  # bytes of an endpoint's answer read, at most

Doc = dict[str, Any]


class DeliveryFailed(Exception):
    """The channel did not take the notification (the message says why)."""


class RestHook:
    def __init__(self, policy: EndpointPolicy, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout
        # One pool for every endpoint; a dead one holds at most its own connections for at
        # most its timeout, so it never slows the others.
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=200),
            follow_redirects=False, trust_env=False)

    async def post(self, spec: Spec, body: bytes) -> None:
        endpoint = spec.channel.endpoint
        assert endpoint is not None
        try:
            target = await self.policy.check(endpoint)
        except EndpointRefused as exc:
            raise DeliveryFailed(str(exc)) from None
        headers = dict(spec.channel.headers)
        if body:
            headers["Content-Type"] = spec.channel.payload or "application/fhir+json"
        headers.update(target.headers)
        timeout = float(spec.channel.timeout or self.timeout)
        try:
            # Streamed, and read only up to a limit: an endpoint cannot make us hold a large
            # answer (a small one is read out so that its connection can be kept alive).
            async with self.client.stream("POST", target.url, content=body, headers=headers,
                                          extensions=target.extensions, timeout=timeout) as response:
                status = response.status_code
                size = 0
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    if size > MAX_ANSWER:
                        break
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"the endpoint answered HTTP {status}")

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class Notification:
    """What an in-process subscriber receives for one event."""

    subscription: str
    topic: str | None
    number: int
    timestamp: datetime
    interaction: str
    resource_type: str
    focus: str | None  # "Type/id"; None when the owner may not see it
    resource: Doc | None  # the version's content (None for a delete or when not visible)


Handler = Callable[[Notification], Awaitable[None]]


class InProcessHandlers:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def has(self, name: str | None) -> bool:
        return name is not None and name in self.handlers

    async def deliver(self, spec: Spec, events: list[EventView]) -> None:
        handler = self.handlers.get(spec.handler or "")
        if handler is None:
            raise DeliveryFailed(f"no in-process handler '{spec.handler}' in this process")
        for event in events:
            note = Notification(spec.id, spec.topic_url, event.number, event.timestamp,
                                event.interaction, event.resource_type, event.focus,
                                event.resource if spec.channel.content == "full-resource" else None)
            try:
                await handler(note)
            except Exception as exc:
                log.exception("in-process subscriber %s failed on event %d", spec.handler, event.number)
                raise DeliveryFailed(f"handler raised {type(exc).__name__}: {exc}"[:300]) from None
