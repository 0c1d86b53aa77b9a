"""GET [base]/metadata: the CapabilityStatement, generated from the route table and the
search engine's registry, so it describes exactly what is implemented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server import FHIR_VERSION, __version__
from fhir_server.api.context import services
from fhir_server.api.negotiation import require_fhir, response_format
from fhir_server.api.responses import json_response
from fhir_server.api.route import Route
from fhir_server.api.scheduling import SCHEDULING_OPERATIONS
from fhir_server.auth.capability import capability_security
from fhir_server.operations.care_gaps import DEFINITION as CARE_GAPS_DEFINITION
from fhir_server.resource_types import APPEND_ONLY, CHANGING_INTERACTIONS, STORED_TYPES
from fhir_server.storage.documents import format_instant, now
from subscriptions.capability import SUBSCRIPTION_OPERATIONS, add_subscriptions

# The official definitions of the operations the route table serves.
OPERATION_DEFINITIONS = {
    "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    "everything": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "care-gaps": CARE_GAPS_DEFINITION,
    **SCHEDULING_OPERATIONS,
    "join": "http://fhir.care-coord.example/OperationDefinition/Appointment-join",
    **SUBSCRIPTION_OPERATIONS,
    # Messaging threads' render state (profiles/OperationDefinition-*.json, docs/messaging.md).
    "render-cursor": "http://fhir.care-coord.example/OperationDefinition/Communication-render-cursor",
    "render-state": "http://fhir.care-coord.example/OperationDefinition/Communication-render-state",
}


def _operations(routes: Sequence[Route], resource_type: str) -> list[dict[str, str]]:
    """CapabilityStatement.rest.resource.operation for one type, read off the route table:
    a route like /{type}/$validate serves every type, /Patient/{id}/$everything only Patient."""
    names: list[str] = []
    for route in routes:
        name = route.operation
        first, *_ = route.path.strip("/").split("/")
        if name and name not in names and first in ("{type}", resource_type):
            names.append(name)
    return [{"name": n, "definition": OPERATION_DEFINITIONS[n]} for n in names]


def capability_statement(
    routes: Sequence[Route], base_url: str, search_params: dict[str, list[dict[str, Any]]],
    security: dict[str, Any] | None = None, append_only: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    type_interactions = sorted({r.interaction for r in routes if r.level in ("type", "instance")
                                and r.interaction != "operation"})
    system_interactions = sorted({code for r in routes if r.level == "system"
                                  for code in (r.interaction, *r.also)
                                  if code not in ("capabilities", "operation")})
    conditional = {r.interaction for r in routes if r.conditional}
    # Operations on [base] itself ($bulk-publish): rest.operation.
    system_operations = [{"name": n, "definition": OPERATION_DEFINITIONS[n]} for n in dict.fromkeys(
        r.operation for r in routes if r.level == "system" and r.operation)]
    resources = []
    for rtype in STORED_TYPES:
        codes = [c for c in type_interactions
                 if not (rtype in append_only and c in CHANGING_INTERACTIONS)]
        resources.append({
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [{"code": code} for code in codes],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": "update" in codes,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": "update" in conditional and "update" in codes,
            "conditionalDelete": "single" if "delete" in conditional and "delete" in codes
                                 else "not-supported",
            "searchParam": search_params.get(rtype, []),
            "operation": _operations(routes, rtype),
        })
    # Operations on types this server does not store (Measure/$care-gaps): the type is listed
    # with its operations only, no interactions.
    for rtype in dict.fromkeys(r.path.strip("/").split("/")[0] for r in routes if r.operation):
        if rtype[:1].isupper() and rtype not in STORED_TYPES:
            own = [r for r in routes if r.path.strip("/").split("/")[0] == rtype]
            resources.append({"type": rtype, "operation": _operations(own, rtype)})
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now()),
        "publisher": "care-coordination FHIR server",
        "kind": "instance",
        "software": {"name": "fhir-server", "version": __version__},
        "implementation": {"description": "FHIR R4 care-coordination server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            **({"security": security} if security else {}),
            "resource": resources,
            "interaction": [{"code": code} for code in system_interactions],
            **({"operation": system_operations} if system_operations else {}),
        }],
    }


async def capabilities(request: Request, routes: Sequence[Route]) -> Response:
    """The CapabilityStatement of the route table `routes` (which hands this handler itself)."""
    fmt = response_format(request)
    require_fhir(fmt)
    svc = services(request)
    security = capability_security(svc.auth) if svc.auth.enabled else None
    # Append-only in storage whatever the configuration (no history copy: a second version
    # would erase the first), so never advertised as changeable.
    append_only = APPEND_ONLY
    body = capability_statement(routes, svc.settings.base_url, svc.search.capability_params(), security,
                                append_only)
    add_subscriptions(body, svc.subscriptions.websocket_url, list(svc.subscriptions.topics))
    return json_response(body, fmt)
