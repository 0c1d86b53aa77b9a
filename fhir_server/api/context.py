"""Builds the RequestContext for a request and runs the INCOMING_REQUEST hooks.

The context's interaction is the one the route table gives the matched route
(`api.route`): handlers name the resource they serve, never the interaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from fhir_server.access.purpose import REQUESTED_PURPOSE
from fhir_server.api.route import route_of
from fhir_server.context import AUTH_DISABLED, RequestContext
from fhir_server.errors import BadRequest
from fhir_server.hooks import Pointcut
from fhir_server.storage.changes import TICKET
from fhir_server.storage.pipeline.group import ATTRIBUTE as GROUP_ATTRIBUTE
from fhir_server.storage.pipeline.group import SCOPE_KEY as GROUP_SCOPE_KEY

if TYPE_CHECKING:
    from fhir_server.services import Services

# Where a context notes the operation it runs (`everything`, `validate`, ...).
OPERATION = "operation"


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _prefer(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in header.split(";"):
            for token in part.split(","):
                key, _, value = token.strip().partition("=")
                if key:
                    out[key.lower()] = value.strip().strip('"')
    return out


async def request_context(
    request: Request,
    *,
    resource_type: str | None = None,
    resource_id: str | None = None,
    interaction: str | None = None,
) -> RequestContext:
    """`interaction`: only for a route that serves several (batch or transaction), one of
    the codes its route declares."""
    route = route_of(request)
    if interaction is None:
        interaction = route.interaction
    elif interaction not in (route.interaction, *route.also):
        raise ValueError(f"{route.path} does not serve the {interaction} interaction")
    svc = services(request)
    prefer = _prefer(request)
    prefer_return = prefer.get("return", "representation")
    if prefer_return not in ("minimal", "representation", "OperationOutcome"):
        raise BadRequest(f"Prefer: return={prefer_return[:40]} is not understood", code="value")
    # What the client asks for; with auth on, the access decision narrows the token's purpose
    # of use to it (fhir_server.access.purpose), it never adds to it.
    purposes = tuple(
        p.strip() for p in request.headers.get("x-purpose-of-use", "").split(",") if p.strip()
    )
    context = RequestContext(
        base_url=svc.settings.base_url,
        interaction=interaction,
        resource_type=resource_type,
        resource_id=resource_id,
        method=request.method,
        url=str(request.url),
        purpose_of_use=purposes,
        prefer_handling=prefer.get("handling", "lenient"),
        prefer_return=prefer_return,
        remote_addr=request.client.host if request.client else None,
    )
    context.attributes["authorization"] = request.headers.get("authorization")
    if route.operation:
        context.attributes[OPERATION] = route.operation
    context.attributes[REQUESTED_PURPOSE] = purposes
    # Every change committed before this request started governs it (the caches' feed):
    # one pull after this ticket serves the read cache and the Consent cache alike.
    context.attributes[TICKET] = svc.database.changes.ticket()
    group = request.scope.get(GROUP_SCOPE_KEY)
    if group is not None:
        # An entry of a batch (set in process by fhir_server.batch.dispatch, never by a client).
        context.attributes[GROUP_ATTRIBUTE] = group
    if not svc.auth.enabled:
        # Dev mode: an explicit principal, so that no code ever reads "no principal" as a grant.
        context.principal = AUTH_DISABLED
    await svc.hooks.call(Pointcut.INCOMING_REQUEST, context=context)
    return context
