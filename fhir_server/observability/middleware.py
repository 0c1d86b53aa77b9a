"""The outermost ASGI middleware: gives each request its id (`requestid`, answered in
`X-Request-Id`), counts and times it by FHIR interaction, type and status (`metrics`), and,
with tracing on, opens its server span. The interaction comes from the route table (the
matched `Route` is in the scope once routed, read by the `routed` function the application
hands in: this module sits below the HTTP layer); a request no route matched is `other`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server import requestid
from fhir_server.observability.metrics import Metrics, type_label

if TYPE_CHECKING:
    from fhir_server.observability.tracing import Tracing


Routed = Callable[[Scope], "tuple[str, str | None, str] | None"]


def _labels(routed: Routed, scope: Scope) -> tuple[str, str, str]:
    """(interaction, type label, route path); `other` for a request no route matched."""
    found = routed(scope)
    if found is None:
        return "other", "-", ""
    interaction, rtype, path = found
    return interaction, type_label(rtype), path


class Observe:
    def __init__(self, app: ASGIApp, *, routed: Routed, metrics: Metrics | None, tracing: Tracing | None,
                 prefix: str = "") -> None:
        """`routed`: what the route table says about a routed request (api.route.routed)."""
        self.app = app
        self.routed = routed
        self.metrics = metrics
        self.tracing = tracing
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = requestid.from_headers(scope["headers"])
        header = (requestid.HEADER, request_id.encode("ascii"))
        token = requestid.bind(request_id)
        started = time.perf_counter()
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            if self.tracing is None:
                await self.app(scope, receive, answer)
            else:
                await self._traced(scope, receive, answer, request_id, lambda: status)
        finally:
            requestid.unbind(token)
            if self.metrics is not None:
                interaction, rtype, _ = _labels(self.routed, scope)
                self.metrics.observe(interaction, rtype, status, time.perf_counter() - started)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, request_id: str,
                      status: Any) -> None:
        from opentelemetry import trace

        assert self.tracing is not None
        method = scope["method"]
        with self.tracing.tracer.start_as_current_span(method, kind=trace.SpanKind.SERVER, attributes={
                "http.request.method": method, "url.path": scope["path"], "fhir.request_id": request_id}) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                interaction, rtype, path = _labels(self.routed, scope)
                span.update_name(f"{method} {self.prefix}{path}" if path else method)
                span.set_attribute("http.response.status_code", status())
                span.set_attribute("fhir.interaction", interaction)
                if rtype != "-":
                    span.set_attribute("fhir.resource_type", rtype)
