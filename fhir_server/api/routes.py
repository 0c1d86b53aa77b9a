"""The route table: every FHIR interaction the server offers, declared once.

Each route names its FHIR interaction (restful-interaction codes: read, vread, update,
patch, delete, history-instance, history-type, history-system, create, search-type,
search-system, capabilities, batch, transaction, operation); the router hands it to the
handler (`api.route`), and the CapabilityStatement is generated from this table, so it says
exactly what is routed. Order matters: literal segments (`_history`, `_search`,
`$validate`) come before `{id}`.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api import (
    care_gaps,
    everything,
    history,
    metadata,
    render,
    resources,
    scheduling,
    search,
    subscriptions,
    system,
    validate,
    visit,
)
from fhir_server.api.route import Route
from fhir_server.config import Settings


async def capabilities(request: Request) -> Response:
    """GET [base]/metadata, described from this table."""
    return await metadata.capabilities(request, ROUTES)


ROUTES: tuple[Route, ...] = (
    Route(("GET", "HEAD"), "/metadata", capabilities, "capabilities", "system"),
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
    Route(("GET", "POST"), "/Measure/$care-gaps", care_gaps.measure_care_gaps, "operation", "type"),
    Route(("GET", "HEAD"), "/OperationDefinition/{id}", care_gaps.operation_definition, "read", "instance"),
    # Scheduling (IHE ITI Scheduling; SMART Scheduling Links): before /{type} and /{type}/{id}.
    Route(("GET", "POST"), "/Appointment/$find", scheduling.find, "operation", "type"),
    Route(("POST",), "/Appointment/$hold", scheduling.hold, "operation", "type"),
    Route(("POST",), "/Appointment/$book", scheduling.book, "operation", "type"),
    Route(("POST",), "/Appointment/{id}/$cancel", scheduling.cancel, "operation", "instance"),
    Route(("POST",), "/Appointment/{id}/$reschedule", scheduling.reschedule, "operation", "instance"),
    Route(("GET",), "/$bulk-publish", scheduling.bulk_publish, "operation", "system"),
    Route(("GET",), "/$bulk-publish/{file}", scheduling.bulk_publish_file, "operation", "system"),
    Route(("GET", "HEAD"), "/{type}", search.search_type, "search-type", "type"),
    Route(("POST",), "/{type}", resources.create, "create", "type"),
    Route(("PUT",), "/{type}", resources.conditional_update, "update", "type", conditional=True),
    Route(("DELETE",), "/{type}", resources.conditional_delete, "delete", "type", conditional=True),
    Route(("GET", "HEAD"), "/{type}/{id}/_history", history.instance_history, "history-instance",
          "instance"),
    Route(("GET", "HEAD"), "/{type}/{id}/_history/{vid}", resources.vread, "vread", "instance"),
    Route(("POST",), "/Appointment/{id}/$join", visit.appointment_join, "operation", "instance"),
    Route(("GET", "HEAD"), "/Patient/{id}/$everything", everything.patient_everything, "operation",
          "instance"),
    Route(("GET",), "/Communication/$render-state", render.inbox_render_state, "operation", "type"),
    Route(("POST",), "/Communication/{id}/$render-cursor", render.render_cursor, "operation", "instance"),
    Route(("GET",), "/Communication/{id}/$render-state", render.thread_render_state, "operation",
          "instance"),
    # Patient compartment search (`*`: across its types); after /{type}/{id}/_history so
    # that stays a history read.
    Route(("GET", "HEAD"), "/Patient/{id}/{type}", search.search_compartment, "search-type",
          "instance", also=("search-system",)),
    Route(("GET", "HEAD"), "/{type}/{id}", resources.read, "read", "instance"),
    Route(("PUT",), "/{type}/{id}", resources.update, "update", "instance"),
    Route(("PATCH",), "/{type}/{id}", resources.patch, "patch", "instance"),
    Route(("DELETE",), "/{type}/{id}", resources.delete, "delete", "instance"),
)


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter()
    # The built-in video rooms' call page and its files: web pages, not FHIR interactions;
    # before the table so that /{type}/{id} does not take them.
    router.add_api_route("/$visit/{room}", visit.call_page, methods=["GET"], include_in_schema=False)
    router.add_api_route("/$visit-assets/{name}", visit.call_asset, methods=["GET"], include_in_schema=False)
    for route in ROUTES:
        endpoint = route.bound()
        router.add_api_route(
            route.path, endpoint, methods=list(route.methods),
            include_in_schema=True, name=f"{route.interaction}:{route.path}",
        )
        if route.path == "":
            # [base] and [base]/ are the same endpoint: answer both rather than redirect a POST.
            router.add_api_route("/", endpoint, methods=list(route.methods), include_in_schema=False)
    # The subscription websocket channel (its URL is in the CapabilityStatement).
    router.add_api_websocket_route("/$subscription-ws", subscriptions.websocket)
    # Signaling for the built-in video rooms (authenticated by the join token, not a bearer).
    router.add_api_websocket_route("/$visit-ws", visit.websocket)
    return router
