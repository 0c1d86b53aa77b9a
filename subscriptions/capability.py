"""What the CapabilityStatement says about Subscriptions (Backport IG, R4 websocket URL)."""

from __future__ import annotations

from typing import Any

from subscriptions.model import BACKPORT_PROFILE

Doc = dict[str, Any]
IG = "http://hl7.org/fhir/uv/subscriptions-backport/"
WEBSOCKET_EXTENSION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket"
TOPIC_EXTENSION = IG + "StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
SERVER_CAPABILITY = IG + "CapabilityStatement/backport-subscription-server-r4"
# The Backport IG's definitions of the operations served by fhir_server.api.subscriptions.
SUBSCRIPTION_OPERATIONS = {
    name: f"{IG}OperationDefinition/backport-subscription-{name}"
    for name in ("status", "events", "get-ws-binding-token")
}


def add_subscriptions(statement: Doc, websocket_url: str, topics: list[str]) -> None:
    """Adds the websocket URL and the topics to a CapabilityStatement (the operations come
    from the route table)."""
    statement.setdefault("instantiates", []).append(SERVER_CAPABILITY)
    for rest in statement.get("rest", []):
        rest.setdefault("extension", []).append({"url": WEBSOCKET_EXTENSION, "valueUrl": websocket_url})
        for resource in rest.get("resource", []):
            if resource.get("type") != "Subscription":
                continue
            resource.setdefault("extension", []).extend(
                {"url": TOPIC_EXTENSION, "valueCanonical": url} for url in sorted(topics))
            resource.setdefault("supportedProfile", []).append(BACKPORT_PROFILE)
