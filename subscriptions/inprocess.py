"""The Python API for in-process subscribers: the server's own workflows subscribe like anyone.

    async def on_task(note: Notification) -> None: ...
    await services.subscriptions.subscribe("care-team-router", on_task,
        topic="http://fhir.care-coord.example/SubscriptionTopic/task-status",
        filters=["Task?status=requested"])

`subscribe` registers the handler in this process and creates (or keeps) the Subscription
`in-process-<name>` on the in-process channel, owned by the server. Delivery is the same as
for any Subscription: durable, numbered, in order, at least once, retried on failure (a
handler that raises is called again with the same event), by whichever process holds its
lease among those that registered the handler.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import FhirError
from fhir_server.storage.repository import Repository
from subscriptions.channels import Handler, InProcessHandlers
from subscriptions.guard import server_context
from subscriptions.model import (
    BACKPORT_PROFILE,
    CHANNEL_TYPE,
    FILTER_CRITERIA,
    IN_PROCESS,
    IN_PROCESS_ENDPOINT,
    IN_PROCESS_SYSTEM,
    PAYLOAD_CONTENT,
)

Doc = dict[str, Any]


def subscription_id(name: str) -> str:
    return f"in-process-{name}"


def in_process_subscription(name: str, *, topic: str | None, criteria: str | None,
                            filters: list[str], content: str) -> Doc:
    if (topic is None) == (criteria is None):
        raise ValueError("subscribe to either a topic or R4 criteria")
    resource: Doc = {
        "resourceType": "Subscription",
        "id": subscription_id(name),
        "status": "requested",
        "reason": f"In-process subscriber '{name}'",
        "criteria": topic or criteria,
        "channel": {
            "type": "message",
            "_type": {"extension": [{"url": CHANNEL_TYPE, "valueCoding": {
                "system": IN_PROCESS_SYSTEM, "code": IN_PROCESS}}]},
            "endpoint": IN_PROCESS_ENDPOINT + name,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": content}]},
        },
    }
    if topic is not None:
        resource["meta"] = {"profile": [BACKPORT_PROFILE]}
        if filters:
            resource["_criteria"] = {"extension": [{"url": FILTER_CRITERIA, "valueString": f}
                                                   for f in filters]}
    return resource


class InProcessSubscribers:
    def __init__(self, repository: Repository, handlers: InProcessHandlers, base_url: str) -> None:
        self.repository = repository
        self.handlers = handlers
        self.base_url = base_url

    async def subscribe(self, name: str, handler: Handler, *, topic: str | None = None,
                        criteria: str | None = None, filters: list[str] | None = None,
                        content: str = "full-resource") -> str:
        """Registers `handler` and makes sure its Subscription exists; answers its id."""
        self.handlers.register(name, handler)
        resource = in_process_subscription(name, topic=topic, criteria=criteria,
                                           filters=list(filters or ()), content=content)
        context = server_context(self.base_url)
        sub_id = str(resource["id"])
        try:
            existing = (await self.repository.read(context, "Subscription", sub_id)).resource
        except FhirError:  # not there, or deleted
            existing = None
        if existing is not None:
            same = all(existing.get(k) == resource.get(k) for k in ("criteria", "_criteria", "channel"))
            if same and existing.get("status") in ("requested", "active"):
                return sub_id
        await self.repository.update(context, "Subscription", sub_id, resource)
        return sub_id

    async def unsubscribe(self, name: str) -> None:
        self.handlers.handlers.pop(name, None)
        await self.repository.delete(server_context(self.base_url), "Subscription", subscription_id(name))
