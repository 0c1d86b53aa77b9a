"""A route of the route table, and how its handler learns which FHIR interaction it serves.

The router puts the matched `Route` in the request's scope before the handler runs, so the
interaction name (read, vread, history-instance, search-type, operation, ...) comes from
the table, never from the handler; `api.context.request_context` reads it from there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]
SCOPE_KEY = "fhir_server.route"

# FHIR's own interaction codes (CodeSystem restful-interaction, without the abstract
# `history` and `search`): the only names a route may give.
INTERACTIONS = frozenset({
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
    "history-system", "create", "search-type", "search-system", "capabilities", "batch",
    "transaction", "operation",
})


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    path: str
    handler: Handler
    interaction: str  # FHIR interaction code
    level: str  # system | type | instance
    conditional: bool = False
    also: tuple[str, ...] = ()  # further interaction codes the same route serves

    def __post_init__(self) -> None:
        for code in (self.interaction, *self.also):
            if code not in INTERACTIONS:
                raise ValueError(f"{self.path}: '{code}' is not a FHIR interaction code")

    @property
    def operation(self) -> str | None:
        """The operation's name (`everything` for `.../$everything`), for an operation."""
        if self.interaction != "operation":
            return None
        return next((seg[1:] for seg in self.path.split("/") if seg.startswith("$")), None)

    def bound(self) -> Handler:
        """The endpoint the router mounts: the handler, told its route first."""
        handler = self.handler

        async def endpoint(request: Request) -> Response:
            request.scope[SCOPE_KEY] = self
            return await handler(request)

        endpoint.__name__ = handler.__name__
        endpoint.__doc__ = handler.__doc__
        return endpoint


def routed(scope: MutableMapping[str, Any]) -> tuple[str, str | None, str] | None:
    """(interaction, the resource type its path names, route path) of a request the table
    routed; None for one it did not (for metrics and traces, which sit outside routing)."""
    route = scope.get(SCOPE_KEY)
    if not isinstance(route, Route):
        return None
    first = route.path.split("/")[1] if route.path.count("/") else ""
    if first == "{type}":
        rtype = (scope.get("path_params") or {}).get("type")
    else:
        rtype = first if first[:1].isupper() else None
    return route.interaction, rtype if isinstance(rtype, str) else None, route.path


def route_of(request: Request) -> Route:
    route = request.scope.get(SCOPE_KEY)
    if not isinstance(route, Route):
        raise LookupError(f"{request.url.path} was not routed through the route table")
    return route
