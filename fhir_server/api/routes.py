"""The route table: every FHIR interaction the server offers, declared once.

The CapabilityStatement is generated from this table, so it says exactly what is routed.
Order matters: literal segments (`_history`, `_search`, `$validate`) come before `{id}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import history, metadata, resources, search, subscriptions, system, validate
from fhir_server.config import Settings
from fhir_server.operations import everything

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    path: str
    handler: Handler
    interaction: str  # FHIR interaction code (CapabilityStatement), or "operation"
    level: str  # system | type | instance
    conditional: bool = False
    also: tuple[str, ...] = ()  # further interaction codes the same route serves


ROUTES: tuple[Route, ...] = (
    Route(("GET", "HEAD"), "/metadata", metadata.capabilities, "capabilities", "system"),
    Route(("GET", "HEAD"), "/_history", history.system_history, "history-system", "system"),
    Route(("POST",), "", system.batch_or_transaction, "transaction", "system", also=("batch",)),
    Route(("GET", "HEAD"), "", search.search_system, "search-system", "system"),
    Route(("POST",), "/_search", search.search_system, "search-system", "system"),
    Route(("GET", "HEAD"), "/{type}/_history", history.type_history, "history-type", "type"),
    Route(("POST",), "/{type}/_search", search.search_type_post, "search-type", "type"),
    Route(("POST",), "/{type}/$validate", validate.validate, "operation", "type"),
    Route(("POST",), "/{type}/{id}/$validate", validate.validate, "operation", "instance"),
    Route(("GET", "POST"), "/Subscription/$status", subscriptions.status, "operation", "type"),
    Route(("GET", "POST"), "/Subscription/$get-ws-binding-token", subscriptions.ws_binding_token,
          "operation", "type"),
    Route(("GET", "POST"), "/Subscription/{id}/$status", subscriptions.status, "operation", "instance"),
    Route(("GET", "POST"), "/Subscription/{id}/$events", subscriptions.events, "operation", "instance"),
    Route(("GET", "POST"), "/Subscription/{id}/$get-ws-binding-token", subscriptions.ws_binding_token,
          "operation", "instance"),
    Route(("GET", "HEAD"), "/{type}", search.search_type, "search-type", "type"),
    Route(("POST",), "/{type}", resources.create, "create", "type"),
    Route(("PUT",), "/{type}", resources.conditional_update, "update", "type", conditional=True),
    Route(("DELETE",), "/{type}", resources.conditional_delete, "delete", "type", conditional=True),
    Route(("GET", "HEAD"), "/{type}/{id}/_history", history.instance_history, "history-instance",
          "instance"),
    Route(("GET", "HEAD"), "/{type}/{id}/_history/{vid}", resources.vread, "vread", "instance"),
    # Patient compartment search; after /{type}/{id}/_history so that stays a history read.
    Route(("GET", "HEAD"), "/Patient/{id}/$everything", everything.everything, "operation", "instance"),
    Route(("GET", "HEAD"), "/Patient/{id}/{type}", search.search_compartment, "search-type",
          "instance"),
    Route(("GET", "HEAD"), "/{type}/{id}", resources.read, "read", "instance"),
    Route(("PUT",), "/{type}/{id}", resources.update, "update", "instance"),
    Route(("PATCH",), "/{type}/{id}", resources.patch, "patch", "instance"),
    Route(("DELETE",), "/{type}/{id}", resources.delete, "delete", "instance"),
)


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    for route in ROUTES:
        router.add_api_route(
            route.path, route.handler, methods=list(route.methods),
            include_in_schema=True, name=f"{route.interaction}:{route.path}",
        )
        if route.path == "":
            # [base] and [base]/ are the same endpoint: answer both rather than redirect a POST.
            router.add_api_route("/", route.handler, methods=list(route.methods), include_in_schema=False)
    # The subscription websocket channel (its URL is in the CapabilityStatement).
    router.add_api_websocket_route("/$subscription-ws", subscriptions.websocket)
    return router
