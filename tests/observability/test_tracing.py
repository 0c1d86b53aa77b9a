"""Opt-in OpenTelemetry (FHIR_OTEL=on): each request's spans reach an OTLP/HTTP receiver (a
local stand-in here) as one trace, HTTP server span → repository call → MongoDB commands.
The commands under a read's span are the read's own: in the default configuration (auth,
Consent, audit on) a read finds its document once and never reads its history copy."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pymongo import AsyncMongoClient

from fhir_server.auth.cli import mint_dev_token
from fhir_server.services import auth_settings
from tests.conftest import RunningServer, free_port, make_settings
from tests.subscriptions.conftest import wait_until

Span = dict[str, Any]


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            receiver.spans.append({
                                "name": s.name, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(), "kind": s.kind,
                                "attributes": {a.key: a.value.string_value or a.value.int_value for a in s.attributes},
                            })
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def traced(mongodb_uri: str) -> Iterator[tuple[RunningServer, Receiver, str]]:
    receiver = Receiver()
    saved = {k: os.environ.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY")}
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # ms: export soon
    settings = make_settings(mongodb_uri, database="fhir_traced", auth_enabled=True, extra={"otel": "on"})
    try:
        with RunningServer(settings) as running:
            async def mint() -> str:
                client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongodb_uri)
                try:
                    return await mint_dev_token(client[settings.database], auth_settings(settings),
                                                ["user/Task.cruds"], fhir_user="Practitioner/dr1")
                finally:
                    await client.close()

            yield running, receiver, asyncio.run(mint())
    finally:
        receiver.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _trace_of(receiver: Receiver, request_id: str) -> list[Span]:
    roots = [s for s in receiver.spans if s["attributes"].get("fhir.request_id") == request_id]
    if not roots:
        return []
    return [s for s in receiver.spans if s["trace"] == roots[0]["trace"]]


def test_a_read_is_one_trace_http_repository_mongodb(traced: tuple[RunningServer, Receiver, str]) -> None:
    running, receiver, token = traced
    with httpx.Client(base_url=running.settings.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        created = http.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                           "for": {"reference": "Patient/p1"}})
        assert created.status_code == 201, created.text
        reply = http.get(f"/Task/{created.json()['id']}", headers={"X-Request-Id": "traced-read-1"})
        assert reply.status_code == 200
    spans = wait_until(lambda: (found := _trace_of(receiver, "traced-read-1")) and any(
        s["name"].startswith("mongodb.") for s in found) and found, timeout=15)
    by_id = {s["id"]: s for s in spans}
    [root] = [s for s in spans if not s["parent"]]
    assert root["name"] == "GET /fhir/{type}/{id}"
    assert root["attributes"]["http.response.status_code"] == 200
    assert root["attributes"]["fhir.interaction"] == "read"
    [repository] = [s for s in spans if s["name"] == "repository.read"]
    assert by_id[repository["parent"]] is root
    commands = [s for s in spans if s["name"].startswith("mongodb.")]
    assert all(by_id[c["parent"]] in (root, repository) for c in commands)
    found = [(c["name"], c["attributes"].get("db.collection.name")) for c in commands]
    # The document once; no second read of it (its history copy) for Consent's check.
    assert found.count(("mongodb.find", "Task")) == 1, found
    assert ("mongodb.find", "Task_history") not in found, found
