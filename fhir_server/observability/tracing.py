"""Opt-in OpenTelemetry traces (`FHIR_OTEL=on`): a server span per HTTP request, a span per
repository call under it, and a client span per MongoDB command under that (a pymongo
command listener: the async driver runs each command in the caller's task, so the current
span is its parent). Exported in batches by OTLP/HTTP; the SDK's own variables
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, ...) configure
where to and how many: every request by default; a request the sampler leaves out costs
its spans' checks only (docs/performance.md measures both)."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pymongo import monitoring

# The repository's entry points a request calls (every read and write goes through them).
REPOSITORY_CALLS = ("read", "vread", "read_many", "search", "search_types", "find_matches", "create", "update",
                    "conditional_update", "patch", "delete", "conditional_delete")


class Tracing:
    def __init__(self) -> None:
        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "fhir-server")})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("fhir_server")
        self.commands = _CommandSpans(self.tracer)

    def instrument(self, repository: object) -> None:
        """Wraps the repository's entry points of this instance in spans."""
        for name in REPOSITORY_CALLS:
            method = getattr(repository, name, None)
            if method is not None and inspect.iscoroutinefunction(method):
                setattr(repository, name, self._traced(f"repository.{name}", method))

    def _traced(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        tracer = self.tracer

        @functools.wraps(method)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            if not trace.get_current_span().is_recording():
                return await method(*args, **kwargs)  # a request the sampler left out
            with tracer.start_as_current_span(name):
                return await method(*args, **kwargs)

        return traced

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what the batch processor still holds


class _CommandSpans(monitoring.CommandListener):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._open: dict[tuple[int, Any], trace.Span] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if not trace.get_current_span().is_recording():
            # Outside any request (background work), or in a request the sampler left out
            # (OTEL_TRACES_SAMPLER): no span, and no cost beyond this check.
            return
        collection = event.command.get(event.command_name)
        span = self.tracer.start_span(f"mongodb.{event.command_name}", kind=trace.SpanKind.CLIENT, attributes={
            "db.system": "mongodb", "db.operation.name": event.command_name, "db.namespace": event.database_name,
            **({"db.collection.name": collection} if isinstance(collection, str) else {}),
        })
        self._open[(event.request_id, event.connection_id)] = span

    def _end(self, event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent, ok: bool) -> None:
        span = self._open.pop((event.request_id, event.connection_id), None)
        if span is not None:
            if not ok:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.end()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._end(event, True)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._end(event, False)
